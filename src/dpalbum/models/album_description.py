"""Album texts from photos: a captioner captions every photo (batched across albums), a
summariser summarises each album. Used by captioning (private albums) and evaluation (held-out
albums); knows nothing of privacy."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from dpalbum.albums.model import AlbumSet
from dpalbum.models.captioner import Captioner, resolve_device
from dpalbum.models.summariser import SummariserConfig, build_summariser

logger = logging.getLogger(__name__)


def describe_albums(
    albums: AlbumSet, captioner: Captioner, config: Any,
    summariser: SummariserConfig | None = None,
) -> pd.DataFrame:
    """Caption every photo (batched across albums) and summarise every album.

    ``config`` needs ``batch_size`` (and may have ``device``): a ``CaptionerConfig`` or the
    evaluation's held-out texts config. Returns columns album_id, summary, captions (photo order).
    """
    captioner = captioner.to(resolve_device(getattr(config, "device", "auto")))
    images = [photo.image for album in albums for photo in album.photos]
    started = time.perf_counter()
    flat = captioner.caption(images, config.batch_size)
    per_album, start = [], 0
    for album in albums:
        per_album.append(flat[start:start + len(album)])
        start += len(album)
    summaries = build_summariser(summariser or SummariserConfig()).summarise(per_album)
    logger.info("captioned %d photos and summarised %d albums in %.1f s", len(images),
                len(per_album), time.perf_counter() - started)
    return pd.DataFrame({"album_id": [a.album_id for a in albums], "summary": summaries,
                         "captions": per_album})
