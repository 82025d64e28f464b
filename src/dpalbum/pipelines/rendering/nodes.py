"""Thin nodes of the ``rendering`` pipeline: pick the renderer's public pre-training data,
pre-train the renderer, render the curated album texts, write the data card."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from dataclasses import asdict, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dpalbum import privacy
from dpalbum.albums.images import center_crop_resize, to_rgb
from dpalbum.albums.model import Album, AlbumSet, Photo
from dpalbum.models.captioner import AlbumSource, CaptionerConfig
from dpalbum.models.devices import torch_threads
from dpalbum.models.renderer import (
    CoherenceConfig,
    EmbeddedRenderer,
    PretrainedRenderer,
    RendererConfig,
    album_prompts,
    album_seed,
    diffusion_row_loss,
    dp_rows_and_collate,
    resize_images,
    train_embedded_renderer,
)
from dpalbum.models.sharded_rendering import render_albums
from dpalbum.params import params
from dpalbum.pipelines.rendering.data_card import build_data_card, privacy_summary
from dpalbum.pipelines.rendering.datasets import DeferredLoad

logger = logging.getLogger(__name__)

SELECTIONS = ("semantic", "all", "none")
RENDERER_MECHANISM = "renderer"  # its name on the privacy plan / ledger
DP_FINETUNE_DEFAULTS: dict[str, Any] = {"enabled": False, "expected_batch_albums": 16,
                                        "epochs": 2, "lr": 5e-4, "noise_multiplier": "auto"}
CURATED_COLUMNS = ("album_id", "summary", "captions")


@params
class RenderingParams:
    """``params:rendering`` (conf/base/parameters_rendering.yml), validated before the run."""

    seed: int
    selection: str = "semantic"  # renderer pre-training data: semantic | all | none
    renderer: RendererConfig = field(default_factory=RendererConfig)
    coherence: CoherenceConfig = field(default_factory=CoherenceConfig)
    # PRIVIMAGE stage 2 (see dp_finetune_renderer_node): enabled, expected_batch_albums,
    # epochs, lr, noise_multiplier ("auto": calibrated to the renderer's ε share)
    dp_finetune: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    nproc: int = 1  # >1: albums rendered by torchrun workers; images identical to nproc 1
    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA only; ignored on CPU, logged)
    threads: int = 0  # torch CPU threads for pre-training, fine-tuning, in-process rendering;
    # 0: every core this process may use (torchrun workers keep DPALBUM_TORCH_THREADS)

    def __post_init__(self) -> None:
        if isinstance(self.renderer, dict):
            self.renderer = RendererConfig(**self.renderer)
        if isinstance(self.coherence, dict):
            self.coherence = CoherenceConfig(**self.coherence)
        if self.selection not in SELECTIONS:
            raise ValueError(f"parameters_rendering.yml: rendering.selection must be one of "
                             f"{SELECTIONS}, got {self.selection!r}")
        if int(self.threads) < 0:
            raise ValueError(f"parameters_rendering.yml: rendering.threads must be >= 0 (0: every "
                             f"available core), got {self.threads}")
        if int(self.nproc) < 1:
            raise ValueError(f"parameters_rendering.yml: rendering.nproc must be at least 1, got "
                             f"{self.nproc}")
        self.dp_finetune = {**DP_FINETUNE_DEFAULTS, **(self.dp_finetune or {})}
        if self.dp_finetune["enabled"] and self.renderer.backend != "embedded":
            raise ValueError("parameters_rendering.yml: rendering.dp_finetune is only available "
                             "for the embedded renderer backend")

    @classmethod
    def of(cls, rendering: RenderingParams | dict[str, Any]) -> RenderingParams:
        """The typed parameters (Kedro converts ``params:rendering`` itself when validation
        runs; a plain dict, e.g. from a bare runner, is converted here)."""
        return rendering if isinstance(rendering, cls) else cls(**rendering)


def _decode(data: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(center_crop_resize(to_rgb(image), size), dtype=np.uint8)


def select_renderer_pretraining_data_node(
    public_corpus: pd.DataFrame, public_selection: pd.DataFrame, rendering: RenderingParams
) -> pd.DataFrame:
    """The PUBLIC images (``image_id``, ``image``, ``caption``) the renderer is pre-trained on:
    the DP semantic query's choice, the whole corpus, or none."""
    rendering = RenderingParams.of(rendering)
    missing = [c for c in ("image_id", "image", "caption") if c not in public_corpus.columns]
    if missing:
        raise ValueError(f"public_corpus lacks columns {missing} (needs image_id, image as "
                         "PNG/JPEG bytes, caption); regenerate it with `kedro run --pipelines "
                         "demo_world`")
    corpus = public_corpus[["image_id", "image", "caption"]]
    if rendering.selection == "all":
        chosen = corpus
    elif rendering.selection == "none":
        chosen = corpus.iloc[:0]
    else:
        if "image_id" not in public_selection.columns:
            raise ValueError("public_selection needs an image_id column (the public images the "
                             "DP semantic query chose)")
        wanted = set(public_selection["image_id"])
        unknown = sorted(wanted - set(corpus["image_id"]))
        if unknown:
            raise ValueError(f"public_selection names {len(unknown)} image ids absent from the "
                             f"public corpus (e.g. {unknown[:3]}): it was made for another corpus; "
                             "rerun the dp_training pipeline")
        chosen = corpus[corpus["image_id"].isin(wanted)]
    logger.info("renderer pre-training data (%s): %d of %d public images (%.1f%%)",
                rendering.selection, len(chosen), len(corpus),
                100 * len(chosen) / max(1, len(corpus)))
    return chosen.reset_index(drop=True)


def pretrain_renderer_node(
    renderer_pretraining_set: pd.DataFrame, rendering: RenderingParams
) -> EmbeddedRenderer | PretrainedRenderer:
    """Train the embedded renderer on the public pre-training set, or load the pretrained one."""
    rendering = RenderingParams.of(rendering)
    config = rendering.renderer
    if config.backend == "pretrained":
        if len(renderer_pretraining_set):
            logger.info("pretrained renderer: used as is, the %d selected public images are not "
                        "trained on", len(renderer_pretraining_set))
        return PretrainedRenderer.load(config)
    size = config.image_size
    images = np.stack([_decode(b, size) for b in renderer_pretraining_set["image"]]) if len(
        renderer_pretraining_set) else np.zeros((0, size, size, 3), np.uint8)
    provenance = {"data": "public corpus", "selection": rendering.selection,
                  "private_data_used": "only through the DP semantic query (on the privacy "
                  "ledger)" if rendering.selection == "semantic" else "none"}
    with torch_threads(rendering.threads, "rendering.threads (pre-training)") as threads:
        renderer = train_embedded_renderer(images, list(renderer_pretraining_set["caption"]),
                                           config, {**provenance, "torch_threads": threads})
    return renderer


def _planned_renderer(ledger: dict[str, Any]) -> dict[str, Any] | None:
    """The renderer's mechanism on a ledger, or None when the plan does not hold it."""
    return next((m for m in ledger.get("mechanisms", []) if m.get("name") == RENDERER_MECHANISM),
                None)


def _read(data: DeferredLoad | Any) -> Any:
    """The contents of a deferred catalog input (read now), or the data itself."""
    return data.load() if isinstance(data, DeferredLoad) else data


def dp_finetune_renderer_node(
    renderer_model: EmbeddedRenderer | PretrainedRenderer,
    private_albums: DeferredLoad | AlbumSet, album_texts: DeferredLoad | pd.DataFrame,
    privacy_ledger: dict[str, Any], privacy_account: privacy.PrivacyAccount,
    rendering: RenderingParams, privacy_params: dict[str, Any],
    renderer_pretraining_set: pd.DataFrame | None = None,
) -> tuple[EmbeddedRenderer | PretrainedRenderer, dict[str, Any], dict[str, Any]]:
    """PRIVIMAGE stage 2: DP-SGD fine-tune of the renderer on PRIVATE photos and their captions
    (album = unit) through ``privacy.finetune``, charged to the account and the ledger as
    mechanism "renderer", which the privacy plan must already hold. ``private_albums`` and
    ``album_texts`` arrive deferred and are read only when the fine-tune is on and planned.
    Off (``dp_finetune.enabled: false``): nothing private is read and the renderer and ledger
    pass through. With ``privacy.max_grad_norm: auto`` C is tuned on public pseudo-albums drawn
    from ``renderer_pretraining_set``. Returns (renderer, the run's ledger, internal history)."""
    rendering = RenderingParams.of(rendering)
    planned = _planned_renderer(privacy_ledger)
    history: dict[str, Any] = {"internal": True, "internal_means": "non-private losses of the "
                               "renderer's DP fine-tune on private photos", "steps": []}
    if not rendering.dp_finetune["enabled"]:
        if planned is not None and planned.get("status") != "spent":
            logger.warning("the privacy plan holds the renderer's DP fine-tune but "
                           "rendering.dp_finetune.enabled is false here: it does not run, and the "
                           "ledger keeps it as planned (its ε still counts: over-stated, never "
                           "under-stated). Plan and render with the same parameters.")
        return renderer_model, privacy_ledger, history
    # Checked before any private read: the budget was composed with this mechanism in it.
    if planned is None:
        raise privacy.LedgerError(
            "rendering.dp_finetune.enabled is true but the privacy plan has no 'renderer' "
            "mechanism: the budget was composed without it (the privacy_plan pipeline ran with "
            "the fine-tune off). Run the whole pipeline with the same parameters, e.g. `kedro "
            "run --params rendering.dp_finetune.enabled=true`; no private photo was read.")
    if planned.get("status") == "spent":
        raise privacy.LedgerError("the ledger says the renderer's DP fine-tune already ran: "
                                  "re-plan (run the privacy_plan pipeline) before running it "
                                  "again; no private photo was read")
    cfg, size = rendering.dp_finetune, renderer_model.config.image_size
    albums, texts = _read(private_albums), _read(album_texts)
    captions = {str(a): list(c) for a, c in zip(texts["album_id"], texts["captions"])}
    missing = [a.album_id for a in albums if a.album_id not in captions]
    if missing:
        raise ValueError(f"album_texts has no captions for {len(missing)} private albums (e.g. "
                         f"{missing[:3]}): rerun the captioning pipeline")
    images = [resize_images(np.stack([p.image for p in a.photos]), size) for a in albums]
    albums_rows, collate = dp_rows_and_collate(
        renderer_model, images, [captions[a.album_id] for a in albums], rendering.seed)
    public_rows = _public_pseudo_albums(renderer_model, renderer_pretraining_set, rendering.seed)
    started = time.perf_counter()
    with torch_threads(rendering.threads, "rendering.threads (DP fine-tune)"):
        renderer_model.unet.train()
        result, ledger = privacy.finetune(
            renderer_model.unet, albums_rows, diffusion_row_loss, collate, ledger=privacy_ledger,
            mechanism=RENDERER_MECHANISM, privacy_params=privacy_params, account=privacy_account,
            lr=cfg["lr"], public_seed=rendering.seed, device=str(renderer_model.device),
            public_albums_rows=public_rows)
        renderer_model.unet = result.model.eval()
    renderer_model.training_report = {
        **renderer_model.training_report,
        "dp_finetune": {"data": "PRIVATE photos and captions (album-level DP-SGD)",
                        "max_grad_norm": result.max_grad_norm,
                        "privacy": privacy.model_record(ledger, RENDERER_MECHANISM)}}
    logger.info("renderer DP fine-tuned in %.0f s: %d steps, q=%.4f, sigma=%.3f; ledger ε=%s",
                time.perf_counter() - started, result.steps_taken, result.sample_rate,
                result.noise_multiplier, ledger["epsilon"])
    history["steps"] = [{"role": RENDERER_MECHANISM, **h} for h in result.history]
    return renderer_model, ledger, history


def _public_pseudo_albums(renderer_model: EmbeddedRenderer, public: pd.DataFrame | None,
                          seed: int, n_albums: int = 64, per_album: int = 5) -> list | None:
    """PUBLIC pseudo-albums (random groups of pre-training images) in the fine-tune's row
    format, to tune C on; None when there is no public image."""
    if public is None or len(public) == 0:
        return None
    size = renderer_model.config.image_size
    picks = np.random.default_rng(seed).permutation(len(public))[: n_albums * per_album]
    images = np.stack([_decode(public["image"].iloc[i], size) for i in picks])
    captions = [str(public["caption"].iloc[i]) for i in picks]
    groups = range(0, len(picks), per_album)
    rows, _ = dp_rows_and_collate(renderer_model, [images[g:g + per_album] for g in groups],
                                  [captions[g:g + per_album] for g in groups], seed)
    return rows


def check_renderer_release(renderer_model: Any, curated_texts: pd.DataFrame,
                           privacy_ledger: dict[str, Any]) -> None:
    """Refuse a release whose renderer or texts were made under another plan than the ledger."""
    record = (getattr(renderer_model, "training_report", {}) or {}).get("dp_finetune", {})
    planned = _planned_renderer(privacy_ledger)
    if planned is not None and planned.get("status") == "spent" or record.get("privacy"):
        privacy.check_release(privacy_ledger, {"renderer": record.get("privacy")}, "rendering")
    sampled = (curated_texts.attrs.get("sampling") or {}).get("privacy_plan_id")
    if sampled != privacy_ledger.get("plan_id"):
        raise privacy.StaleReleaseError(
            f"rendering refused: curated_texts were sampled under privacy plan "
            f"{str(sampled)[:8]} but the ledger is plan {str(privacy_ledger.get('plan_id'))[:8]}"
            ": re-run sampling and text_filtering (or the whole pipeline) with this ledger")


def _curated_albums(curated_texts: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``curated_texts`` as plain dicts; albums without captions are dropped (logged)."""
    missing = [c for c in CURATED_COLUMNS if c not in curated_texts.columns]
    if missing:
        raise ValueError(f"curated_texts lacks columns {missing}: it needs album_id, summary, "
                         "captions (a list of strings per album) and optionally seed")
    duplicated = curated_texts["album_id"][curated_texts["album_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"curated_texts repeats album ids {duplicated[:3]}: one row per album")
    albums, empty = [], []
    for row in curated_texts.to_dict("records"):
        captions = [str(c) for c in (row["captions"] if row["captions"] is not None else [])]
        if not captions:
            empty.append(row["album_id"])
            continue
        albums.append({**row, "captions": captions})
    if empty:
        logger.warning("rendering: %d albums without captions skipped (e.g. %s)", len(empty),
                       empty[:3])
    return albums


def render_albums_node(
    renderer_model: EmbeddedRenderer | PretrainedRenderer, curated_texts: pd.DataFrame,
    privacy_ledger: dict[str, Any], privacy_account: privacy.PrivacyAccount,
    rendering: RenderingParams,
) -> tuple[AlbumSet, dict[str, Any]]:
    """Render every curated album (one seed per album), and report what was done and under which
    privacy guarantee (for the data card). Refused when the renderer or the texts come from
    another plan than the ledger; marks the plan released on the privacy account."""
    rendering = RenderingParams.of(rendering)
    check_renderer_release(renderer_model, curated_texts, privacy_ledger)
    guarantee = privacy_summary(privacy_ledger)
    coherence = rendering.coherence
    rows = _curated_albums(curated_texts)
    prompts = [album_prompts(r["summary"], r["captions"], coherence) for r in rows]
    seeds = [album_seed(rendering.seed, str(r["album_id"])) for r in rows]
    started = time.perf_counter()
    in_process = int(rendering.nproc) == 1  # torchrun workers keep DPALBUM_TORCH_THREADS
    with (torch_threads(rendering.threads, "rendering.threads (rendering)") if in_process
          else contextlib.nullcontext("DPALBUM_TORCH_THREADS per torchrun worker")) as threads:
        images = render_albums(renderer_model, prompts, seeds, coherence,
                               nproc=int(rendering.nproc), precision=rendering.precision)
    seconds = time.perf_counter() - started
    stamp = {k: guarantee[k] for k in ("epsilon", "delta", "unit")}
    albums = [
        Album(str(r["album_id"]),
              [Photo(f"{i:03d}.png", image, caption)
               for i, (image, caption) in enumerate(zip(album_images, r["captions"]))],
              {"summary": r["summary"], "seed": seed, "prompts": album_prompt,
               **({"text_seed": _plain(r["seed"])} if "seed" in r else {}),
               "privacy": stamp, "synthetic": True})
        for r, album_images, seed, album_prompt in zip(rows, images, seeds, prompts)
    ]
    n_photos = sum(len(a) for a in albums)
    # no wall-clock time in the report (nor in the data card made from it): equal inputs give
    # equal bytes, or DVC would call evaluation stale after every re-run; the log has the times
    report = {
        "n_albums": len(albums), "n_photos": n_photos,
        "image_size": renderer_model.config.image_size, "seed": rendering.seed,
        "nproc": int(rendering.nproc), "torch_threads": threads,
        "renderer": renderer_model.describe(), "coherence": asdict(coherence),
        "privacy": guarantee,
    }
    logger.info("rendered %d albums (%d photos) in %.1f s (%.2f images/s)", len(albums),
                n_photos, seconds, n_photos / max(seconds, 1e-9))
    privacy_account.finish_plan(privacy_ledger)
    return AlbumSet(albums), report


def _plain(value: Any) -> Any:
    """numpy scalars (from parquet) as JSON-serialisable Python values."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_data_card_node(synthetic_albums: AlbumSet, rendering_report: dict[str, Any],
                         album_source: AlbumSource, captioner: CaptionerConfig) -> str:
    """DATA_CARD.md for the released albums, naming the captioner (and saying when its texts are
    out of domain). Takes the saved albums as input so that Kedro writes the card after the
    album folder (whose save replaces the whole folder)."""
    return build_data_card(rendering_report, n_albums=len(synthetic_albums),
                           n_photos=synthetic_albums.n_photos,
                           captioner=album_source.provenance(captioner))
