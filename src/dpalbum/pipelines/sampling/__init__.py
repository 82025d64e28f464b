"""The ``sampling`` pipeline: synthetic album texts from the DP-trained summary and caption LMs
(summaries first, then captions conditioned on each summary)."""

from dpalbum.pipelines.sampling.pipeline import create_pipeline

__all__ = ["create_pipeline"]
