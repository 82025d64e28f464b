"""The LMs as MLflow models: logged on the run once the model and its ledger are saved (through the
project's release hook, as in a ``kedro run``), registered only when the ledger allows, and
loaded back from the registry to generate."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from kedro.io import DataCatalog
from mlflow.tracking import MlflowClient

from dpalbum import privacy
from dpalbum.hooks import MlflowReleaseHook
from dpalbum.models.text_format import SpecialTokens, caption_prompt
from dpalbum.tracking.release import MlflowModelReleaseDataset, ModelRelease
from tests.models.tiny_sampling_lms import COLOURS, EVENTS, toy_summary, trained_toy_lms
from tests.tracking.conftest import spent_ledger

NAMES = {"summary_lm": "dpalbum-summary-lm", "caption_lm": "dpalbum-caption-lm"}


def text_catalog(folder: Path, names: dict[str, str] = NAMES) -> DataCatalog:
    """The text path's model, tokenizer, ledger and MLflow-model entries, as in the project."""
    lm = {"type": "dpalbum.models.io.ModelFolderDataset",
          "loader": "transformers.AutoModelForCausalLM.from_pretrained"}
    return DataCatalog.from_config({
        "summary_lm": {**lm, "path": str(folder / "summary_lm")},
        "caption_lm": {**lm, "path": str(folder / "caption_lm")},
        "lm_tokenizer": {"type": "dpalbum.models.io.ModelFolderDataset",
                         "path": str(folder / "lm_tokenizer"),
                         "loader": "dpalbum.models.tokenizer.load_tokenizer"},
        "text_privacy_ledger": {"type": "json.JSONDataset",
                                "filepath": str(folder / "text_privacy_ledger.json")},
        **{f"{role}_mlflow": {"type": "dpalbum.tracking.release.MlflowModelReleaseDataset",
                              "role": role, "model": role, "tokenizer": "lm_tokenizer",
                              "ledger": "text_privacy_ledger", "registered_model_name": name}
           for role, name in names.items()},
    })


def dp_lms(ledger: dict) -> tuple:
    """The toy LMs (copies) carrying the privacy record of ``ledger``, as dp_training saves them."""
    summary_lm, caption_lm, tokenizer = (copy.deepcopy(m) for m in trained_toy_lms())
    for role, model in (("summary_lm", summary_lm), ("caption_lm", caption_lm)):
        model.config.dpalbum_privacy = privacy.model_record(ledger, role)
    return summary_lm, caption_lm, tokenizer


def run_with_hook(catalog: DataCatalog, outputs: dict) -> str:
    """Save ``outputs`` in order inside an MLflow run, calling the release hook as Kedro's runner
    does; returns the run id."""
    hook = MlflowReleaseHook()
    hook.after_context_created(SimpleNamespace(config_loader={"parameters": {}}))
    hook.after_catalog_created(catalog)
    with mlflow.start_run() as run:
        hook.before_pipeline_run({}, None, catalog)
        for name, data in outputs.items():
            catalog.save(name, data)
            hook.after_dataset_saved(name, data, None)
    return run.info.run_id


def logged_models(run_id: str) -> dict:
    experiment = mlflow.get_run(run_id).info.experiment_id
    return {m.name: m for m in MlflowClient().search_logged_models(
        [experiment], filter_string=f"source_run_id = '{run_id}'")}


@pytest.fixture(scope="module")
def released(store, tmp_path_factory):
    """One released text-path run: secure noise, finite ε; both LMs registered."""
    ledger = spent_ledger()
    summary_lm, caption_lm, tokenizer = dp_lms(ledger)
    catalog = text_catalog(tmp_path_factory.mktemp("released"))
    run_id = run_with_hook(catalog, {"lm_tokenizer": tokenizer, "summary_lm": summary_lm,
                                     "caption_lm": caption_lm, "text_privacy_ledger": ledger})
    return SimpleNamespace(ledger=ledger, run_id=run_id, tokenizer=tokenizer,
                           caption_lm=caption_lm, catalog=catalog)


def test_released_lms_are_registered_with_epsilon_and_ledger_tags(released):
    client = MlflowClient()
    for name in NAMES.values():
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert version.run_id == released.run_id
        assert version.description.startswith(f"ε = {released.ledger['epsilon']:.4g}, δ = 1e-05 "
                                              "per album")
        assert version.tags["privacy.epsilon"] == str(released.ledger["epsilon"])
        assert version.tags["privacy.noise_source"] == "secure"
        assert version.tags["privacy.unit"] == "album"
        assert version.tags["privacy.ledger"] == "text_privacy_ledger"
    models = logged_models(released.run_id)
    assert set(models) == set(NAMES)
    assert models["caption_lm"].tags["privacy.delta"] == "1e-05"
    # the run keeps what the hook logged before: folders, ledger artifact, ledger tags
    artifacts = {a.path for a in client.list_artifacts(released.run_id, "models")}
    assert {"models/summary_lm", "models/caption_lm"} <= artifacts
    tags = client.get_run(released.run_id).data.tags
    assert tags["privacy.unit"] == "album"
    assert tags["dpalbum.plan_id"] == "plan-a"  # relates the runs of one release


def test_the_registered_caption_lm_generates_captions_of_its_summary(released):
    version = MlflowClient().get_latest_versions("dpalbum-caption-lm")[0].version
    generator = mlflow.transformers.load_model(f"models:/dpalbum-caption-lm/{version}")
    tokens = SpecialTokens.of(released.tokenizer)
    right = 0
    for colour in COLOURS:
        prompt = caption_prompt(toy_summary("holiday", colour, "circle"), tokens)
        text = generator(prompt, max_new_tokens=6, do_sample=False)[0]["generated_text"]
        assert text.startswith(prompt) and len(text) > len(prompt)
        right += colour in text[len(prompt):]
    assert right >= 3, "the registered caption LM should copy the summary's colour (chance: 1/4)"


def test_the_registered_summary_lm_generates_through_pyfunc_with_its_signature(released):
    model = mlflow.pyfunc.load_model("models:/dpalbum-summary-lm/1")
    params = {p.name for p in model.metadata.get_params_schema().params}
    assert {"max_new_tokens", "do_sample", "temperature"} <= params
    bos = SpecialTokens.of(released.tokenizer).bos
    (text,) = model.predict([bos], params={"max_new_tokens": 8, "do_sample": False})
    assert any(event in text for event in EVENTS), text


def test_the_input_examples_are_synthetic_never_training_text(released):
    from dpalbum.tracking.release import SYNTHETIC_SUMMARY

    for role, name in NAMES.items():
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/1")
        model = mlflow.models.Model.load(local)
        assert model.signature is not None
        text = str(model.load_input_example(local))
        assert role == "summary_lm" or SYNTHETIC_SUMMARY in text
        assert "holiday" not in text and "birthday" not in text  # nothing of the training albums


def test_a_model_saved_without_its_ledger_is_not_an_mlflow_model(store, tmp_path):
    """A run killed between the LM and the ledger: the folder is an artifact, nothing has an ε."""
    summary_lm, _, tokenizer = dp_lms(spent_ledger())
    run_id = run_with_hook(text_catalog(tmp_path), {"lm_tokenizer": tokenizer,
                                                    "summary_lm": summary_lm})
    assert logged_models(run_id) == {}
    assert "models/summary_lm" in {a.path for a in MlflowClient().list_artifacts(run_id, "models")}


@pytest.mark.parametrize("ledger, why", [
    (lambda: spent_ledger(noise="replayable"), "replayable"),
    (lambda: spent_ledger(float("inf")), "ε = ∞"),
], ids=["replayable-noise", "epsilon-inf"])
def test_a_run_that_is_not_private_is_logged_but_never_registered(store, caplog, ledger, why):
    ledger = ledger()
    summary_lm, _, tokenizer = dp_lms(ledger)
    dataset = MlflowModelReleaseDataset(role="summary_lm", model="summary_lm", ledger="ledger",
                                        tokenizer="lm_tokenizer",
                                        registered_model_name="dpalbum-not-private")
    with caplog.at_level(logging.WARNING), mlflow.start_run() as run:
        dataset.save(ModelRelease(summary_lm, ledger, "text_privacy_ledger", tokenizer))
    assert dataset.registered_version is None and why in dataset.registration_note
    assert "NOT registered" in caplog.text and why in caplog.text
    assert MlflowClient().search_model_versions("name = 'dpalbum-not-private'") == []
    tags = logged_models(run.info.run_id)["summary_lm"].tags
    assert tags["privacy.noise_source"] == ledger["noise_source"]
    assert tags["privacy.epsilon"] == str(ledger["epsilon"])


def test_an_lm_trained_under_another_plan_is_not_registered(store):
    ledger = spent_ledger()
    summary_lm, _, tokenizer = dp_lms(spent_ledger(plan_id="plan-b"))
    dataset = MlflowModelReleaseDataset(role="summary_lm", model="summary_lm", ledger="ledger",
                                        tokenizer="lm_tokenizer",
                                        registered_model_name="dpalbum-stale")
    with mlflow.start_run():
        dataset.save(ModelRelease(summary_lm, ledger, "text_privacy_ledger", tokenizer))
    assert dataset.registered_version is None and "plan" in dataset.registration_note
    assert MlflowClient().search_model_versions("name = 'dpalbum-stale'") == []
