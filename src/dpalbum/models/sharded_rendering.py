"""Rendering albums on several processes, with the images of one process, bit for bit.

A renderer (``dpalbum.models.renderer``: embedded or pretrained backend) draws whole albums in
batches of about ``render_batch_size`` photos, planned by ``_album_batches``. The images of a batch
depend on the batch (its noise tensor and conditioning go through the network together, and the
embedded backend pads its prompts to the batch's longest), so a shard must run exactly the batches
one process would. Every rank therefore computes the one global plan, rank r renders batches
r, r + W, ... by calling ``renderer.render`` on each batch's albums alone (the renderer then plans
that one batch again, unchanged: see :func:`render_batches`), and the images are all-gathered.
An album's initial noise comes from its own seed, never from a batch or a process.

Identity is promised at equal device, precision and torch threads per process; workers use their
own GPU when each has one (``dpalbum.models.devices``), else the CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpalbum.distributed import all_gather, current_shard, run_torchrun
from dpalbum.models.devices import check_precision, generation_autocast, generation_device
from dpalbum.models.renderer import CoherenceConfig, Renderer, _album_batches

logger = logging.getLogger(__name__)

RENDERING_WORKER = "dpalbum.models.sharded_rendering:render_albums_on_rank"  # torchrun target


def plan_render_batches(album_prompts: Sequence[Sequence[str]],
                        render_batch_size: int) -> list[list[int]]:
    """The global plan: album indices per batch, exactly as ``renderer.render`` would batch them."""
    return _album_batches([len(p) for p in album_prompts], render_batch_size)


def render_batches(renderer: Renderer, album_prompts: Sequence[Sequence[str]],
                   seeds: Sequence[int], coherence: CoherenceConfig,
                   batches: Sequence[Sequence[int]], precision: str = "fp32",
                   progress: bool = False) -> dict[int, np.ndarray]:
    """Render the given batches of the global plan; album index -> (n, S, S, 3) uint8.

    Each batch goes to ``renderer.render`` as one call with just its albums: a planned batch fits
    ``render_batch_size`` (or is one album), so the renderer plans it as a single batch again, with
    the same rows, order, prompts and per-album noise as in a call on every album.
    """
    images: dict[int, np.ndarray] = {}
    with generation_autocast(precision, renderer.device):
        for batch in batches:
            rendered = renderer.render([album_prompts[a] for a in batch],
                                       [seeds[a] for a in batch], coherence, progress=progress)
            images.update(zip(batch, rendered))
    return images


def render_albums_sharded(renderer: Renderer, album_prompts: Sequence[Sequence[str]],
                          seeds: Sequence[int], coherence: CoherenceConfig,
                          precision: str = "fp32") -> list[np.ndarray]:
    """This rank's batches of the global plan, all-gathered: every rank returns every album.

    A collective inside a torchrun process group (every rank calls it with the same albums);
    outside one it renders everything, as ``renderer.render`` would.
    """
    shard = current_shard()
    plan = plan_render_batches(album_prompts, renderer.config.render_batch_size)
    started = time.perf_counter()
    mine = render_batches(renderer, album_prompts, seeds, coherence, shard.take(plan), precision)
    logger.info("rank %d of %d: rendered %d albums (%d photos) in %.1f s", shard.rank,
                shard.world, len(mine), sum(len(v) for v in mine.values()),
                time.perf_counter() - started)
    images = {a: im for part in all_gather(mine) for a, im in part.items()}
    return [images[a] for a in range(len(album_prompts))]


def render_albums_on_rank(job: dict[str, Any]) -> list[np.ndarray] | None:
    """One torchrun worker of sharded rendering (target of ``run_torchrun``); rank 0 returns the
    images, the others None. The renderer moves to this worker's device unless its config pins
    the CPU."""
    renderer = job["renderer"]
    _move_renderer(renderer, generation_device(
        "cpu" if str(renderer.config.device) == "cpu" else "auto"))
    images = render_albums_sharded(renderer, job["album_prompts"], job["seeds"],
                                   job["coherence"], job["precision"])
    return images if current_shard().is_main else None


def _move_renderer(renderer: Renderer, device) -> None:
    """Put either backend on ``device`` (its UNet, or its whole diffusers pipeline)."""
    renderer.device = device
    if hasattr(renderer, "unet"):
        renderer.unet.to(device)
    if hasattr(renderer, "pipeline"):
        renderer.pipeline.to(device)


def render_albums(renderer: Renderer, album_prompts: Sequence[Sequence[str]],
                  seeds: Sequence[int], coherence: CoherenceConfig, nproc: int = 1,
                  precision: str = "fp32") -> list[np.ndarray]:
    """One (n_photos, S, S, 3) uint8 array per album, in album order, on ``nproc`` processes.

    ``nproc`` 1 renders in this process (``renderer.render``, no start-up cost); more starts that
    many torchrun workers, each rendering its share of the same batches: the images are identical
    (same device and precision). ``precision`` ``bf16``: autocast on CUDA, ignored on the CPU.
    """
    check_precision(precision, "rendering")
    if len(album_prompts) != len(seeds):
        raise ValueError(f"render_albums: {len(album_prompts)} albums but {len(seeds)} seeds")
    if nproc < 1:
        raise ValueError(f"rendering: nproc must be >= 1, got {nproc}")
    if nproc == 1:
        with generation_autocast(precision, renderer.device):
            return renderer.render(album_prompts, seeds, coherence)
    job = {"renderer": renderer, "album_prompts": [list(p) for p in album_prompts],
           "seeds": [int(s) for s in seeds], "coherence": coherence, "precision": precision}
    return run_torchrun(RENDERING_WORKER, job, nproc)[0]
