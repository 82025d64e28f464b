"""Captioners: the embedded attribute captioner (trained on public images), the pretrained path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from dpalbum.albums.vocabulary import parse_caption
from dpalbum.models.captioner import (
    AttributeCaptioner,
    CaptionerConfig,
    PretrainedCaptioner,
    attribute_accuracy,
    build_captioner,
    load_captioner,
)
from dpalbum.models.io import ModelFolderDataset, resolve_callable
from dpalbum.models.tokenizer import train_public_tokenizer
from tests.models.synthetic_photos import private_albums, public_corpus

TINY = CaptionerConfig(device="cpu", channels=[16, 32], epochs=6, train_batch_size=32,
                       learning_rate=5e-3, heldout_fraction=0.2, batch_size=64, seed=0)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """2 shared cores: one intra-op thread is ~10x faster than two competing with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus():
    return public_corpus(800, seed=0)


@pytest.fixture(scope="module")
def captioner(corpus):
    return build_captioner(corpus, TINY)


def _photos_and_truth(n_albums: int = 12):
    albums, truth = private_albums(n_albums, seed=5)
    images = [p.image for a in albums for p in a.photos]
    expected = [{"scene": r.scene, "colour": r.colour, "shape": r.shape,
                 "objects": r.objects.split()} for r in truth.itertuples()]
    return images, expected


def test_attribute_captioner_learns_the_public_vocabulary(captioner):
    images, expected = _photos_and_truth()
    predicted = [parse_caption(c) for c in captioner.caption(images)]
    accuracy = attribute_accuracy(predicted, expected)
    assert accuracy["scene_accuracy"] >= 0.9
    assert accuracy["protagonist_accuracy"] >= 0.9
    assert accuracy["objects_f1"] >= 0.8
    report = captioner.training_report
    assert report["n_train"] == 640 and report["n_heldout"] == 160
    assert report["public_heldout"]["protagonist_accuracy"] >= 0.9


def test_labels_come_from_the_public_corpus(captioner, corpus):
    assert captioner.labels["scene"] == sorted(set(corpus["scene"]))
    assert captioner.labels["objects"] == ["ball", "kite"]


def test_training_is_seeded(corpus):
    config = CaptionerConfig(**{**TINY.__dict__, "epochs": 1})
    a, b = build_captioner(corpus.iloc[:64], config), build_captioner(corpus.iloc[:64], config)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_captions_are_the_demo_template_and_resize_other_sizes(captioner):
    images, _ = _photos_and_truth(2)
    big = [np.kron(im, np.ones((2, 2, 1), dtype=np.uint8)) for im in images]  # 64x64
    captions = captioner.caption(images)
    assert all(c.startswith("a ") and " in the " in c for c in captions)
    main = [{k: parse_caption(c)[k] for k in ("scene", "colour", "shape")} for c in captions]
    assert [{k: parse_caption(c)[k] for k in ("scene", "colour", "shape")}
            for c in captioner.caption(big)] == main


def test_model_folder_round_trip_without_pickle(captioner, tmp_path):
    images, _ = _photos_and_truth(2)
    dataset = ModelFolderDataset(str(tmp_path / "captioner"),
                                 loader="dpalbum.models.captioner.load_captioner")
    dataset.save(captioner)
    files = sorted(p.name for p in (tmp_path / "captioner").iterdir())
    assert files == [".dpalbum_model", "captioner.json", "model.safetensors"]
    config = json.loads((tmp_path / "captioner" / "captioner.json").read_text())
    assert config["kind"] == "embedded attribute captioner"
    loaded = dataset.load()
    assert isinstance(loaded, AttributeCaptioner)
    assert loaded.caption(images) == captioner.caption(images)
    assert loaded.training_report == captioner.training_report
    dataset.save(loaded)  # replacing a folder it wrote itself is fine


def test_model_folder_dataset_protects_foreign_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    dataset = ModelFolderDataset(str(tmp_path), loader="dpalbum.models.captioner.load_captioner")
    with pytest.raises(DatasetError, match="did not write"):
        dataset.save(AttributeCaptioner({n: ["x"] for n in ("scene", "colour", "shape",
                                                            "objects")}))
    assert (tmp_path / "notes.txt").read_text() == "precious"
    with pytest.raises(DatasetError, match="save_pretrained"):
        ModelFolderDataset(str(tmp_path / "m"), loader="x.y").save({"a": 1})
    with pytest.raises(DatasetError, match="no model folder"):
        ModelFolderDataset(str(tmp_path / "missing"), loader="x.y").load()


def test_loaders_resolve_functions_and_classmethods():
    from transformers import AutoTokenizer

    assert resolve_callable("dpalbum.models.captioner.load_captioner") is load_captioner
    assert resolve_callable("transformers.AutoTokenizer.from_pretrained") == (
        AutoTokenizer.from_pretrained)
    with pytest.raises(DatasetError, match="not an importable callable"):
        resolve_callable("no_such_package.load")


def test_corpus_without_labels_is_refused(corpus):
    with pytest.raises(ValueError, match="lacks columns"):
        build_captioner(corpus.drop(columns=["shape"]), TINY)
    with pytest.raises(ValueError, match="unknown captioner backend"):
        build_captioner(corpus, CaptionerConfig(backend="clip"))


@pytest.fixture(scope="module")
def tiny_image_to_text_folder(tmp_path_factory, corpus):
    """A random ViT + GPT-2 VisionEncoderDecoder saved like a hub checkpoint (no hub needed)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
        ViTModel,
    )

    tokenizer = train_public_tokenizer(corpus["caption"])
    torch.manual_seed(0)
    encoder = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64))
    decoder = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=1, n_head=2,
        add_cross_attention=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = tokenizer.bos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
    folder = tmp_path_factory.mktemp("tiny_vision_encoder_decoder")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def test_pretrained_captioner_captions_and_round_trips(tiny_image_to_text_folder, tmp_path):
    images, _ = _photos_and_truth(2)
    config = CaptionerConfig(backend="pretrained", model_name_or_path=tiny_image_to_text_folder,
                             max_new_tokens=5)
    captioner = build_captioner(None, config)
    assert isinstance(captioner, PretrainedCaptioner)
    captions = captioner.caption(images, batch_size=3)
    assert len(captions) == len(images) and all(isinstance(c, str) for c in captions)
    for store_weights in (True, False):
        captioner.store_weights = store_weights
        folder = tmp_path / f"stored_{store_weights}"
        ModelFolderDataset(str(folder), loader="dpalbum.models.captioner.load_captioner").save(
            captioner)
        assert (folder / "model" / "model.safetensors").exists() == store_weights
        loaded = load_captioner(str(folder))
        assert loaded.model_name_or_path == tiny_image_to_text_folder
        assert loaded.caption(images, batch_size=8) == captions


def test_prompted_decoder_only_captioner_drops_the_echoed_prompt(tmp_path, corpus):
    """A tiny random GIT (decoder-only, prompted) with its processor: a vision-chat stand-in."""
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = train_public_tokenizer([*corpus["caption"][:50], "what is in the photo"])
    torch.manual_seed(0)
    model = GitForCausalLM(GitConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(tmp_path)
    GitProcessor(image_processor=CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer).save_pretrained(tmp_path)
    prompt = "what is in the photo"
    captioner = build_captioner(None, CaptionerConfig(
        backend="pretrained", model_name_or_path=str(tmp_path), prompt=prompt, max_new_tokens=4))
    images, _ = _photos_and_truth(1)
    with torch.no_grad():
        inputs = captioner.processor(images=[images[0]], text=[prompt], return_tensors="pt")
        full = captioner.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    n_prompt = inputs["input_ids"].shape[1]
    expected = tokenizer.decode(full[0, n_prompt:], skip_special_tokens=True).strip()
    assert captioner.caption(images[:1]) == [expected]
