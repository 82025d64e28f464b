"""Rendering benchmark: our batched renderer vs the plain diffusers sampling loop, and sampler
steps vs quality. Writes ``benchmarks/results/rendering.json``.

Speed: images/s of ``EmbeddedRenderer.render`` (albums batched together) against the reference
UNet + scheduler loop of the diffusers docs ("deconstruct the Stable Diffusion pipeline": encode,
draw latents, ``scheduler.step`` with classifier-free guidance) called once per album, which is
how a pipeline call is used per album. Same model, sampler, step count, guidance and photos; the
reference is also timed with our batch size to show the overhead of our code alone. Runs are
interleaved and the median is reported.

Quality: a Fréchet distance between features of rendered images and of real images, at
10/25/50 sampler steps, plus the attribute accuracy (scene, protagonist colour and shape) of the
rendered images against their captions. Captions and real images come from the renderer's
pre-training set when it exists (``--reference``: the distribution the renderer was trained for,
e.g. the PRIVIMAGE selection), else from the whole public corpus. Features and attributes come
from dpalbum's embedded attribute captioner, a small CNN trained on the PUBLIC corpus: a local
metric, not comparable to published FID.

Usage: .venv/bin/python benchmarks/rendering.py [--renderer data/06_models/renderer]
       [--captioner data/06_models/captioner]
       [--reference data/05_model_input/renderer_pretraining_set.parquet]
       [--albums 8] [--photos 6] [--n-quality 192] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import linalg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dpalbum.albums.vocabulary import parse_caption  # noqa: E402
from dpalbum.models.renderer import (  # noqa: E402
    CoherenceConfig,
    EmbeddedRenderer,
    album_seed,
    from_patches,
    initial_noise,
    load_renderer,
    make_sampler,
    to_patches,
    to_uint8,
)


def reference_render(renderer: EmbeddedRenderer, prompts: list[str], noise: torch.Tensor,
                     guidance_scale: float, steps: int) -> np.ndarray:
    """The diffusers docs' denoising loop, written out as a user would for one prompt batch."""
    unet, device = renderer.unet, renderer.device
    cond = renderer.encode(prompts).to(device)
    n, n_tokens, dim = cond.tokens.shape
    tokens = torch.cat([torch.zeros(n, n_tokens, dim, device=device), cond.tokens])
    mask = torch.cat([torch.zeros(n, n_tokens, device=device), cond.mask])
    mask[:n, 0] = 1.0
    pooled = torch.cat([torch.zeros(n, dim, device=device), cond.pooled])
    scheduler = make_sampler(renderer.config.sampler, renderer.noise_scheduler.config)
    scheduler.set_timesteps(steps)
    latents = to_patches(noise.to(device), renderer.config.patch_size) * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            latent_model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise_pred = unet(latent_model_input, t, encoder_hidden_states=tokens,
                              encoder_attention_mask=mask, class_labels=pooled).sample
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            latents = scheduler.step(noise_pred, t, latents).prev_sample
    return to_uint8(from_patches(latents, renderer.config.patch_size))


def speed(renderer: EmbeddedRenderer, albums: list[list[str]], repeats: int) -> dict:
    coherence = CoherenceConfig()
    seeds = [album_seed(0, f"bench_{i}") for i in range(len(albums))]
    size = renderer.config.image_size
    noises = [initial_noise(s, len(a), (3, size, size), coherence) for s, a in zip(seeds, albums)]
    steps, g = renderer.config.num_inference_steps, coherence.guidance_scale
    n_images = sum(len(a) for a in albums)
    renderer.encode([p for a in albums for p in a])  # load the text encoder outside the timing

    def ours():
        renderer.render(albums, seeds, coherence, progress=False)

    def per_album():
        for prompts, noise in zip(albums, noises):
            reference_render(renderer, prompts, noise, g, steps)

    def same_batch():
        flat = [p for a in albums for p in a]
        for start in range(0, len(flat), renderer.config.render_batch_size):
            stop = start + renderer.config.render_batch_size
            reference_render(renderer, flat[start:stop], torch.cat(noises)[start:stop], g, steps)

    runs = {"ours": ours, "reference_per_album": per_album, "reference_same_batch": same_batch}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, run in runs.items():  # interleaved: load changes hit all three alike
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    ips = {k: n_images / statistics.median(v) for k, v in times.items()}
    return {
        "n_albums": len(albums), "n_images": n_images, "steps": steps, "guidance_scale": g,
        "sampler": renderer.config.sampler, "batch_size": renderer.config.render_batch_size,
        "repeats": repeats,
        "images_per_second": {k: round(v, 2) for k, v in ips.items()},
        "speedup_vs_reference_per_album": round(ips["ours"] / ips["reference_per_album"], 2),
        "speedup_vs_reference_same_batch": round(ips["ours"] / ips["reference_same_batch"], 2),
    }


def _features(captioner, images: np.ndarray) -> np.ndarray:
    """Pooled backbone features (mean and max over space) of the attribute captioner."""
    with torch.no_grad():
        pixels = captioner.to_pixels(torch.from_numpy(images))
        maps = captioner.backbone(pixels)
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean.real))


def quality(renderer: EmbeddedRenderer, captioner, corpus: pd.DataFrame, n: int,
            step_counts: list[int]) -> dict:
    sample = corpus.sample(n=min(n, len(corpus)), random_state=0)
    real = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in sample.image])
    real_features = _features(captioner, real)
    captions = list(sample.caption)
    truth = [parse_caption(c) for c in captions]
    albums = [captions[i:i + 6] for i in range(0, len(captions), 6)]
    seeds = [album_seed(1, f"quality_{i}") for i in range(len(albums))]
    coherence = CoherenceConfig(shared_initial_latents=False)  # independent images for FD
    results = {}
    for steps in step_counts:
        renderer.config.num_inference_steps = steps
        started = time.perf_counter()
        images = np.concatenate(renderer.render(albums, seeds, coherence, progress=False))
        seconds = time.perf_counter() - started
        predicted = captioner.predict(list(images))
        accuracy = {a: float(np.mean([p[a] == t[a] for p, t in zip(predicted, truth)]))
                    for a in ("scene", "colour", "shape")}
        accuracy["protagonist"] = float(np.mean([
            p["colour"] == t["colour"] and p["shape"] == t["shape"]
            for p, t in zip(predicted, truth)]))
        results[str(steps)] = {
            "frechet_distance": round(frechet_distance(_features(captioner, images),
                                                       real_features), 3),
            "attribute_accuracy": {k: round(v, 3) for k, v in accuracy.items()},
            "images_per_second": round(len(images) / seconds, 2),
        }
        print(f"  {steps} steps: {results[str(steps)]}", flush=True)
    # Two disjoint sets of real images: the floor this metric reaches with n samples.
    rest = corpus.drop(sample.index)
    other = rest.sample(n=min(len(sample), len(rest)), random_state=1)
    other_real = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                           for b in other.image])
    floor = frechet_distance(_features(captioner, other_real), real_features)
    return {"n_images": len(captions), "real_vs_real_floor": round(floor, 3),
            "by_steps": results}


def _shown(path: str | Path) -> str:
    """A path for the results file: relative to the project, never a machine path."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renderer", default=str(ROOT / "data/06_models/renderer"))
    ap.add_argument("--captioner", default=str(ROOT / "data/06_models/captioner"))
    ap.add_argument("--corpus", default=str(ROOT / "data/01_raw/public/corpus.parquet"))
    ap.add_argument("--reference",
                    default=str(ROOT / "data/05_model_input/renderer_pretraining_set.parquet"))
    ap.add_argument("--batch-size", type=int, default=None,
                    help="render batch size (default: the renderer's own)")
    ap.add_argument("--albums", type=int, default=8)
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-quality", type=int, default=192)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads; 0: every core, as the pipeline renders")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/rendering.json"))
    args = ap.parse_args()
    args.threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(args.threads)

    renderer = load_renderer(args.renderer, device="cpu")
    if not isinstance(renderer, EmbeddedRenderer):
        raise SystemExit("the benchmark measures the embedded renderer; point --renderer at one")
    if args.batch_size:
        renderer.config.render_batch_size = args.batch_size
    corpus = pd.read_parquet(args.corpus)
    reference = Path(args.reference)
    quality_set = pd.read_parquet(reference) if reference.is_file() else corpus
    captions = list(quality_set.caption.sample(n=args.albums * args.photos, random_state=2))
    albums = [captions[i * args.photos:(i + 1) * args.photos] for i in range(args.albums)]
    print("speed ...", flush=True)
    result = {"speed": speed(renderer, albums, args.repeats)}
    print(f"  {result['speed']}", flush=True)

    from dpalbum.models.captioner import load_captioner

    print("quality ...", flush=True)
    captioner = load_captioner(args.captioner)
    result["quality"] = quality(renderer, captioner, quality_set, args.n_quality, args.steps)
    result["quality"]["captions_and_real_images"] = (
        _shown(reference) if reference.is_file() else f"{_shown(args.corpus)} (whole public "
        "corpus)")
    result["quality"]["metric"] = (
        "Fréchet distance on pooled features of dpalbum's embedded attribute captioner "
        "(trained on the public corpus); local, not comparable to published FID")
    result["renderer"] = {"path": _shown(args.renderer), **renderer.describe()}
    result["captioner"] = _shown(args.captioner)
    result["machine"] = {"torch_threads": args.threads, "cpu": platform.processor() or
                         platform.machine(), "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
