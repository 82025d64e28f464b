"""Issue 13: the embedded captioner is a demo-world model. On real photos the run stops before
any DP training (naming the pretrained settings and the override); with the override, the data
card, metrics and report name the captioner and say its texts are out of domain; metrics in the
demo vocabulary and those needing ground truth are "not available" for albums outside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpalbum.albums.dataset import AlbumFolderDataset, AlbumReaderDataset
from dpalbum.models.captioner import (
    AlbumSource,
    CaptionerConfig,
    CaptionerOutOfDomainError,
    DomainCheckConfig,
    build_captioner,
    check_domain,
)
from dpalbum.models.summariser import SummariserConfig
from dpalbum.pipelines.captioning.nodes import caption_albums_node
from dpalbum.pipelines.evaluation import nodes
from dpalbum.pipelines.evaluation.config import TextMetricsConfig, UtilityConfig
from dpalbum.pipelines.rendering.data_card import build_data_card
from tests.models.synthetic_photos import private_albums, public_corpus
from tests.pipelines.test_evaluation_world import (
    evaluation_network,
    ledger,
    synthetic_albums,
    world,
)
from tests.pipelines.test_rendering import LEDGER
from tests.real_albums import make_real_albums

EMBEDDED = {"backend": "embedded"}  # params:captioning.captioner of the embedded default

CAPTIONER = CaptionerConfig(device="cpu", channels=[16, 32], epochs=6, train_batch_size=32,
                            learning_rate=5e-3, heldout_fraction=0.2, batch_size=64, seed=0)
PLAN = {"plan_id": "test"}


@pytest.fixture(scope="module")
def captioner():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_captioner(public_corpus(800, seed=0), CAPTIONER)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real_albums(tmp_path_factory):
    root = tmp_path_factory.mktemp("real") / "my albums"
    make_real_albums(root, n_albums=10)
    return root


def test_the_threshold_comes_from_public_held_out_images(captioner):
    percentiles = captioner.training_report["public_heldout_confidence_percentiles"]
    assert len(percentiles) == 101 and percentiles == sorted(percentiles)
    check = check_domain(captioner, [p.image for a in private_albums(4, seed=1)[0]
                                     for p in a.photos], DomainCheckConfig(heldout_percentile=5))
    assert check["threshold"] == pytest.approx(percentiles[5], abs=1e-6)


def test_demo_photos_are_in_domain_and_real_photos_are_not(captioner, real_albums):
    demo = [p.image for a in private_albums(12, seed=2)[0] for p in a.photos]
    real = [p.image for a in AlbumFolderDataset(real_albums, image_size=32).load()
            for p in a.photos]
    demo_check = check_domain(captioner, demo, DomainCheckConfig())
    real_check = check_domain(captioner, real, DomainCheckConfig())
    assert demo_check["checked"] and demo_check["in_domain"]
    assert demo_check["low_confidence_share"] <= 0.25
    assert real_check["checked"] and not real_check["in_domain"]
    assert real_check["low_confidence_share"] > 0.5
    assert set(real_check) >= {"n_photos", "n_low_confidence", "threshold"}


def caption(captioner, folder, allow: bool):
    return caption_albums_node(captioner, AlbumReaderDataset(folder).load(), PLAN, CAPTIONER,
                               SummariserConfig(), DomainCheckConfig(), allow)


def test_real_photos_stop_the_run_naming_the_pretrained_settings(captioner, real_albums):
    with pytest.raises(CaptionerOutOfDomainError) as caught:
        caption(captioner, real_albums, allow=False)
    message = str(caught.value)
    assert "before any DP training" in message and "demo-world model" in message
    assert "captioning.captioner.backend=pretrained" in message
    assert "captioning.captioner.model_name_or_path=" in message
    assert "captioning.allow_out_of_domain=true" in message
    texts, domain = caption(captioner, real_albums, allow=True)
    assert len(texts) == 10 and domain["allowed_out_of_domain"] and not domain["in_domain"]
    assert domain["internal"] is True


def test_the_captioner_reads_photos_at_its_own_input_size(tmp_path, captioner):
    class Recorder:
        kind, input_size, seen = "recorder", 48, []

        def to(self, device):
            return self

        def caption(self, images, batch_size):
            self.seen.extend(image.shape for image in images)
            return ["a photo"] * len(images)

    make_real_albums(tmp_path / "albums", n_albums=2)
    recorder = Recorder()
    caption_albums_node(recorder, AlbumReaderDataset(tmp_path / "albums").load(), PLAN,
                        CAPTIONER, SummariserConfig(), DomainCheckConfig(), False)
    assert recorder.seen and set(recorder.seen) == {(48, 48, 3)}
    assert captioner.input_size == CAPTIONER.image_size  # the embedded one: its own size


def rendering_report() -> dict:
    from dpalbum.pipelines.rendering.data_card import privacy_summary

    return {"privacy": privacy_summary(LEDGER), "image_size": 16, "seed": 5,
            "rendered_at": "2026-11-23T17:00:00+00:00",
            "coherence": {"shared_initial_latents": True, "latent_jitter": 0.3,
                          "character_in_every_prompt": True, "guidance_scale": 3.0},
            "renderer": {"backend": "embedded", "architecture": "UNet", "sampler": "dpm",
                         "text_encoder": "MiniLM", "training": {"n_images": 9}}}


def test_data_card_and_metrics_name_the_captioner_and_say_out_of_domain():
    source = AlbumSource(demo_world=False)
    card = build_data_card(rendering_report(), n_albums=2, n_photos=5,
                           captioner=source.provenance(EMBEDDED))
    assert "captioner: embedded attribute captioner (demo world" in card
    assert "OUT OF DOMAIN" in card and "Album texts out of domain" in card
    demo_card = build_data_card(rendering_report(), n_albums=2, n_photos=5,
                                captioner=AlbumSource().provenance(EMBEDDED))
    assert "captioner: embedded" in demo_card and "OUT OF DOMAIN" not in demo_card
    doc, released, _ = nodes.collect_metrics_node(ledger(), source, EMBEDDED)
    assert doc["captioner"]["out_of_domain"] and released["captioner"]["out_of_domain"]


def test_demo_vocabulary_metrics_are_not_reported_outside_the_demo_world():
    w, net = world(), evaluation_network()
    albums = synthetic_albums()
    outside = AlbumSource(demo_world=False)
    agreement = nodes.caption_agreement_node(albums, net, outside)
    fidelity = nodes.text_fidelity_node(w["heldout_album_texts"], w["album_texts"],
                                        TextMetricsConfig(max_samples=200), outside, EMBEDDED)
    for section in (agreement, fidelity):
        assert section["metrics"] == {} and section["absent"].startswith("not available")
    # a pretrained captioner writes real texts: their fidelity is measured
    measured = nodes.text_fidelity_node(w["heldout_album_texts"], w["album_texts"],
                                        TextMetricsConfig(max_samples=200), outside,
                                        {"backend": "pretrained", "model_name_or_path": "x"})
    assert measured["metrics"]


def test_ground_truth_that_covers_none_or_some_albums_never_crashes():
    """The issue's KeyError: the demo world's ground truth looked up for real album ids."""
    w, net = world(), evaluation_network()
    albums = synthetic_albums()
    renamed = [type(a)(f"Birthday-{i}_55737440@N02", a.photos, a.metadata)
               for i, a in enumerate(w["private_albums"])]
    real = type(w["private_albums"])(renamed)
    utility = nodes.utility_node(albums, real, w["heldout_albums"], w["ground_truth"], net,
                                 UtilityConfig())
    assert utility["absent"].startswith("not available")
    assert utility["notes"]["albums_without_ground_truth"]["training"] == len(renamed)
    texts = w["album_texts"].assign(album_id=[a.album_id for a in renamed])
    attributes = nodes.attribute_fidelity_node(w["album_texts"], albums, w["ground_truth"], net,
                                               texts)
    assert attributes["absent"].startswith("not available: the ground truth covers none")
    # half covered: measured on the covered half, the rest counted
    half = len(renamed) // 2
    mixed = type(w["private_albums"])([*renamed[:half], *list(w["private_albums"])[half:]])
    partial = nodes.utility_node(albums, mixed, w["heldout_albums"],
                                 w["ground_truth"], net, UtilityConfig())
    assert partial["notes"]["albums_without_ground_truth"]["training"] == half
    assert np.isfinite(list(partial["metrics"].values())).all() and partial["metrics"]
    doc, _, _ = nodes.collect_metrics_node(ledger(), AlbumSource(), EMBEDDED, utility,
                                         attributes)
    assert doc["skipped"]["sections"] == 2
