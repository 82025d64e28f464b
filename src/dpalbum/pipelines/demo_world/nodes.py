"""Thin nodes over ``dpalbum.albums.demo_world``: they take the parameters and return data."""

from __future__ import annotations

import logging

import pandas as pd
from tqdm.auto import tqdm

from dpalbum.albums.demo_world import (
    AlbumPlan,
    DemoWorldConfig,
    ground_truth_table,
    plan_canary_albums,
    plan_private_albums,
    public_corpus_rows,
    render_albums,
)
from dpalbum.albums.model import AlbumSet

logger = logging.getLogger(__name__)

PUBLIC_CORPUS_COLUMNS = ["image_id", "image", "caption", "scene", "colour", "shape", "objects"]


def generate_public_corpus(demo_world: DemoWorldConfig) -> pd.DataFrame:
    """Single captioned images spread uniformly over the whole vocabulary (PNG bytes)."""
    rows = tqdm(
        public_corpus_rows(demo_world),
        total=demo_world.n_public_images,
        desc="public corpus",
        unit="img",
        mininterval=2.0,
    )
    corpus = pd.DataFrame(list(rows), columns=PUBLIC_CORPUS_COLUMNS)
    logger.info(
        "Public corpus: %d images of %dx%d (%d distinct captions)",
        len(corpus),
        demo_world.image_size,
        demo_world.image_size,
        corpus["caption"].nunique(),
    )
    return corpus


def plan_albums(
    demo_world: DemoWorldConfig,
) -> tuple[list[AlbumPlan], list[AlbumPlan], list[AlbumPlan]]:
    """Plan (labels only) the private, held-out and canary albums."""
    private = plan_private_albums(demo_world, "train", demo_world.n_private_albums)
    heldout = plan_private_albums(demo_world, "heldout", demo_world.n_heldout_albums)
    canary = plan_canary_albums(demo_world)
    for name, plans in (("private", private), ("held-out", heldout), ("canary", canary)):
        logger.info(
            "Planned %d %s albums (%d photos)", len(plans), name, sum(len(p.photos) for p in plans)
        )
    return private, heldout, canary


def render_planned_albums(album_plans: list[AlbumPlan], demo_world: DemoWorldConfig) -> AlbumSet:
    """Draw the photos of planned albums: no captions, no metadata (labels stay private)."""
    return render_albums(album_plans, demo_world)


def build_ground_truth(
    private_plans: list[AlbumPlan], heldout_plans: list[AlbumPlan], canary_plans: list[AlbumPlan]
) -> pd.DataFrame:
    """Per-photo attributes of every album split: read by evaluation only."""
    truth = ground_truth_table([*private_plans, *heldout_plans, *canary_plans])
    logger.info("Ground truth: %d photos in %d albums", len(truth), truth["album_id"].nunique())
    return truth


def index_albums(private_albums: AlbumSet) -> list[str]:
    """The written private albums' ids (orders the privacy plan after the albums exist)."""
    return [album.album_id for album in private_albums.albums]
