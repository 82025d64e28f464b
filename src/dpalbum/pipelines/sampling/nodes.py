"""Nodes of the ``sampling`` pipeline (the work lives in ``dpalbum.models.sampler``)."""

from __future__ import annotations

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpalbum import privacy
from dpalbum.distributed import run_torchrun
from dpalbum.models.devices import generation_device, models_on
from dpalbum.models.sampler import (
    SamplingConfig,
    SyntheticAlbumText,
    sample_album_texts,
)

SYNTHETIC_TEXT_COLUMNS: tuple[str, ...] = ("album_id", "summary", "captions", "seed")
SAMPLING_WORKER = "dpalbum.models.sampler:sample_album_texts_on_rank"  # torchrun target


def albums_to_frame(albums: list[SyntheticAlbumText], metadata: dict) -> pd.DataFrame:
    """One row per album (``SYNTHETIC_TEXT_COLUMNS``); how they were sampled goes in ``attrs``."""
    frame = pd.DataFrame({
        "album_id": pd.Series([a.album_id for a in albums], dtype="str"),
        "summary": pd.Series([a.summary for a in albums], dtype="str"),
        "captions": pd.Series([list(a.captions) for a in albums], dtype="object"),
        "seed": pd.Series([a.seed for a in albums], dtype="int64"),
    })
    frame.attrs["sampling"] = metadata  # pandas writes attrs into the parquet metadata
    return frame


def sample_albums(
    summary_lm: PreTrainedModel,
    caption_lm: PreTrainedModel,
    lm_tokenizer: PreTrainedTokenizerBase,
    text_privacy_ledger: dict,
    params: SamplingConfig,
) -> pd.DataFrame:
    """Sample synthetic album texts: post-processing of the DP models, no privacy budget spent.
    Refused when either LM was not trained under ``text_privacy_ledger``'s plan (stale models).

    Album sizes come from the public prior ``params.photos_per_album`` (see ``attrs['sampling']``).
    With ``params.nproc`` > 1 the batches are sharded over that many torchrun workers; the texts
    are the same as on one process (same device and precision).
    """
    privacy.check_release(text_privacy_ledger, {
        "summary_lm": getattr(summary_lm.config, "dpalbum_privacy", None),
        "caption_lm": getattr(caption_lm.config, "dpalbum_privacy", None)}, "sampling")
    config = SamplingConfig.from_params(params)
    if config.nproc > 1:
        job = (summary_lm, caption_lm, lm_tokenizer, config)
        albums, metadata = run_torchrun(SAMPLING_WORKER, job, config.nproc)[0]  # rank 0's
    else:
        with models_on(generation_device(config.device), summary_lm, caption_lm):
            albums, metadata = sample_album_texts(summary_lm, caption_lm, lm_tokenizer, config)
    # the plan the texts were sampled under travels with them (parquet metadata), so rendering
    # can refuse to release them with another run's ledger
    return albums_to_frame(albums, {**metadata, "privacy_plan_id": text_privacy_ledger["plan_id"]})
