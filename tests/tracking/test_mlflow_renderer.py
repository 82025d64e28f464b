"""The renderer as an MLflow pyfunc model: logged with the run's final ledger (through the release
hook, the renderer and the ledger leaving the same node), registered, loaded back from the
registry, and rendering exactly what the renderer renders."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog
from mlflow.tracking import MlflowClient
from PIL import Image

from dpalbum.hooks import MlflowReleaseHook
from dpalbum.models.renderer import CoherenceConfig, EmbeddedRenderer, RendererConfig
from dpalbum.tracking.release import SYNTHETIC_CAPTION
from dpalbum.tracking.renderer_pyfunc import RendererModel
from tests.tracking.conftest import spent_ledger

COHERENCE = {"guidance_scale": 2.0, "guided_fraction": 0.5, "latent_jitter": 0.3}


def tiny_renderer() -> EmbeddedRenderer:
    """A randomly initialised 16x16 renderer (~0.1M parameters): fast, and enough to check that
    the registry model is this renderer."""
    return EmbeddedRenderer.build(RendererConfig(
        image_size=16, block_out_channels=[8, 16], norm_num_groups=4, attention_head_dim=4,
        num_inference_steps=3, device="cpu", seed=0))


def decode(png: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))


@pytest.fixture(scope="module")
def registered(store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rendering")
    catalog = DataCatalog.from_config({
        "renderer_model": {"type": "dpalbum.models.renderer_io.RendererFolderDataset",
                           "path": str(folder / "renderer")},
        "privacy_ledger": {"type": "json.JSONDataset", "filepath": str(folder / "ledger.json")},
        "renderer_mlflow": {"type": "dpalbum.tracking.release.MlflowModelReleaseDataset",
                            "role": "renderer", "model": "renderer_model",
                            "ledger": "privacy_ledger",
                            "registered_model_name": "dpalbum-renderer"},
    })
    renderer, ledger = tiny_renderer(), spent_ledger()
    hook = MlflowReleaseHook()
    hook.after_context_created(SimpleNamespace(
        config_loader={"parameters": {"rendering": {"coherence": COHERENCE}}}))
    hook.after_catalog_created(catalog)
    with mlflow.start_run() as run:
        hook.before_pipeline_run({}, None, catalog)
        for name, data in (("renderer_model", renderer), ("privacy_ledger", ledger)):
            catalog.save(name, data)  # the order of dp_finetune_renderer_node's outputs
            hook.after_dataset_saved(name, data, None)
    return SimpleNamespace(renderer=renderer, ledger=ledger, run_id=run.info.run_id,
                           folder=folder / "renderer")


def test_the_renderer_is_registered_with_the_final_ledgers_epsilon(registered):
    (version,) = MlflowClient().search_model_versions("name = 'dpalbum-renderer'")
    assert version.run_id == registered.run_id
    assert version.description.startswith(f"ε = {registered.ledger['epsilon']:.4g}")
    assert version.tags["privacy.ledger"] == "privacy_ledger"
    assert version.tags["privacy.noise_source"] == "secure"
    assert version.tags["dpalbum.role"] == "renderer"


def test_the_registered_renderer_renders_what_the_renderer_renders(registered):
    model = mlflow.pyfunc.load_model("models:/dpalbum-renderer/1")
    prompts = ["a red circle in the city", "a blue square at the beach"]
    out = model.predict(pd.DataFrame({"prompt": prompts, "seed": [3, 4]}))
    assert list(out.columns) == ["png_base64", "width", "height"]
    assert out["width"].tolist() == out["height"].tolist() == [16, 16]
    expected = registered.renderer.render([[p] for p in prompts], [3, 4],
                                          CoherenceConfig(**COHERENCE), progress=False)
    for png, album in zip(out["png_base64"], expected, strict=True):
        assert np.array_equal(decode(png), album[0])  # PNG is lossless: the very same pixels
    assert not np.array_equal(decode(out["png_base64"][0]), decode(out["png_base64"][1]))


def test_inference_parameters_and_the_signature(registered):
    model = mlflow.pyfunc.load_model("models:/dpalbum-renderer/1")
    params = {p.name: p.default for p in model.metadata.get_params_schema().params}
    assert params == {"guidance_scale": COHERENCE["guidance_scale"], "num_inference_steps": 3}
    inputs = {c.name: c.required for c in model.metadata.get_input_schema().inputs}
    assert inputs == {"prompt": True, "seed": False}
    row = pd.DataFrame({"prompt": [SYNTHETIC_CAPTION]})  # no seed column: seed 0
    default = model.predict(row)["png_base64"][0]
    assert model.predict(row.assign(seed=0))["png_base64"][0] == default
    assert model.predict(row, params={"guidance_scale": 1.0})["png_base64"][0] != default
    assert model.predict(row, params={"num_inference_steps": 1})["png_base64"][0] != default
    assert model.predict(row)["png_base64"][0] == default
    # MLflow hands every call the signature's defaults; called directly, a call's parameters
    # must not stick either
    direct = RendererModel()
    direct.load_context(SimpleNamespace(artifacts={"renderer": str(registered.folder)},
                                        model_config=COHERENCE))
    assert direct.predict(None, row)["png_base64"][0] == default
    direct.predict(None, row, params={"num_inference_steps": 1})
    assert direct.predict(None, row)["png_base64"][0] == default


def test_a_replayable_run_logs_the_renderer_but_does_not_register_it(store, tmp_path):
    from dpalbum.models.renderer_io import RendererFolderDataset
    from dpalbum.tracking.release import MlflowModelReleaseDataset, ModelRelease

    renderer = tiny_renderer()
    RendererFolderDataset(str(tmp_path / "renderer")).save(renderer)
    dataset = MlflowModelReleaseDataset(role="renderer", model="renderer_model",
                                        ledger="privacy_ledger",
                                        registered_model_name="dpalbum-renderer-replayed")
    with mlflow.start_run():
        dataset.save(ModelRelease(renderer, spent_ledger(noise="replayable"), "privacy_ledger",
                                  folder=tmp_path / "renderer"))
    assert dataset.model_info is not None and dataset.registered_version is None
    assert "replayable" in dataset.registration_note
    assert MlflowClient().search_model_versions("name = 'dpalbum-renderer-replayed'") == []
