"""Test 1: one adversarial album (huge gradients, many rows) moves the pre-noise update by ≤ C."""

from __future__ import annotations

import copy

import torch

from dpalbum.privacy import DPSGDConfig, clipped_album_sum, train_dp, unwrap_dp, wrap_for_dp
from tests.privacy.tiny_models import replay

from .tiny_models import (
    TinyRegressor,
    make_regression_albums,
    regression_collate,
    regression_row_loss,
)

C = 0.5


def _adversarial_album(n_rows: int = 40):
    g = torch.Generator().manual_seed(99)
    # Targets 1e4 away from any prediction: each row's gradient norm is ~1e4 ≫ C.
    return [(torch.randn(4, generator=g) * 10, torch.tensor(1e4)) for _ in range(n_rows)]


def _clipped_sum(model, albums, physical_batch_rows):
    params = [p for p in model.parameters() if p.requires_grad]
    wrapped, guards = wrap_for_dp(model)
    try:
        sums, stats = clipped_album_sum(
            wrapped, params, albums, regression_row_loss, regression_collate,
            max_grad_norm=C, physical_batch_rows=physical_batch_rows, album_reduction="sum",
        )
    finally:
        unwrap_dp(wrapped, guards)
    return torch.cat([s.flatten() for s in sums]), stats


def test_adversarial_album_moves_clipped_sum_by_at_most_C():
    model = TinyRegressor()
    normal = make_regression_albums(6)
    adversary = _adversarial_album()
    for physical in (5, 64):  # the adversary spans 8 micro-batches, then fits in one
        without, _ = _clipped_sum(model, normal, physical)
        with_adv, stats = _clipped_sum(model, [*normal[:3], adversary, *normal[3:]], physical)
        shift = torch.linalg.vector_norm(with_adv - without).item()
        assert stats.n_clipped >= 1  # the adversary really exceeded C (the test has power)
        assert shift <= C * (1 + 1e-4), f"one album moved the update by {shift:.4g} > C={C}"
        assert shift > 0.9 * C  # ... and it was clipped to C, not dropped


def test_trainer_update_moves_by_at_most_C():
    """The same bound through train_dp: q = 1, SGD lr 1, noise negligible and identical."""
    normal = make_regression_albums(6)
    adversary = _adversarial_album()
    base = TinyRegressor()

    def pre_noise_update(albums):
        model = copy.deepcopy(base)
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        config = DPSGDConfig(noise_multiplier=1e-9, steps=1, sample_rate=1.0, max_grad_norm=C,
                             lr=1.0, optimizer="sgd", noise_source=replay(0), album_reduction="sum",
                             physical_batch_rows=7)
        train_dp(model, albums, regression_row_loss, regression_collate, config, progress=False)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return (before - after) * len(albums)  # gradient × expected batch = clipped sum + noise

    shift = torch.linalg.vector_norm(
        pre_noise_update([*normal, adversary]) - pre_noise_update(normal)
    ).item()
    assert shift <= C * (1 + 1e-3), f"one album moved the trainer's update by {shift:.4g} > C"
