"""dp_training: PRIVIMAGE selection of public text, LM pre-training, DP-SGD LoRA fine-tuning."""

from dpalbum.pipelines.dp_training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
