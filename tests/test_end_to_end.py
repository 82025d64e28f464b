"""One end-to-end KedroSession run of the text path on a tiny demo world, in a temp project."""

from __future__ import annotations

import functools
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.privacy.conftest import run_verifiers

ROOT = Path(__file__).resolve().parents[1]
TEXT_PATH = ["demo_world", "privacy_plan", "captioning", "dp_training", "sampling",
             "text_filtering"]
LM = {"model": {"n_layer": 1, "n_embd": 32, "n_head": 2},
      "pretrain": {"epochs": 1}, "dp": {"expected_batch_albums": 6, "epochs": 2}}
TINY = {  # the shipped configuration, shrunk: same nodes, same code paths
    "demo_world": {"n_public_images": 600, "n_private_albums": 24, "n_heldout_albums": 6},
    "captioning": {"captioner": {"epochs": 2, "channels": [8, 16]}},
    "dp_training": {"pseudo_albums": {"n_albums": 60}, "summary_lm": LM, "caption_lm": LM,
                    "selection": {"fraction": 0.5}},
    "sampling": {"n_albums": 8, "show_progress": False},
}


@functools.cache
def empty_mlflow_store() -> Path:
    """An MLflow SQLite store with every migration applied and no experiment, made once per
    test process: MLflow builds a new store by running ~100 schema migrations (about 6 s of CPU),
    and a dozen test projects each built their own. On first use MLflow creates the Default
    experiment in it, with the artifact root of the project it then serves."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="dpalbum-empty-mlflow-store-"))
    store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "mlruns"))
    store.engine.dispose()
    with sqlite3.connect(folder / "mlflow.db") as db:
        db.execute("DELETE FROM experiment_tags")
        db.execute("DELETE FROM experiments")
    return folder / "mlflow.db"


def make_project(dest: Path) -> Path:
    """A copy of the project's config in ``dest`` (data and MLflow store land there too)."""
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "conf", dest / "conf", ignore=shutil.ignore_patterns("local"))
    (dest / "conf" / "local").mkdir()
    (dest / "src").mkdir()  # bootstrap_project wants a source dir; dpalbum is installed
    shutil.copy(empty_mlflow_store(), dest / "mlflow.db")  # conf's store: sqlite:///mlflow.db
    return dest


def run_session(project: Path, pipelines: list[str], params: dict, **run_args) -> None:
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    while mlflow.active_run() is not None:  # each session its own MLflow run
        mlflow.end_run()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=pipelines, **run_args)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("dpalbum_project"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)  # catalog paths and the sqlite MLflow store are relative to the cwd
        run_session(project, TEXT_PATH, TINY)
    return project


def test_text_path_writes_a_verified_ledger(project):
    # the text path's ledger (the rendering pipeline releases privacy_ledger.json from it)
    ledger_path = project / "data/08_reporting/text_privacy_ledger.json"
    run_verifiers(ledger_path, "--strict")  # --strict: the default noise must be secure
    ledger = json.loads(ledger_path.read_text())
    assert ledger["epsilon"] <= ledger["budget_epsilon"] == 10.0
    assert ledger["noise_source"] == "secure" and ledger["album_count"] == "dp"
    names = [m["name"] for m in ledger["mechanisms"]]
    assert names == ["album_count", "semantic_query", "summary_lm", "caption_lm"]
    for m in ledger["mechanisms"][2:]:  # uninterrupted: the plan's reserve steps are unused
        assert m["steps"] == m["train_steps"] < m["planned"]["steps"]
    # N is released by the DP count: the plan's N is that count, not the true 24
    assert ledger["n_albums"] >= 1 and "Laplace" in ledger["n_albums_note"]
    history = json.loads((project / "data/08_reporting/dp_training_history.json").read_text())
    assert history["internal"] is True
    sizes = {role: [h["batch_albums"] for h in history["steps"] if h["role"] == role]
             for role in ("summary_lm", "caption_lm")}
    assert sizes["summary_lm"] != sizes["caption_lm"]  # independent Poisson streams
    text = ledger_path.read_text().lower() + (project / "mlflow.db").read_bytes().decode(
        "latin-1").lower()
    assert "noise_seed" not in text


def test_runs_on_the_same_albums_add_up_on_one_account(project):
    account = project / "data/08_reporting/privacy_account.json"
    doc = json.loads(account.read_text())
    (entry,) = doc["datasets"].values()
    assert doc["internal"] is True
    names = [c["mechanism"]["name"] for c in entry["charges"]]
    assert names == ["album_count", "semantic_query", "summary_lm", "caption_lm"]
    done = subprocess.run([sys.executable, str(ROOT / "scripts/verify_ledger.py"), "--account",
                           str(account)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_text_path_curates_synthetic_album_texts(project):
    curated = pd.read_parquet(project / "data/07_model_output/curated_texts.parquet")
    report = json.loads((project / "data/08_reporting/text_filtering_report.json").read_text())
    assert report["totals"]["albums_in"] == 8
    assert report["totals"]["albums_out"] == len(curated)
    assert report["reads"] == ["synthetic_texts"]
    ingestion = json.loads((project / "data/08_reporting/ingestion_report.json").read_text())
    assert ingestion["albums_read"] == 24


def test_every_run_is_an_mlflow_run_with_params_epsilon_and_models(project):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dpalbum")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["privacy.unit"] == "album"
    assert float(run.data.tags["privacy.epsilon"]) <= 10.0
    assert run.data.params["demo_world.n_private_albums"] == "24"
    assert "privacy_metrics.privacy_epsilon" in run.data.metrics
    models = {a.path for a in client.list_artifacts(run.info.run_id, "models")}
    assert {"models/summary_lm", "models/caption_lm", "models/captioner_model"} <= models


def test_kedro_viz_serves_every_node_and_previews_no_private_data(project, monkeypatch):
    """kedro-viz's own API on the run's project: every node answers 200 (no preview it cannot
    serialise), private and internal datasets carry no preview, and no run left a
    .viz/stats.json of dataset sizes behind."""
    from fastapi.testclient import TestClient
    from kedro_viz.api.apps import create_api_app_from_project
    from kedro_viz.server import load_and_populate_data

    monkeypatch.chdir(project)
    assert not (project / ".viz" / "stats.json").exists()
    load_and_populate_data(project)
    client = TestClient(create_api_app_from_project(project))
    graph = client.get("/api/main")
    assert graph.status_code == 200
    nodes = [n for n in graph.json()["nodes"] if n["type"] == "data"]
    access = {name: (spec.get("metadata") or {}).get("dpalbum", {}).get("access")
              for path in (project / "conf" / "base").glob("catalog*.yml")
              for name, spec in yaml.safe_load(path.read_text()).items()
              if not name.startswith("_")}
    previewed = []
    for node in nodes:
        response = client.get(f"/api/nodes/{node['id']}")
        assert response.status_code == 200, (node["name"], response.text[:300])
        if "preview" in response.json():
            previewed.append(node["name"])
            if node["name"] in ("public_corpus", "synthetic_texts"):
                assert response.json()["preview_type"] == "TablePreview"
            assert access.get(node["name"]) in ("public", "released"), node["name"]
    assert "public_album_texts" in previewed and "synthetic_texts" in previewed  # previews work


def test_a_run_killed_mid_fine_tune_cannot_release_a_wrong_epsilon(project, monkeypatch):
    """(Last: it changes the project.) A run at another ε that dies after the summary LM (before
    the caption LM and the ledger) leaves a new summary_lm beside the old ledger: sampling must
    refuse, naming the stale model."""
    from dpalbum.privacy import StaleReleaseError

    monkeypatch.chdir(project)
    old_ledger = (project / "data/08_reporting/text_privacy_ledger.json").read_text()
    params = {**TINY, "privacy": {"epsilon": 4.0}}
    run_session(project, ["privacy_plan", "dp_training"], params,
                to_nodes=["dp_finetune_summary_lm_node"])  # "killed" before the caption LM
    assert (project / "data/08_reporting/text_privacy_ledger.json").read_text() == old_ledger
    with pytest.raises(Exception) as caught:
        run_session(project, ["sampling"], TINY)
    chain, err = [], caught.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    stale = [e for e in chain if isinstance(e, StaleReleaseError)]
    assert stale and "summary_lm" in str(stale[0]) and "plan" in str(stale[0])
