"""Where a run's MLflow records go: the project's own store, whatever the working directory.

``mlflow.yml`` says ``sqlite:///mlflow.db``: to SQLAlchemy (and so to MLflow) that path is relative
to the *working directory*, so a notebook under ``notebooks/`` (or any session started from another
folder) would silently open a second, empty store there. kedro-mlflow anchors relative *paths* at
the project root but leaves a URI with a scheme alone; :func:`anchor_tracking_uris` rewrites the
relative sqlite URIs of the ``mlflow`` config at the project root before kedro-mlflow reads it, so
the committed file keeps a relative path and every session of the project opens one store.
The experiment's artifact location (``mlruns`` in ``mlflow.yml``) is anchored by kedro-mlflow
itself; MLflow stores it in the database as an absolute URI under the project when it creates
the experiment (local artifact URIs are always resolved, ``resolve_uri_if_local``), so a project
folder copied or moved with its ``mlflow.db`` keeps writing artifacts to the old place:
:func:`warn_if_artifacts_elsewhere` says so at the start of every run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)

SQLITE = "sqlite:///"
URI_KEYS = ("mlflow_tracking_uri", "mlflow_registry_uri")


def anchored_uri(uri: str | None, project_path: Path) -> str | None:
    """``sqlite:///mlflow.db`` -> ``sqlite:///<project>/mlflow.db``; any other URI (an absolute
    sqlite path ``sqlite:////...``, a server ``http://...``, ``None``) is returned unchanged."""
    if not uri or not uri.startswith(SQLITE):
        return uri
    path = uri[len(SQLITE):]
    if not path or path.startswith("/") or path == ":memory:" or Path(path).is_absolute():
        return uri
    return SQLITE + (Path(project_path).resolve() / path).as_posix()


def anchor_tracking_uris(config_loader: Any, project_path: Path) -> dict[str, Any] | None:
    """Rewrite the relative sqlite URIs of the loader's ``mlflow`` config at the project root (the
    loader then serves the rewritten config: kedro's ``OmegaConfigLoader`` returns a key set on it
    as is). Returns the config, or ``None`` when the project has no mlflow config."""
    try:
        config = config_loader["mlflow"]
    except Exception:  # noqa: BLE001 - no mlflow.yml (MissingConfigException) or no pattern
        return None
    server = dict(config.get("server") or {})
    changed = {key: anchored_uri(server.get(key), project_path) for key in URI_KEYS}
    changed = {k: v for k, v in changed.items() if v != server.get(k)}
    if not changed:
        return config
    config = {**config, "server": {**server, **changed}}
    config_loader["mlflow"] = config
    for key, value in changed.items():
        logger.info("MLflow %s anchored at the project root: %s", key.removeprefix("mlflow_"),
                    value)
    return config


def warn_if_artifacts_elsewhere(artifact_uri: str, project_path: Path) -> bool:
    """Warn (and return True) when a run's local artifacts are not under the project folder: the
    store was created where the project used to be (a copied or moved project)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return False  # a remote artifact store: nothing to compare
    location = Path(unquote(parsed.path)).resolve()
    project = Path(project_path).resolve()
    if location.is_relative_to(project):
        return False
    logger.warning("this run's MLflow artifacts go to %s, outside the project %s: mlflow.db was "
                   "created where the project used to be (MLflow stores absolute artifact "
                   "locations). Move mlflow.db and mlruns/ away to start a fresh store here.",
                   location, project)
    return True
