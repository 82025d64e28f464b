"""``kedro run --env tiny_hf`` end to end (issue 13 item 6): the ``hf`` profile's shape with tiny
random models that ``scripts/build_tiny_models.py`` builds offline, every role through its real
transformers / diffusers class (BLIP captioner, Llama summariser and DP LMs with LoRA, Stable
Diffusion renderer, CLIP evaluation features), the whole default pipeline on a tiny demo world."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.privacy.conftest import run_verifiers
from tests.test_end_to_end import make_project

ROOT = Path(__file__).resolve().parents[1]
MODELS = "data/tiny_hf_models"  # where conf/tiny_hf reads them, relative to the project
DEMO_CAPTION = re.compile(r"^a \w+ \w+ in the \w+")  # the embedded captioner's template
TEMPLATE_SUMMARY = re.compile(r"^an? (\w+ )*?album of ")  # the summariser's fallbacks


def build_tiny_models(out: Path) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("build_tiny_models",
                                                  ROOT / "scripts/build_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_models(out)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = make_project(tmp_path_factory.mktemp("tiny_hf"))
    build_tiny_models(project / MODELS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)  # conf/tiny_hf's model paths and the catalog are relative to it
        while mlflow.active_run() is not None:
            mlflow.end_run()
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="tiny_hf") as session:
            session.run()  # __default__: demo_world ... evaluation
    return project


def test_tiny_models_use_the_real_classes_of_each_role(project):
    folders = {role: project / MODELS / role
               for role in ("captioner", "summariser", "lm", "renderer", "clip")}
    config = {role: json.loads((folder / "config.json").read_text())
              for role, folder in folders.items() if (folder / "config.json").exists()}
    assert config["captioner"]["architectures"] == ["BlipForConditionalGeneration"]
    assert config["summariser"]["architectures"] == ["LlamaForCausalLM"]
    assert config["lm"]["architectures"] == ["LlamaForCausalLM"]
    assert config["clip"]["architectures"] == ["CLIPModel"]
    pipeline = json.loads((folders["renderer"] / "model_index.json").read_text())
    assert pipeline["_class_name"] == "StableDiffusionPipeline"
    assert pipeline["unet"] == ["diffusers", "UNet2DConditionModel"]


def test_the_run_writes_a_verified_ledger_with_both_dp_lms(project):
    ledger_path = project / "data/08_reporting/privacy_ledger.json"
    run_verifiers(ledger_path, "--strict")
    ledger = json.loads(ledger_path.read_text())
    assert ledger["epsilon"] <= ledger["budget_epsilon"] and ledger["noise_source"] == "secure"
    assert [m["name"] for m in ledger["mechanisms"]] == [
        "album_count", "semantic_query", "summary_lm", "caption_lm"]


def test_synthetic_albums_are_rendered_by_the_pretrained_pipeline(project):
    root = project / "data/07_model_output/synthetic_albums"
    albums = sorted(p for p in root.iterdir() if p.is_dir())
    assert albums
    for album in albums:
        photos = sorted(album.glob("*.png"))
        assert photos and (album / "album.json").is_file()
        with Image.open(photos[0]) as image:  # rendering.renderer.image_size, not globals'
            assert image.size == (48, 48)
    card = (root / "DATA_CARD.md").read_text()
    assert f"StableDiffusionPipeline ({MODELS}/renderer)" in card
    # the data card names the captioner that really wrote the album texts
    assert f"pretrained image-to-text captioner {MODELS}/captioner" in card
    renderer = json.loads((project / "data/06_models/renderer/renderer.json").read_text())
    assert renderer["backend"] == "pretrained" and renderer["config"]["torch_dtype"] == "bfloat16"


def test_album_texts_come_from_the_pretrained_captioner_and_summariser(project):
    texts = pd.read_parquet(project / "data/02_intermediate/album_texts.parquet")
    captions = [c for album in texts["captions"] for c in album]
    assert captions and not any(DEMO_CAPTION.match(c) for c in captions)
    # the summariser's own words, not the template / extractive fallback
    written = [s for s in texts["summary"] if not TEMPLATE_SUMMARY.match(s)]
    assert len(written) >= len(texts) // 2
    captioner = json.loads((project / "data/06_models/captioner/captioner.json").read_text())
    assert captioner["backend"] == "pretrained" and captioner["torch_dtype"] == "bfloat16"


def test_dp_lms_are_the_lora_merged_llama_with_their_plan(project):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(project / MODELS / "lm")
    for role in ("summary_lm", "caption_lm"):
        config = json.loads((project / "data/06_models" / role / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"]
        assert config["dpalbum_privacy"]["mechanism"] == role
        model = AutoModelForCausalLM.from_pretrained(project / "data/06_models" / role)
        # the tokenizer's added <|sep|> row: the embedding was resized for it
        assert model.get_input_embeddings().num_embeddings == (
            base.get_input_embeddings().num_embeddings + 1)
        assert not any("lora" in name for name in model.state_dict())  # merged, plain Llama


def test_evaluation_measures_images_on_clip_features(project):
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    fidelity = metrics["internal_sections"]["image_fidelity"]
    assert np.isfinite(fidelity["clip_fd"]) and "local_fd" not in fidelity
    assert metrics["notes"]["image_fidelity"]["features"] == "clip"
    assert metrics["captioner"]["backend"] == "pretrained"
    assert metrics["captioner"]["out_of_domain"] is False
