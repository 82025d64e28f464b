"""The evaluation catalog entries as written in conf/base/catalog_evaluation.yml: released
metrics, released_metrics.json and report.html land in an MLflow run, internal metrics in its
run in the internal experiment, metrics.json on disk only (a temporary sqlite store here)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from kedro.io import DataCatalog
from mlflow.tracking import MlflowClient

from dpalbum.pipelines.evaluation import report
from dpalbum.pipelines.evaluation.datasets import MlflowInternalRunDataset, OptionalFileDataset
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


def test_metrics_and_artifacts_reach_the_run(tmp_path, mlflow_run):
    catalog = _catalog(tmp_path)
    doc = report.assemble_metrics(ledger(), [
        report.section("image_fidelity", internal=True, metrics={"local_fd": 3.5, "kid": 0.02}),
        report.section("caption_agreement", internal=False, metrics={"scene_agreement": 0.75}),
        report.section("privacy_audit", internal=True, absent="not an audit run")])
    released = report.released_metrics(doc)
    catalog.save("evaluation_metrics", doc)
    catalog.save("released_metrics", released)
    catalog.save("evaluation_mlflow_metrics", report.mlflow_metrics(released))
    catalog.save("evaluation_internal_mlflow_metrics", report.internal_mlflow_metrics(doc))
    catalog.save("evaluation_report", "<html><body>report</body></html>")

    run = MlflowClient().get_run(mlflow_run)
    assert run.data.metrics == {"eval.caption_agreement.scene_agreement": 0.75,
                                "eval.privacy.epsilon": 8.0}
    artifacts = {a.path for a in MlflowClient().list_artifacts(mlflow_run)}
    assert {"released_metrics.json", "report.html"} <= artifacts
    assert "metrics.json" not in artifacts  # internal: on disk only
    saved = json.loads((tmp_path / "data/08_reporting/metrics.json").read_text())
    assert saved["internal"] is True
    assert saved["internal_absent"] == {"privacy_audit": "not an audit run"}
    assert catalog.load("evaluation_metrics") == saved
    shipped = json.loads((tmp_path / "data/08_reporting/released_metrics.json").read_text())
    assert shipped["internal"] is False and set(shipped["released"]) == {"caption_agreement"}
    assert catalog.load("evaluation_internal_mlflow_metrics") == {
        "image_fidelity.local_fd": 3.5, "image_fidelity.kid": 0.02, "skipped.sections": 1.0}


def test_internal_run_dataset_without_a_run_logs_nothing(experiment_id, caplog):
    assert mlflow.active_run() is None
    before = len(MlflowClient().search_runs([experiment_id]))
    MlflowInternalRunDataset().save({"a.b": 1.0})  # no active run: warn, start no run
    assert "no active MLflow run" in caplog.text
    assert mlflow.active_run() is None
    assert len(MlflowClient().search_runs([experiment_id])) == before


def test_internal_run_dataset_respects_kedro_mlflow_switch(mlflow_run, experiment_id):
    dataset = MlflowInternalRunDataset(prefix="eval")
    dataset._logging_activated = False  # what kedro-mlflow does when tracking is disabled
    dataset.save({"image_fidelity.kid": 0.1})
    dataset._logging_activated = True
    dataset.save({})  # nothing to log (internal_metrics_to_mlflow: none): no internal run
    client = MlflowClient()
    internal = client.get_experiment_by_name(client.get_experiment(experiment_id).name
                                             + "-internal")
    children = f"tags.`dpalbum.released_run_id` = '{mlflow_run}'"
    assert internal is None or not client.search_runs([internal.experiment_id], children)
    dataset.save({"image_fidelity.kid": {"value": 0.1, "step": 0}})
    internal = client.get_experiment_by_name(client.get_experiment(experiment_id).name
                                             + "-internal")
    (child,) = client.search_runs([internal.experiment_id], children)
    assert client.search_runs([experiment_id], "tags.`dpalbum.internal` = 'true'") == []
    assert child.data.tags["dpalbum.internal"] == "true" and child.info.status == "FINISHED"
    assert dataset.load() == {"image_fidelity.kid": 0.1}
    assert mlflow.active_run().info.run_id == mlflow_run  # the released run stays active


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
                 "released_metrics", "evaluation_mlflow_metrics",
                 "evaluation_internal_mlflow_metrics", "evaluation_report"}
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
