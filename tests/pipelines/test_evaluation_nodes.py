"""Evaluation nodes as plain functions on a tiny demo world: each section separates good synthetic
albums from bad ones, and says why when an input it needs is empty."""

from __future__ import annotations

import pandas as pd
import pytest

from dpalbum.albums.model import AlbumSet
from dpalbum.models.captioner import AlbumSource
from dpalbum.pipelines.evaluation import nodes
from dpalbum.pipelines.evaluation.config import (
    ImageFidelityConfig,
    TextMetricsConfig,
    UtilityConfig,
)
from tests.pipelines.test_evaluation_world import (
    curated_texts,
    evaluation_network,
    fake_encode_texts,
    synthetic_albums,
    world,
)

EMBEDDED = {"backend": "embedded"}  # params:captioning.captioner of the embedded default


@pytest.fixture(autouse=True)
def _fast_text_encoder(monkeypatch):
    monkeypatch.setattr(nodes, "encode_texts", fake_encode_texts)


def test_image_fidelity_prefers_real_looking_photos():
    w, net = world(), evaluation_network()
    config = ImageFidelityConfig(k=3, kid_subsets=5, kid_subset_size=20)
    real_like = nodes.image_fidelity_node(w["private_albums"], w["heldout_albums"], net, config)
    made_up = nodes.image_fidelity_node(synthetic_albums(), w["heldout_albums"], net, config)
    assert real_like["internal"] and real_like["notes"]["features"] == "local"
    assert set(real_like["metrics"]) >= {"local_fd", "kid", "precision", "recall", "n_real"}
    assert real_like["metrics"]["local_fd"] < made_up["metrics"]["local_fd"]
    assert real_like["metrics"]["kid"] < made_up["metrics"]["kid"]
    empty = nodes.image_fidelity_node(AlbumSet([]), w["heldout_albums"], net, config)
    assert empty["metrics"] == {} and "0 synthetic" in empty["absent"]


def test_text_fidelity_prefers_texts_like_the_private_ones():
    w = world()
    config = TextMetricsConfig(max_samples=200)
    close = nodes.text_fidelity_node(w["heldout_album_texts"], w["album_texts"], config,
                                     AlbumSource(), EMBEDDED)
    far = nodes.text_fidelity_node(curated_texts(synthetic_albums()), w["album_texts"], config,
                                   AlbumSource(), EMBEDDED)
    for key in ("summary_fd", "caption_fd"):
        assert close["metrics"][key] < far["metrics"][key], key
    assert close["metrics"]["caption_mauve"] > far["metrics"]["caption_mauve"]
    assert close["metrics"]["summary_novel_topic_share"] == 0.0  # held-out: the same events
    none = nodes.text_fidelity_node(w["album_texts"].iloc[:0], w["album_texts"], config,
                                    AlbumSource(), EMBEDDED)
    assert "0 synthetic" in none["absent"]


def test_album_coherence_higher_for_coherent_albums():
    net, config = evaluation_network(), TextMetricsConfig()
    coherent = nodes.album_coherence_node(synthetic_albums(coherent=True), net, config)
    random = nodes.album_coherence_node(synthetic_albums(coherent=False), net, config)
    assert not coherent["internal"]  # synthetic albums only: releasable
    assert coherent["metrics"]["photo_gap"] > 0.08 > 0.04 > random["metrics"]["photo_gap"]
    assert coherent["metrics"]["caption_gap"] > 0
    private = nodes.private_coherence_node(world()["heldout_albums"], world()["album_texts"], net,
                                           config)
    assert private["internal"] and private["metrics"]["photo_gap"] > 0


def test_caption_agreement_sees_photos_that_contradict_their_captions():
    net = evaluation_network()
    demo = AlbumSource()
    good = nodes.caption_agreement_node(synthetic_albums(coherent=True), net, demo)["metrics"]
    bad = nodes.caption_agreement_node(synthetic_albums(coherent=False), net, demo)["metrics"]
    assert good["scene_agreement"] > 0.8
    assert good["protagonist_agreement"] > 0.6 > bad["protagonist_agreement"]
    assert good["protagonist_consistency"] > bad["protagonist_consistency"]
    assert "no synthetic photos" in nodes.caption_agreement_node(AlbumSet([]), net, demo)["absent"]


def test_attribute_fidelity_lower_for_private_like_texts():
    w, net = world(), evaluation_network()
    like = nodes.attribute_fidelity_node(w["album_texts"], w["private_albums"],
                                         w["ground_truth"], net, w["album_texts"])["metrics"]
    off = synthetic_albums(scenes=("desert",))  # no private event takes place in the desert
    unlike = nodes.attribute_fidelity_node(curated_texts(off), off, w["ground_truth"],
                                           net, w["album_texts"])["metrics"]
    for key in ("text_tv_scene", "text_tv_protagonist", "text_tv_event", "image_tv_protagonist"):
        assert like[key] < unlike[key], key
    assert like["text_tv_scene"] == like["text_tv_protagonist"] == like["text_tv_event"] == 0
    assert 0 < like["floor_tv_scene"] < 0.5  # held-out vs training albums: sampling noise only
    truth = w["ground_truth"]
    gone = nodes.attribute_fidelity_node(curated_texts(synthetic_albums()), synthetic_albums(),
                                         truth[truth["split"] != "train"], net,
                                         w["album_texts"])
    assert "covers none of the" in gone["absent"]
    empty = nodes.attribute_fidelity_node(curated_texts(synthetic_albums()), synthetic_albums(),
                                          truth.iloc[:0], net, w["album_texts"])
    assert empty["absent"].startswith("not available: no ground_truth")


def test_utility_tstr_with_real_albums_as_synthetic_matches_real():
    w, net = world(), evaluation_network()
    as_synthetic = AlbumSet([a for a in w["private_albums"]])
    for album, row in zip(as_synthetic, w["album_texts"].itertuples()):
        album.metadata = {"summary": row.summary}
        for photo, caption in zip(album.photos, row.captions):
            photo.caption = caption
    section = nodes.utility_node(as_synthetic, w["private_albums"], w["heldout_albums"],
                                 w["ground_truth"], net, UtilityConfig(tasks=["protagonist"]))
    found = section["metrics"]
    assert found["protagonist_accuracy_synthetic"] == pytest.approx(
        found["protagonist_accuracy_real"])
    assert found["protagonist_n_test"] == len(w["heldout_albums"])
    one_class = nodes.utility_node(synthetic_albums(n=1), w["private_albums"],
                                   w["heldout_albums"], w["ground_truth"], net, UtilityConfig())
    assert "synthetic classes" in one_class["absent"]


def test_utility_never_reads_heldout_labels_for_training(monkeypatch):
    """Model selection sees the training side only: the test labels reach fit_and_score last."""
    w, net = world(), evaluation_network()
    seen = []
    monkeypatch.setattr(nodes.metrics, "fit_and_score",
                        lambda tx, ty, sx, sy, seed=0: seen.append((list(ty), list(sy))) or 0.5)
    albums = synthetic_albums()
    nodes.utility_node(albums, w["private_albums"], w["heldout_albums"], w["ground_truth"], net,
                       UtilityConfig(tasks=["event"]))
    heldout = pd.Index(w["ground_truth"].query("split == 'heldout'")["album_id"].unique())
    truth = w["ground_truth"].groupby("album_id")["event"].first()
    for train_labels, test_labels in seen:
        assert test_labels == list(truth.loc[heldout])
        assert len(train_labels) != len(heldout) or train_labels != test_labels
