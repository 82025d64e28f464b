"""Album-level ghost clipping: each album's gradient norm and the clipped sum, without per-row
gradients (no library has per-group ghost clipping: opacus #366).

One forward pass with hooks keeps every trainable layer's input A; one backward pass of
Σ_row w_row·loss_row asks autograd for the gradients G of the layers' *outputs* only, so autograd
never computes a weight gradient (its weight-gradient matmuls are skipped: their edges lead to no
requested input). Album a's gradient for a layer is then a function of its rows' A and G:

- Linear (tokens t): g_a = Σ_{r∈a, t} G_rt A_rtᵀ, and by the Gram identity
  ‖g_a‖² = Σ_{(r,t),(r',t')∈a} (A_rt·A_r't')(G_rt·G_r't') ("ghost norm", cost T_a²(d_in + d_out)
  for the album's T_a tokens), or g_a is materialised (cost T_a·d_in·d_out) when that is cheaper:
  the mixed rule of Bu et al. 2023, per layer and micro-batch. Bias: Σ_{r∈a,t} G_rt.
- Conv2d: the same with positions as tokens and A unfolded (im2col); a materialised album
  gradient is the convolution's own weight backward over the album's rows (no im2col at all).
- GroupNorm / LayerNorm: per-row affine gradients are tiny ((x̂·G) and G summed over positions,
  x̂ recomputed from A): materialised.
- Embedding: ‖g_a‖² = Σ_v ‖Σ_{t: id_t = v} G_t‖² over the album's tokens (ghost, always).

The album's norm is the root of the sum over all trainable parameters; f_a = min(1, C/(‖g_a‖ +
1e-6)) exactly as ``album_gradients.clipped_album_sum``; the clipped sum Σ_a f_a g_a is formed
by book-keeping (Bu et al. 2023): from the stored album gradients, or for ghost-norm layers as
(f_row·G)ᵀA in one matmul (or one convolution weight backward), with no second backward pass.
Per-row weights w_row (1/|a| for "mean", 1 for "sum") are inside G, as in the Opacus path.

An album whose rows span micro-batches: its gradient is materialised in *every* layer and carried
to the next micro-batch (one parameter-sized tensor, as ``iter_album_gradient_chunks`` does), so
its norm includes the cross terms between its parts and it is clipped once, to C, when complete.

Every trainable parameter must belong to a layer with a rule here; anything else (a custom
module, a tied parameter, a layer that overrides ``forward``, an output modified in place) is
refused with its name: a skipped parameter would leave its share out of the norm and break the
album's sensitivity bound.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from .album_gradients import AlbumBatchStats, Collate, RowLoss, _row_weights, to_device

GHOST_RULES = ("auto", "ghost", "materialise")
Bounds = Sequence[tuple[int, int]]  # each album's [start, end) rows in the micro-batch


class GhostClippingError(ValueError):
    """A model ghost clipping cannot clip exactly (named layer or parameter)."""


# ---- per-layer rules ---------------------------------------------------------------------------
@dataclass
class _Call:
    """One forward call of a layer: its input A (detached) and, after backward, its output's G."""

    a: torch.Tensor
    y: torch.Tensor | None
    versions: tuple[int, int]
    g: torch.Tensor | None = None


@dataclass
class _Layer:
    name: str
    module: nn.Module
    names: list[str]  # its trainable parameters: "weight" and/or "bias"
    index: list[int]  # their positions in the clipper's params
    calls: list[_Call] = field(default_factory=list)

    # a layer kind overrides these
    can_ghost = False

    def tokens(self, call: _Call) -> int:
        """Tokens per row (the T of the Gram identity)."""
        return 1

    def prefers_ghost(self, max_album_rows: int) -> bool:
        return False

    def album_grads(self, bounds: Bounds) -> list[torch.Tensor]:
        """Per trainable parameter, the (len(bounds), *shape) album gradients."""
        raise NotImplementedError

    def ghost_norm2(self, bounds: Bounds) -> torch.Tensor:
        raise NotImplementedError

    def weighted_sum(self, row_f: torch.Tensor) -> list[torch.Tensor]:
        """Per trainable parameter, Σ_row f_row·(row gradient) (book-keeping)."""
        raise NotImplementedError


def _album_sums(per_row: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """(m, *shape) sums of ``per_row`` (n, *shape) over each album's rows, in one matmul with
    the 0/1 album-membership matrix (rather than one reduction per album)."""
    member = torch.zeros(len(bounds), per_row.shape[0], dtype=per_row.dtype,
                         device=per_row.device)
    for i, (s, e) in enumerate(bounds):
        member[i, s:e] = 1
    return (member @ per_row.flatten(1)).view(len(bounds), *per_row.shape[1:])


def _weights_by_album(layer: _Layer, bounds: Bounds, weight_of) -> list[torch.Tensor]:
    """Per parameter (m, *shape): the weight from ``weight_of(rows slice)`` for each album
    (written into one preallocated tensor), the bias as album sums of per-row G sums."""
    out = []
    for name in layer.names:
        if name == "weight":
            w = torch.empty((len(bounds), *layer.module.weight.shape),
                            dtype=layer.calls[0].g.dtype, device=layer.calls[0].g.device)
            for i, (s, e) in enumerate(bounds):
                w[i] = weight_of(s, e)
            out.append(w)
        else:
            out.append(_album_sums(layer.bias_per_row(), bounds))
    return out


class _LinearLayer(_Layer):
    can_ghost = True

    def _ag(self, call: _Call) -> tuple[torch.Tensor, torch.Tensor]:
        n = call.g.shape[0]
        return call.a.reshape(n, -1, call.a.shape[-1]), call.g.reshape(n, -1, call.g.shape[-1])

    def tokens(self, call: _Call) -> int:
        return call.a[0].numel() // call.a.shape[-1]

    def prefers_ghost(self, max_album_rows: int) -> bool:
        # Gram: T²(d_in + d_out) per album; materialised: T·d_in·d_out (Bu et al.'s mixed rule)
        t = max_album_rows * self.tokens(self.calls[0])
        d_in, d_out = self.module.in_features, self.module.out_features
        return t * (d_in + d_out) < d_in * d_out

    def bias_per_row(self) -> torch.Tensor:
        return sum(self._ag(call)[1].sum(1) for call in self.calls)  # (n, d_out)

    def album_grads(self, bounds: Bounds) -> list[torch.Tensor]:
        def weight(s: int, e: int) -> torch.Tensor:
            total = 0
            for call in self.calls:
                a, g = self._ag(call)
                total = total + g[s:e].reshape(-1, g.shape[-1]).T @ a[s:e].reshape(-1, a.shape[-1])
            return total  # (d_out, d_in)
        return _weights_by_album(self, bounds, weight)

    def ghost_norm2(self, bounds: Bounds) -> torch.Tensor:
        a, g = self._ag(self.calls[0])
        out = []
        for s, e in bounds:
            a_s, g_s = a[s:e].reshape(-1, a.shape[-1]), g[s:e].reshape(-1, g.shape[-1])
            gg = g_s @ g_s.T  # (T_a, T_a): G_t·G_t'
            total = (gg * (a_s @ a_s.T)).sum() if "weight" in self.names else 0
            out.append(total + (gg.sum() if "bias" in self.names else 0))  # ‖Σ_t G_t‖²
        return torch.stack(out)

    def weighted_sum(self, row_f: torch.Tensor) -> list[torch.Tensor]:
        w = b = 0
        for call in self.calls:
            a, g = self._ag(call)
            gf = (g * row_f[:, None, None].to(g.dtype)).reshape(-1, g.shape[-1])
            w = w + gf.T @ a.reshape(-1, a.shape[-1])
            b = b + gf.sum(0)
        return [w if n == "weight" else b for n in self.names]


class _Conv2dLayer(_Layer):
    def __post_init__(self) -> None:
        self.can_ghost = self.module.groups == 1  # the im2col Gram below assumes one group

    def _backward_weight(self, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        m = self.module  # the convolution's own weight gradient, summed over the rows given
        return torch.ops.aten.convolution_backward(
            g, a, m.weight.detach(), None, m.stride, m.padding, m.dilation, False, [0, 0],
            m.groups, [False, True, False])[1]

    def tokens(self, call: _Call) -> int:
        return call.g[0, 0].numel()  # output positions

    def prefers_ghost(self, max_album_rows: int) -> bool:
        m = self.module
        t = max_album_rows * self.tokens(self.calls[0])
        d_in, d_out = m.in_channels * m.kernel_size[0] * m.kernel_size[1], m.out_channels
        return t * (d_in + d_out) < d_in * d_out

    def bias_per_row(self) -> torch.Tensor:
        return sum(call.g.sum((2, 3)) for call in self.calls)  # (n, c_out)

    def album_grads(self, bounds: Bounds) -> list[torch.Tensor]:
        def weight(s: int, e: int) -> torch.Tensor:
            return sum(self._backward_weight(call.g[s:e], call.a[s:e]) for call in self.calls)
        return _weights_by_album(self, bounds, weight)

    def ghost_norm2(self, bounds: Bounds) -> torch.Tensor:
        m, call = self.module, self.calls[0]
        out = []
        for s, e in bounds:
            g_s = call.g[s:e].flatten(2).transpose(1, 2).reshape(-1, m.out_channels)  # (T_a, o)
            gg = g_s @ g_s.T
            total = gg.sum() if "bias" in self.names else 0
            if "weight" in self.names:
                u = F.unfold(call.a[s:e], m.kernel_size, m.dilation, m.padding, m.stride)
                a_s = u.transpose(1, 2).reshape(-1, u.shape[1])  # (T_a, c_in·k²)
                total = total + (gg * (a_s @ a_s.T)).sum()
            out.append(total)
        return torch.stack(out)

    def weighted_sum(self, row_f: torch.Tensor) -> list[torch.Tensor]:
        w = b = 0
        for call in self.calls:
            gf = call.g * row_f[:, None, None, None].to(call.g.dtype)
            if "weight" in self.names:
                w = w + self._backward_weight(gf, call.a)
            b = b + gf.sum((0, 2, 3))
        return [w if n == "weight" else b for n in self.names]


class _NormLayer(_Layer):
    """GroupNorm / LayerNorm affine parameters: per-row gradients, summed per album."""

    def _per_row(self) -> list[torch.Tensor]:
        m, grads = self.module, [0 for _ in self.names]
        for call in self.calls:
            n = call.g.shape[0]
            if isinstance(m, nn.GroupNorm):  # x̂ per channel; sum over positions
                x_hat = F.group_norm(call.a, m.num_groups, None, None, m.eps)
                dims: tuple[int, ...] = (n, m.num_channels, -1)
                reduce = 2
            else:  # LayerNorm: sum over the leading (non-normalised) positions
                x_hat = F.layer_norm(call.a, m.normalized_shape, None, None, m.eps)
                dims, reduce = (n, -1, *m.normalized_shape), 1
            for i, name in enumerate(self.names):
                part = x_hat * call.g if name == "weight" else call.g
                grads[i] = grads[i] + part.reshape(dims).sum(reduce)  # (n, *shape)
        return grads

    def album_grads(self, bounds: Bounds) -> list[torch.Tensor]:
        return [_album_sums(g, bounds) for g in self._per_row()]

    def weighted_sum(self, row_f: torch.Tensor) -> list[torch.Tensor]:
        return [torch.einsum("n,n...->...", row_f.to(g.dtype), g) for g in self._per_row()]


class _EmbeddingLayer(_Layer):
    """Embedding: a dense album gradient is vocab × dim, so the norm is always the ghost one."""

    can_ghost = True

    def prefers_ghost(self, max_album_rows: int) -> bool:
        return True

    def _ids_g(self, call: _Call, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, g = call.a[s:e].reshape(-1), call.g[s:e].reshape(-1, call.g.shape[-1])
        pad = self.module.padding_idx
        if pad is not None:  # the padding row's gradient is zero by definition
            keep = ids != pad
            ids, g = ids[keep], g[keep]
        return ids, g

    def album_grads(self, bounds: Bounds) -> list[torch.Tensor]:
        out = []
        for s, e in bounds:
            dense = torch.zeros_like(self.module.weight)
            for call in self.calls:
                ids, g = self._ids_g(call, s, e)
                dense.index_add_(0, ids, g.to(dense.dtype))
            out.append(dense)
        return [torch.stack(out)]

    def ghost_norm2(self, bounds: Bounds) -> torch.Tensor:
        out = []
        for s, e in bounds:
            ids, g = self._ids_g(self.calls[0], s, e)
            uniq, inverse = torch.unique(ids, return_inverse=True)
            per_id = torch.zeros(len(uniq), g.shape[1], dtype=g.dtype, device=g.device)
            out.append(per_id.index_add_(0, inverse, g).pow(2).sum())  # Σ_v ‖Σ_{id=v} G‖²
        return torch.stack(out)

    def weighted_sum(self, row_f: torch.Tensor) -> list[torch.Tensor]:
        dense = torch.zeros_like(self.module.weight)
        for call in self.calls:
            n = call.g.shape[0]
            gf = call.g * row_f.to(call.g.dtype).reshape(n, *[1] * (call.g.dim() - 1))
            call_f = _Call(call.a, None, call.versions, gf)
            ids, g = self._ids_g(call_f, 0, n)
            dense.index_add_(0, ids, g.to(dense.dtype))
        return [dense]


def _layer_kind(name: str, module: nn.Module) -> type[_Layer]:
    """The rule for ``module``, or a GhostClippingError naming it."""
    kinds = ((nn.Linear, _LinearLayer), (nn.Conv2d, _Conv2dLayer), (nn.GroupNorm, _NormLayer),
             (nn.LayerNorm, _NormLayer), (nn.Embedding, _EmbeddingLayer))
    for base, kind in kinds:
        if isinstance(module, base):
            if type(module).forward is not base.forward:  # a subclass computing something else
                raise GhostClippingError(
                    f"layer {name!r} ({type(module).__name__}) overrides {base.__name__}.forward:"
                    " ghost clipping has no rule for it; freeze it, or use grad_sample_mode "
                    "'hooks'")
            if isinstance(module, nn.Conv2d) and (isinstance(module.padding, str)
                                                  or module.padding_mode != "zeros"):
                raise GhostClippingError(
                    f"Conv2d {name!r}: padding {module.padding!r} / padding_mode "
                    f"{module.padding_mode!r} has no ghost rule (use integer zero padding, or "
                    "grad_sample_mode 'hooks')")
            if isinstance(module, nn.Embedding) and (module.max_norm is not None
                                                     or module.scale_grad_by_freq
                                                     or module.sparse):
                raise GhostClippingError(
                    f"Embedding {name!r}: max_norm, scale_grad_by_freq and sparse have no ghost "
                    "rule; use grad_sample_mode 'hooks'")
            return kind
    raise GhostClippingError(
        f"layer {name!r} ({type(module).__name__}) has trainable parameters but no ghost-clipping"
        " rule (Linear, Conv2d, GroupNorm, LayerNorm, Embedding have one): freeze it, or use "
        "grad_sample_mode 'hooks'. Skipping it would leave its gradient out of the album norm.")


# ---- the clipper -------------------------------------------------------------------------------
class GhostClipper:
    """Hooks on every trainable layer of ``model``; ``grad_sample_mode: ghost``'s ``wrapped``.

    ``rule``: "auto" (the cheaper of ghost norm and materialised album gradient, per layer and
    micro-batch), or "ghost" / "materialise" everywhere they apply (tests of both paths).
    """

    def __init__(self, model: nn.Module, rule: str = "auto") -> None:
        if rule not in GHOST_RULES:
            raise ValueError(f"ghost rule {rule!r}: use one of {GHOST_RULES}")
        self.module, self.rule = model, rule
        self.params: list[nn.Parameter] = []
        self.layers: list[_Layer] = []
        owners: dict[int, str] = {}
        for name, module in model.named_modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            for n, p in own:
                if id(p) in owners:  # tied weights: two layers' parts of one gradient
                    raise GhostClippingError(
                        f"parameter {name}.{n} is tied to {owners[id(p)]}: ghost clipping takes "
                        "norms per layer; untie it (or freeze it), or use grad_sample_mode "
                        "'hooks'")
                owners[id(p)] = f"{name}.{n}"
            kind = _layer_kind(name, module)
            extra = [n for n, _ in own if n not in ("weight", "bias")]
            if extra:
                raise GhostClippingError(f"layer {name!r}: trainable parameter(s) {extra} have "
                                         "no ghost rule; freeze them or use 'hooks'")
            index = list(range(len(self.params), len(self.params) + len(own)))
            self.params += [p for _, p in own]
            self.layers.append(kind(name, module, [n for n, _ in own], index))
        if not self.layers:
            raise GhostClippingError("the model has no trainable parameters")
        self._capturing = False
        self._handles: list[RemovableHandle] = [
            layer.module.register_forward_hook(self._hook(layer), with_kwargs=True)
            for layer in self.layers
        ]

    def _hook(self, layer: _Layer):
        def capture(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not self._capturing:
                return
            a = args[0] if args else next(iter(kwargs.values()))
            layer.calls.append(_Call(a.detach(), output, (a._version, output._version)))
        return capture

    def close(self) -> None:
        """Remove the hooks (the model is left as it was)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def forward_backward(self, row_loss: RowLoss, batch: Any, weights: torch.Tensor
                         ) -> torch.Tensor:
        """Run Σ w_row·loss_row forward and backward to the layers' outputs; returns the (n,)
        row losses. Fills every layer's calls with (A, G); no parameter gets a ``.grad``."""
        for layer in self.layers:
            layer.calls = []
        self._capturing = True
        try:
            losses = row_loss(self.module, batch)  # (n,)
        finally:
            self._capturing = False
        n = len(weights)
        if losses.shape != (n,):
            raise ValueError(f"row_loss must return one loss per row, shape ({n},); "
                             f"got {tuple(losses.shape)}")
        wanted = []
        for layer in self.layers:
            for call in layer.calls:
                if (call.a._version, call.y._version) != call.versions:
                    raise GhostClippingError(
                        f"layer {layer.name!r}: its input or output was modified in place after "
                        "the layer ran, so its activations or output gradient would be wrong; "
                        "use grad_sample_mode 'hooks'")
                if call.a.shape[0] != n or call.y.shape[0] != n:
                    raise GhostClippingError(
                        f"layer {layer.name!r} saw a batch of {call.a.shape[0]}, not the {n} "
                        "rows: ghost clipping needs rows along the first dimension")
                if call.y.requires_grad:
                    wanted.append(call)
        loss = (losses * weights.to(losses.device, losses.dtype)).sum()
        if wanted and loss.requires_grad:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not have been used in the graph")
                grads = torch.autograd.grad(loss, [c.y for c in wanted], allow_unused=True)
            for call, g in zip(wanted, grads):
                # one copy now, so that every album's rows are a contiguous slice below
                call.g = g if g is None else g.contiguous()
        for layer in self.layers:  # outputs no longer needed; unused calls contribute nothing
            for call in layer.calls:
                call.y = None
            layer.calls = [c for c in layer.calls if c.g is not None]
        return losses.detach()


@dataclass
class _HeldChunk:
    """One micro-batch's album gradients and activations, until its clip factors are known."""

    stored: list[tuple[_Layer, bool, list[torch.Tensor]]]  # (layer, ghost?, album gradients)
    special: list[int]  # albums materialised in every layer (split across micro-batches)
    bounds: Bounds
    counts: torch.Tensor  # rows per album
    done: int  # albums 0..done-1 are complete

    def add_clipped(self, factors: torch.Tensor, totals: list[torch.Tensor]) -> None:
        """totals += Σ_a f_a g_a over the complete albums (the last may go on: f = 0 here)."""
        f = torch.zeros(len(self.bounds), dtype=totals[0].dtype, device=self.counts.device)
        f[: self.done] = factors
        row_f = torch.repeat_interleave(f, self.counts)  # each row gets its album's factor
        for a in self.special:  # their rows are in their materialised gradients, not in A, G
            row_f[self.bounds[a][0] : self.bounds[a][1]] = 0
        for layer, ghost, grads in self.stored:
            held = f[self.special] if ghost else f  # the albums ``grads`` holds
            if len(held):
                for g, i in zip(grads, layer.index):
                    totals[i] += torch.einsum("m,m...->...", held.to(g.dtype), g).to(totals[i])
            if ghost and layer.calls:  # book-keeping: Σ_row f_row G_rᵀ A_r in one product
                for part, i in zip(layer.weighted_sum(row_f), layer.index):
                    totals[i] += part.to(totals[i])
            layer.calls = []


def _zeros(layer: _Layer, params: Sequence[nn.Parameter], m: int) -> list[torch.Tensor]:
    return [torch.zeros((m, *params[i].shape), dtype=params[i].dtype, device=params[i].device)
            for i in layer.index]


def iter_ghost_album_chunks(
    clipper: GhostClipper,
    albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    physical_batch_rows: int,
    album_reduction: str = "mean",
    device: torch.device | None = None,
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, Any]]:
    """Yield ``(album positions, (m,) gradient norms, (m,) album losses, add_clipped)`` for the
    albums completed in each micro-batch; ``add_clipped(factors, totals)`` adds Σ_a f_a g_a over
    those albums to ``totals`` (one tensor per ``clipper.params``). Call it before the next
    iteration: it reads the micro-batch's stored activations."""
    params = clipper.params
    flat = [(a, row) for a, rows in enumerate(albums_rows) for row in rows]
    weights = torch.tensor(_row_weights(albums_rows, album_reduction), dtype=torch.float64)
    acc = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    carry: list[torch.Tensor] | None = None  # an unfinished album's gradient, per parameter
    carry_loss = 0.0
    for start in range(0, len(flat), physical_batch_rows):
        chunk = flat[start : start + physical_batch_rows]
        positions = torch.tensor([a for a, _ in chunk])
        batch = collate([row for _, row in chunk])
        if device is not None:
            batch = to_device(batch, device)
        w = weights[start : start + len(chunk)]
        losses = clipper.forward_backward(row_loss, batch, w)
        dev = losses.device
        albums, counts = torch.unique_consecutive(positions, return_counts=True)
        ends = torch.cumsum(counts, 0).tolist()
        bounds = list(zip([0, *ends[:-1]], ends))
        m = len(albums)
        following = start + len(chunk)
        carry_out = following < len(flat) and flat[following][0] == int(albums[-1])
        # albums materialised in every layer: one continued from the last micro-batch (its
        # carry is added before its norm) and one going on into the next
        special = sorted({*([0] if carry is not None else []), *([m - 1] if carry_out else [])})
        regular = [a for a in range(m) if a not in special]
        max_rows = max((bounds[a][1] - bounds[a][0] for a in regular), default=0)
        norm2 = torch.zeros(m, dtype=acc, device=dev)
        stored: list[tuple[_Layer, bool, list[torch.Tensor]]] = []
        for layer in clipper.layers:
            if not layer.calls:  # not in this forward pass: zero gradient
                grads = _zeros(layer, params, len(special))
                ghost = True
            else:
                # the Gram identity is per call: several calls of one layer are materialised
                ghost = layer.can_ghost and len(layer.calls) == 1 and (
                    clipper.rule == "ghost"
                    or clipper.rule == "auto" and layer.prefers_ghost(max_rows))
                if ghost:
                    if regular:
                        norm2[regular] += layer.ghost_norm2([bounds[a] for a in regular]).to(acc)
                    grads = (layer.album_grads([bounds[a] for a in special]) if special
                             else _zeros(layer, params, 0))
                else:
                    grads = layer.album_grads(bounds)
            rows_of = special if ghost else list(range(m))  # albums held in ``grads``
            if carry is not None:
                for g, i in zip(grads, layer.index):
                    g[rows_of.index(0)] += carry[i]
            own = sum(torch.linalg.vector_norm(g.flatten(1), dim=1).to(acc).square()
                      for g in grads)
            norm2[rows_of] += own
            if not ghost:
                layer.calls = []  # album gradients kept; activations no longer needed
            stored.append((layer, ghost, grads))
        album_losses = torch.zeros(m, dtype=torch.float64, device=dev).index_add_(
            0, torch.repeat_interleave(torch.arange(m, device=dev), counts.to(dev)),
            (losses * w.to(dev, losses.dtype)).double())
        if carry is not None:
            album_losses[0] += carry_loss
        done = m - 1 if carry_out else m
        next_carry = None
        if carry_out:
            last = special.index(m - 1)
            next_carry = [None] * len(params)
            for layer, ghost, grads in stored:
                for g, i in zip(grads, layer.index):
                    next_carry[i] = g[last if ghost else m - 1].clone()
            carry_loss = float(album_losses[m - 1])

        if done > 0:
            held = _HeldChunk(stored, special, bounds, counts.to(dev), done)
            yield albums[:done].tolist(), norm2[:done].sqrt(), album_losses[:done], held.add_clipped
        else:
            for layer in clipper.layers:
                layer.calls = []
        carry = next_carry


def ghost_clipped_album_sum(
    clipper: GhostClipper,
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
    """Σ over albums of clip_C(album gradient), as ``clipped_album_sum``, by ghost clipping."""
    order = {id(p): i for i, p in enumerate(clipper.params)}
    if len(params) != len(order) or any(id(p) not in order for p in params):
        raise ValueError("params must be exactly the model's trainable parameters (the ghost "
                         "clipper's): a parameter left out of the norm breaks the sensitivity")
    acc = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    totals = [torch.zeros_like(p, dtype=acc) for p in clipper.params]
    stats = AlbumBatchStats()
    for positions, norms, losses, add_clipped in iter_ghost_album_chunks(
        clipper, albums_rows, row_loss, collate, physical_batch_rows=physical_batch_rows,
        album_reduction=album_reduction, device=device,
    ):
        factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # one clip per album
        add_clipped(factors, totals)
        stats.add(positions, albums_rows, losses, norms, max_grad_norm)
    return [totals[order[id(p)]] for p in params], stats


def ghost_album_norms(
    clipper: GhostClipper,
    albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    physical_batch_rows: int,
    album_reduction: str = "mean",
    device: torch.device | None = None,
) -> dict[int, float]:
    """Every album's gradient norm, ``{album position: norm}`` (public C tuning, tests)."""
    out: dict[int, float] = {}
    for positions, norms, _, _ in iter_ghost_album_chunks(
        clipper, albums_rows, row_loss, collate, physical_batch_rows=physical_batch_rows,
        album_reduction=album_reduction, device=device,
    ):
        out.update(zip(positions, norms.tolist()))
    for layer in clipper.layers:
        layer.calls = []
    return out
