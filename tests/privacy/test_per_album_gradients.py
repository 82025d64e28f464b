"""Test 3: per-album gradients equal plain autograd, for each model we DP-train.

Models: a tiny GPT-2 with LoRA (peft, fan_in_fan_out=True on c_attn) and a tiny diffusers
UNet2DConditionModel fed channels-last latents. Albums have 1-3 rows and micro-batches of 2 rows,
so albums are split across micro-batches. The UNet control shows that without the Conv2d
contiguity guard Opacus' per-row gradients are wrong: the guard is what makes that case pass.
"""

from __future__ import annotations

import copy

import pytest
import torch
from opacus import GradSampleModule

from dpalbum.privacy import DPSGDConfig, album_gradients, train_dp, unwrap_dp, wrap_for_dp
from dpalbum.privacy.album_gradients import iter_album_gradient_chunks
from tests.privacy.tiny_models import replay

from .tiny_models import (
    lm_collate,
    lm_row_loss,
    make_lm_albums,
    make_unet_albums,
    tiny_lora_gpt2,
    tiny_unet,
    unet_collate,
    unet_row_loss,
)

SIZES = (1, 3, 2)


def _lora_with_nonzero_b():
    model = tiny_lora_gpt2()
    with torch.no_grad():  # LoRA B starts at 0, which would make every A-gradient 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    return model


def _channels_last_unet():
    return tiny_unet().to(memory_format=torch.channels_last)  # a common diffusers speed-up


CASES = {
    "gpt2_lora": (_lora_with_nonzero_b, make_lm_albums, lm_row_loss, lm_collate),
    "unet_channels_last": (tiny_unet, make_unet_albums, unet_row_loss, unet_collate),
    "unet_channels_last_weights": (_channels_last_unet, make_unet_albums, unet_row_loss,
                                   unet_collate),
}


def _autograd_album_grads(model, params, albums, row_loss, collate):
    """The reference: for each album alone, the gradient of the mean of its rows' losses."""
    out = []
    for rows in albums:
        model.zero_grad(set_to_none=True)
        row_loss(model, collate(rows)).mean().backward()
        out.append([p.grad.detach().clone() for p in params])
    model.zero_grad(set_to_none=True)
    return out


def _max_rel_error(got, ref):
    return max(
        ((g - r).abs().max() / (r.abs().max() + 1e-12)).item()
        for album_got, album_ref in zip(got, ref)
        for g, r in zip(album_got, album_ref)
    )


@pytest.mark.parametrize("case", CASES)
def test_per_album_gradients_equal_autograd(case):
    make_model, make_albums, row_loss, collate = CASES[case]
    model = make_model()
    model.train()
    albums = make_albums(SIZES)
    params = [p for p in model.parameters() if p.requires_grad]
    ref = _autograd_album_grads(model, params, albums, row_loss, collate)
    wrapped, guards = wrap_for_dp(model)  # exactly what train_dp uses
    try:
        got = album_gradients(wrapped, params, albums, row_loss, collate, physical_batch_rows=2)
    finally:
        unwrap_dp(wrapped, guards)
    got = [got[a] for a in range(len(albums))]
    assert all(any(g.abs().sum() > 0 for g in album) for album in ref)
    assert _max_rel_error(got, ref) < 1e-4


def test_unet_without_conv_guard_gets_wrong_per_sample_gradients():
    """Control: bare Opacus on channels-last Conv2d inputs is silently wrong (STACK.md)."""
    model = tiny_unet()
    model.train()
    albums = make_unet_albums(SIZES)
    params = list(model.parameters())
    ref = _autograd_album_grads(model, params, albums, unet_row_loss, unet_collate)
    bare = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
    try:
        got = {}
        for positions, grads, _ in iter_album_gradient_chunks(
            bare, params, albums, unet_row_loss, unet_collate, physical_batch_rows=2
        ):
            for j, a in enumerate(positions):
                got[a] = [g[j].clone() for g in grads]
    finally:
        bare._close()
    assert _max_rel_error([got[a] for a in range(len(albums))], ref) > 1e-2


def test_lora_training_changes_only_lora_parameters():
    """Opacus + peft can silently give all-zero LoRA updates (opacus #820): check the signal."""
    model = tiny_lora_gpt2()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    albums = make_lm_albums([2] * 8)
    config = DPSGDConfig(noise_multiplier=1e-6, steps=3, sample_rate=1.0, max_grad_norm=1.0,
                         lr=0.05, optimizer="sgd", noise_source=replay(0), physical_batch_rows=8)
    result = train_dp(model, albums, lm_row_loss, lm_collate, config, progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    assert result.history[-1]["loss"] < result.history[0]["loss"]  # the signal is real
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # Opacus unhooked


def test_functorch_mode_matches_hooks():
    model = _lora_with_nonzero_b()
    albums = make_lm_albums(SIZES)
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for mode in ("hooks", "functorch"):
        wrapped, guards = wrap_for_dp(copy.deepcopy(model) if mode == "functorch" else model,
                                      mode)
        mode_params = [p for p in wrapped._module.parameters() if p.requires_grad]
        try:
            got = album_gradients(wrapped, mode_params, albums, lm_row_loss, lm_collate,
                                  physical_batch_rows=2)
        finally:
            unwrap_dp(wrapped, guards)
        results.append([got[a] for a in range(len(albums))])
    assert len(params) == len(results[0][0])
    assert _max_rel_error(results[1], results[0]) < 1e-4
