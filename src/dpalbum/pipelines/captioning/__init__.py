"""The ``captioning`` pipeline: caption every private photo and summarise every album with public
models (an attribute captioner trained on the public corpus, a template summariser, or pretrained
Hugging Face models)."""

from dpalbum.pipelines.captioning.pipeline import create_pipeline

__all__ = ["create_pipeline"]
