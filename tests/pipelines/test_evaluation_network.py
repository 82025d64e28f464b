"""The evaluation network: learns the demo world from public images, round-trips through its
safetensors folder, and plugs into torchmetrics' FID as a custom feature extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpalbum.models.evaluation_network import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    EvaluationNetworkConfig,
    FeatureExtractor,
    inception_extractor,
    to_uint8_batch,
    train_evaluation_network,
)
from dpalbum.models.io import ModelFolderDataset
from dpalbum.pipelines.evaluation import config
from dpalbum.pipelines.evaluation.config import ImageFidelityConfig
from tests.pipelines.test_evaluation_world import (
    IMAGE_SIZE,
    evaluation_network,
    public_corpus,
    world,
)


def test_network_learns_scene_and_protagonist_from_public_images():
    report = evaluation_network().training_report
    assert report["data"] == "public corpus only"
    accuracy = report["public_heldout"]
    assert accuracy["scene_accuracy"] > 0.9, accuracy  # chance: 1/6
    assert accuracy["colour_accuracy"] > 0.5, accuracy  # chance: 1/6


def test_predictions_on_private_photos_match_ground_truth_scene():
    net, w = evaluation_network(), world()
    images = [p.image for a in w["private_albums"] for p in a.photos]
    truth = w["ground_truth"].query("split == 'train'")["scene"].tolist()
    predicted = [p["scene"] for p in net.predict(images)]
    assert np.mean([p == t for p, t in zip(predicted, truth)]) > 0.8


def test_safetensors_folder_round_trip_through_the_catalog_dataset(tmp_path):
    net = evaluation_network()
    dataset = ModelFolderDataset(str(tmp_path / "evaluation_network"),
                                 loader="dpalbum.models.evaluation_network.load_evaluation_network")
    dataset.save(net)
    files = {p.name for p in (tmp_path / "evaluation_network").iterdir()}
    assert {CONFIG_FILE, WEIGHTS_FILE} <= files and not any(f.endswith(".pkl") for f in files)
    loaded = dataset.load()
    images = [p.image for p in world()["heldout_albums"].albums[0].photos]
    np.testing.assert_allclose(loaded.embed(images), net.embed(images), rtol=1e-5, atol=1e-6)
    assert loaded.predict(images) == net.predict(images)
    assert loaded.training_report == net.training_report


def test_feature_extractor_drives_torchmetrics_fid():
    from torchmetrics.image.fid import FrechetInceptionDistance

    net, w = evaluation_network(), world()
    real = to_uint8_batch([p.image for a in w["private_albums"] for p in a.photos], IMAGE_SIZE)
    held = to_uint8_batch([p.image for a in w["heldout_albums"] for p in a.photos], IMAGE_SIZE)
    noise = torch.randint(0, 256, held.shape, dtype=torch.uint8)
    extractor = FeatureExtractor(net)
    assert extractor(real[:2]).shape == (2, net.feature_dim)

    def fid(fake):
        metric = FrechetInceptionDistance(feature=extractor)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return float(metric.compute())

    assert fid(held) < fid(noise) / 3


def test_images_of_another_size_are_resized():
    net = evaluation_network()
    big = np.zeros((40, 40, 3), dtype=np.uint8)
    assert net.embed([big]).shape == (1, net.feature_dim)
    with pytest.raises(ValueError, match="RGB"):
        net.embed([np.zeros((16, 16), dtype=np.uint8)])


def test_inception_needs_local_weights():
    with pytest.raises(FileNotFoundError, match="image_features: local"):
        inception_extractor("/nonexistent/pt_inception.pth")


def test_standard_fid_without_weights_or_torch_fidelity_fails_before_the_run(tmp_path,
                                                                             monkeypatch):
    """Kedro validates parameters before any node: the message says what to do."""
    with pytest.raises(ValueError, match="inception_weights_path=None is not a file.*"
                                         "image_features: local"):
        ImageFidelityConfig(image_features="inception")
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"weights")
    real_find_spec = config.importlib.util.find_spec
    monkeypatch.setattr(config.importlib.util, "find_spec",
                        lambda name: None if name == "torch_fidelity" else real_find_spec(name))
    with pytest.raises(ValueError, match="pip install torch-fidelity"):
        ImageFidelityConfig(image_features="inception", inception_weights_path=str(weights))
    assert ImageFidelityConfig().image_features == "local"


def test_config_and_corpus_errors_are_clear():
    with pytest.raises(ValueError, match="feature_dim"):
        EvaluationNetworkConfig(feature_dim=1)
    with pytest.raises(ValueError, match="lacks columns"):
        train_evaluation_network(public_corpus().drop(columns=["scene"]),
                                 EvaluationNetworkConfig(image_size=IMAGE_SIZE))
