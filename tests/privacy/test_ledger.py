"""Test 4 and the ledger's contract: ε equals dp-accounting and Opacus' PRV; calibration lands
within 1% below the target; refusals name the budget and shares; every ledger verifies."""

from __future__ import annotations

import json
import math

import dp_accounting as dpa
import pytest
from dp_accounting import pld
from opacus.accountants import PRVAccountant

from dpalbum.privacy import (
    LedgerError,
    PrivacyBudgetExceeded,
    charge,
    mechanism_sigma,
    opacus_prv_epsilon,
    plan_privacy,
    write_ledger,
)

PARAMS = {"epsilon": 10.0, "delta": 1e-5,
          "shares": {"semantic_query": 0.1, "summary_lm": 0.45, "caption_lm": 0.45}}
FIXED_SPEC = [
    {"name": "semantic_query", "kind": "gaussian", "noise_multiplier": 20.0, "l2_sensitivity": 2.0},
    {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 2.0, "expected_batch_albums": 16,
     "steps": 300},
    {"name": "caption_lm", "kind": "dpsgd", "noise_multiplier": 3.0, "expected_batch_albums": 20,
     "epochs": 4},
]
N_ALBUMS = 400


def _direct_pld(sq_sigma, runs, delta):
    """dp-accounting used directly, independently of dpalbum.privacy.accounting."""
    events = [dpa.GaussianDpEvent(sq_sigma)] + [
        dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(s)), t)
        for s, q, t in runs
    ]
    accountant = pld.PLDAccountant()
    accountant.compose(dpa.ComposedDpEvent(events))
    return accountant.get_epsilon(delta)


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")  # Opacus PRV internals
def test_ledger_epsilon_equals_dp_accounting_and_opacus_prv(tmp_path, verify_ledger):
    plan = plan_privacy(PARAMS, N_ALBUMS, FIXED_SPEC)
    runs = [(2.0, 16 / N_ALBUMS, 300), (3.0, 20 / N_ALBUMS, math.ceil(4 * N_ALBUMS / 20))]
    for m, (sigma, q, steps) in zip(plan["mechanisms"][1:], runs):
        assert (m["noise_multiplier"], m["sample_rate"], m["steps"]) == (sigma, pytest.approx(q),
                                                                         steps)
    direct = _direct_pld(20.0, runs, 1e-5)
    prv = PRVAccountant()
    prv.history = [(20.0, 1.0, 1)] + list(runs)
    with pytest.warns(RuntimeWarning):  # Opacus' PRV takes log(0) at q = 1; harmless
        prv_eps = prv.get_epsilon(1e-5)
    assert plan["epsilon"] == pytest.approx(direct, rel=0.02)
    assert plan["epsilon"] == pytest.approx(prv_eps, rel=0.02)
    assert opacus_prv_epsilon(plan["mechanisms"], 1e-5) == pytest.approx(prv_eps, rel=1e-6)
    assert plan["epsilon"] >= direct  # the ledger's PLD grid is the pessimistic one
    assert plan["epsilon_rdp"] > plan["epsilon"]  # RDP is the looser second opinion
    assert plan["album_count"] == "dp" and "Laplace" in plan["n_albums_note"]
    assert plan["noise_source"] == "secure"
    verify_ledger(write_ledger(plan, tmp_path / "plan.json"))


def test_charging_what_ran_recomposes_and_verifies(tmp_path, verify_ledger):
    plan = plan_privacy(PARAMS, N_ALBUMS, FIXED_SPEC)
    ledger = charge(plan, {"name": "semantic_query", "kind": "gaussian",
                           "noise_multiplier": 20.0, "l2_sensitivity": 2.0})
    assert ledger["status"] == "partial" and ledger["epsilon"] == plan["epsilon"]
    ledger = charge(ledger, {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 2.0,
                             "sample_rate": 16 / N_ALBUMS, "steps": 150})  # stopped early
    ledger = charge(ledger, {"name": "caption_lm", "kind": "dpsgd", "noise_multiplier": 3.0,
                             "sample_rate": 20 / N_ALBUMS, "steps": 80})
    assert ledger["status"] == "spent" and ledger["epsilon"] < plan["epsilon"]
    assert ledger["mechanisms"][1]["planned"]["steps"] == 300
    direct = _direct_pld(20.0, [(2.0, 16 / N_ALBUMS, 150), (3.0, 20 / N_ALBUMS, 80)], 1e-5)
    assert ledger["epsilon"] == pytest.approx(direct, rel=0.02)
    json.dumps(ledger, allow_nan=False)  # strict JSON (a Kedro JSONDataset)
    verify_ledger(write_ledger(ledger, tmp_path / "privacy_ledger.json"))
    with pytest.raises(LedgerError, match="already charged"):
        charge(ledger, {"name": "caption_lm", "kind": "dpsgd", "noise_multiplier": 1.3,
                        "sample_rate": 0.05, "steps": 1})
    with pytest.raises(LedgerError, match="not on the plan"):
        charge(ledger, {"name": "renderer", "kind": "dpsgd", "noise_multiplier": 1.0,
                        "sample_rate": 0.05, "steps": 1})


def test_charging_more_than_planned_beyond_budget_is_refused():
    plan = plan_privacy({**PARAMS, "epsilon": 3.0}, N_ALBUMS, [
        {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 2.0,
         "expected_batch_albums": 16, "steps": 100}])
    with pytest.raises(PrivacyBudgetExceeded, match="summary_lm"):
        charge(plan, {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 2.0,
                      "sample_rate": 16 / N_ALBUMS, "steps": 5000})


def test_calibration_lands_within_one_percent_below_target(tmp_path, verify_ledger):
    spec = [{**m, "noise_multiplier": "auto"} for m in FIXED_SPEC]
    plan = plan_privacy({**PARAMS, "epsilon": 4.0}, N_ALBUMS, spec)
    sigmas = [m["noise_multiplier"] for m in plan["mechanisms"]]
    runs = [(s, m["sample_rate"], m["steps"]) for s, m in zip(sigmas[1:], plan["mechanisms"][1:])]
    direct = _direct_pld(sigmas[0], runs, 1e-5)
    assert 0.99 * 4.0 <= direct <= 4.0
    assert 0.99 * 4.0 <= plan["epsilon"] <= 4.0
    # shares split the budget: the 10% query spends less on its own than each 45% run
    alone = {m["name"]: m["epsilon_alone"] for m in plan["mechanisms"]}
    assert alone["semantic_query"] < alone["summary_lm"]
    assert mechanism_sigma(plan, "semantic_query") == sigmas[0]
    verify_ledger(write_ledger(plan, tmp_path / "calibrated.json"))


def test_calibration_with_a_fixed_mechanism_fills_the_rest():
    spec = [FIXED_SPEC[0], {**FIXED_SPEC[1], "noise_multiplier": "auto"}]
    plan = plan_privacy({**PARAMS, "epsilon": 3.0}, N_ALBUMS, spec)
    assert plan["mechanisms"][0]["noise_multiplier"] == 20.0
    assert 0.99 * 3.0 <= plan["epsilon"] <= 3.0


def test_over_budget_plan_is_refused_naming_budget_plan_and_shares():
    spec = [{**FIXED_SPEC[0], "noise_multiplier": 0.5}, {**FIXED_SPEC[1], "noise_multiplier": 0.6}]
    with pytest.raises(PrivacyBudgetExceeded) as err:
        plan_privacy(PARAMS, N_ALBUMS, spec)
    message = str(err.value)
    assert "budget ε=10" in message and "before reading any private data" in message
    for name in ("semantic_query", "summary_lm"):
        assert name in message
    assert "share=" in message and "ε alone=" in message


def test_delta_at_least_one_over_n_warns():
    with pytest.warns(UserWarning, match="1/N"):
        plan_privacy({**PARAMS, "delta": 1e-2}, 100, FIXED_SPEC[:1])


def test_unsupported_accountant_and_missing_share_are_errors():
    with pytest.raises(ValueError, match="PLD"):
        plan_privacy({**PARAMS, "accountant": "rdp"}, N_ALBUMS, FIXED_SPEC[:1])
    with pytest.raises(LedgerError, match="share"):
        plan_privacy(PARAMS, N_ALBUMS, [{"name": "renderer", "kind": "gaussian"}])


def test_infinite_epsilon_is_a_loud_baseline(tmp_path, verify_ledger, caplog):
    with caplog.at_level("WARNING"):
        plan = plan_privacy({**PARAMS, "epsilon": ".inf"}, N_ALBUMS, FIXED_SPEC)
    assert "NON-PRIVATE BASELINE" in caplog.text
    assert plan["baseline"] is True and plan["epsilon"] == "inf"
    assert all(m["noise_multiplier"] == 0.0 for m in plan["mechanisms"])
    ledger = charge(plan, {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 0.0,
                           "sample_rate": 0.04, "steps": 10})
    out = verify_ledger(write_ledger(ledger, tmp_path / "baseline.json"))
    assert "reported ε=inf" in out


def test_epsilon_after_each_step_equals_composing_each_prefix_from_scratch():
    """The ε-per-step curve (MLflow's dpsgd.*.epsilon_spent) reuses one PLD per mechanism; each
    point must be the very float a fresh composition of that prefix gives."""
    from dpalbum.privacy.accounting import (
        SEARCH_DISCRETIZATION,
        pld_epsilon,
        pld_epsilon_after_steps,
    )

    before = [{"name": "album_count", "kind": "laplace", "noise_multiplier": 20.0},
              {"name": "semantic_query", "kind": "gaussian", "noise_multiplier": 8.0},
              {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 1.1,
               "sample_rate": 0.05, "steps": 300}]
    caption = {"name": "caption_lm", "kind": "dpsgd", "noise_multiplier": 0.9,
               "sample_rate": 0.08, "steps": 500}
    steps = [1, 2, 37, 250, 500]
    curve = pld_epsilon_after_steps(before, caption, steps, 1e-5,
                                    discretization=SEARCH_DISCRETIZATION)
    assert curve == [pld_epsilon([*before, {**caption, "steps": s}], 1e-5,
                                 discretization=SEARCH_DISCRETIZATION) for s in steps]
    assert curve == sorted(curve) and curve[0] > pld_epsilon(before, 1e-5,
                                                             discretization=SEARCH_DISCRETIZATION)
    assert pld_epsilon_after_steps(before, {**caption, "noise_multiplier": 0.0}, steps,
                                   1e-5) == [math.inf] * len(steps)
