"""Internal stays internal (issue 12): the released MLflow run gets released metrics only, internal
ones go to a run of the internal experiment (or nowhere), noise seeds never become MLflow params,
one writer of privacy tags, and replayable noise is said loudly on the data card. Real catalog
entries, a temporary sqlite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient

from dpalbum.hooks import FlatParamsHook, MlflowReleaseHook, loggable
from dpalbum.models.captioner import AlbumSource
from dpalbum.pipelines.evaluation import create_pipeline, report
from dpalbum.pipelines.evaluation.config import TrackingConfig
from dpalbum.pipelines.rendering.data_card import build_data_card, privacy_summary
from dpalbum.privacy import ledger_tags
from tests.pipelines.test_evaluation_tracking import _catalog
from tests.pipelines.test_evaluation_world import ledger

ROOT = Path(__file__).resolve().parents[2]
WARNING = "NOT differentially private: noise is replayable from a seed"
RELEASED = {"evaluation_network": {"scene_accuracy": 0.98},
            "album_coherence": {"photo_gap": 0.2},
            "caption_agreement": {"scene_agreement": 0.8}}
INTERNAL = {"image_fidelity": {"local_fd": 12.0, "kid": 0.02},
            "text_fidelity": {"summary_fd": 3.0},
            "private_coherence": {"photo_gap": 0.3},
            "attribute_fidelity": {"text_tv_scene": 0.1},
            "utility": {"event_accuracy_synthetic": 0.6},
            "membership_inference": {"summary_lm_auc": 0.51}}


def _sections() -> dict[str, dict]:
    """One section per catalog name the collect node reads (absent: the audit, internal)."""
    out = {f"{name}_section": report.section(name, internal=False, metrics=values)
           for name, values in RELEASED.items()}
    out |= {f"{name}_section": report.section(name, internal=True, metrics=values)
            for name, values in INTERNAL.items()}
    out["privacy_audit_section"] = report.section("privacy_audit", internal=True,
                                                  absent="not an audit run")
    return out


@pytest.fixture(scope="module")
def experiment_id(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    yield mlflow.create_experiment("internal-test", artifact_location=(root / "a").as_uri())
    mlflow.set_tracking_uri(None)


def _run_metrics_nodes(tmp_path: Path, experiment_id: str, tracking: TrackingConfig) -> str:
    """collect_metrics_node and internal_metrics_node as wired, saving through the real catalog
    entries inside an active MLflow run; returns that (released) run's id."""
    catalog = _catalog(tmp_path)
    sections = _sections()
    nodes = create_pipeline().only_nodes("collect_metrics_node", "internal_metrics_node")
    for name in nodes.inputs():
        value = {"privacy_ledger": ledger(), "params:evaluation.tracking": tracking,
                 "params:album_source": AlbumSource(),
                 "params:captioning.captioner": {"backend": "embedded"}}.get(name)
        catalog[name] = MemoryDataset(value if value is not None else sections[name])
    with mlflow.start_run(experiment_id=experiment_id) as run:
        SequentialRunner().run(nodes, catalog)
    return run.info.run_id


def _children(experiment_id: str, run_id: str) -> list:
    """The internal runs that belong to released run ``run_id``: in the internal experiment,
    never in the released one."""
    client = MlflowClient()
    assert client.search_runs([experiment_id], "tags.`dpalbum.internal` = 'true'") == []
    internal = client.get_experiment_by_name(client.get_experiment(experiment_id).name
                                             + "-internal")
    return [] if internal is None else client.search_runs(
        [internal.experiment_id], f"tags.`dpalbum.released_run_id` = '{run_id}'")


def test_internal_metrics_never_reach_the_released_run(tmp_path, experiment_id):
    run_id = _run_metrics_nodes(tmp_path, experiment_id, TrackingConfig())
    released = MlflowClient().get_run(run_id)
    keys = set(released.data.metrics)
    assert keys == {f"eval.{s}.{m}" for s, ms in RELEASED.items() for m in ms} | {
        "eval.privacy.epsilon"}
    for name in INTERNAL:
        assert not any(name in k for k in [*keys, *released.data.params, *released.data.tags])
    artifacts = {a.path for a in MlflowClient().list_artifacts(run_id)}
    assert artifacts == {"released_metrics.json"}  # never metrics.json
    shipped = json.loads((tmp_path / "data/08_reporting/released_metrics.json").read_text())
    assert shipped["internal"] is False and set(shipped["released"]) == set(RELEASED)
    assert not any(name in json.dumps(shipped) for name in INTERNAL)
    kept = json.loads((tmp_path / "data/08_reporting/metrics.json").read_text())
    assert kept["internal"] is True and set(kept["internal_sections"]) == set(INTERNAL)

    (child,) = _children(experiment_id, run_id)
    assert child.data.tags["dpalbum.internal"] == "true"
    assert child.info.run_name == "internal-evaluation"
    assert child.data.metrics["eval.image_fidelity.local_fd"] == 12.0
    assert {k.split(".")[1] for k in child.data.metrics} == set(INTERNAL) | {"skipped"}


def test_switch_none_logs_internal_metrics_nowhere(tmp_path, experiment_id):
    run_id = _run_metrics_nodes(tmp_path, experiment_id, TrackingConfig("none"))
    assert _children(experiment_id, run_id) == []
    assert not any(name in k for k in MlflowClient().get_run(run_id).data.metrics
                   for name in INTERNAL)
    with pytest.raises(ValueError, match="internal_run or none"):
        TrackingConfig("released_run")


def test_shipped_parameters_keep_internal_off_the_release():
    params = yaml.safe_load((ROOT / "conf/base/parameters_evaluation.yml").read_text())
    assert params["evaluation"]["report"]["include_internal_metrics"] is False
    assert params["evaluation"]["tracking"]["internal_metrics_to_mlflow"] == "internal_run"
    catalog = yaml.safe_load((ROOT / "conf/base/catalog_evaluation.yml").read_text())
    assert "Mlflow" not in catalog["evaluation_metrics"]["type"]  # metrics.json: no artifact


# ---- hooks --------------------------------------------------------------------------------------

def test_flat_params_hook_never_logs_a_privacy_seed(experiment_id, monkeypatch):
    import torch

    monkeypatch.setenv("DPALBUM_TORCH_THREADS", str(torch.get_num_threads()))
    hook = FlatParamsHook()
    hook.after_context_created(SimpleNamespace(config_loader={"parameters": {
        "privacy": {"epsilon": 10.0, "noise_seed": 1234, "distributed": {"rank_seed": 7}},
        "evaluation": {"network": {"seed": 0}}}}))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        hook.before_pipeline_run({}, None, None)
        hook.before_node_run(None, None, {}, False, None)
    params = MlflowClient().get_run(run.info.run_id).data.params
    assert params["privacy.epsilon"] == "10.0"
    assert "privacy.noise_seed" not in params and "privacy.distributed.rank_seed" not in params
    assert params["evaluation.network.seed"] == "0"  # public seeds stay: the run is replayable
    assert not loggable("dp_training.privacy.seed") and loggable("sampling.seed")


def test_release_hook_is_the_one_privacy_tag_writer(experiment_id, monkeypatch):
    final = ledger() | {"noise_source": "secure"}
    hook = MlflowReleaseHook()
    hook.after_catalog_created(DataCatalog())
    logged = []
    monkeypatch.setattr(mlflow, "log_dict", lambda data, path: logged.append(path))
    with mlflow.start_run(experiment_id=experiment_id) as run:  # an evaluation-only run
        hook.before_pipeline_run({}, None, None)
        for _ in range(3):  # several nodes load the ledger: tagged and logged once
            hook.after_dataset_loaded("privacy_ledger", final, None)
    data = MlflowClient().get_run(run.info.run_id).data
    assert {k: v for k, v in data.tags.items() if k.startswith("privacy.")} == ledger_tags(final)
    assert logged == ["privacy/privacy_ledger.json"]
    with mlflow.start_run(experiment_id=experiment_id):  # a run that saves the ledger
        hook.before_pipeline_run({}, None, None)
        hook.after_dataset_saved("privacy_ledger", final, None)
        hook.after_dataset_loaded("privacy_ledger", final, None)  # evaluation reads it back
    assert logged == ["privacy/privacy_ledger.json"] * 2  # once per run
    # and evaluation writes no tags of its own any more
    outputs = create_pipeline().all_outputs()
    catalog = yaml.safe_load((ROOT / "conf/base/catalog_evaluation.yml").read_text())
    assert not [n for n in outputs if "Tags" in str(catalog.get(n, {}).get("type", ""))]
    assert not hasattr(report, "privacy_tags")


# ---- the data card ------------------------------------------------------------------------------

def _card(**ledger_keys) -> str:
    summary = privacy_summary({**ledger(7.25), **ledger_keys})
    rendering_report = {
        "privacy": summary, "image_size": 16, "seed": 5, "rendered_at": "2026-12-01",
        "coherence": {"shared_initial_latents": True, "latent_jitter": 0.3,
                      "character_in_every_prompt": True, "guidance_scale": 3.0},
        "renderer": {"backend": "embedded", "architecture": "UNet", "sampler": "dpm",
                     "text_encoder": "MiniLM", "training": {"n_images": 9}}}
    return build_data_card(rendering_report, n_albums=2, n_photos=5)


def test_data_card_says_replayable_noise_is_not_dp():
    card = _card(noise_source="replayable", neighbouring="add or remove one album (all of its "
                 "photos and texts)", album_count="public")
    assert WARNING in card
    assert card.index(WARNING) < card.index("| ε (epsilon)")  # at the top, before the numbers
    assert "**Differentially private" not in card
    secure = _card(noise_source="secure", album_count="public")
    assert WARNING not in secure and "**Differentially private: (ε = 7.25" in secure
    assert "Noise source unknown" not in secure
    older = _card()  # no noise_source on the ledger: unknown, and said
    assert WARNING not in older and "Noise source unknown" in older


def test_data_card_states_neighbouring_and_the_album_count():
    dp_count = {"name": "album_count", "kind": "laplace", "noise_multiplier": 2.0}
    counted = _card(noise_source="secure", neighbouring="add or remove one album (all of its "
                    "photos and texts)", mechanisms=[*ledger()["mechanisms"], dp_count])
    assert "Neighbouring datasets: add or remove one album (all of its photos and texts)." in (
        counted)
    assert "number of albums | protected by a DP count" in counted
    assert "The number of albums is protected: released by a DP count" in counted
    public = _card(noise_source="secure", album_count="public")
    assert "number of albums | declared public" in public
    assert "The number of albums is declared public" in public
    assert "add or remove one album" in public  # an older ledger: said from its unit
