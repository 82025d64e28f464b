"""Per-album gradients from Opacus per-row gradients, and their album-level clipped sum.

Opacus clips per example (row); our privacy unit is the album (opacus #366: no per-user clipping).
So Opacus only supplies per-row gradients (``p.grad_sample``); here the rows of each album are
summed into one album gradient, which is clipped once to C. Adding or removing one album then
changes the clipped sum by at most C in L2 norm, however many rows the album has: that is the
sensitivity the Gaussian noise σC and the accountant assume.

Rows are processed in micro-batches of ``physical_batch_rows`` (a memory knob, not a privacy
one); an album split across micro-batches keeps accumulating until its last row, so memory is
O(rows per micro-batch × trainable parameters) whatever the DP batch size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from opacus import GradSampleModule
from torch import nn
from torch.utils.hooks import RemovableHandle

from .conv_guard import guard_conv_inputs, has_conv2d

if TYPE_CHECKING:
    from .ghost_clipping import GhostClipper

RowLoss = Callable[[nn.Module, Any], torch.Tensor]  # (model, collated batch) -> (n_rows,) losses
Collate = Callable[[Sequence[Any]], Any]  # list of rows -> a batch the model takes


@dataclass
class AlbumBatchStats:
    """Internal statistics of one step's albums (computed from private data without noise:
    for debugging only, never release them)."""

    n_albums: int = 0
    n_rows: int = 0
    loss_sum: float = 0.0  # sum over albums of the album loss
    n_clipped: int = 0
    norm_sum: float = 0.0  # sum over albums of the pre-clip album gradient norm

    def add(self, positions: Sequence[int], albums_rows: Sequence[Sequence[Any]],
            losses: torch.Tensor, norms: torch.Tensor, max_grad_norm: float) -> None:
        """Count the albums at ``positions`` with their (m,) losses and pre-clip norms."""
        self.n_albums += len(positions)
        self.n_rows += sum(len(albums_rows[a]) for a in positions)
        self.loss_sum += float(losses.sum())
        self.n_clipped += int((norms > max_grad_norm).sum())
        self.norm_sum += float(norms.sum())


def wrap_for_dp(
    model: nn.Module, grad_sample_mode: str = "hooks"
) -> tuple[GradSampleModule | GhostClipper, list[RemovableHandle]]:
    """Opacus per-row gradients for ``model`` (loss reduction "sum"), Conv2d guard included;
    or, for "ghost", the album-level ghost clipper (``ghost_clipping``: no per-row gradients).

    The guard goes on first, so Opacus' activation hooks see contiguous Conv2d inputs. Undo with
    ``unwrap_dp``. Move the model to its device *before* calling this (opacus #820).
    """
    if grad_sample_mode == "ghost":
        from .ghost_clipping import GhostClipper  # it imports this module

        return GhostClipper(model), []
    if grad_sample_mode not in ("hooks", "functorch"):
        raise ValueError(f"grad_sample_mode {grad_sample_mode!r}: use 'hooks', 'functorch' or "
                         "'ghost'")
    guards = guard_conv_inputs(model) if has_conv2d(model) else []
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True,
                               force_functorch=grad_sample_mode == "functorch")
    return wrapped, guards


def unwrap_dp(wrapped: GradSampleModule | GhostClipper, guards: Sequence[RemovableHandle]
              ) -> nn.Module:
    """Remove Opacus' (or the ghost clipper's) hooks and the Conv2d guard; returns the model."""
    for handle in guards:
        handle.remove()
    if not isinstance(wrapped, GradSampleModule):  # the ghost clipper
        wrapped.close()
        return wrapped.module
    wrapped._close()
    return wrapped._module


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _row_weights(albums_rows: Sequence[Sequence[Any]], album_reduction: str) -> list[float]:
    # An album's loss is the sum or the mean of its rows' losses. The mean divides by the album's
    # own row count: a function of that album only, so the album-level sensitivity bound holds.
    if album_reduction not in ("mean", "sum"):
        raise ValueError(f"album_reduction must be 'mean' or 'sum', got {album_reduction!r}")
    return [
        1.0 / len(rows) if album_reduction == "mean" else 1.0
        for rows in albums_rows
        for _ in rows
    ]


def iter_album_gradient_chunks(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    physical_batch_rows: int,
    album_reduction: str = "mean",
    device: torch.device | None = None,
) -> Iterator[tuple[list[int], list[torch.Tensor], torch.Tensor]]:
    """Yield ``(album positions, [per-param (m, *shape) album gradients], (m,) album losses)``.

    ``model`` is an Opacus ``GradSampleModule`` (loss reduction "sum") over the model owning
    ``params``. Each album is yielded exactly once, complete (all its rows summed). Yielded
    tensors are reused: consume them before the next iteration.
    """
    flat = [(a, row) for a, rows in enumerate(albums_rows) for row in rows]
    weights = torch.tensor(_row_weights(albums_rows, album_reduction))
    carry: tuple[int, list[torch.Tensor], torch.Tensor] | None = None
    for start in range(0, len(flat), physical_batch_rows):
        chunk = flat[start : start + physical_batch_rows]
        positions = torch.tensor([a for a, _ in chunk])  # (n,)
        batch = collate([row for _, row in chunk])
        if device is not None:
            batch = to_device(batch, device)
        losses = row_loss(model, batch)  # (n,)
        if losses.shape != (len(chunk),):
            raise ValueError(f"row_loss must return one loss per row, shape ({len(chunk)},); "
                             f"got {tuple(losses.shape)}")
        w = weights[start : start + len(chunk)].to(losses.device, losses.dtype)
        with warnings.catch_warnings():  # Opacus' hooks on a first layer whose input needs no grad
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            (losses * w).sum().backward()
        albums, inverse = torch.unique_consecutive(positions, return_inverse=True)  # (m,), (n,)
        inverse = inverse.to(losses.device)
        album_losses = torch.zeros(len(albums), device=losses.device).index_add_(
            0, inverse, (losses * w).detach().float()
        )
        grads = []
        for p in params:
            per_row = getattr(p, "grad_sample", None)
            if isinstance(per_row, list):
                raise RuntimeError("per-row gradients accumulated over two backward passes")
            summed = torch.zeros((len(albums), *p.shape), device=p.device, dtype=p.dtype)
            if per_row is not None:  # None: the parameter took no part in this forward pass
                summed.index_add_(0, inverse, per_row)  # rows of one album -> one gradient
            grads.append(summed)
            p.grad_sample = None
            p.grad = None
        if carry is not None:  # the first album continues from the previous micro-batch
            if int(albums[0]) != carry[0]:
                raise RuntimeError("album rows are not contiguous")
            for g, c in zip(grads, carry[1]):
                g[0] += c
            album_losses[0] += carry[2]
            carry = None
        last = len(albums)
        following = start + len(chunk)
        if following < len(flat) and flat[following][0] == int(albums[-1]):
            last -= 1  # the last album goes on in the next micro-batch
            carry = (int(albums[-1]), [g[-1].clone() for g in grads], album_losses[-1].clone())
        if last > 0:
            yield albums[:last].tolist(), [g[:last] for g in grads], album_losses[:last]


def album_gradients(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    physical_batch_rows: int,
    album_reduction: str = "mean",
    device: torch.device | None = None,
) -> dict[int, list[torch.Tensor]]:
    """Every album's unclipped gradient, ``{album position: [grad per param]}`` (for tests)."""
    out: dict[int, list[torch.Tensor]] = {}
    for positions, grads, _ in iter_album_gradient_chunks(
        model, params, albums_rows, row_loss, collate,
        physical_batch_rows=physical_batch_rows, album_reduction=album_reduction, device=device,
    ):
        for j, a in enumerate(positions):
            out[a] = [g[j].clone() for g in grads]
    return out


def clipped_album_sum(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    max_grad_norm: float,
    physical_batch_rows: int,
    album_reduction: str = "mean",
    device: torch.device | None = None,
) -> tuple[list[torch.Tensor], AlbumBatchStats]:
    """Σ over albums of clip_C(album gradient): the pre-noise DP-SGD update (sensitivity C)."""
    totals = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    stats = AlbumBatchStats()
    for positions, grads, losses in iter_album_gradient_chunks(
        model, params, albums_rows, row_loss, collate,
        physical_batch_rows=physical_batch_rows, album_reduction=album_reduction, device=device,
    ):
        # One norm per album over *all* trainable parameters, then one clip per album.
        norms = torch.sqrt(sum(g.flatten(1).float().pow(2).sum(1) for g in grads))  # (m,)
        factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # (m,)
        for total, g in zip(totals, grads):
            total += torch.einsum("m,m...->...", factors, g.float())
        stats.add(positions, albums_rows, losses, norms, max_grad_norm)
    return totals, stats
