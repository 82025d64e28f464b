"""The ``demo_world`` pipeline: writes the embedded default's raw data (public corpus, private,
held-out and canary albums, ground truth) from one seed."""

from dpalbum.pipelines.demo_world.pipeline import create_pipeline

__all__ = ["create_pipeline"]
