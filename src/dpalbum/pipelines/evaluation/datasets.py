"""Small Kedro datasets the evaluation catalog needs and kedro / kedro-mlflow lack.

- ``MlflowInternalRunDataset``: saves internal metrics to a child run of the active MLflow run,
  tagged ``dpalbum.internal=true``, so they never sit among the released run's metrics and go
  through the catalog like kedro-mlflow's metrics, not through ``mlflow`` calls in nodes.
- ``OptionalFileDataset``: a file's bytes, or ``None`` when it does not exist yet (the
  privacy-utility plot that only the ε sweep writes).
- ``OptionalParquetDataset``: a parquet table, or ``None`` when the file does not exist (the
  ground truth, which only the demo world writes: real albums have none).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets.pandas import ParquetDataset

logger = logging.getLogger(__name__)
INTERNAL_TAG = "dpalbum.internal"
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"  # what mlflow.start_run(nested=True) sets


class MlflowInternalRunDataset(AbstractDataset[dict[str, Any], dict[str, float]]):
    """Internal metrics, kept off the released run: saving opens a child run of the active run
    (tagged ``dpalbum.internal=true``), logs the metrics there and closes it.

    Takes kedro-mlflow's metrics form ``{key: {"value", "step"}}`` (or ``{key: number}``). Follows
    kedro-mlflow's switch (``_logging_activated = False``: nothing logged); with no active run, or
    nothing to log (``internal_metrics_to_mlflow: none``), no run is created. The active run stays
    active: the child is made with ``MlflowClient``, never ``mlflow.start_run``.
    """

    def __init__(self, run_name: str = "internal-evaluation", prefix: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._run_name = run_name
        self._prefix = prefix
        self._logging_activated = True
        self.metadata = metadata

    def _key(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def save(self, data: dict[str, Any]) -> None:
        import mlflow
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        if not isinstance(data, dict):
            raise DatasetError(f"MlflowInternalRunDataset saves a dict of metrics, got "
                               f"{type(data).__name__}")
        if not self._logging_activated or not data:
            return
        parent = mlflow.active_run()
        if parent is None:
            logger.warning("no active MLflow run: %d internal metrics not logged", len(data))
            return
        client = MlflowClient()
        tags = {INTERNAL_TAG: "true", MLFLOW_PARENT_RUN_ID: parent.info.run_id}
        child = client.create_run(parent.info.experiment_id, tags=tags, run_name=self._run_name)
        now = int(time.time() * 1000)
        metrics = [Metric(self._key(str(k)), float(v["value"] if isinstance(v, dict) else v),
                          now, int(v.get("step", 0)) if isinstance(v, dict) else 0)
                   for k, v in data.items()]
        for start in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
            client.log_batch(child.info.run_id, metrics=metrics[start:start + 1000])
        client.set_terminated(child.info.run_id)
        logger.info("logged %d internal metrics to the child run %s (tagged %s)", len(metrics),
                    child.info.run_id, INTERNAL_TAG)

    def load(self) -> dict[str, float]:
        """The metrics of the active run's latest internal child run (prefix removed)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        parent = mlflow.active_run()
        if parent is None:
            raise DatasetError("MlflowInternalRunDataset: no active MLflow run to read")
        children = [r for r in MlflowClient().search_runs(
            [parent.info.experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent.info.run_id}'",
            order_by=["attributes.start_time DESC"]) if r.data.tags.get(INTERNAL_TAG) == "true"]
        if not children:
            raise DatasetError(f"run {parent.info.run_id} has no internal child run")
        start = f"{self._prefix}." if self._prefix else ""
        return {k[len(start):]: v for k, v in children[0].data.metrics.items()
                if k.startswith(start)}

    def _describe(self) -> dict[str, Any]:
        return {"run_name": self._run_name, "prefix": self._prefix}


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
