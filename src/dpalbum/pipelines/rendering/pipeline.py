"""Wiring of the ``rendering`` pipeline: public pre-training data -> renderer -> optional DP
fine-tune (charged to the ledger, which this pipeline releases) -> albums -> card."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.rendering.nodes import (
    dp_finetune_renderer_node,
    pretrain_renderer_node,
    render_albums_node,
    select_renderer_pretraining_data_node,
    write_data_card_node,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Select public data, pre-train the renderer, DP fine-tune it on private photos when
    ``rendering.dp_finetune.enabled`` (planned with the rest of the budget), release the run's
    privacy ledger, render the curated albums, write the card."""
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
                outputs="public_renderer_model",
                name="pretrain_renderer_node",
            ),
            Node(  # the private inputs are deferred: read only when the fine-tune is on
                dp_finetune_renderer_node,
                inputs=["public_renderer_model", "private_albums_for_renderer",
                        "album_texts_for_renderer", "text_privacy_ledger", "privacy_account",
                        "params:rendering", "params:privacy", "renderer_pretraining_set"],
                outputs=["renderer_model", "privacy_ledger", "renderer_dp_history"],
                name="dp_finetune_renderer_node",
            ),
            Node(
                render_albums_node,
                inputs=["renderer_model", "curated_texts", "privacy_ledger", "privacy_account",
                        "params:rendering"],
                outputs=["synthetic_albums", "rendering_report"],
                name="render_albums_node",
            ),
            Node(
                write_data_card_node,
                inputs=["synthetic_albums", "rendering_report", "params:album_source",
                        "params:captioning.captioner"],
                outputs="synthetic_data_card",
                name="write_data_card_node",
            ),
        ]
    )
