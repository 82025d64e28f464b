"""Suite-wide settings: one torch/BLAS thread (tiny models are faster single-threaded, and the
suite must not oversubscribe a 2-core CI box)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("DPALBUM_TORCH_THREADS", "1")  # what the project hook sets in a KedroSession

import torch  # noqa: E402

torch.set_num_threads(1)
