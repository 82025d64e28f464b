"""Album-level DP-SGD on several processes: torchrun workers, one all-reduce per step.

``train_dp_multiprocess(..., nproc=N)`` runs :func:`dpalbum.privacy.train_dp` on N torchrun
workers (``dpalbum.distributed.run_torchrun``; gloo on CPU, NCCL on GPU). In the workers,
``train_dp`` sees the process group: rank r Poisson-samples albums r, r + W, ... with the plan's q,
Opacus' DPDDP broadcasts rank 0's weights, each rank samples its albums from its own stream
(secure: its own OS-keyed CSPRNG; no seed is shared), rank 0 alone adds the Gaussian noise and the
noisy clipped sums are all-reduced, so the ranks stay in step and the mechanism is the single-
process one: same q (over all N albums), σ, C and steps, hence the same ε on the ledger.

The payload (model, album rows, ``row_loss``, ``collate``, config) is pickled for the workers:
``row_loss`` and ``collate`` must be module-level functions or picklable objects, not closures.
With ``nproc == 1`` nothing is launched and ``train_dp`` runs in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import nn

from ..distributed import current_shard, run_torchrun, worker_device
from .album_gradients import Collate, RowLoss
from .dpsgd import DPSGDConfig, DPTrainResult, train_dp

logger = logging.getLogger(__name__)


def _train_rank(payload: dict[str, Any]) -> dict[str, Any]:
    """One torchrun worker: ``train_dp`` on this rank; rank 0 returns the trained weights."""
    config: DPSGDConfig = replace(payload["config"], device=str(worker_device()))
    result = train_dp(payload["model"], payload["albums_rows"], payload["row_loss"],
                      payload["collate"], config, progress=payload["progress"])
    if not current_shard().is_main:
        return {}
    trainable = {n: p.detach().cpu() for n, p in result.model.named_parameters()
                 if p.requires_grad}
    summary = {k: getattr(result, k) for k in (
        "steps_taken", "sample_rate", "noise_multiplier", "epsilon_so_far", "delta",
        "max_grad_norm", "accountant_history", "history", "completed", "baseline")}
    return {"trainable": trainable, "result": summary}


def train_dp_multiprocess(
    model: nn.Module,
    albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    config: DPSGDConfig,
    *,
    nproc: int = 1,
    progress: bool = True,
) -> DPTrainResult:
    """``train_dp`` on ``nproc`` torchrun processes; ``model`` gets the trained weights."""
    if nproc <= 1:
        return train_dp(model, albums_rows, row_loss, collate, config, progress=progress)
    logger.info("DP-SGD on %d processes (torchrun): %d albums, q=%.4f over all of them", nproc,
                len(albums_rows), config.resolved_sample_rate(len(albums_rows)))
    payload = {"model": model, "albums_rows": list(albums_rows), "row_loss": row_loss,
               "collate": collate, "config": config, "progress": progress}
    main = run_torchrun("dpalbum.privacy.distributed:_train_rank", payload, nproc)[0]
    named = dict(model.named_parameters())
    for name, value in main["trainable"].items():
        named[name].data.copy_(value.to(named[name].device))
    return DPTrainResult(model=model, **main["result"])
