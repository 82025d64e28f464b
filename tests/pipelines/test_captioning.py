"""The captioning pipeline: wiring (privacy plan first), a SequentialRunner run, quality report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import ParquetDataset

from dpalbum.albums.dataset import AlbumFolderDataset, AlbumReaderDataset
from dpalbum.models.captioner import AttributeCaptioner, CaptionerConfig, DomainCheckConfig
from dpalbum.models.io import ModelFolderDataset
from dpalbum.models.summariser import SummariserConfig
from dpalbum.pipelines import privacy_plan
from dpalbum.pipelines.captioning import create_pipeline
from dpalbum.pipelines.captioning.nodes import evaluate_captioning_node, report_ingestion_node
from dpalbum.privacy import PrivacyAccountDataset
from dpalbum.settings import CONFIG_LOADER_ARGS
from tests.models.synthetic_photos import private_albums, public_corpus

ROOT = Path(__file__).resolve().parents[2]
CAPTIONER = CaptionerConfig(device="cpu", channels=[16, 32], epochs=6, train_batch_size=32,
                            learning_rate=5e-3, heldout_fraction=0.2, seed=0)


def _shipped(name: str) -> dict:
    path = Path(__file__).resolve().parents[2] / "conf" / "base" / f"parameters_{name}.yml"
    return yaml.safe_load(path.read_text())[name]


def _tiny_dp_training() -> dict:
    params = _shipped("dp_training")
    for role in ("summary_lm", "caption_lm"):
        params[role]["dp"]["expected_batch_albums"] = 4  # of 10 albums here
    return params


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run the whole pipeline on a tiny synthetic world; return outputs, truth and catalog."""
    albums, truth = private_albums(10, seed=3)
    folder = tmp_path_factory.mktemp("captioning")
    AlbumFolderDataset(folder / "albums").save(albums)  # the captioner reads them at its size
    catalog = DataCatalog({
        "public_corpus": MemoryDataset(public_corpus(800, seed=0)),
        "private_albums": MemoryDataset(albums, copy_mode="assign"),
        "private_albums_for_captioner": AlbumReaderDataset(folder / "albums"),
        # the plan node runs first, from public facts only (album ids and the shipped params)
        "private_album_index": MemoryDataset([a.album_id for a in albums.albums]),
        "params:privacy": MemoryDataset(_shipped("privacy")),
        "params:dp_training": MemoryDataset(_tiny_dp_training()),
        "params:rendering": MemoryDataset({"seed": 0}),  # renderer DP fine-tune off
        "privacy_account": PrivacyAccountDataset(str(folder / "privacy_account.json")),
        "ground_truth": MemoryDataset(truth),
        "captioner_model": ModelFolderDataset(
            str(folder / "captioner"), loader="dpalbum.models.captioner.load_captioner"),
        "album_texts": ParquetDataset(filepath=str(folder / "album_texts.parquet")),
        "params:captioning.captioner": MemoryDataset(CAPTIONER),
        "params:captioning.summariser": MemoryDataset(SummariserConfig()),
        "params:captioning.domain_check": MemoryDataset(DomainCheckConfig()),
        "params:captioning.allow_out_of_domain": MemoryDataset(False),
        "captioning_domain": MemoryDataset(),
    })
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: avoid oversubscription
    try:
        outputs = SequentialRunner().run(privacy_plan.create_pipeline() + create_pipeline(),
                                         catalog)
    finally:
        torch.set_num_threads(threads)
    return outputs, albums, catalog


def test_every_node_reading_private_photos_waits_for_the_privacy_plan():
    pipeline = create_pipeline()
    readers = [n for n in pipeline.nodes
               if {"private_albums", "private_albums_for_captioner"} & set(n.inputs)]
    assert {n.name for n in readers} == {"report_ingestion_node", "caption_albums_node"}
    assert all("privacy_plan" in n.inputs for n in readers)
    assert pipeline.outputs() == {"ingestion_report", "captioning_quality", "captioning_domain"}
    assert "privacy_plan" in pipeline.inputs()  # written by the privacy_plan pipeline only
    assert {"captioner_model", "album_texts"} <= pipeline.all_outputs()


def test_album_texts_have_one_row_per_album_with_captions_in_photo_order(run):
    _, albums, catalog = run
    texts = catalog.load("album_texts")  # read back from parquet, as dp_training will
    assert list(texts.columns) == ["album_id", "summary", "captions"]
    assert texts["album_id"].tolist() == [a.album_id for a in albums]
    assert [len(c) for c in texts["captions"]] == [len(a) for a in albums]
    assert all(isinstance(c, str) and c for cs in texts["captions"] for c in cs)


def test_quality_report_is_internal_and_meets_the_targets(run):
    outputs, _, _ = run
    quality = outputs["captioning_quality"].load()
    assert quality["internal"] is True
    assert quality["n_albums"] == 10 and quality["n_albums_without_ground_truth"] == 0
    assert quality["captions"]["scene_accuracy"] >= 0.9
    assert quality["captions"]["protagonist_accuracy"] >= 0.9
    assert quality["summaries"]["protagonist_accuracy"] >= 0.9
    assert quality["meets_targets"] is True


def test_the_captioner_is_saved_as_a_folder_and_reused(run):
    _, _, catalog = run
    model = catalog.load("captioner_model")
    assert isinstance(model, AttributeCaptioner)
    assert model.training_report["public_heldout"]["scene_accuracy"] >= 0.9


def test_ingestion_report_is_the_album_set_report_marked_internal():
    albums, _ = private_albums(2, seed=0)
    report = report_ingestion_node(albums, {})
    assert report["internal"] is True and "private" in report["internal_means"]
    assert {k: v for k, v in report.items()
            if k not in ("internal", "internal_means")} == albums.report


def test_quality_counts_wrong_captions_and_albums_without_truth():
    truth = pd.DataFrame({
        "album_id": ["a", "a", "c", "c"], "split": "train", "photo_index": [1, 0, 0, 1],
        "photo_name": ["001.png", "000.png", "000.png", "001.png"], "event": "holiday",
        "colour": "red", "shape": "circle", "scene": ["city", "beach", "city", "city"],
        "objects": ["ball", "", "", ""]})
    texts = pd.DataFrame({
        "album_id": ["a", "b", "c"],
        "summary": ["a holiday album of a red circle, in the beach and the city", "x", "y"],
        "captions": [["a red circle in the beach", "a blue circle in the night with a ball"],
                     ["a photo"],
                     ["a red circle in the city"]]})  # one photo of "c" was skipped on load
    quality = evaluate_captioning_node(texts, truth)
    assert quality["n_albums"] == 1 and quality["n_albums_without_ground_truth"] == 2
    assert quality["n_photos"] == 2
    assert quality["captions"]["scene_accuracy"] == 0.5  # photo 1 is the city, not the night
    assert quality["captions"]["protagonist_accuracy"] == 0.5
    assert quality["captions"]["objects_exact_accuracy"] == 1.0
    assert quality["summaries"] == {"protagonist_accuracy": 1.0, "main_scene_accuracy": 1.0,
                                    "event_accuracy": 1.0}
    assert quality["meets_targets"] is False
    without = evaluate_captioning_node(texts, pd.DataFrame())  # real albums have no truth
    assert without["n_albums_without_ground_truth"] == 3 and without["captions"] == {}


def test_parameters_file_validates_into_the_config_dataclasses():
    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), **CONFIG_LOADER_ARGS)
    params = loader["parameters"]["captioning"]
    captioner = CaptionerConfig(**params["captioner"])
    summariser = SummariserConfig(**params["summariser"])
    assert captioner.backend == "embedded" and summariser.backend == "embedded"
    assert captioner.image_size == loader["globals"]["image_size"]
    assert set(params["captioner"]) == {f.name for f in dataclasses.fields(CaptionerConfig)}
    assert set(params["summariser"]) <= {f.name for f in dataclasses.fields(SummariserConfig)}
