"""Album-level DP-SGD on 2 torchrun processes (gloo, CPU): same ε as one process, loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dpalbum.privacy import (
    DPSGDConfig,
    PoissonAlbumSampler,
    charge,
    plan_privacy,
    train_dp,
    train_dp_multiprocess,
)
from tests.privacy.tiny_models import replay

from .tiny_models import TinyRegressor, regression_collate, regression_row_loss

PROJECT = Path(__file__).resolve().parents[2]


def test_shards_partition_the_albums_and_keep_the_sample_rate():
    n, q, steps = 101, 0.3, 400
    shards = [
        PoissonAlbumSampler(n, q, replay(7 + r).stream("t", "sampling"), rank=r, world=3)
        for r in range(3)
    ]
    owned = sorted(i for s in shards for i in s.owned.tolist())
    assert owned == list(range(n))  # every album belongs to exactly one rank
    counts = torch.zeros(n)
    for _ in range(steps):
        for s in shards:
            counts[s.sample()] += 1
    # each album joins a step with probability q, whichever rank owns it
    assert abs(float(counts.mean()) / steps - q) < 0.01
    assert float((counts / steps - q).abs().max()) < 0.12
    assert PoissonAlbumSampler(n, q, replay(7).stream("t", "sampling")).owned.tolist() == list(
        range(n)
    )


def _learnable_albums(n: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    g, w = torch.Generator().manual_seed(3), torch.tensor([1.0, -2.0, 0.5, 1.5])
    albums = []
    for i in range(n):
        xs = [torch.randn(4, generator=g) for _ in range(1 + i % 3)]
        albums.append([(x, (x @ w).tanh()) for x in xs])
    return albums


def _mean_loss(model: torch.nn.Module, albums) -> float:
    with torch.no_grad():
        return float(
            torch.cat(
                [regression_row_loss(model, regression_collate(rows)) for rows in albums]
            ).mean()
        )


def _model() -> TinyRegressor:
    torch.manual_seed(0)
    return TinyRegressor()


def test_two_gloo_processes_give_the_single_process_epsilon_and_learn(
    tmp_path, monkeypatch, verify_ledger
):
    monkeypatch.chdir(PROJECT)  # the workers import tests.privacy.tiny_models from here
    albums = _learnable_albums(48)
    plan = plan_privacy(
        {"epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0},
        len(albums),
        {
            "lm": {
                "kind": "dpsgd",
                "noise_multiplier": "auto",
                "expected_batch_albums": 16,
                "epochs": 8,
                "epsilon_share": 1.0,
            }
        },
    )
    # secure noise (the default): no seed is shared between the ranks, each samples its own
    config = DPSGDConfig.from_plan(plan, "lm", {"physical_batch_rows": 16}, lr=0.02)

    model = _model()
    before = _mean_loss(model, albums)
    result = train_dp_multiprocess(
        model, albums, regression_row_loss, regression_collate, config, nproc=2, progress=False
    )
    single = train_dp(
        _model(), albums, regression_row_loss, regression_collate, config, progress=False
    )

    # same plan, same mechanism: same q over all N albums, σ, steps, hence the same ε
    assert result.steps_taken == single.steps_taken == config.steps
    assert result.sample_rate == single.sample_rate == pytest.approx(16 / 48)
    assert result.noise_multiplier == single.noise_multiplier > 0
    assert result.epsilon_so_far == pytest.approx(single.epsilon_so_far, rel=1e-9)
    assert result.epsilon_so_far <= 8.0 * 1.001
    # the parent's model holds rank 0's trained weights, and they learnt
    after = _mean_loss(model, albums)
    assert after < 0.5 * before, (before, after)
    assert _mean_loss(single.model, albums) < 0.5 * before
    # the ranks' sampled albums add up: about qN = 16 albums a step in all, not per rank
    sizes = [h["batch_albums"] for h in result.history]
    assert 10 < sum(sizes) / len(sizes) < 22, sizes

    ledger = charge(plan, result.ledger_record("lm"))
    assert ledger["epsilon"] <= 8.0 * 1.001
    path = tmp_path / "privacy_ledger.json"
    path.write_text(json.dumps(ledger))
    verify_ledger(path)
