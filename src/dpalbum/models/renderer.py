"""The renderer: a text-to-image diffusion model that draws each album's photos from its texts.

Two backends (``RendererConfig.backend``):

- ``embedded``: a small pixel-space ``UNet2DConditionModel`` (32x32 RGB by default) conditioned on
  the public MiniLM text encoder, trained here with DDPM on PUBLIC images (PRIVIMAGE pre-training:
  the images are chosen by a DP semantic query, so private data reaches the weights only through
  that query's ledger entry). Conditioning: cross-attention over MiniLM's token states at the
  lowest-resolution level by default (8x8; attention at 16x16 doubles the CPU cost, at 32x32 it
  costs ~5x, STACK.md), plus the pooled sentence embedding added to the timestep embedding
  (``class_embed_type="projection"``), which reaches every level.
  With a single token, cross-attention is a constant per prompt (softmax over one key), so the
  token states are what lets "red" bind to the protagonist and "ball" to an object. Classifier-free
  guidance comes from conditioning dropout during training; the null condition is all zeros.
- ``pretrained``: any diffusers text-to-image pipeline (hub id or local folder) loaded with
  ``DiffusionPipeline.from_pretrained``; its images are resized to ``image_size``.

Album coherence (:class:`CoherenceConfig`) is explicit: one seed per album derived from the global
seed and the album id; optionally the same initial noise for every photo of an album (mixed with
per-photo noise by ``latent_jitter``); the summary's protagonist phrase added to captions that do
not name it; classifier-free guidance strength. Rendering is batched across albums, and an album's
noise comes from its own generator, so what one album looks like does not depend on the others.

Both backends save with ``save_pretrained`` (JSON config + safetensors), never pickle; load any
renderer folder with :func:`load_renderer`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from dpalbum.params import params

logger = logging.getLogger(__name__)

CONFIG_FILE = "renderer.json"  # backend, settings and training report of a saved renderer
UNET_FOLDER = "unet"
SCHEDULER_FOLDER = "scheduler"
PIPELINE_FOLDER = "pipeline"  # pretrained backend with store_weights: the copied pipeline
SAMPLERS = ("ddim", "dpm")
BACKENDS = ("embedded", "pretrained")


@params
class CoherenceConfig:
    """How the photos of one album are made to belong together (``params:rendering.coherence``)."""

    # Start every photo of an album from (almost) the same noise: same layout, palette, character.
    shared_initial_latents: bool = True
    # Per-photo share of the initial noise: x_T = sqrt(1 - j^2) * album_noise + j * photo_noise
    # (unit variance for any j). 0: identical starts; 1: independent photos.
    latent_jitter: float = 0.3
    # Add the summary's protagonist phrase to captions that do not already name it.
    character_in_every_prompt: bool = True
    # Where the protagonist phrase sits in a summary ("an album of a red circle: at the beach").
    character_pattern: str = r"\balbum of (?P<character>[^:;,.]+)"
    # Classifier-free guidance; 1.0 switches it off (and halves the cost).
    guidance_scale: float = 7.5
    # Share of the sampler steps, counted from pure noise, that are guided (0..1). The early,
    # noisy steps set an image's scene and protagonist; the late ones only refine it, where a
    # guided step costs two UNet passes for little gain. 1.0: every step.
    guided_fraction: float = 1.0

    def __post_init__(self) -> None:
        where = "parameters_rendering.yml (rendering.coherence)"
        if not 0.0 <= self.latent_jitter <= 1.0:
            raise ValueError(f"{where}: latent_jitter must be in [0, 1], got {self.latent_jitter}")
        if self.guidance_scale < 0:
            raise ValueError(f"{where}: guidance_scale must be >= 0, got {self.guidance_scale}")
        if not 0.0 <= self.guided_fraction <= 1.0:
            raise ValueError(f"{where}: guided_fraction must be in [0, 1], got "
                             f"{self.guided_fraction}")
        if "(?P<character>" not in self.character_pattern:
            raise ValueError(f"{where}: character_pattern needs a (?P<character>...) group, got "
                             f"{self.character_pattern!r}")
        re.compile(self.character_pattern)


@params
class RendererConfig:
    """The renderer's backend, architecture, training and sampling (``params:rendering.renderer``).
    """

    backend: str = "embedded"  # "embedded" (trained here on public images) or "pretrained"
    image_size: int = 32  # side of the square output images (pretrained outputs are resized)
    device: str = "cpu"  # "auto": cuda when available
    seed: int = 0  # training seed (albums get their own seeds at render time)
    # sampling
    sampler: str = "dpm"  # "dpm" (DPMSolverMultistep, 2nd order) or "ddim"
    num_inference_steps: int = 10
    render_batch_size: int = 16  # photos per denoising batch (whole albums); larger on a GPU
    # embedded: text conditioning (the public MiniLM of models/text_encoder.py)
    text_encoder: str = "embedded"
    max_prompt_tokens: int = 24
    # embedded: architecture (attention only below the first, full-resolution level)
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    # per level: self- and cross-attention blocks; None = the lowest resolution only (8x8 at
    # 32x32: half the CPU cost of 16x16 + 8x8; the sentence embedding conditions every level
    # through the timestep embedding)
    attention_levels: list[bool] | None = None
    layers_per_block: int = 1
    # space-to-depth: p x p pixel patches folded into channels before the UNet (1 = off). At
    # 32x32, patch_size 2 runs the UNet on 16x16x12: no full-resolution level, ~1.6x cheaper per
    # step. The diffusion itself is unchanged (noise, loss and sampler act per element).
    patch_size: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 16
    # embedded: DDPM training on public images
    train_steps: int = 800
    train_batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    conditioning_dropout: float = 0.1  # P(null condition) per image: enables guidance
    snr_gamma: float | None = 5.0  # min-SNR loss weighting (faster convergence); None: plain MSE
    ema_decay: float = 0.0  # 0: no EMA of the weights
    horizontal_flip: bool = True
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    # Convolutions in channels-last (NHWC) memory order during pre-training and sampling: the
    # same maths, faster oneDNN kernels on the CPU (benchmarks/results). Weights are saved and
    # DP-fine-tuned in the default (NCHW) order.
    channels_last: bool = True
    # pretrained backend
    model_name_or_path: str | None = None  # diffusers text-to-image pipeline id or folder
    resolution: int | None = None  # generation size; None: the pipeline's native size
    store_weights: bool = False  # copy the pipeline into the renderer folder (GBs for SD)
    torch_dtype: str = "float32"

    def __post_init__(self) -> None:
        where = "parameters_rendering.yml (rendering.renderer)"
        self.block_out_channels = [int(c) for c in self.block_out_channels]
        if self.backend not in BACKENDS:
            raise ValueError(f"{where}: backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"{where}: sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.backend == "pretrained" and not self.model_name_or_path:
            raise ValueError(f"{where}: backend 'pretrained' needs model_name_or_path (a diffusers "
                             "text-to-image pipeline id, e.g. stable-diffusion-v1-5/"
                             "stable-diffusion-v1-5, or a local folder)")
        if self.num_inference_steps < 1 or self.render_batch_size < 1:
            raise ValueError(f"{where}: num_inference_steps and render_batch_size must be >= 1")
        if len(self.block_out_channels) < 2:
            raise ValueError(f"{where}: block_out_channels needs at least 2 levels (attention "
                             "runs below the first)")
        if self.attention_levels is None:
            self.attention_levels = [False] * (len(self.block_out_channels) - 1) + [True]
        self.attention_levels = [bool(a) for a in self.attention_levels]
        if len(self.attention_levels) != len(self.block_out_channels) or not any(
                self.attention_levels):
            raise ValueError(f"{where}: attention_levels needs one true/false per "
                             f"block_out_channels level, at least one true (text enters through "
                             f"cross-attention), got {self.attention_levels}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"{where}: every block_out_channels entry must be divisible by "
                             f"norm_num_groups={self.norm_num_groups}")
        if self.patch_size < 1:
            raise ValueError(f"{where}: patch_size must be >= 1 (1: no patching), got "
                             f"{self.patch_size}")
        if self.image_size % (self.patch_size * 2 ** (len(self.block_out_channels) - 1)):
            raise ValueError(f"{where}: image_size {self.image_size} must be divisible by "
                             f"patch_size x 2^{len(self.block_out_channels) - 1} = "
                             f"{self.patch_size * 2 ** (len(self.block_out_channels) - 1)} (one "
                             "halving per level after the patching)")


def resolve_device(device: str) -> torch.device:
    """``auto`` means the GPU when there is one."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


# ---------------------------------------------------------------- album coherence


def album_seed(global_seed: int, album_id: str) -> int:
    """The album's rendering seed: a hash of (global seed, album id), stable across runs."""
    digest = hashlib.sha256(f"{int(global_seed)}/{album_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # < 2**63, fits torch.manual_seed


def album_character(summary: str, coherence: CoherenceConfig) -> str | None:
    """The protagonist phrase of a summary ("a red circle"), or None when the pattern misses."""
    match = re.search(coherence.character_pattern, summary or "", flags=re.IGNORECASE)
    return match.group("character").strip() if match else None


def album_prompts(summary: str, captions: Sequence[str], coherence: CoherenceConfig) -> list[str]:
    """The prompts of one album's photos: captions, with the protagonist added where missing."""
    prompts = [str(c) for c in captions]
    character = album_character(summary, coherence) if coherence.character_in_every_prompt else None
    if not character:
        return prompts
    # Drop a leading article so "a red circle" is also found in "the red circle runs".
    core = re.sub(r"^(a|an|the)\s+", "", character, flags=re.IGNORECASE).lower()
    return [p if core in p.lower() else f"{character}, {p}" for p in prompts]


def initial_noise(seed: int, n_photos: int, shape: Sequence[int],
                  coherence: CoherenceConfig) -> torch.Tensor:
    """(n_photos, *shape) starting noise of one album, drawn from the album's own generator."""
    generator = torch.Generator().manual_seed(int(seed))
    album_noise = torch.randn(tuple(shape), generator=generator)
    photo_noise = torch.randn((n_photos, *shape), generator=generator)
    if not coherence.shared_initial_latents:
        return photo_noise
    j = coherence.latent_jitter
    return math.sqrt(1.0 - j * j) * album_noise.unsqueeze(0) + j * photo_noise


def make_sampler(name: str, train_scheduler_config: dict[str, Any], pixel_space: bool = True):
    """A fresh DDIM / DPM-Solver++ scheduler sharing the training noise schedule.

    Pixel-space models sample from t=999 ("trailing" spacing, no train/sample gap at the noisiest
    step), where the cosine schedule leaves almost no signal: an unclipped x0 estimate explodes
    there, so DDIM clips it (``clip_sample`` of the DDPM config) and DPM-Solver++ uses dynamic
    thresholding to [-1, 1]. Latent pipelines (pretrained backend) keep their own spacing and
    never clip latents.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    pixel = {"timestep_spacing": "trailing"} if pixel_space else {}
    if name == "ddim":
        return DDIMScheduler.from_config(train_scheduler_config, **pixel)
    if name == "dpm":
        if pixel_space:
            pixel.update(thresholding=True, sample_max_value=1.0)
        return DPMSolverMultistepScheduler.from_config(
            train_scheduler_config, algorithm_type="dpmsolver++", solver_order=2, **pixel)
    raise ValueError(f"unknown sampler {name!r}: use one of {SAMPLERS}")


def to_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C*p*p, H/p, W/p) (space-to-depth); identity at p = 1."""
    return images if patch_size == 1 else F.pixel_unshuffle(images, patch_size)


def from_patches(patches: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The inverse of :func:`to_patches`."""
    return patches if patch_size == 1 else F.pixel_shuffle(patches, patch_size)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] to (B, H, W, 3) uint8."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W, 3) uint8 resized (LANCZOS) to (B, size, size, 3); a no-op at the right size."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.LANCZOS))
                     for im in images])


def _album_batches(counts: Sequence[int], batch_size: int) -> list[list[int]]:
    """Group albums into batches of about ``batch_size`` photos (an album is never split)."""
    batches: list[list[int]] = [[]]
    size = 0
    for index, n in enumerate(counts):
        if batches[-1] and size + n > batch_size:
            batches.append([])
            size = 0
        batches[-1].append(index)
        size += n
    return [b for b in batches if b]


# ---------------------------------------------------------------- embedded backend


@dataclass
class PromptConditioning:
    """Text conditioning of a batch: MiniLM token states, their mask and the sentence embedding."""

    tokens: torch.Tensor  # (B, T, D) layer-normalised token states, zeros where padded
    mask: torch.Tensor  # (B, T) 1 for real tokens
    pooled: torch.Tensor  # (B, D) L2-normalised sentence embedding

    def __len__(self) -> int:
        return len(self.pooled)

    def take(self, index: torch.Tensor | slice) -> PromptConditioning:
        return PromptConditioning(self.tokens[index], self.mask[index], self.pooled[index])

    def to(self, device: torch.device) -> PromptConditioning:
        return PromptConditioning(self.tokens.to(device), self.mask.to(device),
                                  self.pooled.to(device))

    @staticmethod
    def null(n: int, n_tokens: int, dim: int) -> PromptConditioning:
        """The unconditional input of classifier-free guidance: zeros (one unmasked token)."""
        mask = torch.zeros(n, n_tokens)
        mask[:, 0] = 1.0  # a fully masked row would make attention NaN
        return PromptConditioning(torch.zeros(n, n_tokens, dim), mask, torch.zeros(n, dim))

    @staticmethod
    def cat(parts: Sequence[PromptConditioning]) -> PromptConditioning:
        return PromptConditioning(torch.cat([p.tokens for p in parts]),
                                  torch.cat([p.mask for p in parts]),
                                  torch.cat([p.pooled for p in parts]))


def encode_prompts(prompts: Sequence[str], text_encoder: str = "embedded",
                   max_tokens: int = 24) -> PromptConditioning:
    """MiniLM conditioning of ``prompts``; each distinct prompt is encoded once."""
    from dpalbum.models.text_encoder import load_text_encoder

    model = load_text_encoder(text_encoder)
    dim = model.get_embedding_dimension()
    unique = sorted(set(prompts))
    if not unique:
        return PromptConditioning(torch.zeros(0, 1, dim), torch.zeros(0, 1), torch.zeros(0, dim))
    with torch.inference_mode():
        outputs = model.encode(unique, output_value=None, batch_size=256,
                               show_progress_bar=False)
    n_tokens = min(max_tokens, max(int(o["attention_mask"].sum()) for o in outputs))
    tokens = torch.zeros(len(unique), n_tokens, dim)
    mask = torch.zeros(len(unique), n_tokens)
    pooled = torch.zeros(len(unique), dim)
    for row, out in enumerate(outputs):
        length = min(n_tokens, int(out["attention_mask"].sum()))
        states = out["token_embeddings"][:length].detach().float().clone()  # (T, D)
        # MiniLM token norms vary 5-12; layer norm puts every token on one scale.
        tokens[row, :length] = F.layer_norm(states, (dim,))
        mask[row, :length] = 1.0
        pooled[row] = F.normalize(out["sentence_embedding"].detach().float().clone(), dim=0)
    row_of = {p: row for row, p in enumerate(unique)}
    index = torch.tensor([row_of[p] for p in prompts])
    return PromptConditioning(tokens[index], mask[index], pooled[index])


def build_unet(config: RendererConfig, text_dim: int = 384):
    """A fresh UNet2DConditionModel with attention (self + cross) only at ``attention_levels``.
    """
    from diffusers import UNet2DConditionModel

    levels = config.attention_levels
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels))
    return UNet2DConditionModel(
        sample_size=config.image_size // config.patch_size,
        in_channels=3 * config.patch_size ** 2, out_channels=3 * config.patch_size ** 2,
        down_block_types=down, up_block_types=up,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block, norm_num_groups=config.norm_num_groups,
        cross_attention_dim=text_dim, attention_head_dim=config.attention_head_dim,
        class_embed_type="projection", projection_class_embeddings_input_dim=text_dim,
        resnet_time_scale_shift="scale_shift",
    )


def build_noise_scheduler(config: RendererConfig):
    """The DDPM training noise schedule (sampling schedulers are derived from its config)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps,
                         beta_schedule=config.beta_schedule, prediction_type="epsilon",
                         clip_sample=True)


class EmbeddedRenderer:
    """A small text-conditional pixel diffusion model (UNet + DDPM schedule + public MiniLM)."""

    backend = "embedded"

    def __init__(self, unet, noise_scheduler, config: RendererConfig,
                 training_report: dict[str, Any] | None = None) -> None:
        self.unet = unet.eval()
        self.noise_scheduler = noise_scheduler
        self.config = config
        self.training_report = dict(training_report or {})
        self.device = resolve_device(config.device)
        self.unet.to(self.device)

    @classmethod
    def build(cls, config: RendererConfig) -> EmbeddedRenderer:
        """A randomly initialised renderer (seeded by ``config.seed``; global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            unet = build_unet(config)
        return cls(unet, build_noise_scheduler(config), config)

    def encode(self, prompts: Sequence[str]) -> PromptConditioning:
        return encode_prompts(prompts, self.config.text_encoder, self.config.max_prompt_tokens)

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor | int,
                      cond: PromptConditioning) -> torch.Tensor:
        """The UNet's noise prediction for noisy inputs ``x`` in its own space: (B, 3, H, W)
        images, or their patches (B, 3p², H/p, W/p) with ``patch_size`` p > 1."""
        return self.unet(x, t, encoder_hidden_states=cond.tokens,
                         encoder_attention_mask=cond.mask, class_labels=cond.pooled).sample

    def sample(self, noise: torch.Tensor, cond: PromptConditioning, guidance_scale: float,
               num_inference_steps: int | None = None, sampler: str | None = None,
               guided_fraction: float = 1.0) -> torch.Tensor:
        """Denoise a batch from ``noise`` (B, 3, H, W); returns images in [-1, 1]. The first
        ``guided_fraction`` of the steps use classifier-free guidance, the rest the text-
        conditioned prediction alone."""
        scheduler = make_sampler(sampler or self.config.sampler, self.noise_scheduler.config)
        scheduler.set_timesteps(num_inference_steps or self.config.num_inference_steps)
        patch = self.config.patch_size
        # Under a caller's inference mode the weights keep their order (see below).
        memory_format = torch.channels_last if self.config.channels_last and \
            not torch.is_inference_mode_enabled() else torch.contiguous_format
        x = to_patches(noise.to(self.device), patch) * scheduler.init_noise_sigma
        cond = cond.to(self.device)
        n_guided = round(guided_fraction * len(scheduler.timesteps)) \
            if guidance_scale != 1.0 else 0
        both = cond
        if n_guided:  # one forward pass over [null; prompt] per guided step
            null = PromptConditioning.null(len(cond), cond.tokens.shape[1], cond.tokens.shape[2])
            both = PromptConditioning.cat([null.to(self.device), cond])
        # The weights change memory order outside inference mode: converted inside it they
        # would become inference tensors, which a later DP fine-tune cannot train.
        self.unet.to(memory_format=memory_format)
        try:
            with torch.inference_mode():
                x = self._denoise(x, scheduler, cond, both, n_guided, guidance_scale,
                                  memory_format)
        finally:
            self.unet.to(memory_format=torch.contiguous_format)
        return from_patches(x, patch)

    def _denoise(self, x: torch.Tensor, scheduler, cond: PromptConditioning,
                 both: PromptConditioning, n_guided: int, guidance_scale: float,
                 memory_format: torch.memory_format) -> torch.Tensor:
        """The sampler loop: guided steps first (one pass over [null; prompt]), then plain."""
        for i, t in enumerate(scheduler.timesteps):
            guided = i < n_guided
            model_in = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
            eps = self.predict_noise(model_in.contiguous(memory_format=memory_format), t,
                                     both if guided else cond)
            if guided:
                eps_null, eps_text = eps.chunk(2)
                eps = eps_null + guidance_scale * (eps_text - eps_null)
            x = scheduler.step(eps.contiguous(), t, x).prev_sample
        return x

    def render(self, album_prompts: Sequence[Sequence[str]], seeds: Sequence[int],
               coherence: CoherenceConfig, progress: bool = True) -> list[np.ndarray]:
        """One (n_photos, S, S, 3) uint8 array per album, batched across albums."""
        size = self.config.image_size
        counts = [len(p) for p in album_prompts]
        results: list[np.ndarray | None] = [None] * len(album_prompts)
        batches = _album_batches(counts, self.config.render_batch_size)
        bar = tqdm(total=sum(counts), unit="img", desc="rendering albums", disable=not progress)
        for batch in batches:
            prompts = [p for a in batch for p in album_prompts[a]]
            noise = torch.cat([initial_noise(seeds[a], counts[a], (3, size, size), coherence)
                               for a in batch])  # (B, 3, S, S)
            images = to_uint8(self.sample(noise, self.encode(prompts), coherence.guidance_scale,
                                          guided_fraction=coherence.guided_fraction))
            start = 0
            for a in batch:
                results[a] = images[start:start + counts[a]]
                start += counts[a]
            bar.update(len(prompts))
        bar.close()
        return [r if r is not None else np.zeros((0, size, size, 3), np.uint8) for r in results]

    def describe(self) -> dict[str, Any]:
        """What the data card and reports say about this model."""
        return {
            "backend": "embedded",
            "architecture": (f"UNet2DConditionModel {self.config.block_out_channels}, "
                             f"{sum(p.numel() for p in self.unet.parameters()) / 1e6:.2f}M "
                             f"parameters, pixel space {self.config.image_size}x"
                             f"{self.config.image_size}"
                             + (f" in {self.config.patch_size}x{self.config.patch_size} patches"
                                if self.config.patch_size > 1 else "")),
            "text_encoder": f"MiniLM sentence encoder ({self.config.text_encoder}; public, "
                            "pretrained by its authors, frozen)",
            "sampler": f"{self.config.sampler}, {self.config.num_inference_steps} steps",
            "training": self.training_report,
        }

    def save_pretrained(self, path: str) -> None:
        """``renderer.json`` + ``unet/`` (safetensors) + ``scheduler/``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(str(folder / UNET_FOLDER), safe_serialization=True)
        self.noise_scheduler.save_pretrained(str(folder / SCHEDULER_FOLDER))
        document = {"backend": "embedded", "config": asdict(self.config),
                    "training_report": self.training_report}
        (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2, default=str))

    @classmethod
    def from_pretrained(cls, path: str, device: str | None = None) -> EmbeddedRenderer:
        from diffusers import DDPMScheduler, UNet2DConditionModel

        folder = Path(path)
        document = json.loads((folder / CONFIG_FILE).read_text())
        config = _config_from(document)
        if device is not None:
            config.device = device
        unet = UNet2DConditionModel.from_pretrained(str(folder / UNET_FOLDER))
        scheduler = DDPMScheduler.from_pretrained(str(folder / SCHEDULER_FOLDER))
        return cls(unet, scheduler, config, document.get("training_report"))


def _config_from(document: dict[str, Any]) -> RendererConfig:
    """The config saved in ``renderer.json`` (keys this version does not know are ignored)."""
    known = RendererConfig.__dataclass_fields__
    return RendererConfig(**{k: v for k, v in document["config"].items() if k in known})


def _min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR, gamma) / SNR per example (Hang et al. 2023, epsilon prediction)."""
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    return torch.clamp(snr, max=gamma) / snr


def train_embedded_renderer(images: np.ndarray, captions: Sequence[str], config: RendererConfig,
                            provenance: dict[str, Any] | None = None,
                            progress: bool = True) -> EmbeddedRenderer:
    """DDPM-train a fresh embedded renderer on (N, S, S, 3) uint8 images and their captions.

    Seeded by ``config.seed``; ``train_steps`` steps of ``train_batch_size`` images sampled with
    replacement, AdamW with linear warm-up then cosine decay, conditioning dropout for guidance.
    With no images, the renderer is returned untrained (selection "none").
    """
    renderer = EmbeddedRenderer.build(config)
    report: dict[str, Any] = {"n_images": int(len(images)), **(provenance or {})}
    if len(images) == 0 or config.train_steps == 0:
        logger.warning("renderer NOT pre-trained (%d images, %d steps): its samples are noise "
                       "until it is fine-tuned", len(images), config.train_steps)
        renderer.training_report = {**report, "steps": 0}
        return renderer
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions: one caption per "
                         "image is needed to train the renderer")
    if images.shape[1:] != (config.image_size, config.image_size, 3):
        raise ValueError(f"training images are {images.shape[1:]}, the renderer expects "
                         f"({config.image_size}, {config.image_size}, 3)")
    device = renderer.device
    unet, scheduler = renderer.unet, renderer.noise_scheduler
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, 3, S, S)
    started = time.perf_counter()
    cond = renderer.encode(list(captions))  # (N, T, D) etc., each distinct caption once
    encode_seconds = time.perf_counter() - started
    null = PromptConditioning.null(1, cond.tokens.shape[1], cond.tokens.shape[2])

    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    warmup = max(1, config.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(
        (s + 1) / warmup,
        0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, config.train_steps - warmup))))
        if s >= warmup else 1.0))
    ema = None
    if config.ema_decay > 0:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(unet.parameters(), decay=config.ema_decay, use_ema_warmup=True,
                       power=2 / 3)
    unet.train()
    bar = tqdm(total=config.train_steps, unit="step", disable=not progress,
               desc=f"pre-training the renderer on {len(images)} public images")
    losses: list[float] = []
    train_started = time.perf_counter()
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    unet.to(memory_format=memory_format)
    for step in range(1, config.train_steps + 1):
        idx = torch.randint(len(pixels), (config.train_batch_size,), generator=generator)
        x0 = pixels[idx].float() / 127.5 - 1.0  # (B, 3, S, S) in [-1, 1]
        if config.horizontal_flip:
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x0[flip] = x0[flip].flip(dims=(3,))
        batch = cond.take(idx)
        drop = torch.rand(len(idx), generator=generator) < config.conditioning_dropout
        if drop.any():  # classifier-free guidance: learn the null condition too
            n = int(drop.sum())
            batch.tokens[drop] = null.tokens.expand(n, -1, -1)
            batch.mask[drop] = null.mask.expand(n, -1)
            batch.pooled[drop] = null.pooled.expand(n, -1)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),),
                          generator=generator)
        x0, noise = to_patches(x0, config.patch_size), to_patches(noise, config.patch_size)
        x0, noise, t, batch = x0.to(device), noise.to(device), t.to(device), batch.to(device)
        noisy = scheduler.add_noise(x0, noise, t).contiguous(memory_format=memory_format)
        eps = renderer.predict_noise(noisy, t, batch)
        per_example = F.mse_loss(eps, noise, reduction="none").mean(dim=(1, 2, 3))  # (B,)
        if config.snr_gamma:
            per_example = per_example * _min_snr_weights(scheduler, t, config.snr_gamma)
        loss = per_example.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if ema is not None:
            ema.step(unet.parameters())
        losses.append(loss.item())
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    bar.close()
    seconds = time.perf_counter() - train_started
    if ema is not None:
        ema.copy_to(unet.parameters())
    unet.to(memory_format=torch.contiguous_format).eval()
    # no wall-clock time in the saved report (renderer.json): equal inputs, equal bytes
    renderer.training_report = {
        **report, "steps": config.train_steps, "batch_size": config.train_batch_size,
        "final_loss": round(float(np.mean(losses[-50:])), 5), "seed": config.seed,
    }
    logger.info("renderer pre-trained in %.1f s (text encoding %.1f s, %.1f images/s): %s",
                seconds, encode_seconds, step * config.train_batch_size / max(seconds, 1e-9),
                renderer.training_report)
    return renderer


# ---------------------------------------------------------------- DP fine-tuning (PRIVIMAGE)


def diffusion_row_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) weighted noise-prediction MSE, one value per photo: rows never mix (GroupNorm and
    attention act within a photo), as album-level clipping requires. ``batch``: a dict (so the
    privacy core can move it to the device) of noisy (B, 3, S, S), timesteps (B,), noise
    (B, 3, S, S), weights (B,), tokens (B, T, D), mask (B, T), pooled (B, D); with patch_size
    p > 1 noisy and noise are patches (B, 3p², S/p, S/p) (the MSE does not care)."""
    eps = model(batch["noisy"], batch["timesteps"], encoder_hidden_states=batch["tokens"],
                encoder_attention_mask=batch["mask"], class_labels=batch["pooled"]).sample
    return ((eps - batch["noise"]) ** 2).flatten(1).mean(1) * batch["weights"]


def dp_rows_and_collate(renderer: EmbeddedRenderer, album_images: Sequence[np.ndarray],
                        album_captions: Sequence[Sequence[str]], seed: int | None = None):
    """Rows (one per photo, grouped by album) and a collate drawing noise, timesteps and
    conditioning dropout, for ``dpalbum.privacy.finetune`` (which the rendering pipeline calls).
    Randomness of the loss is not a privacy matter: album-level clipping bounds an album's
    influence whatever the draw, so ``seed`` is the public rendering seed."""
    config, scheduler = renderer.config, renderer.noise_scheduler
    captions = [str(c) for album in album_captions for c in album]
    cond = renderer.encode(captions)  # the public frozen encoder; rows keep an index into it
    null = PromptConditioning.null(1, cond.tokens.shape[1], cond.tokens.shape[2])
    albums_rows, row = [], 0
    for images, texts in zip(album_images, album_captions):
        if len(images) != len(texts):
            raise ValueError(f"an album has {len(images)} photos but {len(texts)} captions: "
                             "DP fine-tuning needs one caption per photo")
        albums_rows.append([(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1),
                             row + i) for i, im in enumerate(images)])
        row += len(images)
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))

    def collate(rows) -> dict[str, torch.Tensor]:
        x0 = torch.stack([r[0] for r in rows]).float() / 127.5 - 1.0  # (B, 3, S, S)
        batch_cond = cond.take(torch.tensor([r[1] for r in rows]))
        drop = torch.rand(len(rows), generator=generator) < config.conditioning_dropout
        batch_cond.tokens[drop], batch_cond.mask[drop] = null.tokens, null.mask
        batch_cond.pooled[drop] = null.pooled
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(rows),),
                          generator=generator)
        weights = (_min_snr_weights(scheduler, t, config.snr_gamma) if config.snr_gamma
                   else torch.ones(len(rows)))
        x0, noise = to_patches(x0, config.patch_size), to_patches(noise, config.patch_size)
        return {"noisy": scheduler.add_noise(x0, noise, t), "timesteps": t, "noise": noise,
                "weights": weights, "tokens": batch_cond.tokens, "mask": batch_cond.mask,
                "pooled": batch_cond.pooled}

    return albums_rows, collate


# ---------------------------------------------------------------- pretrained backend


class PretrainedRenderer:
    """Any diffusers text-to-image pipeline; images are resized to ``config.image_size``."""

    backend = "pretrained"

    def __init__(self, pipeline, config: RendererConfig, source: str) -> None:
        self.pipeline = pipeline
        self.config = config
        self.source = source  # the id/folder it was loaded from
        self.device = resolve_device(config.device)
        self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.pipeline.scheduler = make_sampler(config.sampler, self.pipeline.scheduler.config,
                                               pixel_space=False)
        self._accepts = set(inspect.signature(self.pipeline.__call__).parameters)

    @classmethod
    def load(cls, config: RendererConfig, source: str | None = None) -> PretrainedRenderer:
        from diffusers import DiffusionPipeline

        source = source or config.model_name_or_path
        logger.info("loading diffusers pipeline %s", source)
        pipeline = DiffusionPipeline.from_pretrained(
            source, dtype=getattr(torch, config.torch_dtype))
        return cls(pipeline, config, config.model_name_or_path or source)

    @property
    def resolution(self) -> int:
        if self.config.resolution:
            return int(self.config.resolution)
        unet = getattr(self.pipeline, "unet", None)
        side = unet.config.sample_size if unet is not None else getattr(
            self.pipeline, "default_sample_size", None)  # transformer pipelines (SD3, Flux)
        if side is None:
            raise ValueError(f"cannot tell the native size of {type(self.pipeline).__name__}: "
                             "set rendering.renderer.resolution")
        return int(side) * int(getattr(self.pipeline, "vae_scale_factor", 1))

    def _latent_shape(self) -> tuple[int, ...] | None:
        unet = getattr(self.pipeline, "unet", None)
        if unet is None or "latents" not in self._accepts:
            return None  # the pipeline draws its own noise (from the album's generator)
        side = self.resolution // int(getattr(self.pipeline, "vae_scale_factor", 1))
        return (int(unet.config.in_channels), side, side)

    @torch.inference_mode()
    def render(self, album_prompts: Sequence[Sequence[str]], seeds: Sequence[int],
               coherence: CoherenceConfig, progress: bool = True) -> list[np.ndarray]:
        """One (n_photos, S, S, 3) uint8 array per album; one pipeline call per batch."""
        counts = [len(p) for p in album_prompts]
        latent_shape = self._latent_shape()
        bar = tqdm(total=sum(counts), unit="img", desc="rendering albums", disable=not progress)
        out: dict[int, np.ndarray] = {}
        for batch in _album_batches(counts, self.config.render_batch_size):
            prompts = [p for a in batch for p in album_prompts[a]]
            kwargs: dict[str, Any] = {
                "prompt": prompts, "num_inference_steps": self.config.num_inference_steps,
                "guidance_scale": coherence.guidance_scale, "output_type": "np",
            }
            if {"height", "width"} <= self._accepts:
                kwargs.update(height=self.resolution, width=self.resolution)
            if latent_shape is not None:
                dtype = getattr(torch, self.config.torch_dtype)
                kwargs["latents"] = torch.cat([
                    initial_noise(seeds[a], counts[a], latent_shape, coherence) for a in batch
                ]).to(self.device, dtype)
            else:
                kwargs["generator"] = [torch.Generator().manual_seed(seeds[a] + i)
                                       for a in batch for i in range(counts[a])]
            images = self.pipeline(**kwargs).images  # (B, H, W, 3) floats in [0, 1]
            images = (np.clip(np.asarray(images, dtype=np.float32), 0, 1) * 255).round()
            images = resize_images(images.astype(np.uint8), self.config.image_size)
            start = 0
            for a in batch:
                out[a] = images[start:start + counts[a]]
                start += counts[a]
            bar.update(len(prompts))
        bar.close()
        size = self.config.image_size
        return [out.get(a, np.zeros((0, size, size, 3), np.uint8))
                for a in range(len(album_prompts))]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "pretrained",
            "architecture": f"{type(self.pipeline).__name__} ({self.source})",
            "text_encoder": "the pipeline's own (public, pretrained by its authors)",
            "sampler": f"{self.config.sampler}, {self.config.num_inference_steps} steps",
            "training": {"note": "pretrained by its authors on their (public) data; not trained "
                                 "here"},
        }

    def save_pretrained(self, path: str) -> None:
        """``renderer.json`` pointing at the source, plus the pipeline when ``store_weights``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        source = self.source
        if self.config.store_weights:
            self.pipeline.save_pretrained(str(folder / PIPELINE_FOLDER), safe_serialization=True)
            source = PIPELINE_FOLDER
        document = {"backend": "pretrained", "config": asdict(self.config), "source": source}
        (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2, default=str))

    @classmethod
    def from_pretrained(cls, path: str, device: str | None = None) -> PretrainedRenderer:
        folder = Path(path)
        document = json.loads((folder / CONFIG_FILE).read_text())
        config = _config_from(document)
        if device is not None:
            config.device = device
        source = document["source"]
        if source == PIPELINE_FOLDER:
            source = str(folder / PIPELINE_FOLDER)
        return cls.load(config, source)


Renderer = EmbeddedRenderer | PretrainedRenderer


def load_renderer(path: str, device: str | None = None) -> Renderer:
    """Load a renderer folder of either backend (written by ``save_pretrained``)."""
    config_file = Path(path) / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing: {path} is not a dpalbum renderer "
                                "folder (write one with save_pretrained, e.g. `kedro run "
                                "--pipelines rendering`)")
    backend = json.loads(config_file.read_text()).get("backend")
    if backend == "embedded":
        return EmbeddedRenderer.from_pretrained(path, device)
    if backend == "pretrained":
        return PretrainedRenderer.from_pretrained(path, device)
    raise ValueError(f"{config_file}: unknown renderer backend {backend!r}")
