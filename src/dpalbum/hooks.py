"""Project hooks around the MLflow run kedro-mlflow opens for every ``kedro run``.

``FlatParamsHook`` logs every parameter, flattened, except noise seeds; ``MlflowReleaseHook``
logs the released models and the privacy ledger, and is the run's ONLY writer of privacy tags
(``dpalbum.privacy.ledger_tags``: evaluation writes none); ``MlflowLineageHook`` anchors the MLflow
store at the project root and logs the run's lineage (git commit, ``dvc.lock``) and the ε spent
per DP-SGD step (internal training losses go to a separate internal experiment). kedro-mlflow logs
a node's ``params:`` inputs itself, but a typed config (a dataclass validated by Kedro) reaches it
as one truncated repr string; ``FlatParamsHook`` logs the raw values as ``<group>.<key>`` so each
MLflow run is fully described by its parameters. What goes where: ``dpalbum.tracking``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)
MLFLOW_PARAM_MAX = 500  # MLflow 3 keeps at most this many characters of a param value


def loggable(key: str) -> bool:
    """False for a seed under a ``privacy`` group: whoever knows the noise seed can replay the DP
    noise and subtract it, so it must never sit on an MLflow run (defence in depth)."""
    parts = key.split(".")
    if "privacy" not in parts:
        return True
    return not any("seed" in part for part in parts[parts.index("privacy") + 1:])


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (lists and scalars as strings)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)  # Kedro hands validated groups over as dataclasses
        elif hasattr(value, "model_dump"):
            value = value.model_dump()  # ... or as pydantic models
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:MLFLOW_PARAM_MAX]
    return out


class FlatParamsHook:
    """Logs all project parameters, flattened, once the MLflow run is active."""

    def __init__(self) -> None:
        self._params: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        # The raw parameters, not ``context.params``: reading that here would validate every
        # registered pipeline's typed parameters, so a bad value in one group (a conf/local
        # override of text_filtering) would break `kedro run --pipelines sampling`; the session
        # validates only the pipelines it runs.
        self._params = dict(context.config_loader["parameters"])
        # Every core this process may use (measured on the 2-core box with the pipeline's own
        # caption LM: a pre-training step 1.5x and a DP-SGD step 1.3x faster on 2 threads than
        # on 1). DPALBUM_TORCH_THREADS sets another count (results are reproducible at equal
        # thread count).
        import torch

        from dpalbum.models.devices import available_cpus

        torch.set_num_threads(int(os.environ.get("DPALBUM_TORCH_THREADS", "0")) or
                              available_cpus())

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._logged = False

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        # At the first node kedro-mlflow's run is surely open (hook order is not guaranteed
        # in before_pipeline_run).
        import mlflow

        if getattr(self, "_logged", True) or mlflow.active_run() is None:
            return
        self._logged = True
        existing = mlflow.active_run().data.params
        flat = {k: v for k, v in flatten(self._params).items()
                if "." in k and k not in existing and loggable(k)}
        for start in range(0, len(flat), 100):  # MLflow caps a batch at 100 params
            chunk = dict(list(flat.items())[start:start + 100])
            mlflow.log_params(chunk)
        logger.info("logged %d flattened parameters to MLflow", len(flat))



def _kedro_mlflow_hook_class() -> type:
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

    class ProjectMlflowHook(MlflowHook):
        """kedro-mlflow's hook (run per ``kedro run``, datasets, models), registered by the
        project instead of the plugin (settings.py), less its per-node parameter logging:
        ``FlatParamsHook`` logs every parameter once, in batches. kedro-mlflow logged each
        node's parameters again with one ``log_param`` (one SQLite transaction) per key, about
        830 per run: 7 s of a 90 s micro run. Nor does it reopen a run that is already open in
        this thread."""

        @hook_impl
        def before_node_run(self, node, catalog, inputs, is_async) -> None:
            import mlflow

            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                return  # the run is open in this thread: nothing to reopen (~0.1 s per node)
            super().before_node_run(node, catalog, {
                k: v for k, v in inputs.items()
                if not (k.startswith("params:") or k == "parameters")}, is_async)

    return ProjectMlflowHook


def project_mlflow_hook():
    """kedro-mlflow's hook without its redundant per-node parameter logging (see above)."""
    return _kedro_mlflow_hook_class()()


LEDGERS = ("text_privacy_ledger", "privacy_ledger")
INTERNAL_HISTORIES = ("dp_training_history", "renderer_dp_history")  # INTERNAL DP-SGD histories


class MlflowReleaseHook:
    """Puts released artefacts on the kedro-mlflow run: every model folder
    (``ModelFolderDataset``) as artifacts, the privacy ledger as tags
    (``dpalbum.privacy.ledger_tags``, the only privacy tags of a run) plus a JSON artifact, and each
    model that has a ``dpalbum.tracking.release.MlflowModelReleaseDataset`` entry as an MLflow
    model (registered when its ledger allows), once the model and its ledger are both saved in
    this run. So each MLflow run says which models it made and how private they are."""

    def __init__(self) -> None:
        self._catalog = None
        self._params: dict[str, Any] = {}
        self._ledgers_logged: set[str] = set()
        self._releases: dict[str, Any] = {}  # MlflowModelReleaseDataset entries, by name
        self._saved: dict[str, Any] = {}  # this run's saved models, tokenizers and ledgers
        self._released: set[str] = set()

    @hook_impl
    def after_context_created(self, context) -> None:
        self._params = dict(context.config_loader["parameters"])  # raw: see FlatParamsHook

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        from dpalbum.tracking.release import MlflowModelReleaseDataset

        self._catalog = catalog
        self._releases = {name: dataset for name, dataset in catalog.items()
                          if isinstance(dataset, MlflowModelReleaseDataset)}

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._ledgers_logged, self._saved, self._released = set(), {}, set()

    def _log_ledger(self, dataset_name: str, ledger: dict[str, Any]) -> None:
        """Privacy tags and the ledger artifact (``privacy/<name>.json``) of the active run."""
        import mlflow

        from dpalbum.privacy import ledger_tags

        mlflow.set_tags(ledger_tags(ledger))
        if ledger.get("plan_id"):  # every run of one release (text path, rendering) shares it
            mlflow.set_tag("dpalbum.plan_id", str(ledger["plan_id"]))
        mlflow.log_dict(ledger, f"privacy/{dataset_name}.json")
        self._ledgers_logged.add(dataset_name)

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any, node) -> None:
        # A run that only reads the final ledger (kedro run --pipelines evaluation) is tagged
        # with it once; a run that saved it was tagged when it saved it.
        import mlflow

        if (dataset_name == "privacy_ledger" and dataset_name not in self._ledgers_logged
                and mlflow.active_run() is not None):
            self._log_ledger(dataset_name, data)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        import mlflow

        if mlflow.active_run() is None or self._catalog is None:
            return
        if any(dataset_name in (r.model_dataset, r.tokenizer_dataset, r.ledger_dataset)
               for r in self._releases.values()):
            self._saved[dataset_name] = data
        # text_privacy_ledger: what a text-path run releases; privacy_ledger (rendering, later in
        # a full run) supersedes its tags with the whole run's ledger
        if dataset_name in LEDGERS:
            self._log_ledger(dataset_name, data)
        else:
            self._log_model_folder(dataset_name)
        self._release_ready_models()

    def _log_model_folder(self, dataset_name: str) -> None:
        import mlflow

        from dpalbum.models.io import ModelFolderDataset

        try:
            dataset = self._catalog.get(dataset_name)
        except Exception:  # noqa: BLE001 - a dataset the catalog cannot describe is not a model
            return
        if isinstance(dataset, ModelFolderDataset) and dataset.path.is_dir():
            mlflow.log_artifacts(str(dataset.path), artifact_path=f"models/{dataset_name}")
            logger.info("logged model %s to MLflow", dataset_name)

    def _release_ready_models(self) -> None:
        """Log (and register, when allowed) every model whose model and ledger this run saved."""
        from dpalbum.tracking.release import ModelRelease

        for name, release in self._releases.items():
            if (name in self._released or release.model_dataset not in self._saved
                    or release.ledger_dataset not in self._saved):
                continue
            tokenizer = None
            if release.tokenizer_dataset:
                tokenizer = self._saved.get(release.tokenizer_dataset)
                if tokenizer is None:  # trained by an earlier run: the saved public tokenizer
                    tokenizer = self._catalog.load(release.tokenizer_dataset)
            model_dataset = self._catalog.get(release.model_dataset)
            release.save(ModelRelease(
                model=self._saved[release.model_dataset],
                ledger=self._saved[release.ledger_dataset], ledger_name=release.ledger_dataset,
                tokenizer=tokenizer, folder=getattr(model_dataset, "path", None),
                model_config=_plain(self._params.get("rendering", {})).get("coherence")
                if release.role == "renderer" else None))
            self._released.add(name)
            self._saved.pop(release.model_dataset, None)  # the run no longer needs it kept


def _plain(value: Any) -> dict[str, Any]:
    """A parameter group as a plain dict (Kedro may hand it over as a dataclass or pydantic)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return dict(value) if isinstance(value, Mapping) else {}


class MlflowLineageHook:
    """Anchors the MLflow store at the project root (before kedro-mlflow opens it), then tags
    each run with its lineage (git commit and dirty flag, ``dvc.lock`` hash) and logs the ε spent
    per DP-SGD step as metric histories; the INTERNAL training losses go to the internal
    experiment, never to the released run (``dpalbum.tracking.lineage``)."""

    def __init__(self) -> None:
        self._project: Path | None = None
        self._tagged = False
        self._epsilon_logged: list[str] = []

    @hook_impl(tryfirst=True)  # before kedro-mlflow's own after_context_created reads mlflow.yml
    def after_context_created(self, context) -> None:
        from dpalbum.tracking.store import anchor_tracking_uris

        self._project = Path(context.project_path)
        anchor_tracking_uris(context.config_loader, self._project)

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._tagged, self._epsilon_logged = False, []

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        import mlflow

        # at the first node kedro-mlflow's run is surely open (as in FlatParamsHook)
        if self._tagged or self._project is None or mlflow.active_run() is None:
            return
        from dpalbum.tracking.lineage import lineage_tags
        from dpalbum.tracking.store import warn_if_artifacts_elsewhere

        mlflow.set_tags(lineage_tags(self._project))
        warn_if_artifacts_elsewhere(mlflow.active_run().info.artifact_uri, self._project)
        self._tagged = True

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        import mlflow

        run = mlflow.active_run()
        if run is None or dataset_name not in (*LEDGERS, *INTERNAL_HISTORIES):
            return
        from mlflow.tracking import MlflowClient

        from dpalbum.tracking.lineage import log_epsilon_histories, log_internal_histories

        client = MlflowClient()
        if dataset_name in LEDGERS:
            self._epsilon_logged += log_epsilon_histories(client, run.info.run_id, data,
                                                          skip=self._epsilon_logged)
        else:
            log_internal_histories(client, run, data, run_name=f"internal-{dataset_name}")


class NodeTimingHook:
    """Logs each node's wall time and, at the end of a run, the slowest nodes: where a run's
    minutes go, without opening a profiler (timings stay in the log, never in a data file)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._seconds: dict[str, float] = {}

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._started, self._seconds = {}, {}

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async, run_id) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        self._seconds[node.name] = seconds
        logger.info("node %s took %.1f s", node.name, seconds)

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        if not self._seconds:
            return
        total = sum(self._seconds.values())
        slowest = sorted(self._seconds.items(), key=lambda kv: -kv[1])[:8]
        logger.info("node time %.0f s in all; slowest: %s", total,
                    ", ".join(f"{name} {s:.0f} s ({s / total:.0%})" for name, s in slowest))
