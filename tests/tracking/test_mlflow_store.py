"""One MLflow store per project: ``sqlite:///mlflow.db`` is anchored at the project root whatever
the working directory (a notebook under notebooks/ opened a second store before), and new
experiments keep their artifacts under the project's ``mlruns/``."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from dpalbum.tracking.store import anchor_tracking_uris, anchored_uri
from tests.test_end_to_end import make_project


@pytest.mark.parametrize("uri, expected", [
    ("sqlite:///mlflow.db", "sqlite:///{root}/mlflow.db"),
    ("sqlite:///stores/runs.db", "sqlite:///{root}/stores/runs.db"),
    ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db"),  # absolute: unchanged
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("databricks", "databricks"),
    (None, None),
])
def test_only_relative_sqlite_uris_are_anchored(tmp_path, uri, expected):
    root = tmp_path.resolve().as_posix()
    assert anchored_uri(uri, tmp_path) == (expected.format(root=root) if expected else None)


def test_the_loader_serves_the_anchored_config(tmp_path):
    class Loader(dict):
        pass

    loader = Loader(mlflow={"server": {"mlflow_tracking_uri": "sqlite:///mlflow.db",
                                       "mlflow_registry_uri": None}, "tracking": {"x": 1}})
    config = anchor_tracking_uris(loader, tmp_path)
    assert loader["mlflow"] is config and config["tracking"] == {"x": 1}
    assert config["server"]["mlflow_tracking_uri"] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert config["server"]["mlflow_registry_uri"] is None


def test_a_session_started_in_notebooks_uses_the_projects_store(tmp_path, monkeypatch):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = make_project(tmp_path)
    notebooks = project / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)  # where a notebook's kernel runs
    while mlflow.active_run() is not None:
        mlflow.end_run()
    bootstrap_project(project)
    try:
        with KedroSession.create(project_path=project) as session:
            session.load_context()  # kedro-mlflow sets MLflow up in after_context_created
            uri = mlflow.get_tracking_uri()
            experiment = mlflow.get_experiment_by_name("dpalbum")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert uri == f"sqlite:///{project.resolve().as_posix()}/mlflow.db"
    assert (project / "mlflow.db").is_file() and not (notebooks / "mlflow.db").exists()
    assert experiment.artifact_location == (project.resolve() / "mlruns").as_uri()
    assert "mlflow_tracking_uri: sqlite:///mlflow.db" in (
        project / "conf/base/mlflow.yml").read_text()  # the committed file stays relative
    assert not list(Path(notebooks).iterdir())


def test_a_store_whose_artifacts_live_elsewhere_is_reported(tmp_path, caplog):
    from dpalbum.tracking.store import warn_if_artifacts_elsewhere

    project = tmp_path / "project"
    inside = (project / "mlruns" / "abc" / "artifacts").as_uri()
    assert not warn_if_artifacts_elsewhere(inside, project)
    assert warn_if_artifacts_elsewhere((tmp_path / "old" / "mlruns").as_uri(), project)
    assert "outside the project" in caplog.text
    assert not warn_if_artifacts_elsewhere("s3://bucket/mlruns/1", project)
