"""Tests of the demo world generator and its pipeline (tiny sizes: a few seconds in all)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.parameter_validator import ParameterValidator
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from dpalbum.albums.demo_world import DemoWorldConfig, decode_png, plan_canary_albums
from dpalbum.albums.model import AlbumSet
from dpalbum.albums.vocabulary import (
    COLOURS,
    EVENTS,
    OBJECTS,
    PROTAGONISTS,
    SCENES,
    SHAPES,
    Protagonist,
    caption_for,
    parse_caption,
)
from dpalbum.pipelines.demo_world import create_pipeline
from dpalbum.pipelines.demo_world.nodes import (
    build_ground_truth,
    generate_public_corpus,
    plan_albums,
    render_planned_albums,
)
from dpalbum.settings import CONFIG_LOADER_ARGS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("public_corpus", "private_albums", "heldout_albums", "canary_albums", "ground_truth")


def tiny_config(seed: int = 11, **overrides) -> DemoWorldConfig:
    sizes = {
        "n_public_images": 48,
        "n_private_albums": 6,
        "n_heldout_albums": 3,
        "n_canary_albums": 2,
    }
    return DemoWorldConfig(seed=seed, **{**sizes, **overrides})


def generate(config: DemoWorldConfig) -> dict[str, object]:
    """All five outputs, by calling the nodes as plain functions."""
    private, heldout, canary = plan_albums(config)
    return {
        "public_corpus": generate_public_corpus(config),
        "private_albums": render_planned_albums(private, config),
        "heldout_albums": render_planned_albums(heldout, config),
        "canary_albums": render_planned_albums(canary, config),
        "ground_truth": build_ground_truth(private, heldout, canary),
    }


def album_pixels(albums: AlbumSet) -> list[tuple[str, str, bytes]]:
    return [(a.album_id, p.name, p.image.tobytes()) for a in albums for p in a.photos]


@pytest.fixture(scope="module")
def world() -> dict[str, object]:
    """A small world: big enough for label statistics and a pixel classifier."""
    return generate(
        tiny_config(
            n_public_images=720, n_private_albums=40, n_heldout_albums=10, n_canary_albums=4
        )
    )


# ---- determinism


def test_same_seed_gives_identical_outputs():
    first, second = generate(tiny_config()), generate(tiny_config())
    pd.testing.assert_frame_equal(first["public_corpus"], second["public_corpus"])
    pd.testing.assert_frame_equal(first["ground_truth"], second["ground_truth"])
    for split in ("private_albums", "heldout_albums", "canary_albums"):
        assert album_pixels(first[split]) == album_pixels(second[split])


def test_different_seed_gives_different_outputs():
    first, second = generate(tiny_config(seed=11)), generate(tiny_config(seed=12))
    assert not first["public_corpus"]["image"].equals(second["public_corpus"]["image"])
    assert album_pixels(first["private_albums"]) != album_pixels(second["private_albums"])
    assert not first["ground_truth"].equals(second["ground_truth"])


def test_no_two_public_images_are_identical(world):
    assert world["public_corpus"]["image"].is_unique


# ---- public corpus


def test_public_corpus_covers_the_vocabulary_roughly_uniformly(world):
    corpus = world["public_corpus"]
    assert list(corpus.columns) == [
        "image_id",
        "image",
        "caption",
        "scene",
        "colour",
        "shape",
        "objects",
    ]
    assert corpus["image_id"].is_unique
    for column, vocabulary in (("scene", SCENES), ("colour", COLOURS), ("shape", SHAPES)):
        shares = corpus[column].value_counts(normalize=True)
        assert set(shares.index) == set(vocabulary), column
        assert shares.max() < 1.5 / len(vocabulary) and shares.min() > 0.5 / len(vocabulary)
    objects = Counter(o for text in corpus["objects"] for o in text.split())
    assert set(objects) == set(OBJECTS)
    protagonists = set(zip(corpus["colour"], corpus["shape"]))
    assert protagonists == {(p.colour, p.shape) for p in PROTAGONISTS}


def test_public_captions_are_canonical_and_parse_back(world):
    for row in world["public_corpus"].head(100).itertuples():
        objects = row.objects.split()
        assert objects == sorted(objects)
        assert row.caption == caption_for(Protagonist(row.colour, row.shape), row.scene, objects)
        parsed = parse_caption(row.caption)
        assert (parsed["colour"], parsed["shape"], parsed["scene"], parsed["objects"]) == (
            row.colour,
            row.shape,
            row.scene,
            objects,
        )


def test_public_images_are_png_of_the_configured_size():
    corpus = generate_public_corpus(tiny_config(image_size=48, n_public_images=3))
    for data in corpus["image"]:
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = decode_png(data)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8


# ---- albums


def test_album_invariants(world):
    config = tiny_config()
    truth = world["ground_truth"]
    for split, prefix in (
        ("private_albums", "album_"),
        ("heldout_albums", "heldout_"),
        ("canary_albums", "canary_"),
    ):
        albums = world[split]
        assert isinstance(albums, AlbumSet) and len(albums) > 0
        for album in albums:
            assert album.album_id.startswith(prefix) and len(album.album_id) == len(prefix) + 4
            assert config.min_photos <= len(album) <= config.max_photos
            assert album.metadata == {}  # nothing that could leak a label
            assert [p.name for p in album.photos] == [f"{i:03d}.png" for i in range(len(album))]
            for photo in album.photos:
                assert photo.caption is None  # the pipeline must caption private photos itself
                assert photo.image.shape == (32, 32, 3) and photo.image.dtype == np.uint8
    for album_id, rows in truth.groupby("album_id"):
        assert rows[["colour", "shape", "event"]].drop_duplicates().shape[0] == 1, album_id
        event = rows["event"].iloc[0]
        assert set(rows["scene"]) <= set(EVENTS[event]["scenes"]), album_id
        objects = {o for text in rows["objects"] for o in text.split()}
        assert objects <= set(EVENTS[event]["objects"]), album_id


def test_private_albums_use_only_the_configured_events_and_protagonists(world):
    config = tiny_config()
    truth = world["ground_truth"]
    private = truth[truth["split"].isin(["train", "heldout"])]
    assert set(private["event"]) <= set(config.event_weights)
    used = {f"{c} {s}" for c, s in zip(private["colour"], private["shape"])}
    assert used <= set(config.protagonists)


def test_canaries_are_unique_combinations_private_albums_never_show(world):
    truth = world["ground_truth"]
    private = truth[truth["split"] != "canary"]
    canary = truth[truth["split"] == "canary"]
    combos = canary[["album_id", "colour", "shape", "event"]].drop_duplicates()
    assert len(combos) == canary["album_id"].nunique() == 4
    assert not combos.duplicated(["colour", "shape", "event"]).any()
    private_protagonists = set(zip(private["colour"], private["shape"]))
    assert not private_protagonists & set(zip(combos["colour"], combos["shape"]))
    assert not set(private["event"]) & set(combos["event"])


def test_too_many_canaries_is_a_clear_error():
    with pytest.raises(ValueError, match="n_canary_albums"):
        plan_canary_albums(tiny_config(n_canary_albums=10_000))


def test_private_labels_are_skewed_against_the_public_corpus(world):
    """Total-variation distance between public and private protagonist (and event-scene)
    distributions: selecting public data by semantics must matter (PRIVIMAGE)."""
    truth = world["ground_truth"]
    private = truth[truth["split"] == "train"]
    public = world["public_corpus"]

    def tv_distance(a: pd.Series, b: pd.Series) -> float:
        p, q = a.value_counts(normalize=True), b.value_counts(normalize=True)
        return 0.5 * p.subtract(q, fill_value=0).abs().sum()

    protagonist = lambda df: df["colour"] + " " + df["shape"]  # noqa: E731
    assert tv_distance(protagonist(private), protagonist(public)) > 0.3
    assert tv_distance(private["scene"], public["scene"]) > 0.1
    # Zipf: the first-ranked protagonist is the most frequent in the private albums.
    assert protagonist(private).value_counts().index[0] == tiny_config().protagonists[0]


def test_ground_truth_is_aligned_with_the_albums(world):
    truth = world["ground_truth"]
    assert list(truth.columns) == [
        "album_id",
        "split",
        "photo_index",
        "photo_name",
        "event",
        "colour",
        "shape",
        "scene",
        "objects",
    ]
    written = [
        (split, a.album_id, p.name)
        for split, key in (
            ("train", "private_albums"),
            ("heldout", "heldout_albums"),
            ("canary", "canary_albums"),
        )
        for a in world[key]
        for p in a.photos
    ]
    listed = list(zip(truth["split"], truth["album_id"], truth["photo_name"]))
    assert listed == written
    assert (truth["photo_name"] == truth["photo_index"].map(lambda i: f"{i:03d}.png")).all()


# ---- the images carry their labels


def pooled_pixels(images: list[np.ndarray]) -> np.ndarray:
    """(N, 8*8*3) features: raw pixels averaged over 4x4 blocks."""
    x = np.stack(images).astype(np.float32) / 255  # (N, 32, 32, 3)
    return x.reshape(len(x), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(x), -1)


def test_simple_pixel_classifiers_recover_scene_and_colour(world):
    """A nearest-centroid (scene) and a logistic regression (colour) on raw pixels, trained on
    public images, read the labels of unseen public images and of private photos."""
    corpus = world["public_corpus"]
    features = pooled_pixels([decode_png(b) for b in corpus["image"]])
    train, test = slice(0, 600), slice(600, None)
    truth = world["ground_truth"]
    photos = [
        p.image
        for key in ("private_albums", "heldout_albums", "canary_albums")
        for a in world[key]
        for p in a.photos
    ]
    album_features = pooled_pixels(photos)
    colour_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    for label, model in (("scene", NearestCentroid()), ("colour", colour_model)):
        y = corpus[label].to_numpy()
        with threadpool_limits(1):  # a tiny problem: BLAS threads would only oversubscribe
            model.fit(features[train], y[train])
        assert (model.predict(features[test]) == y[test]).mean() >= 0.9, label
        assert (model.predict(album_features) == truth[label].to_numpy()).mean() >= 0.9, label


# ---- parameters and pipeline


def test_parameter_file_becomes_a_typed_config_before_the_run():
    """Kedro turns ``params:demo_world`` into a DemoWorldConfig (from the nodes' type hints)."""
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **CONFIG_LOADER_ARGS)
    raw = loader["parameters"]
    validated = ParameterValidator({"demo_world": create_pipeline()}).validate_raw_params(raw)
    config = validated["demo_world"]
    assert isinstance(config, DemoWorldConfig)
    assert config.image_size == 32 and config.n_public_images >= 10_000
    assert config.n_canary_albums == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"protagonists": ["green circle"]}, "green circle"),
        ({"event_weights": {"wedding": 1}}, "event_weights"),
        ({"min_photos": 5, "max_photos": 4}, "min_photos"),
        ({"object_count_probs": [-1, 2]}, "object_count_probs"),
        ({"image_size": 4}, "image_size"),
    ],
)
def test_bad_parameters_are_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**override)


class KeptDataset(MemoryDataset):
    """Not released by the runner, so intermediate outputs can be inspected."""

    def _release(self) -> None:
        pass


def test_pipeline_runs_with_sequential_runner():
    config = tiny_config(
        n_public_images=5, n_private_albums=2, n_heldout_albums=1, n_canary_albums=1
    )
    catalog = DataCatalog(
        {"params:demo_world": MemoryDataset(config), **{name: KeptDataset() for name in OUTPUTS},
         "private_album_index": KeptDataset()}
    )
    pipeline = create_pipeline()
    assert all(node.name.endswith("_node") for node in pipeline.nodes)
    assert set(OUTPUTS) | {"private_album_index"} <= pipeline.all_outputs()
    SequentialRunner().run(pipeline, catalog)
    assert catalog.load("private_album_index") == ["album_0001", "album_0002"]
    expected = generate(config)
    pd.testing.assert_frame_equal(catalog.load("public_corpus"), expected["public_corpus"])
    pd.testing.assert_frame_equal(catalog.load("ground_truth"), expected["ground_truth"])
    for split in ("private_albums", "heldout_albums", "canary_albums"):
        assert album_pixels(catalog.load(split)) == album_pixels(expected[split])
    assert len(catalog.load("ground_truth")) == sum(
        catalog.load(split).n_photos
        for split in ("private_albums", "heldout_albums", "canary_albums")
    )
