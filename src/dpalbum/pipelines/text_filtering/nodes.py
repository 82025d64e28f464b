"""Nodes of the ``text_filtering`` pipeline (the filters live in ``filters.py``)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from dpalbum.pipelines.text_filtering.filters import TextFilteringConfig, curate_texts

logger = logging.getLogger(__name__)


def filter_synthetic_texts(
    synthetic_texts: pd.DataFrame, params: TextFilteringConfig
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Curated texts (same columns) and the report of what each filter dropped and why."""
    config = TextFilteringConfig.from_params(params)
    curated, report = curate_texts(synthetic_texts, config)
    totals = report["totals"]
    logger.info("text filtering kept %d of %d albums and %d of %d captions",
                totals["albums_out"], totals["albums_in"], totals["captions_out"],
                totals["captions_in"])
    for name, counts in report["filters"].items():
        if counts["albums_dropped"] or counts["captions_dropped"]:
            logger.info("  %s dropped %d albums, %d captions: %s", name, counts["albums_dropped"],
                        counts["captions_dropped"], counts["reasons"])
    return curated, report
