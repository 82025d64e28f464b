"""The whole evaluation pipeline on a tiny world with Kedro's SequentialRunner: every section is
measured or says why not, internal marking follows the inputs, and nothing private reaches the
report."""

from __future__ import annotations

import base64
import functools
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from dpalbum.models.captioner import AlbumSource, CaptionerConfig, build_captioner
from dpalbum.models.evaluation_network import EvaluationNetworkConfig
from dpalbum.models.sampler import SamplingConfig
from dpalbum.models.summariser import SummariserConfig
from dpalbum.pipelines.evaluation import create_pipeline, nodes
from dpalbum.pipelines.evaluation.config import (
    HeldoutTextsConfig,
    ImageFidelityConfig,
    MembershipConfig,
    PrivacyAuditConfig,
    ReportConfig,
    TextMetricsConfig,
    TrackingConfig,
    UtilityConfig,
)
from dpalbum.pipelines.evaluation.datasets import OptionalParquetDataset
from dpalbum.pipelines.evaluation.pipeline import SECTIONS
from tests.pipelines.test_evaluation_audit import tiny_lm, word_tokenizer
from tests.pipelines.test_evaluation_world import (
    IMAGE_SIZE,
    PRIVATE_SENTINEL,
    curated_texts,
    evaluation_network,
    fake_encode_texts,
    ledger,
    public_corpus,
    synthetic_albums,
    world,
)

# Catalog entries holding private data (DESIGN.md): whatever reads them is internal.
PRIVATE_INPUTS = {"private_albums", "heldout_albums", "heldout_albums_for_captioner",
                  "canary_albums", "ground_truth", "album_texts", "heldout_album_texts"}
MODELS = {"evaluation_network", "captioner_model", "summary_lm", "caption_lm", "lm_tokenizer"}


class HeldoutReader:
    """An AlbumReader stand-in: records the size each consumer decodes the albums at."""

    def __init__(self, albums) -> None:
        self.albums, self.sizes = albums, []

    def read(self, image_size: int):
        self.sizes.append(image_size)
        return self.albums


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so tests can read intermediate outputs."""

    def _release(self) -> None:
        pass


def _params() -> dict:
    return {
        "params:evaluation.network": EvaluationNetworkConfig(
            image_size=IMAGE_SIZE, channels=[16, 32], feature_dim=32, epochs=30, batch_size=64,
            learning_rate=1e-2, max_train_images=None, heldout_fraction=0.2),
        "params:evaluation.image_fidelity": ImageFidelityConfig(kid_subsets=5,
                                                                kid_subset_size=20),
        "params:evaluation.text_metrics": TextMetricsConfig(max_samples=200),
        "params:evaluation.utility": UtilityConfig(),
        "params:evaluation.heldout_texts": HeldoutTextsConfig(device="cpu"),
        "params:evaluation.membership": MembershipConfig(),
        "params:evaluation.privacy_audit": PrivacyAuditConfig(),  # the release run: no audit
        "params:evaluation.report": ReportConfig(n_gallery_albums=3, n_public_samples=4),
        "params:evaluation.tracking": TrackingConfig(),
        "params:sampling": SamplingConfig(show_progress=False),
        "params:captioning.summariser": SummariserConfig(),
        "params:album_source": AlbumSource(),
        "params:captioning.captioner": {"backend": "embedded"},
    }


@functools.lru_cache(maxsize=1)
def _captioner():
    return build_captioner(public_corpus(), CaptionerConfig(
        image_size=IMAGE_SIZE, channels=[8, 16], epochs=3, train_batch_size=64, device="cpu"))


def _catalog(plot: bytes | None = None) -> DataCatalog:
    w = world()
    albums = synthetic_albums()
    tokenizer = word_tokenizer()
    inputs = {
        "public_corpus": public_corpus(), "private_albums": w["private_albums"],
        "heldout_albums": w["heldout_albums"], "canary_albums": w["canary_albums"],
        "heldout_albums_for_captioner": HeldoutReader(w["heldout_albums"]),
        "ground_truth": w["ground_truth"],
        "album_texts": w["album_texts"], "public_album_texts": w["heldout_album_texts"],
        "curated_texts": curated_texts(albums), "synthetic_albums": albums,
        "summary_lm": tiny_lm(tokenizer, 0), "caption_lm": tiny_lm(tokenizer, 1),
        "lm_tokenizer": tokenizer, "captioner_model": _captioner(),
        "privacy_ledger": ledger(), "privacy_utility_plot": plot, "params:privacy": {},
        "params:dp_training": {}, **_params(),
    }
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in inputs.items()}
    for name in ("evaluation_network", "heldout_album_texts", "evaluation_metrics", "audit_lms",
                 "audit_canaries", "audit_training_texts",
                 "released_metrics", "evaluation_mlflow_metrics",
                 "evaluation_internal_mlflow_metrics", "evaluation_report",
                 *[output for output, _, _ in SECTIONS]):
        datasets[name] = KeptDataset(copy_mode="assign")
    return DataCatalog(datasets)


@functools.lru_cache(maxsize=1)
def _run() -> DataCatalog:
    catalog = _catalog(plot=_png(np.full((8, 8, 3), 200, dtype=np.uint8)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nodes, "encode_texts", fake_encode_texts)
        SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pipeline_measures_every_section_or_says_why():
    doc = _run().load("evaluation_metrics")
    names = {output.removesuffix("_section") for output, _, _ in SECTIONS}
    measured = set(doc["released"]) | set(doc["internal_sections"])
    assert measured | set(doc["absent"]) | set(doc["internal_absent"]) == names
    # the tiny world has everything; the insertion audit runs only in a dedicated audit run
    assert doc["absent"] == {} and set(doc["internal_absent"]) == {"privacy_audit"}
    assert "not an audit run" in doc["internal_absent"]["privacy_audit"]
    assert doc["skipped"] == {"sections": 1, "missing_inputs": {}}
    assert catalog_audit_outputs_empty(_run())
    # the test ledger predates noise_source / album_count: said, not guessed
    assert doc["privacy"] == {"epsilon": 8.0, "delta": 1e-5, "unit": "album",
                              "budget_epsilon": 10.0, "neighbouring": "add or remove one album",
                              "noise_source": "unknown", "album_count": "unknown"}
    assert doc["internal"] is True
    assert doc["released"]["evaluation_network"]["scene_accuracy"] > 0.9


def test_internal_marking_follows_private_inputs():
    catalog = _run()
    for output, _, inputs in SECTIONS:
        section = catalog.load(output)
        reads_private = bool(PRIVATE_INPUTS & set(inputs))
        assert section["internal"] == reads_private, output


def test_heldout_texts_are_made_like_training_texts():
    texts = _run().load("heldout_album_texts")
    w = world()
    sizes = _run().load("heldout_albums_for_captioner").sizes
    assert sizes and set(sizes) == {_captioner().input_size}  # decoded at the captioner's size
    assert list(texts["album_id"]) == [a.album_id for a in w["heldout_albums"]]
    assert [len(c) for c in texts["captions"]] == [len(a) for a in w["heldout_albums"]]


def test_mlflow_metrics_are_released_and_internal_ones_apart():
    catalog = _run()
    doc, metrics = catalog.load("evaluation_metrics"), catalog.load("evaluation_mlflow_metrics")
    released = catalog.load("released_metrics")
    assert released["internal"] is False and released["released"] == doc["released"]
    assert not set(doc["internal_sections"]) & set(json.dumps(released).split('"'))
    assert {k.split(".")[0] for k in metrics} == set(doc["released"]) | {"privacy"}
    assert metrics["caption_agreement.scene_agreement"]["value"] == pytest.approx(
        doc["released"]["caption_agreement"]["scene_agreement"], rel=1e-5)
    assert all(set(v) == {"value", "step"} for v in metrics.values())
    assert metrics["privacy.epsilon"]["value"] == 8.0
    internal = catalog.load("evaluation_internal_mlflow_metrics")
    assert internal["image_fidelity.local_fd"]["value"] == pytest.approx(
        doc["internal_sections"]["image_fidelity"]["local_fd"], rel=1e-5)
    assert not set(internal) & set(metrics)
    assert "collect_metrics_node" in {n.name for n in create_pipeline().nodes}
    assert not any("tags" in o for o in create_pipeline().all_outputs())  # the hook tags


def test_report_shows_no_private_text_or_photo():
    html = _run().load("evaluation_report")
    assert PRIVATE_SENTINEL not in html
    w = world()
    for album in [*w["private_albums"], *w["heldout_albums"], *w["canary_albums"]]:
        for photo in album.photos:
            assert base64.b64encode(_png(photo.image)).decode() not in html
    assert html.count("<figure class='album'") == 3
    assert html.count("<figure class='public-sample'") == 4
    assert "privacy-utility plot" in html


def test_report_node_reads_no_private_dataset():
    report_nodes = [n for n in create_pipeline().nodes if n.name == "build_report_node"]
    assert report_nodes and not PRIVATE_INPUTS & set(report_nodes[0].inputs)


def test_released_report_drops_internal_metrics():
    catalog = _run()
    doc = catalog.load("evaluation_metrics")
    released = nodes.build_report_node(doc, ledger(), synthetic_albums(), public_corpus(), None,
                                       ReportConfig(include_internal_metrics=False))
    assert "image_fidelity" not in released and "membership_inference" not in released
    assert "caption_agreement" in released and "left out of this released report" in released


def catalog_audit_outputs_empty(catalog: DataCatalog) -> bool:
    """The release run plants nothing and trains no audit model."""
    return (catalog.load("audit_lms") == {} and catalog.load("audit_canaries").empty
            and catalog.load("audit_training_texts").empty)


def test_without_ground_truth_the_sections_needing_it_say_not_available(caplog):
    """Real (non-demo) data has no ground truth: those sections are skipped, logged, counted."""
    w, net = world(), evaluation_network()
    albums = synthetic_albums()
    with caplog.at_level("WARNING"):
        attributes = nodes.attribute_fidelity_node(curated_texts(albums), albums, None, net,
                                                   w["album_texts"])
        utility = nodes.utility_node(albums, w["private_albums"], w["heldout_albums"],
                                     pd.DataFrame(), net, UtilityConfig())
    assert "skipped: no ground truth" in caplog.text
    doc, _, _ = nodes.collect_metrics_node(ledger(), AlbumSource(), {"backend": "embedded"},
                                         attributes, utility)
    assert set(doc["internal_absent"]) == {"attribute_fidelity", "utility"}
    assert all(r.startswith("not available: no ground_truth")
               for r in doc["internal_absent"].values())
    assert doc["skipped"] == {"sections": 2, "missing_inputs": {"ground_truth": 2}}
    internal = nodes.internal_metrics_node(doc, TrackingConfig())
    assert internal["skipped.missing_ground_truth"]["value"] == 2
    assert nodes.internal_metrics_node(doc, TrackingConfig("none")) == {}
    html = nodes.build_report_node(doc, ledger(), albums, public_corpus(), None,
                                   ReportConfig(include_internal_metrics=True))
    assert "Not measured in this run" in html and "not available: no ground_truth" in html


def test_ground_truth_file_is_optional(tmp_path):
    import yaml

    catalog = yaml.safe_load((Path(__file__).parents[2] / "conf/base/catalog.yml").read_text())
    assert catalog["ground_truth"]["type"].endswith("datasets.OptionalParquetDataset")
    dataset = OptionalParquetDataset(filepath=str(tmp_path / "ground_truth.parquet"))
    assert dataset.load() is None
    dataset.save(pd.DataFrame({"album_id": ["album_0001"], "split": ["train"]}))
    assert list(dataset.load()["album_id"]) == ["album_0001"]
