"""Issue 12: every execution on the same albums is charged to one cumulative account; a charge past
the lifetime budget is refused with the account's history; the project's verifier recomposes it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid

import pytest

from dpalbum.privacy import PrivacyAccount, PrivacyBudgetExceeded, dataset_key

from .conftest import OWN_VERIFIER

DELTA = 1e-5
ALBUMS = [f"album-{i:03d}" for i in range(40)]
LM = {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 1.2, "sample_rate": 0.1,
      "steps": 40}


def _plan() -> dict:
    return {"plan_id": uuid.uuid4().hex, "delta": DELTA, "config_fingerprint": "test"}


def _verify(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(OWN_VERIFIER), "--account", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_rerunning_a_mechanism_raises_the_accounts_epsilon_and_verifies(tmp_path):
    account = PrivacyAccount(tmp_path / "account.json")
    key, plan = dataset_key(ALBUMS), _plan()
    account.open_plan(plan, key)
    first = account.charge(plan, LM, math.inf)
    eps_one = account.epsilon(key, DELTA)
    # the same mechanism on the same plan again (a re-run): a new charge, never deduplicated
    second = account.charge(plan, LM, math.inf)
    eps_two = account.epsilon(key, DELTA)
    assert first != second and len(account.charges(key)) == 2
    assert eps_one > 0 and eps_two > 1.2 * eps_one, (eps_one, eps_two)
    # a new plan on the same albums (same key: the ids, whatever their order) adds up as well
    other = _plan()
    account.open_plan(other, dataset_key(list(reversed(ALBUMS))))
    account.charge(other, LM, math.inf)
    assert account.epsilon(key, DELTA) > eps_two
    # settling to what actually ran replaces the planned record
    account.settle(plan, second, {**LM, "steps": 10})
    assert [c["mechanism"]["steps"] for c in account.charges(key)] == [40, 10, 40]
    assert json.loads(account.path.read_text())["datasets"][key]["epsilon"] == pytest.approx(
        account.epsilon(key, DELTA))

    done = _verify(account.path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 charges" in done.stdout
    # teeth: the verifier refuses an account that under-reports its ε
    doc = json.loads(account.path.read_text())
    doc["datasets"][key]["epsilon"] = eps_one
    account.path.write_text(json.dumps(doc))
    assert _verify(account.path).returncode == 1


def test_charge_past_the_lifetime_budget_is_refused_with_the_history(tmp_path):
    account = PrivacyAccount(tmp_path / "account.json")
    key, plan = dataset_key(ALBUMS), _plan()
    account.open_plan(plan, key)
    account.charge(plan, LM, math.inf)
    eps_one = account.epsilon(key, DELTA)
    lifetime = 1.2 * eps_one  # room for one run, not for two
    with pytest.raises(PrivacyBudgetExceeded) as refused:
        account.charge(plan, LM, lifetime)
    message = str(refused.value)
    assert "History of this dataset" in message
    assert f"plan {plan['plan_id'][:8]} summary_lm" in message  # the earlier charge, listed
    assert "steps=40" in message and "[charged]" in message
    assert f"lifetime_epsilon={lifetime:g}" in message
    assert len(account.charges(key)) == 1  # refused before anything was charged (or read)
    assert account.epsilon(key, DELTA) == pytest.approx(eps_one)
    done = _verify(account.path)
    assert done.returncode == 0, done.stdout + done.stderr
