"""Wiring of the ``rendering`` pipeline: public pre-training data -> renderer -> albums -> card."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.rendering.nodes import (
    pretrain_renderer_node,
    render_albums_node,
    select_renderer_pretraining_data_node,
    write_data_card_node,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Select public data, pre-train the renderer, render the curated albums, write the card."""
    return Pipeline(
        [
            Node(
                select_renderer_pretraining_data_node,
                inputs=["public_corpus", "public_selection", "params:rendering"],
                outputs="renderer_pretraining_set",
                name="select_renderer_pretraining_data_node",
            ),
            Node(
                pretrain_renderer_node,
                inputs=["renderer_pretraining_set", "params:rendering"],
                outputs="renderer_model",
                name="pretrain_renderer_node",
            ),
            Node(
                render_albums_node,
                inputs=["renderer_model", "curated_texts", "privacy_ledger", "params:rendering"],
                outputs=["synthetic_albums", "rendering_report"],
                name="render_albums_node",
            ),
            Node(
                write_data_card_node,
                inputs=["synthetic_albums", "rendering_report"],
                outputs="synthetic_data_card",
                name="write_data_card_node",
            ),
        ]
    )
