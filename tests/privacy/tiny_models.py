"""Tiny models, rows and losses for the privacy tests (small enough for a shared 2-core CPU)."""

from __future__ import annotations

import torch
from torch import nn


class TinyRegressor(nn.Module):
    """A small MLP; rows are (x, y) pairs."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # (B,)


def regression_collate(rows):
    return torch.stack([x for x, _ in rows]), torch.stack([y for _, y in rows])


def regression_row_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return (model(x) - y) ** 2  # (B,)


def make_regression_albums(n_albums: int, seed: int = 0, max_rows: int = 4):
    g = torch.Generator().manual_seed(seed)
    return [
        [(torch.randn(4, generator=g), torch.randn((), generator=g))
         for _ in range(1 + i % max_rows)]
        for i in range(n_albums)
    ]


def tiny_lora_gpt2(seed: int = 0, vocab: int = 64):
    """A 2-layer GPT-2 (32 wide) with LoRA on c_attn (Conv1D: fan_in_fan_out=True)."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True,
                      lora_dropout=0.0)
    return get_peft_model(GPT2LMHeadModel(config), lora)


def lm_collate(rows):
    return torch.stack(rows)  # (B, T) token ids


def lm_row_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
    ce = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
    )
    return ce.view(ids.shape[0], -1).mean(1)  # (B,)


def make_lm_albums(sizes, seed: int = 1, vocab: int = 64, length: int = 12):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randint(0, vocab, (length,), generator=g) for _ in range(n)] for n in sizes]


def tiny_unet(seed: int = 0):
    """A tiny UNet2DConditionModel (8x8 latents, cross-attention dim 32)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=4, norm_num_groups=4,
    )


def unet_collate(rows):
    """Rows are (latent, timestep, text embedding, target noise); latents go channels-last."""
    x, t, c, y = (torch.stack(parts) for parts in zip(*rows))
    return x.to(memory_format=torch.channels_last), t, c, y


def unet_row_loss(model: nn.Module, batch) -> torch.Tensor:
    x, t, c, y = batch
    out = model(x, t, encoder_hidden_states=c).sample  # (B, 4, 8, 8)
    return ((out - y) ** 2).flatten(1).mean(1)  # (B,)


def make_unet_albums(sizes, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return [
        [(torch.randn(4, 8, 8, generator=g), torch.randint(0, 1000, (), generator=g),
          torch.randn(5, 32, generator=g), torch.randn(4, 8, 8, generator=g)) for _ in range(n)]
        for n in sizes
    ]


def replay(seed: int):
    """A replayable noise source (tests only: NOT differentially private)."""
    from dpalbum.privacy.randomness import NoiseSource

    return NoiseSource("replayable", seed)
