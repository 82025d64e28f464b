"""Where generation (sampling, rendering) runs: the device, and optional bf16 autocast.

One rule for every generation path: CUDA when present, the CPU otherwise. Inside a torchrun worker
"auto" (or "cuda") means the worker's own GPU (:func:`dpalbum.distributed.worker_device`), so N
workers on N GPUs never share one. ``"cpu"`` pins a run to the CPU on any machine.

Precision. ``fp32`` is the default everywhere. ``bf16`` runs the model's forward passes under
``torch.autocast(device_type="cuda", dtype=torch.bfloat16)`` during generation only, where a
rounding error can at worst change which token or pixel is drawn: it never touches privacy.
DP-SGD training stays fp32 (``parameters_sampling.yml`` says why). On the CPU bf16 is ignored, with
a logged note: CPU autocast is slower than fp32 for these small models and gives no memory win
that matters here. Outputs are bit-for-bit reproducible only at equal device and precision.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from dpalbum.distributed import worker_device

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def check_precision(precision: str, where: str) -> None:
    """Refuse an unknown precision, naming the parameter that holds it."""
    if precision not in PRECISIONS:
        raise ValueError(f"{where}: precision must be one of {PRECISIONS}, got {precision!r}")


def generation_device(requested: str = "auto") -> torch.device:
    """The device to generate on: ``cpu``; or (``auto``/``cuda``) this worker's GPU inside a
    torchrun process group, ``cuda`` in a plain process, and the CPU when there is no GPU
    (``auto`` only: ``cuda`` without one is an error)."""
    if requested not in DEVICES and not requested.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if requested != "auto":
            raise ValueError(f"device {requested!r} requested but CUDA is not available here: "
                             "use device: auto (the CPU when there is no GPU)")
        return torch.device("cpu")
    if dist.is_available() and dist.is_initialized():
        return worker_device()  # this worker's own GPU (or the CPU if the node has too few)
    return torch.device("cuda" if requested == "auto" else requested)


def generation_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for generating on ``device`` at ``precision`` (see module doc)."""
    check_precision(precision, "generation")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type != "cuda":
        logger.info("precision bf16 applies on CUDA only: generating in fp32 on %s", device)
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


@contextlib.contextmanager
def models_on(device: torch.device, *models: nn.Module) -> Iterator[None]:
    """Move ``models`` to ``device`` for the block, then back where each one was.

    Models in a Kedro run are shared between nodes (``copy_mode: assign``): a node that moves one
    must not leave it on another device for the next node.
    """
    homes = [next(m.parameters()).device for m in models]
    for model in models:
        model.to(device)
    try:
        yield
    finally:
        for model, home in zip(models, homes):
            model.to(home)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(threads: int, where: str = "threads") -> Iterator[int]:
    """Run the block with ``threads`` torch CPU threads (0: every core this process may use),
    then restore the previous count. Yields the count used.

    The project runs with one torch thread by default (``DPALBUM_TORCH_THREADS``, see hooks.py):
    the small language models are fastest that way. Conv-heavy work (the renderer) gains from
    more: measured on the 2-core box, a renderer training step takes 0.88 s on one thread and
    0.55 s on two. Results are reproducible at equal thread count (and device).
    """
    threads = int(threads)
    if threads < 0:
        raise ValueError(f"{where} must be >= 0 (0: every available core), got {threads}")
    wanted = threads or available_cpus()
    previous = torch.get_num_threads()
    if wanted != previous:
        torch.set_num_threads(wanted)
        logger.info("%s: %d torch CPU threads for this step (was %d)", where, wanted, previous)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
