"""Two small Kedro datasets the evaluation catalog needs and kedro / kedro-mlflow lack.

- ``MlflowTagsDataset``: saves a dict as tags of the active MLflow run (ε, δ, unit), so run tags
  go through the catalog like kedro-mlflow's metrics, not through ``mlflow`` calls in nodes.
- ``OptionalFileDataset``: a file's bytes, or ``None`` when it does not exist yet (the
  privacy-utility plot that only the ε sweep writes).
- ``OptionalParquetDataset``: a parquet table, or ``None`` when the file does not exist (the
  ground truth, which only the demo world writes: real albums have none).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets.pandas import ParquetDataset

logger = logging.getLogger(__name__)


class MlflowTagsDataset(AbstractDataset[dict[str, str], dict[str, str]]):
    """Tags of an MLflow run: the active run, or ``run_id`` when given. Save-mostly.

    Follows kedro-mlflow's switch: when tracking is disabled for a pipeline the hook sets
    ``_logging_activated = False`` and saving does nothing. Saving with no active run (and no
    ``run_id``) logs a warning instead of starting a run.
    """

    def __init__(self, run_id: str | None = None, prefix: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._run_id = run_id
        self._prefix = prefix
        self._logging_activated = True
        self.metadata = metadata

    def _resolve_run_id(self) -> str | None:
        import mlflow

        if self._run_id:
            return self._run_id
        run = mlflow.active_run()
        return run.info.run_id if run else None

    def _key(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def save(self, data: dict[str, str]) -> None:
        from mlflow.tracking import MlflowClient

        if not isinstance(data, dict):
            raise DatasetError(f"MlflowTagsDataset saves a dict of tags, got {type(data)}")
        if not self._logging_activated:
            return
        run_id = self._resolve_run_id()
        if run_id is None:
            logger.warning("no active MLflow run: %d tags not logged", len(data))
            return
        client = MlflowClient()
        for key, value in data.items():
            client.set_tag(run_id, self._key(str(key)), str(value))

    def load(self) -> dict[str, str]:
        from mlflow.tracking import MlflowClient

        run_id = self._resolve_run_id()
        if run_id is None:
            raise DatasetError("MlflowTagsDataset: no run_id and no active MLflow run to read")
        tags = MlflowClient().get_run(run_id).data.tags
        start = f"{self._prefix}." if self._prefix else ""
        return {k[len(start):]: v for k, v in tags.items() if k.startswith(start)}

    def _describe(self) -> dict[str, Any]:
        return {"run_id": self._run_id, "prefix": self._prefix}


class OptionalFileDataset(AbstractDataset[bytes, bytes | None]):
    """A file's raw bytes; loading a file that does not exist gives ``None``, not an error."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> bytes | None:
        if not self._filepath.is_file():
            logger.info("%s does not exist yet: loading None", self._filepath)
            return None
        return self._filepath.read_bytes()

    def save(self, data: bytes) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        self._filepath.write_bytes(bytes(data))

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class OptionalParquetDataset(ParquetDataset):
    """kedro-datasets' ParquetDataset whose load gives ``None`` when the file does not exist.

    Nodes that need the table check for ``None`` and report their metric as not available
    instead of crashing a run on real data (which has no ground truth).
    """

    def load(self) -> pd.DataFrame | None:
        if not self._exists():
            logger.warning("%s does not exist: loading None (real data has no ground truth; "
                           "metrics that need it are skipped)", self._filepath)
            return None
        return super().load()
