"""Tiny inputs for the evaluation tests, built here (no upstream pipeline output is needed).

A 16x16 demo world (public corpus, private / held-out / canary albums, ground truth), a
quickly trained evaluation network, album texts in the demo-world caption template, and a
hash-based stand-in for MiniLM so text metrics run in milliseconds. Cached per test session.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pandas as pd
import torch

from dpalbum.albums.demo_world import (
    DemoWorldConfig,
    encode_png,
    ground_truth_table,
    plan_canary_albums,
    plan_private_albums,
    render_albums,
    render_image,
)
from dpalbum.albums.model import Album, AlbumSet, Photo
from dpalbum.albums.vocabulary import (
    COLOURS,
    OBJECTS,
    PROTAGONISTS,
    SCENES,
    Protagonist,
    caption_for,
)
from dpalbum.models.evaluation_network import EvaluationNetworkConfig, train_evaluation_network

IMAGE_SIZE = 16
PRIVATE_SENTINEL = "zzprivatezz"  # a word only private texts contain: must never reach a report


def world_config() -> DemoWorldConfig:
    return DemoWorldConfig(seed=7, image_size=IMAGE_SIZE, n_private_albums=16,
                           n_heldout_albums=8, n_canary_albums=2, min_photos=3, max_photos=4)


@functools.lru_cache(maxsize=1)
def public_corpus(n: int = 600) -> pd.DataFrame:
    """Public images with one object at most and a scene / protagonist balance (cheap to learn)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        scene = SCENES[i % len(SCENES)]
        protagonist = PROTAGONISTS[int(rng.integers(len(PROTAGONISTS)))]
        objects = (OBJECTS[int(rng.integers(len(OBJECTS)))],) if i % 3 == 0 else ()
        image = render_image(protagonist, scene, objects, IMAGE_SIZE, rng, 3.0)
        rows.append({"image_id": f"public_{i:05d}", "image": encode_png(image),
                     "caption": caption_for(protagonist, scene, list(objects)), "scene": scene,
                     "colour": protagonist.colour, "shape": protagonist.shape,
                     "objects": " ".join(objects)})
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=1)
def world() -> dict:
    """Private, held-out and canary albums with their ground truth and private texts."""
    config = world_config()
    plans = {"train": plan_private_albums(config, "train", config.n_private_albums),
             "heldout": plan_private_albums(config, "heldout", config.n_heldout_albums),
             "canary": plan_canary_albums(config)}
    albums = {split: render_albums(p, config) for split, p in plans.items()}
    truth = ground_truth_table([p for split in plans.values() for p in split])

    def texts(split: str) -> pd.DataFrame:
        rows = []
        for plan in plans[split]:
            captions = [caption_for(plan.protagonist, ph.scene, list(ph.objects))
                        + f" {PRIVATE_SENTINEL}" for ph in plan.photos]
            summary = f"a {plan.event} album of a {plan.protagonist.name} {PRIVATE_SENTINEL}"
            rows.append({"album_id": plan.album_id, "summary": summary, "captions": captions})
        return pd.DataFrame(rows)

    return {"plans": plans, "private_albums": albums["train"], "heldout_albums": albums["heldout"],
            "canary_albums": albums["canary"], "ground_truth": truth,
            "album_texts": texts("train"), "heldout_album_texts": texts("heldout"),
            "canary_texts": texts("canary")}


def synthetic_albums(n: int = 6, seed: int = 3, coherent: bool = True,
                     scenes: tuple[str, ...] = SCENES) -> AlbumSet:
    """Rendered "synthetic" albums whose photos show what their captions say (coherent=True),
    or a random protagonist per photo (coherent=False); scenes drawn from ``scenes``."""
    rng = np.random.default_rng(seed)
    albums = []
    for a in range(n):
        protagonist = Protagonist(COLOURS[a % 3], "circle" if a % 2 else "square")
        event = ("birthday", "holiday", "hike")[a % 3]
        photos = []
        for j in range(4):
            shown = protagonist if coherent else PROTAGONISTS[int(rng.integers(len(PROTAGONISTS)))]
            scene = scenes[int(rng.integers(len(scenes)))]
            caption = caption_for(protagonist, scene, [])
            photos.append(Photo(f"{j:03d}.png", render_image(shown, scene, (), IMAGE_SIZE, rng,
                                                             3.0), caption))
        albums.append(Album(f"synthetic_{a + 1:05d}", photos,
                            {"summary": f"a {event} album of a {protagonist.name}"}))
    return AlbumSet(albums)


def curated_texts(albums: AlbumSet) -> pd.DataFrame:
    return pd.DataFrame({"album_id": [a.album_id for a in albums],
                         "summary": [a.metadata["summary"] for a in albums],
                         "captions": [[p.caption for p in a.photos] for a in albums],
                         "seed": list(range(len(albums)))})


@functools.lru_cache(maxsize=1)
def evaluation_network():
    """A tiny evaluation network trained for a few seconds on the public corpus above."""
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster for tiny convs
    config = EvaluationNetworkConfig(image_size=IMAGE_SIZE, channels=[16, 32], feature_dim=32,
                                     epochs=30, batch_size=64, learning_rate=1e-2,
                                     max_train_images=None, heldout_fraction=0.2, seed=0)
    return train_evaluation_network(public_corpus(), config)


def fake_encode_texts(texts, model_name_or_path=None, **_) -> np.ndarray:
    """Deterministic bag-of-words stand-in for MiniLM: unit vectors, similar texts close."""
    dim = 64
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in str(text).lower().split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    out += 1e-3
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def ledger(epsilon: float | str = 8.0) -> dict:
    return {"unit": "album", "delta": 1e-5, "epsilon": epsilon, "budget_epsilon": 10.0,
            "mechanisms": [
                {"name": "semantic_query", "kind": "gaussian", "noise_multiplier": 40.0},
                {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 1.1,
                 "sample_rate": 0.05, "steps": 200}]}
