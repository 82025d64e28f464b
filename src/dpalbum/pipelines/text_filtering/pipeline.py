"""Wiring of the ``text_filtering`` pipeline: synthetic texts in, curated texts and a report out.

Its only data input is ``synthetic_texts`` (plus parameters); a test keeps it that way.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.text_filtering.nodes import filter_synthetic_texts


def create_pipeline(**kwargs) -> Pipeline:
    """Filter synthetic album texts with public models; count every drop by reason."""
    return Pipeline(
        [
            Node(
                filter_synthetic_texts,
                inputs=["synthetic_texts", "params:text_filtering"],
                outputs=["curated_texts", "text_filtering_report"],
                name="filter_synthetic_texts_node",
            ),
        ]
    )
