"""One end-to-end KedroSession run of the text path on a tiny demo world, in a temp project."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
VERIFY = ROOT.parent / "shared" / "tools" / "verify_ledger.py"
TEXT_PATH = ["demo_world", "captioning", "dp_training", "sampling", "text_filtering"]
LM = {"model": {"n_layer": 1, "n_embd": 32, "n_head": 2},
      "pretrain": {"epochs": 1}, "dp": {"expected_batch_albums": 6, "epochs": 2}}
TINY = {  # the shipped configuration, shrunk: same nodes, same code paths
    "demo_world": {"n_public_images": 600, "n_private_albums": 24, "n_heldout_albums": 6},
    "captioning": {"captioner": {"epochs": 2, "channels": [8, 16]}},
    "dp_training": {"pseudo_albums": {"n_albums": 60}, "summary_lm": LM, "caption_lm": LM,
                    "selection": {"fraction": 0.5}},
    "sampling": {"n_albums": 8, "show_progress": False},
}


def make_project(dest: Path) -> Path:
    """A copy of the project's config in ``dest`` (data and MLflow store land there too)."""
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "conf", dest / "conf", ignore=shutil.ignore_patterns("local"))
    (dest / "conf" / "local").mkdir()
    (dest / "src").mkdir()  # bootstrap_project wants a source dir; dpalbum is installed
    return dest


def run_session(project: Path, pipelines: list[str], params: dict) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=pipelines)


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
    check = subprocess.run([sys.executable, str(VERIFY), str(ledger_path)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout
    ledger = json.loads(ledger_path.read_text())
    assert ledger["epsilon"] <= ledger["budget_epsilon"] == 10.0
    assert ledger["n_albums"] == 24


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
