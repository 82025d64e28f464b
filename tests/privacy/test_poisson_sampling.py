"""Test 2: batch sizes in albums follow Binomial(N, q); a shuffled fixed-size loader fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from dpalbum.privacy import DPSGDConfig, PoissonAlbumSampler, train_dp
from tests.privacy.tiny_models import replay

from .tiny_models import (
    TinyRegressor,
    make_regression_albums,
    regression_collate,
    regression_row_loss,
)


def binomial_gof_pvalue(sizes: list[int], n: int, q: float) -> float:
    """Chi-square goodness of fit of batch sizes to Binomial(n, q), tail bins pooled (≥ 5)."""
    sizes = np.asarray(sizes)
    pmf = stats.binom.pmf(np.arange(n + 1), n, q) * len(sizes)
    edges, acc = [0], 0.0  # pool consecutive sizes until each bin expects ≥ 5 batches
    for k in range(n + 1):
        acc += pmf[k]
        if acc >= 5 and pmf[k + 1 :].sum() >= 5:
            edges.append(k + 1)
            acc = 0.0
    edges.append(n + 1)
    observed = np.histogram(sizes, bins=edges)[0]
    expected = np.array([pmf[a:b].sum() for a, b in zip(edges[:-1], edges[1:])])
    return float(stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue)


def test_sampler_batch_sizes_are_binomial_and_fixed_size_loader_is_not():
    n, q, steps = 200, 0.05, 2000
    sampler = PoissonAlbumSampler(n, q, replay(3).stream("t", "sampling"))
    sizes = [len(sampler.sample()) for _ in range(steps)]
    assert binomial_gof_pvalue(sizes, n, q) > 1e-3

    loader = torch.utils.data.DataLoader(range(n), batch_size=round(n * q), shuffle=True)
    fixed = [len(b) for _ in range(steps // len(loader)) for b in loader]
    assert binomial_gof_pvalue(fixed, n, q) < 1e-6  # the same test rejects shuffled batches


def test_sampler_draws_albums_independently():
    """Each album's inclusion frequency is q (no album favoured or excluded)."""
    n, q, steps = 50, 0.2, 1000
    sampler = PoissonAlbumSampler(n, q, replay(4).stream("t", "sampling"))
    counts = np.zeros(n)
    for _ in range(steps):
        counts[sampler.sample()] += 1
    assert stats.chisquare(counts, np.full(n, counts.sum() / n)).pvalue > 1e-3
    assert abs(counts.mean() / steps - q) < 0.01


def test_trainer_batches_are_poisson_over_albums_and_empty_batches_are_steps():
    n, q, steps = 40, 0.05, 300
    albums = make_regression_albums(n)  # 1-4 rows per album
    config = DPSGDConfig(noise_multiplier=1.0, steps=steps, sample_rate=q, noise_source=replay(5))
    result = train_dp(TinyRegressor(), albums, regression_row_loss, regression_collate, config,
                      progress=False)
    sizes = [h["batch_albums"] for h in result.history]
    assert result.steps_taken == steps and sum(h[2] for h in result.accountant_history) == steps
    assert sizes.count(0) > 0  # P(empty) = 0.95^40 ≈ 13%: empty steps happen and are counted
    assert binomial_gof_pvalue(sizes, n, q) > 1e-3
    # all rows of every sampled album are in the batch
    rows = [h["batch_rows"] for h in result.history]
    assert any(r > s for r, s in zip(rows, sizes))


def test_sample_rate_is_over_albums_not_rows():
    albums = make_regression_albums(40)  # 100 rows in 40 albums
    config = DPSGDConfig(noise_multiplier=1.0, steps=1, expected_batch_albums=8)
    assert config.resolved_sample_rate(len(albums)) == pytest.approx(8 / 40)
