"""Wiring of the ``demo_world`` pipeline: plan albums once, then render each split from its plan
and derive the ground truth from the same plans."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.demo_world.nodes import (
    build_ground_truth,
    generate_public_corpus,
    index_albums,
    plan_albums,
    render_planned_albums,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Public corpus, private / held-out / canary albums and their ground truth."""
    return Pipeline(
        [
            Node(
                generate_public_corpus,
                inputs="params:demo_world",
                outputs="public_corpus",
                name="public_corpus_node",
            ),
            Node(
                plan_albums,
                inputs="params:demo_world",
                outputs=["private_album_plans", "heldout_album_plans", "canary_album_plans"],
                name="plan_albums_node",
            ),
            *[
                Node(
                    render_planned_albums,
                    inputs=[f"{split}_album_plans", "params:demo_world"],
                    outputs=f"{split}_albums",
                    name=f"{split}_albums_node",
                )
                for split in ("private", "heldout", "canary")
            ],
            Node(
                index_albums,
                inputs="private_albums",
                outputs="private_album_index",
                name="private_album_index_node",
            ),
            Node(
                build_ground_truth,
                inputs=["private_album_plans", "heldout_album_plans", "canary_album_plans"],
                outputs="ground_truth",
                name="ground_truth_node",
            ),
        ]
    )
