"""The ``evaluation`` pipeline: fidelity, coherence, utility, privacy audit, metrics and report."""

from dpalbum.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
