"""The ``privacy_plan`` pipeline: the run's one privacy plan, before any private read."""

from dpalbum.pipelines.privacy_plan.pipeline import create_pipeline

__all__ = ["create_pipeline"]
