"""Choosing the clipping norm C on PUBLIC data (no private read, so no ε).

With ``privacy.max_grad_norm: auto`` every DP-SGD job takes C as a quantile
(``privacy.clip_quantile``) of the album gradient norms of PUBLIC pseudo-albums at the model the
job starts from, in the job's own row format and album reduction. Why: the noise std is σ·C, so a
C far above the albums' gradient norms (the old default C = 1 clipped 0% of albums at every step)
only adds noise; a C near the typical norm keeps most of the signal (Andrew et al. 2021 adapt C to
a quantile privately; here public pseudo-albums give it for free). σ, q and the steps, hence ε,
do not depend on C.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .album_gradients import Collate, RowLoss, iter_album_gradient_chunks, unwrap_dp, wrap_for_dp
from .ghost_clipping import GhostClipper, ghost_album_norms

logger = logging.getLogger(__name__)


def public_album_grad_norms(
    model: nn.Module,
    public_albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    grad_sample_mode: str = "hooks",
    physical_batch_rows: int = 32,
    album_reduction: str = "mean",
) -> np.ndarray:
    """L2 norms of each PUBLIC pseudo-album's gradient over ``model``'s trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    was_training = model.training
    model.train()
    wrapped, guards = wrap_for_dp(model, grad_sample_mode)
    norms: list[float] = []
    try:
        if isinstance(wrapped, GhostClipper):  # the same norms, without per-row gradients
            found = ghost_album_norms(wrapped, public_albums_rows, row_loss, collate,
                                      physical_batch_rows=physical_batch_rows,
                                      album_reduction=album_reduction, device=device)
            return np.asarray([found[a] for a in sorted(found)], dtype=np.float64)
        for _, grads, _ in iter_album_gradient_chunks(
            wrapped, params, public_albums_rows, row_loss, collate,
            physical_batch_rows=physical_batch_rows, album_reduction=album_reduction,
            device=device,
        ):
            squared = sum(g.flatten(1).pow(2).sum(1) for g in grads)  # (albums in chunk,)
            norms += torch.sqrt(squared).tolist()
    finally:
        unwrap_dp(wrapped, guards)
        for p in params:
            p.grad = None
        model.train(was_training)
    return np.asarray(norms, dtype=np.float64)


def public_clip_norm(norms: np.ndarray, quantile: float, what: str) -> float:
    """C = the ``quantile`` of public album gradient norms (logged with the spread)."""
    norms = norms[np.isfinite(norms) & (norms > 0)]
    if len(norms) == 0:
        raise ValueError(f"{what}: no public pseudo-album gave a gradient, so C cannot be tuned "
                         "on public data; set privacy.max_grad_norm to a number")
    c = float(np.quantile(norms, quantile))
    logger.info("%s: C = %.4g, the %.0f%% quantile of %d public album gradient norms (median "
                "%.4g, 90%% %.4g)", what, c, 100 * quantile, len(norms), np.median(norms),
                np.quantile(norms, 0.9))
    return c
