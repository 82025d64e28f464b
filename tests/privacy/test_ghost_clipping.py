"""Album-level ghost clipping equals the materialised album gradients (Opacus per-row, summed).

Models: a token MLP (Embedding, Linear on tokens, LayerNorm), a Conv2d + GroupNorm net (stride,
dilation, channels-last input), the renderer's UNet as ``build_unet`` builds it (tiny channels),
and a tiny GPT-2 with LoRA. Albums have 1-5 rows and micro-batches of 2 or 3 rows, so albums span
two and three micro-batches; both album reductions; every rule (auto, ghost norm everywhere,
materialised everywhere). Reference: ``album_gradients`` (Opacus hooks) in float64.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dpalbum.privacy import DPSGDConfig, album_gradients, train_dp, unwrap_dp, wrap_for_dp
from dpalbum.privacy.album_gradients import clipped_album_sum
from dpalbum.privacy.ghost_clipping import (
    GhostClipper,
    GhostClippingError,
    ghost_album_norms,
    ghost_clipped_album_sum,
)

from .tiny_models import (
    TinyRegressor,
    lm_collate,
    lm_row_loss,
    make_lm_albums,
    make_regression_albums,
    regression_collate,
    regression_row_loss,
    replay,
    tiny_lora_gpt2,
)

SIZES = (1, 5, 2, 3, 1)  # with 2 rows per micro-batch the 5-row album spans three


# ---- the models -------------------------------------------------------------------------------
class TokenMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6, padding_idx=0)
        self.proj = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.norm(self.proj(self.embed(ids))))  # (B, T, 8)
        return self.head(h).squeeze(-1).mean(1)  # (B,)


def token_albums(sizes, seed=3):
    g = torch.Generator().manual_seed(seed)  # ids repeat within rows and albums (0 = padding)
    return [[(torch.randint(0, 11, (5,), generator=g), torch.randn((), generator=g))
             for _ in range(n)] for n in sizes]


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.conv2 = nn.Conv2d(4, 3, 3, stride=2, padding=2, dilation=2)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(nn.functional.silu(self.norm(self.conv1(x))))  # (B, 3, 3, 3)
        return self.head(h.mean((2, 3))).squeeze(-1)  # (B,)


def image_albums(sizes, seed=4):
    g = torch.Generator().manual_seed(seed)
    return [[(torch.randn(2, 6, 6, generator=g), torch.randn((), generator=g))
             for _ in range(n)] for n in sizes]


def channels_last_collate(rows):
    x, y = regression_collate(rows)
    return x.to(memory_format=torch.channels_last), y


def renderer_unet():
    from dpalbum.models.renderer import RendererConfig, build_unet

    torch.manual_seed(0)
    config = RendererConfig(image_size=8, patch_size=2, block_out_channels=[8, 16],
                            attention_levels=[False, True], norm_num_groups=4,
                            attention_head_dim=4)
    return build_unet(config, text_dim=16)  # class projection, scale-shift, self+cross attention


def renderer_albums(sizes, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [[{"noisy": torch.randn(12, 4, 4, generator=g),
              "timesteps": torch.randint(0, 1000, (), generator=g),
              "noise": torch.randn(12, 4, 4, generator=g),
              "weights": torch.rand((), generator=g) + 0.5,
              "tokens": torch.randn(3, 16, generator=g),
              "mask": torch.tensor([1.0, 1.0, 0.0]),
              "pooled": torch.randn(16, generator=g)} for _ in range(n)] for n in sizes]


def renderer_collate(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def renderer_loss(model, batch):
    from dpalbum.models.renderer import diffusion_row_loss

    return diffusion_row_loss(model, batch)


def lora_gpt2():
    model = tiny_lora_gpt2()
    with torch.no_grad():  # LoRA B starts at 0, which would make every A-gradient 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    return model


CASES = {  # model, albums, row loss, collate
    "token_mlp": (TokenMLP, token_albums, regression_row_loss, regression_collate),
    "conv_groupnorm": (ConvNet, image_albums, regression_row_loss, channels_last_collate),
    "renderer_unet": (renderer_unet, renderer_albums, renderer_loss, renderer_collate),
    "gpt2_lora": (lora_gpt2, make_lm_albums, lm_row_loss, lm_collate),
}


def _double(rows):
    if isinstance(rows, torch.Tensor):
        return rows.double() if rows.is_floating_point() else rows
    if isinstance(rows, dict):
        return {k: _double(v) for k, v in rows.items()}
    if isinstance(rows, list | tuple):
        return type(rows)(_double(v) for v in rows)
    return rows


def _setup(case):
    make_model, make_albums, row_loss, collate = CASES[case]
    model = make_model().double()
    model.train()
    return model, _double(make_albums(SIZES)), row_loss, collate


def _reference(model, albums, row_loss, collate, reduction):
    """Each album's gradient by plain autograd on that album alone (fp64), checked against the
    materialised album gradients of the default path (Opacus per-row gradients, summed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    ref = []
    for rows in albums:
        model.zero_grad(set_to_none=True)
        w = 1.0 / len(rows) if reduction == "mean" else 1.0
        (row_loss(model, collate(rows)) * w).sum().backward()
        ref.append([p.grad.detach().clone() for p in params])
    model.zero_grad(set_to_none=True)
    wrapped, guards = wrap_for_dp(model)
    try:
        hooks = album_gradients(wrapped, params, albums, row_loss, collate,
                                physical_batch_rows=64, album_reduction=reduction)
    finally:
        unwrap_dp(wrapped, guards)
    for a, album in enumerate(ref):
        for p, g, h in zip(params, album, hooks[a]):
            if isinstance(getattr(model, "embed", None), nn.Embedding) and p is model.embed.weight:
                continue  # Opacus' per-row Embedding gradient ignores padding_idx (autograd: 0)
            torch.testing.assert_close(h, g, rtol=1e-6, atol=1e-8)
    return params, ref


# ---- exactness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ghost_album_norms_and_clipped_sum_equal_materialised(case, reduction):
    model, albums, row_loss, collate = _setup(case)
    params, ref = _reference(model, albums, row_loss, collate, reduction)
    ref_norms = torch.stack([torch.sqrt(sum(g.pow(2).sum() for g in album)) for album in ref])
    assert (ref_norms > 0).all()
    c = float(ref_norms.median())  # some albums clipped, some not
    factors = (c / (ref_norms + 1e-6)).clamp(max=1.0)
    ref_sum = [sum(f * album[i] for f, album in zip(factors, ref)) for i in range(len(params))]
    for rule in ("auto", "ghost", "materialise"):
        for physical in (2, 3, 64):  # albums split over two and three micro-batches; none
            clipper = GhostClipper(model, rule)
            try:
                norms = ghost_album_norms(clipper, albums, row_loss, collate,
                                          physical_batch_rows=physical, album_reduction=reduction)
                sums, stats = ghost_clipped_album_sum(
                    clipper, params, albums, row_loss, collate, max_grad_norm=c,
                    physical_batch_rows=physical, album_reduction=reduction)
            finally:
                clipper.close()
            got = torch.tensor([norms[a] for a in range(len(albums))], dtype=torch.float64)
            where = f"{case} {reduction} rule={rule} physical={physical}"
            torch.testing.assert_close(got, ref_norms, rtol=1e-6, atol=1e-8, msg=where)
            for s, r in zip(sums, ref_sum):
                torch.testing.assert_close(s, r, rtol=1e-6, atol=1e-8, msg=where)
            assert stats.n_albums == len(albums) and stats.n_rows == sum(SIZES)
            assert 0 < stats.n_clipped < len(albums)
    assert all(p.grad is None for p in params)  # ghost never writes .grad


def test_ghost_clipped_sum_equals_clipped_album_sum_in_float32():
    """The same quantity as the default path (float32, the Opacus hooks), to float32 precision."""
    model, albums, row_loss, collate = CASES["renderer_unet"][0](), *CASES["renderer_unet"][1:]
    albums = albums(SIZES)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    wrapped, guards = wrap_for_dp(model)
    try:
        hooks, hooks_stats = clipped_album_sum(wrapped, params, albums, row_loss, collate,
                                               max_grad_norm=0.05, physical_batch_rows=3)
    finally:
        unwrap_dp(wrapped, guards)
    wrapped, guards = wrap_for_dp(model, "ghost")
    try:
        ghost, ghost_stats = ghost_clipped_album_sum(wrapped, params, albums, row_loss, collate,
                                                     max_grad_norm=0.05, physical_batch_rows=3)
    finally:
        unwrap_dp(wrapped, guards)
    assert hooks_stats.n_clipped == ghost_stats.n_clipped > 0
    for g, h in zip(ghost, hooks):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)


def test_train_dp_ghost_takes_the_hooks_steps():
    """Through train_dp: same replayable noise and sampling, same parameters after 3 steps."""
    albums = make_regression_albums(8)
    results = {}
    for mode in ("hooks", "ghost"):
        torch.manual_seed(0)
        model = TinyRegressor()
        config = DPSGDConfig(noise_multiplier=0.5, steps=3, sample_rate=0.6, max_grad_norm=0.3,
                             lr=0.1, optimizer="sgd", noise_source=replay(0),
                             physical_batch_rows=3, grad_sample_mode=mode)
        result = train_dp(model, albums, regression_row_loss, regression_collate, config,
                          progress=False)
        results[mode] = (torch.cat([p.detach().flatten() for p in model.parameters()]), result)
    torch.testing.assert_close(results["ghost"][0], results["hooks"][0], rtol=1e-5, atol=1e-6)
    assert [h["clipped_fraction"] for h in results["ghost"][1].history] == \
        [h["clipped_fraction"] for h in results["hooks"][1].history]
    assert not any(results["ghost"][0].isnan())


# ---- refusals -----------------------------------------------------------------------------------
class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.scale = nn.Parameter(torch.ones(()))  # a bare parameter: no ghost rule

    def forward(self, x):
        return self.lin(x).squeeze(-1) * self.scale


class _InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).relu_().sum(-1)  # the layer's output is overwritten in place


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x)).sum(-1)


@pytest.mark.parametrize("model, message", [
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.RMSNorm(4)), r"layer '1' \(RMSNorm\)"),
    (lambda: nn.Sequential(nn.Conv1d(4, 4, 1)), r"layer '0' \(Conv1d\)"),
    (_Scaled, r"layer '' \(_Scaled\)"),
    (_Tied, r"parameter b.weight is tied to a.weight"),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding="same")), r"Conv2d '0'"),
])
def test_layers_without_a_ghost_rule_are_refused_by_name(model, message):
    with pytest.raises(GhostClippingError, match=message):
        GhostClipper(model())


def test_an_output_modified_in_place_is_refused_by_name():
    albums = make_regression_albums(3)
    clipper = GhostClipper(_InPlace())
    with pytest.raises(GhostClippingError, match="layer 'lin'.*modified in place"):
        ghost_album_norms(clipper, albums, lambda m, b: m(b[0]), regression_collate,
                          physical_batch_rows=4)


def test_frozen_unsupported_layers_are_fine_and_left_alone():
    model = nn.Sequential(nn.Linear(4, 4), nn.RMSNorm(4), nn.Linear(4, 1))
    model[1].requires_grad_(False)
    clipper = GhostClipper(model)
    assert [layer.name for layer in clipper.layers] == ["0", "2"]
    clipper.close()
    assert not model[0]._forward_hooks  # hooks removed


def test_train_dp_refuses_an_unsupported_model_before_training():
    model = copy.deepcopy(_Scaled())
    config = DPSGDConfig(noise_multiplier=1.0, steps=1, sample_rate=0.5, grad_sample_mode="ghost",
                         noise_source=replay(0))
    with pytest.raises(GhostClippingError, match="_Scaled"):
        train_dp(model, make_regression_albums(2), regression_row_loss, regression_collate,
                 config, progress=False)


def test_public_clip_norms_by_ghost_equal_hooks():
    """privacy.max_grad_norm: auto tunes C on public albums' norms: the same by either mode."""
    from dpalbum.privacy.clipping import public_album_grad_norms

    model, albums, row_loss, collate = _setup("conv_groupnorm")
    norms = {mode: public_album_grad_norms(model, albums, row_loss, collate, grad_sample_mode=mode,
                                           physical_batch_rows=2)
             for mode in ("hooks", "ghost")}
    assert len(norms["ghost"]) == len(albums)
    torch.testing.assert_close(norms["ghost"], norms["hooks"], rtol=1e-6, atol=1e-8)
