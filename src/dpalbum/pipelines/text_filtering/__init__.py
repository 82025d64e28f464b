"""The ``text_filtering`` pipeline: curate synthetic album texts with public models only
(pure post-processing of the DP output: no private input, no privacy budget)."""

from dpalbum.pipelines.text_filtering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
