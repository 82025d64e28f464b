"""Multi-process jobs on torch.distributed, launched with torchrun; sharding helpers.

A Kedro node stays one process. When a job is to run on N processes, the node calls
:func:`run_torchrun`: the job (a ``"module:function"`` target and its payload) is saved to a
temporary folder and torchrun starts N workers::

    python -m torch.distributed.run --standalone --nproc_per_node N -m dpalbum.distributed DIR

Each worker joins the process group (gloo on CPU, NCCL when it owns a CUDA device), calls
``function(payload)`` and saves what it returns; the node reads the results back, one per rank, in
rank order. Inside a worker, :func:`current_shard` says which rank it is, and collectives
(``torch.distributed.all_reduce`` ...) work as usual. Outside a process group the same code runs
as rank 0 of 1, so every code path works with and without torchrun.

The launcher is torchrun itself (torch's elastic agent), not a scheduler of ours: on a cluster the
same worker module runs under a multi-node torchrun or a Kedro deployment plugin.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

T = TypeVar("T")
JOB_FILE = "job.pt"


@dataclass(frozen=True)
class Shard:
    """This process' place among ``world`` processes."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} of world {self.world} is not a valid shard")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared outputs and shows progress."""
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's items: every ``world``-th one from ``rank`` (round robin)."""
        return list(items[self.rank :: self.world])


def current_shard() -> Shard:
    """The shard of this process in the initialised process group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def all_gather(value: T) -> list[T]:
    """Every rank's ``value`` (any picklable object), in rank order; ``[value]`` outside a group."""
    shard = current_shard()
    if shard.world == 1:
        return [value]
    gathered: list[Any] = [None] * shard.world
    dist.all_gather_object(gathered, value)
    return gathered


def merge_round_robin(parts: Sequence[Sequence[T]]) -> list[T]:
    """Undo :meth:`Shard.take`: ``parts[r]`` holds items r, r + W, ...; returns them in order."""
    world = len(parts)
    total = sum(len(p) for p in parts)
    merged: list[Any] = [None] * total
    for rank, part in enumerate(parts):
        for j, item in enumerate(part):
            merged[rank + j * world] = item
    return merged


def _resolve(target: str) -> Callable[[Any], Any]:
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"job target {target!r} must be 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def run_torchrun(target: str, payload: Any, nproc: int, *, threads_per_process: int | None = None,
                 extra_args: Sequence[str] = ()) -> list[Any]:
    """Run ``target(payload)`` on ``nproc`` torchrun workers; their results in rank order.

    ``payload`` travels with ``torch.save`` (models, tensors, tokenizers and module-level
    functions pickle; closures do not). Worker output goes to this process' stdout/stderr.
    ``threads_per_process``: torch CPU threads per worker (default: DPALBUM_TORCH_THREADS or 1).
    """
    _resolve(target)  # fail here, naming the target, rather than in every worker
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    threads = threads_per_process or int(os.environ.get("DPALBUM_TORCH_THREADS", "1"))
    with tempfile.TemporaryDirectory(prefix="dpalbum-torchrun-") as folder:
        torch.save({"target": target, "payload": payload, "threads": threads},
                   Path(folder) / JOB_FILE)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={nproc}", *extra_args, "-m", "dpalbum.distributed", folder]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               # workers unpickle the payload's functions by module name: let them import what
               # this process imports from its working directory
               "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(),
                                                           os.environ.get("PYTHONPATH")]))}
        logger.info("torchrun: %s on %d processes (%d torch threads each)", target, nproc, threads)
        started = time.perf_counter()
        code = subprocess.run(command, env=env, check=False).returncode
        if code != 0:
            raise RuntimeError(f"torchrun job {target} on {nproc} processes failed (exit code "
                               f"{code}; the workers' errors are in the log above). Rerun with "
                               "one process (nproc 1) to run it in-process and see the error "
                               "directly.")
        results = [torch.load(Path(folder) / f"result_{rank}.pt", weights_only=False)
                   for rank in range(nproc)]
    logger.info("torchrun: %s done in %.1f s", target, time.perf_counter() - started)
    return results


def worker_device() -> torch.device:
    """This worker's device: its local CUDA device when there is one, else the CPU.

    Every worker of a node needs a GPU of its own (NCCL refuses two ranks on one device): with
    more workers on a node than GPUs, all of them run on the CPU (gloo), so the ranks agree.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.device_count() < local_world:
        logger.warning("%d processes on this node but %d GPU(s): every worker runs on the CPU; "
                       "start at most %d processes per node to use the GPUs", local_world,
                       torch.cuda.device_count(), torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _worker(folder: str) -> None:
    """One torchrun worker: join the group, run the job, save this rank's result."""
    job = torch.load(Path(folder) / JOB_FILE, weights_only=False)
    torch.set_num_threads(int(job["threads"]))
    device = worker_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        result = _resolve(job["target"])(job["payload"])
        rank = dist.get_rank()
        torch.save(result, Path(folder) / f"result_{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[rank %(process)d] %(levelname)s %(message)s")
    _worker(sys.argv[1])
