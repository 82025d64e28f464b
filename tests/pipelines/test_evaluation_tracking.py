"""The evaluation catalog entries as written in conf/base/catalog_evaluation.yml: metrics, tags,
metrics.json and report.html land in an MLflow run (a temporary sqlite store here)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from kedro.io import DataCatalog
from mlflow.tracking import MlflowClient

from dpalbum.pipelines.evaluation import report
from dpalbum.pipelines.evaluation.datasets import MlflowTagsDataset, OptionalFileDataset
from tests.pipelines.test_evaluation_world import ledger

CATALOG = Path(__file__).resolve().parents[2] / "conf/base/catalog_evaluation.yml"


def _catalog(tmp_path: Path) -> DataCatalog:
    """The project's evaluation catalog with every file path moved under tmp_path."""
    config = yaml.safe_load(CATALOG.read_text())

    def move(entry):
        if isinstance(entry, dict):
            return {k: (str(tmp_path / v) if k in ("filepath", "path") else move(v))
                    for k, v in entry.items()}
        return entry

    return DataCatalog.from_config({name: move(entry) for name, entry in config.items()})


@pytest.fixture(scope="module")
def experiment_id(tmp_path_factory):
    """One temporary sqlite store per module (creating one takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    yield mlflow.create_experiment("evaluation-test",
                                   artifact_location=(root / "artifacts").as_uri())
    mlflow.set_tracking_uri(None)


@pytest.fixture
def mlflow_run(experiment_id):
    with mlflow.start_run(experiment_id=experiment_id) as run:
        yield run.info.run_id


def test_metrics_tags_and_artifacts_reach_the_run(tmp_path, mlflow_run):
    catalog = _catalog(tmp_path)
    doc = report.assemble_metrics(ledger(), [
        report.section("image_fidelity", internal=True, metrics={"local_fd": 3.5, "kid": 0.02}),
        report.section("privacy_audit", internal=True, absent="not an audit run")])
    catalog.save("evaluation_metrics", doc)
    catalog.save("evaluation_mlflow_metrics", report.mlflow_metrics(doc))
    catalog.save("evaluation_run_tags", report.privacy_tags(ledger()))
    catalog.save("evaluation_report", "<html><body>report</body></html>")

    run = MlflowClient().get_run(mlflow_run)
    assert run.data.metrics["eval.image_fidelity.local_fd"] == 3.5
    assert run.data.metrics["eval.privacy.epsilon"] == 8.0
    assert run.data.tags["privacy.epsilon"] == "8"
    assert run.data.tags["privacy.delta"] == "1e-05"
    assert run.data.tags["privacy.unit"] == "album"
    artifacts = {a.path for a in MlflowClient().list_artifacts(mlflow_run)}
    assert {"metrics.json", "report.html"} <= artifacts
    saved = json.loads((tmp_path / "data/08_reporting/metrics.json").read_text())
    assert saved["absent"] == {"privacy_audit": "not an audit run"}
    assert catalog.load("evaluation_metrics") == saved


def test_tags_dataset_without_a_run_logs_nothing(experiment_id, caplog):
    assert mlflow.active_run() is None
    MlflowTagsDataset().save({"privacy.epsilon": "1"})  # no active run: warn, start no run
    assert "no active MLflow run" in caplog.text
    assert mlflow.active_run() is None


def test_tags_dataset_respects_kedro_mlflow_switch(tmp_path, mlflow_run):
    dataset = MlflowTagsDataset(prefix="dp")
    dataset._logging_activated = False  # what kedro-mlflow does when tracking is disabled
    dataset.save({"epsilon": "1"})
    assert "dp.epsilon" not in MlflowClient().get_run(mlflow_run).data.tags
    dataset._logging_activated = True
    dataset.save({"epsilon": "1"})
    assert dataset.load() == {"epsilon": "1"}


def test_optional_file_dataset(tmp_path):
    dataset = OptionalFileDataset(str(tmp_path / "plot.png"))
    assert dataset.load() is None and not dataset.exists()
    dataset.save(b"\x89PNG...")
    assert dataset.load() == b"\x89PNG..." and dataset.exists()


def test_catalog_names_match_the_pipeline():
    from dpalbum.pipelines.evaluation import create_pipeline

    config = yaml.safe_load(CATALOG.read_text())
    outputs = create_pipeline().all_outputs()
    persisted = {"evaluation_network", "heldout_album_texts", "evaluation_metrics",
                 "evaluation_mlflow_metrics", "evaluation_run_tags", "evaluation_report"}
    assert persisted <= outputs and persisted <= set(config)
    assert "privacy_utility_plot" in create_pipeline().inputs() and "privacy_utility_plot" in config


def test_sweep_closes_the_open_run_so_the_next_epsilon_gets_its_own(experiment_id):
    """scripts/epsilon_sweep.py: a run left open by a session is ended and its id kept."""
    from tests.pipelines.test_evaluation_sweep import sweep

    first = mlflow.start_run(experiment_id=experiment_id).info.run_id
    assert sweep._close_mlflow_run() == first and mlflow.active_run() is None
    assert sweep._close_mlflow_run() == first  # none open: the last run logged
    second = mlflow.start_run(experiment_id=experiment_id).info.run_id
    assert second != first and sweep._close_mlflow_run() == second
