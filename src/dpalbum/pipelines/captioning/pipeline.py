"""Wiring of the ``captioning`` pipeline: public captioner first, then private album texts.

``privacy_plan`` (written by the ``privacy_plan`` pipeline, first in ``__default__``) is an input
of every node that reads private photos, so none of them can run before the budget was planned.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.captioning.nodes import (
    caption_albums_node,
    evaluate_captioning_node,
    report_ingestion_node,
    train_captioner_node,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Ingestion report, public captioner, album texts and their internal quality check."""
    return Pipeline(
        [
            Node(
                report_ingestion_node,
                inputs=["private_albums", "privacy_plan"],
                outputs="ingestion_report",
                name="report_ingestion_node",
            ),
            Node(
                train_captioner_node,
                inputs=["public_corpus", "params:captioning.captioner"],
                outputs="captioner_model",
                name="train_captioner_node",
            ),
            Node(
                caption_albums_node,
                inputs=[
                    "captioner_model",
                    "private_albums_for_captioner",
                    "privacy_plan",
                    "params:captioning.captioner",
                    "params:captioning.summariser",
                    "params:captioning.domain_check",
                    "params:captioning.allow_out_of_domain",
                ],
                outputs=["album_texts", "captioning_domain"],
                name="caption_albums_node",
            ),
            Node(
                evaluate_captioning_node,
                inputs=["album_texts", "ground_truth"],
                outputs="captioning_quality",
                name="evaluate_captioning_node",
            ),
        ]
    )
