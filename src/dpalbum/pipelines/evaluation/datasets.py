"""Small Kedro datasets the evaluation catalog needs and kedro / kedro-mlflow lack.

- ``MlflowInternalRunDataset``: saves internal metrics to a run of the internal experiment
  (``<experiment>-internal``, where the DP-SGD losses go too), tagged ``dpalbum.internal=true``
  and with the released run's id, so they never sit in the released run or its experiment, and
  go through the catalog like kedro-mlflow's metrics, not through ``mlflow`` calls in nodes.
- ``OptionalFileDataset``: a file's bytes, or ``None`` when it does not exist yet (the
  privacy-utility plot that only the ε sweep writes).
- ``OptionalParquetDataset``: a parquet table, or ``None`` when the file does not exist (the
  ground truth, which only the demo world writes: real albums have none); never overwrites a
  file dpalbum did not write.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str
from kedro_datasets.pandas import ParquetDataset

from dpalbum.tracking.lineage import INTERNAL_TAG, RELEASED_RUN_TAG, internal_experiment_id

logger = logging.getLogger(__name__)
GENERATED_KEY = b"dpalbum.generated"  # parquet metadata mark of a table dpalbum wrote
GENERATED_VALUE = b"written by dpalbum; may be replaced by it"


class MlflowInternalRunDataset(AbstractDataset[dict[str, Any], dict[str, float]]):
    """Internal metrics, kept off the released run and its experiment: saving opens a run in
    the internal experiment (``<released experiment>-internal``, tagged ``dpalbum.internal=true``
    and ``dpalbum.released_run_id``), logs the metrics there and closes it. Sharing or exporting
    the released experiment never carries them along.

    Takes kedro-mlflow's metrics form ``{key: {"value", "step"}}`` (or ``{key: number}``). Follows
    kedro-mlflow's switch (``_logging_activated = False``: nothing logged); with no active run, or
    nothing to log (``internal_metrics_to_mlflow: none``), no run is created. The active run stays
    active: the internal run is made with ``MlflowClient``, never ``mlflow.start_run``.
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
        tags = {INTERNAL_TAG: "true", RELEASED_RUN_TAG: parent.info.run_id}
        experiment_id = internal_experiment_id(client, parent.info.experiment_id)
        child = client.create_run(experiment_id, tags=tags, run_name=self._run_name)
        now = int(time.time() * 1000)
        metrics = [Metric(self._key(str(k)), float(v["value"] if isinstance(v, dict) else v),
                          now, int(v.get("step", 0)) if isinstance(v, dict) else 0)
                   for k, v in data.items()]
        for start in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
            client.log_batch(child.info.run_id, metrics=metrics[start:start + 1000])
        client.set_terminated(child.info.run_id)
        logger.info("logged %d internal metrics to run %s of the internal experiment %s (tagged "
                    "%s; never on the released run)", len(metrics), child.info.run_id,
                    experiment_id, INTERNAL_TAG)

    def load(self) -> dict[str, float]:
        """The metrics of the active run's latest internal run (prefix removed)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        parent = mlflow.active_run()
        if parent is None:
            raise DatasetError("MlflowInternalRunDataset: no active MLflow run to read")
        client = MlflowClient()
        children = [r for r in client.search_runs(
            [internal_experiment_id(client, parent.info.experiment_id)],
            f"tags.`{RELEASED_RUN_TAG}` = '{parent.info.run_id}'",
            order_by=["attributes.start_time DESC"]) if r.data.tags.get(INTERNAL_TAG) == "true"]
        if not children:
            raise DatasetError(f"run {parent.info.run_id} has no internal run")
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
    """kedro-datasets' ParquetDataset whose load gives ``None`` when there is no file, and whose
    save never replaces a file dpalbum did not write.

    Nodes that need the table check for ``None`` and report their metric as not available
    instead of crashing a run on real data (which has no ground truth). ``filepath: null``: this
    run has no such table (the demo world's ground truth in a run on the user's albums): loading
    gives ``None`` and saving writes nothing; so does ``writable: false``.

    Like an album folder's marker, every file this dataset writes carries ``dpalbum.generated``
    in its parquet metadata; an existing file without it (the user's own table) is never
    overwritten. Files from before the marker are recognised by their exact columns
    (``legacy_columns``): the demo world's ground truth.
    """

    def __init__(self, *, filepath: str | None, writable: bool = True,
                 legacy_columns: list[str] | None = None, **kwargs: Any) -> None:
        self._no_file = filepath is None
        self._writable = bool(writable)
        self._legacy_columns = list(legacy_columns or [])
        # os.devnull stands in for "no file": it is never opened (load/save/_exists check first)
        super().__init__(filepath=os.devnull if filepath is None else filepath, **kwargs)

    def load(self) -> pd.DataFrame | None:
        if self._no_file:
            logger.info("no %s table for this run (your albums have no ground truth): loading "
                        "None; metrics that need it are reported as not available", self)
            return None
        if not self._exists():
            logger.warning("%s does not exist: loading None (real data has no ground truth; "
                           "metrics that need it are skipped)", self._filepath)
            return None
        return super().load()

    def save(self, data: pd.DataFrame) -> None:
        if self._no_file or not self._writable:
            logger.warning("not writing the %d-row table: %s", len(data),
                           "no file is configured for it in this run" if self._no_file else
                           f"{self._filepath} is not dpalbum's to write")
            return
        path = Path(get_filepath_str(self._get_save_path(), self._protocol))
        if path.exists() and not self._generated(path):
            raise DatasetError(
                f"Refusing to overwrite '{path}': it was not written by dpalbum (no "
                f"{GENERATED_KEY.decode()} mark in its parquet metadata), so it may be your own "
                f"data. Move it away, or point this catalog entry at another file.")
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(data, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               GENERATED_KEY: GENERATED_VALUE})
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, str(path))
        self._invalidate_cache()

    def _generated(self, path: Path) -> bool:
        """Whether dpalbum wrote ``path`` (its mark, or a pre-mark file with the known columns)."""
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(str(path))
        except Exception:  # noqa: BLE001 - not a parquet file at all: not ours
            return False
        if GENERATED_KEY in (schema.metadata or {}):
            return True
        return bool(self._legacy_columns) and list(schema.names) == self._legacy_columns

    def _exists(self) -> bool:
        return not self._no_file and super()._exists()

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "filepath": None if self._no_file else str(self._filepath),
                "writable": self._writable}
