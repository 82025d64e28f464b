"""kill -9 in the middle of a DP-SGD job, then run again: the plan is resumed (same N̂, σ, q), the
job continues from its checkpoint, and the ledger and the account count every step ever started
(secure noise: the steps lost after the last checkpoint are charged again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# One "run" of a tiny project: plan (with checkpoints), then one DP-SGD job. With KILL_AT set,
# the process SIGKILLs itself inside the row loss of that (1-based) step: a real kill -9.
RUN = r"""
import json, os, signal, sys
import torch
from dpalbum import privacy
from tests.privacy.tiny_models import (TinyRegressor, make_regression_albums, regression_collate,
                                       regression_row_loss)

out, kill_at = sys.argv[1], int(sys.argv[2])
params = {"epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 1.0, "lifetime_epsilon": 100,
          # a large count share keeps N̂ within a few albums of 40: ~10 steps, killed in step 7
          "shares": {"album_count": 0.5, "summary_lm": 0.25, "caption_lm": 0.25},
          "checkpoint_dir": out + "/ckpt",
          "checkpoint_every": 4, "physical_batch_rows": 10000}  # one loss call per step
dp_training = {"selection": {"mode": "none"},
               "summary_lm": {"dp": {"expected_batch_albums": 8, "epochs": 2}},
               "caption_lm": {"dp": {"expected_batch_albums": 8, "epochs": 2}}}
albums = make_regression_albums(40)
account = privacy.PrivacyAccount(out + "/account.json")
plan = privacy.plan_run([f"a{i}" for i in range(40)], account, params, dp_training, {})
calls = {"n": 0}

def row_loss(model, batch):
    calls["n"] += 1
    if kill_at and calls["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return regression_row_loss(model, batch)

torch.manual_seed(0)
result, ledger = privacy.finetune(TinyRegressor(), albums, row_loss, regression_collate,
                                  ledger=plan, mechanism="summary_lm", privacy_params=params,
                                  account=account, lr=0.05, public_seed=0, progress=False)
json.dump({"plan_id": plan["plan_id"], "n_albums": plan["n_albums"], "ledger": ledger,
           "train_steps": next(m for m in plan["mechanisms"] if m["name"] == "summary_lm")
           ["train_steps"]}, open(out + "/result.json", "w"))
"""


def _run(tmp_path: Path, kill_at: int) -> subprocess.CompletedProcess:
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the script imports tests.privacy.*
    return subprocess.run([sys.executable, str(script), str(tmp_path), str(kill_at)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_kill_9_mid_fine_tune_then_rerun_resumes_and_counts_every_step(tmp_path):
    killed = _run(tmp_path, kill_at=7)  # one physical batch per step here: dies in step 7
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "result.json").exists()
    account = json.loads((tmp_path / "account.json").read_text())
    (entry,) = account["datasets"].values()
    first = [c for c in entry["charges"] if c["mechanism"]["name"] == "summary_lm"]
    assert len(first) == 1 and first[0]["status"] == "charged"  # charged in full before it ran

    done = _run(tmp_path, kill_at=0)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    plan_ids = list(account["plans"])
    assert result["plan_id"] == plan_ids[0], "the killed run's plan was not resumed"
    assert "resuming it" in done.stderr
    spent = next(m for m in result["ledger"]["mechanisms"] if m["name"] == "summary_lm")
    # checkpoint at step 4; steps 5, 6 and 7 were started and lost; secure noise cannot replay
    # them, so they are counted on top of the planned steps
    assert spent["steps"] == result["train_steps"] + 3, (spent["steps"], result)
    assert spent["steps"] <= spent["planned"]["steps"]  # within the plan's reserve: released
    assert result["ledger"]["epsilon"] > 0
    account = json.loads((tmp_path / "account.json").read_text())
    (entry,) = account["datasets"].values()
    charges = [c for c in entry["charges"] if c["mechanism"]["name"] == "summary_lm"]
    assert len(charges) == 1 and charges[0]["status"] == "ran"  # the resumed job's one charge
    assert charges[0]["mechanism"]["steps"] == spent["steps"]
    counts = [c for c in entry["charges"] if c["mechanism"]["name"] == "album_count"]
    assert len(counts) == 1, "a resumed plan must not count the albums again"
    verify = subprocess.run([sys.executable, str(ROOT / "scripts/verify_ledger.py"), "--account",
                             str(tmp_path / "account.json")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
