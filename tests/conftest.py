"""Suite-wide settings: one torch/BLAS thread (tiny models are faster single-threaded, and the
suite must not oversubscribe a 2-core CI box)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("DPALBUM_TORCH_THREADS", "1")  # what the project hook sets in a KedroSession

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_mlflow_run_outlives_its_test():
    """A run left active (a session that failed mid-run, a test's own start_run) would make the
    next test's `mlflow.start_run` fail in the same worker process, or log into that run."""
    yield
    import sys

    mlflow = sys.modules.get("mlflow")  # only if this process uses MLflow at all
    while mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run()
