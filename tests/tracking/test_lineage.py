"""Lineage and privacy spending on every MLflow run: git commit and dirty flag, dvc.lock hash, the
ε spent per DP-SGD step (released, from the ledger) and the training losses (INTERNAL: never on
the released run or its experiment)."""

from __future__ import annotations

import hashlib
import subprocess

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from dpalbum.hooks import MlflowLineageHook
from dpalbum.tracking.lineage import (
    INTERNAL_TAG,
    _sample_steps,
    dvc_lock_tags,
    epsilon_histories,
    git_tags,
    log_epsilon_histories,
    log_internal_histories,
)
from tests.tracking.conftest import spent_ledger


def git(folder, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_git_tags_name_the_commit_and_whether_the_checkout_was_dirty(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "nodes.py").write_text("x = 1\n")
    git(tmp_path, "add", "nodes.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean = git_tags(tmp_path)
    assert clean["dpalbum.git.commit"] == clean["mlflow.source.git.commit"] == git(
        tmp_path, "rev-parse", "HEAD")
    assert clean["dpalbum.git.dirty"] == "false" and "dpalbum.git.diff_sha256" not in clean
    (tmp_path / "nodes.py").write_text("x = 2\n")
    edited = git_tags(tmp_path)
    assert edited["dpalbum.git.dirty"] == "true"
    (tmp_path / "new_module.py").write_text("y = 1\n")  # untracked code counts too
    added = git_tags(tmp_path)
    assert edited["dpalbum.git.diff_sha256"] != added["dpalbum.git.diff_sha256"]


def test_outside_git_the_commit_is_unknown_and_dvc_lock_is_hashed_when_present(tmp_path):
    assert git_tags(tmp_path)["dpalbum.git.commit"].startswith("unknown")
    assert dvc_lock_tags(tmp_path) == {"dpalbum.dvc.lock_sha256": "absent"}
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    assert dvc_lock_tags(tmp_path) == {
        "dpalbum.dvc.lock_sha256": hashlib.sha256(b"schema: '2.0'\n").hexdigest()}


def test_the_lineage_hook_tags_the_run_once(store, tmp_path):
    (tmp_path / "dvc.lock").write_text("stages: {}\n")
    hook = MlflowLineageHook()
    hook._project = tmp_path
    with mlflow.start_run() as run:
        hook.before_pipeline_run({}, None, None)
        hook.before_node_run(None, None, {}, False, None)
        (tmp_path / "dvc.lock").write_text("changed during the run\n")
        hook.before_node_run(None, None, {}, False, None)  # later nodes do not re-tag
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["dpalbum.dvc.lock_sha256"] == hashlib.sha256(b"stages: {}\n").hexdigest()
    assert tags["dpalbum.git.commit"].startswith("unknown")


def test_sampled_steps_keep_the_first_and_last_step():
    assert _sample_steps(6, 20) == [1, 2, 3, 4, 5, 6]
    steps = _sample_steps(57, 20)
    assert len(steps) == 20 and steps[0] == 1 and steps[-1] == 57 and steps == sorted(steps)


def test_epsilon_per_step_grows_to_the_ledgers_epsilon():
    ledger = spent_ledger()
    histories = epsilon_histories(ledger)
    assert [s for s, _ in histories["summary_lm"]] == list(range(1, 11))
    assert [s for s, _ in histories["caption_lm"]] == list(range(1, 7))
    values = [e for name in ("summary_lm", "caption_lm") for _, e in histories[name]]
    assert values == sorted(values) and values[0] > 0
    assert values[-1] == pytest.approx(ledger["epsilon"], rel=1e-9)  # the whole spend at the end
    assert epsilon_histories(spent_ledger(float("inf"))) == {}  # baseline: ∞ from the first step
    assert list(epsilon_histories(ledger, skip=["summary_lm"])) == ["caption_lm"]


def test_epsilon_histories_go_on_the_released_run_losses_to_the_internal_experiment(store):
    client = MlflowClient()
    history = {"internal": True, "steps": [
        {"role": role, "step": step, "batch_albums": 5, "loss": 1.0 / step,
         "clipped_fraction": 0.5} for role in ("summary_lm", "caption_lm") for step in (1, 2, 3)]}
    with mlflow.start_run() as run:
        logged = log_epsilon_histories(client, run.info.run_id, spent_ledger())
        again = log_epsilon_histories(client, run.info.run_id, spent_ledger(), skip=logged)
        internal_id = log_internal_histories(client, mlflow.active_run(), history, "internal-x")
    assert logged == ["summary_lm", "caption_lm"] and again == []
    steps = [m.step for m in client.get_metric_history(run.info.run_id,
                                                        "dpsgd.caption_lm.epsilon_spent")]
    assert steps == list(range(1, 7))
    released = client.get_run(run.info.run_id)
    assert not [k for k in released.data.metrics if "loss" in k or "clipped" in k]
    internal = client.get_run(internal_id)
    assert internal.data.tags[INTERNAL_TAG] == "true"
    assert internal.data.tags["dpalbum.released_run_id"] == run.info.run_id
    assert [m.value for m in client.get_metric_history(internal_id, "dpsgd.summary_lm.loss")] == [
        1.0, 0.5, pytest.approx(1 / 3)]
    experiment = client.get_experiment(internal.info.experiment_id)
    assert experiment.name == "dpalbum-internal"  # never in the released experiment
    assert experiment.experiment_id != released.info.experiment_id
    assert client.search_runs([released.info.experiment_id],
                              f"tags.`{INTERNAL_TAG}` = 'true'") == []
