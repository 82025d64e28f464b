"""The trainer's contract with pipelines: config from the plan, ε per epoch, ledger record."""

from __future__ import annotations

import pytest

from dpalbum.privacy import (
    DPSGDConfig,
    charge,
    ledger_metrics,
    ledger_tags,
    plan_privacy,
    train_dp,
)
from tests.privacy.tiny_models import replay

from .tiny_models import (
    TinyRegressor,
    make_regression_albums,
    regression_collate,
    regression_row_loss,
)


def test_plan_to_config_to_ledger_with_epsilon_each_epoch():
    albums = make_regression_albums(20)
    plan = plan_privacy(
        {"epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 0.7},
        len(albums),
        {
            "lm": {
                "kind": "dpsgd",
                "noise_multiplier": 2.0,
                "expected_batch_albums": 10,
                "epochs": 3,
                "epsilon_share": 1.0,
            }
        },
    )
    config = DPSGDConfig.from_plan(
        plan, "lm", {"physical_batch_rows": 8}, lr=0.01, noise_source=replay(0)
    )
    assert (config.sample_rate, config.steps, config.max_grad_norm) == (0.5, 6, 0.7)
    assert config.physical_batch_rows == 8 and config.delta == 1e-5
    logged: list[tuple[int, float]] = []

    def on_epoch(metrics: dict[str, float], step: int) -> None:  # e.g. mlflow.log_metrics
        logged.append((step, metrics["dp_epsilon"]))

    result = train_dp(
        TinyRegressor(),
        albums,
        regression_row_loss,
        regression_collate,
        config,
        progress=False,
        on_epoch=on_epoch,
    )
    assert [s for s, _ in logged] == [2, 4, 6]  # every 1/q = 2 steps
    assert logged[0][1] < logged[1][1] < logged[2][1] == pytest.approx(result.epsilon_so_far)
    ledger = charge(plan, result.ledger_record("lm"))
    assert ledger["epsilon"] == pytest.approx(result.epsilon_so_far)
    assert ledger_metrics(ledger)["privacy_epsilon"] == {"value": ledger["epsilon"], "step": 0}
    assert ledger_tags(ledger)["privacy.unit"] == "album"
    with pytest.raises(KeyError):
        DPSGDConfig.from_plan(plan, "missing")


def test_physical_batch_rows_is_a_memory_knob_not_a_privacy_one():
    """Opacus' BatchMemoryManager role: the logical (Poisson) batch is split into micro-batches
    of ``physical_batch_rows`` rows; the trained weights do not depend on that split."""
    import torch

    albums = make_regression_albums(24, max_rows=5)

    def trained(physical: int) -> torch.Tensor:
        torch.manual_seed(0)
        config = DPSGDConfig(
            noise_multiplier=1.0,
            steps=4,
            expected_batch_albums=12.0,
            lr=0.05,
            noise_source=replay(3),
            physical_batch_rows=physical,
        )
        result = train_dp(
            TinyRegressor(), albums, regression_row_loss, regression_collate, config, progress=False
        )
        return torch.cat([p.detach().flatten() for p in result.model.parameters()])

    torch.manual_seed(0)
    initial = torch.cat([p.detach().flatten() for p in TinyRegressor().parameters()])
    one_row, all_rows = trained(1), trained(256)
    assert not torch.allclose(one_row, initial, atol=1e-3)  # the steps did move the weights
    assert torch.allclose(one_row, all_rows, atol=1e-5)
