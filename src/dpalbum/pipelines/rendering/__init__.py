"""The ``rendering`` pipeline: pre-train the renderer on public images (PRIVIMAGE selection),
optionally DP fine-tune it on the private photos (charged to the ledger, which it releases), render
the curated synthetic album texts into coherent albums, and write their data card."""

from dpalbum.pipelines.rendering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
