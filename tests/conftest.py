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


# Longest first: pytest-xdist (--dist loadfile) hands whole files to the two workers in the
# collection order (--no-loadscope-reorder; its own reorder puts files with many tests first,
# which left the longest files, with few tests, for the end and one worker idle). Measured test
# time per file, longest first (--durations=0, 2026-12-03). Order only: no result depends on it.
LONGEST_FILES = (
    "tests/test_release.py", "tests/test_benchmarks_privimage.py",
    "tests/test_sharded_generation.py", "tests/test_own_albums.py",
    "tests/pipelines/test_dp_training.py", "tests/test_end_to_end.py",
    "tests/test_profiles_tiny_hf.py", "tests/pipelines/test_rendering.py",
    "tests/privacy/test_ledger.py", "tests/privacy/test_distributed.py",
    "tests/privacy/test_ghost_clipping.py", "tests/privacy/test_kill_resume.py",
    "tests/privacy/test_noise.py", "tests/pipelines/test_evaluation_audit.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.nodeid.split("::", 1)[0], len(rank)),
                                 order[id(item)]))
