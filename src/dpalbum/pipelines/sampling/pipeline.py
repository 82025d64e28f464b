"""Wiring of the ``sampling`` pipeline: DP-trained LMs in, synthetic album texts out."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.sampling.nodes import sample_albums


def create_pipeline(**kwargs) -> Pipeline:
    """Summaries from ``summary_lm``, then captions from ``caption_lm`` conditioned on each."""
    return Pipeline(
        [
            Node(
                sample_albums,
                inputs=["summary_lm", "caption_lm", "lm_tokenizer", "text_privacy_ledger",
                        "params:sampling"],
                outputs="synthetic_texts",
                name="sample_albums_node",
            ),
        ]
    )
