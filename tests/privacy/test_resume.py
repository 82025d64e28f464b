"""Test 6: stop after k steps, resume, finish: steps, ε and parameters equal an uninterrupted run.

The model has dropout (torch's global RNG) and Adam (optimizer state), so every piece of state
the checkpoint must carry — weights, optimizer, step, sampler and noise generators, global RNG,
accountant history — shows up in the final parameters if it is lost.
"""

from __future__ import annotations

import pytest
import torch

from dpalbum.privacy import DPSGDConfig, charge, plan_privacy, train_dp, write_ledger
from tests.privacy.tiny_models import replay

from .tiny_models import (
    TinyRegressor,
    make_regression_albums,
    regression_collate,
    regression_row_loss,
)

STEPS, STOP = 12, 5


def _config(**kw) -> DPSGDConfig:
    return DPSGDConfig(
        noise_multiplier=1.2,
        steps=STEPS,
        expected_batch_albums=6,
        lr=0.01,
        optimizer="adam",
        noise_source=replay(7),
        physical_batch_rows=4,
        **kw,
    )


def _fresh_model() -> TinyRegressor:
    torch.manual_seed(0)
    return TinyRegressor(dropout=0.3)


def _train(config, stop_after=None):
    return train_dp(
        _fresh_model(),
        make_regression_albums(30),
        regression_row_loss,
        regression_collate,
        config,
        progress=False,
        stop_after=stop_after,
    )


def test_stop_resume_finish_equals_uninterrupted(tmp_path, verify_ledger):
    straight = _train(_config())
    stopped = _train(_config(checkpoint_dir=str(tmp_path / "ckpt")), stop_after=STOP)
    assert stopped.steps_taken == STOP and not stopped.completed
    assert stopped.accountant_history == [(1.2, 0.2, STOP)]  # ε so far counts what ran
    assert 0 < stopped.epsilon_so_far < straight.epsilon_so_far
    resumed = _train(_config(checkpoint_dir=str(tmp_path / "ckpt")))  # a new process, say
    assert resumed.completed and resumed.steps_taken == straight.steps_taken == STEPS
    assert resumed.accountant_history == straight.accountant_history == [(1.2, 0.2, STEPS)]
    assert resumed.epsilon_so_far == pytest.approx(straight.epsilon_so_far, rel=1e-12)
    assert [h["batch_albums"] for h in resumed.history] == [
        h["batch_albums"] for h in straight.history
    ]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    plan = plan_privacy(
        {"epsilon": 10.0, "delta": 1e-5, "shares": {"lm": 1.0}},
        30,
        [
            {
                "name": "lm",
                "kind": "dpsgd",
                "noise_multiplier": 1.2,
                "expected_batch_albums": 6,
                "steps": STEPS,
            }
        ],
    )
    ledger = charge(plan, resumed.ledger_record("lm"))
    assert ledger["mechanisms"][0]["steps"] == STEPS
    verify_ledger(write_ledger(ledger, tmp_path / "privacy_ledger.json"))


def test_resume_with_other_privacy_parameters_is_refused(tmp_path):
    _train(_config(checkpoint_dir=str(tmp_path)), stop_after=2)
    other = DPSGDConfig(
        noise_multiplier=0.8,
        steps=STEPS,
        expected_batch_albums=6,
        noise_source=replay(7),
        checkpoint_dir=str(tmp_path),
    )
    with pytest.raises(ValueError, match="refusing to resume"):
        _train(other)


def test_infinite_epsilon_baseline_is_loud_and_unclipped(caplog):
    config = DPSGDConfig(
        noise_multiplier=0.0,
        steps=3,
        expected_batch_albums=6,
        noise_source=replay(1),
        epsilon_inf_baseline=True,
    )
    with caplog.at_level("WARNING"):
        result = _train(config)
    assert "NON-PRIVATE BASELINE" in caplog.text
    assert (
        result.epsilon_so_far == float("inf")
        and result.ledger_record("x")["noise_multiplier"] == 0.0
    )
    with pytest.raises(ValueError, match="epsilon_inf_baseline"):
        _train(DPSGDConfig(noise_multiplier=0.0, steps=3, expected_batch_albums=6))
