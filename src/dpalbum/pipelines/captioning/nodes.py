"""Nodes of the ``captioning`` pipeline: public captioner, private album texts, internal quality.

Privacy: the captioner and the summariser are public models (trained on the public corpus, or
pretrained). Private photos are read only by nodes that take ``privacy_plan`` as an input, so Kedro
cannot run them before the budget was planned and checked (DESIGN.md, invariant 2). Their outputs
(``album_texts``) are private intermediate data; ``captioning_quality`` reads the private ground
truth and is marked internal.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.utils import find_kedro_project

from dpalbum.albums.dataset import AlbumReader
from dpalbum.albums.model import AlbumSet
from dpalbum.albums.vocabulary import parse_caption
from dpalbum.models.album_description import describe_albums
from dpalbum.models.captioner import (
    MULTI_LABEL,
    Captioner,
    CaptionerConfig,
    CaptionerOutOfDomainError,
    DomainCheckConfig,
    attribute_accuracy,
    build_captioner,
    check_domain,
    out_of_domain_message,
    resolve_device,
)
from dpalbum.models.summariser import SummariserConfig

logger = logging.getLogger(__name__)

QUALITY_TARGETS = {"scene_accuracy": 0.9, "protagonist_accuracy": 0.9}  # issue 4


def project_relative(path: str | None) -> str | None:
    """``path`` relative to the project root when it lies inside it, else as given (a folder of
    the user's own): a report must not change with where the project is checked out."""
    root = find_kedro_project(Path.cwd())
    if path is None or root is None:
        return path
    absolute = Path(os.path.abspath(path))
    return absolute.relative_to(root.absolute()).as_posix() if absolute.is_relative_to(
        root.absolute()) else path


def report_ingestion_node(private_albums: AlbumSet, privacy_plan: dict[str, Any]) -> dict:
    """The ingestion report of the private album folder (counts and skips, no content): exact
    counts of private data, so an internal file. Its path is relative to the project root."""
    report = dict(private_albums.report)
    if "path" in report:
        report["path"] = project_relative(report["path"])
    return {**report, "internal": True,
            "internal_means": "exact counts read from the private album folder, NOT covered by "
                              "the privacy ledger; keep inside the team"}


def train_captioner_node(public_corpus: pd.DataFrame, captioner: CaptionerConfig) -> Captioner:
    """Train the embedded captioner on PUBLIC images, or load the pretrained one."""
    started = time.perf_counter()
    model = build_captioner(public_corpus, captioner)
    logger.info("%s ready in %.1f s", model.kind, time.perf_counter() - started)
    return model


def caption_albums_node(
    captioner_model: Captioner, private_albums_for_captioner: AlbumReader,
    privacy_plan: dict[str, Any], captioner: CaptionerConfig, summariser: SummariserConfig,
    domain_check: DomainCheckConfig, allow_out_of_domain: bool,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Album texts of the private albums, photos decoded at the captioner's own input size; runs
    only once the privacy plan exists, and stops (before any DP training) when the embedded
    captioner does not know these photos, unless ``allow_out_of_domain``."""
    albums = private_albums_for_captioner.read(captioner_model.input_size)
    model = captioner_model.to(resolve_device(captioner.device))
    images = [photo.image for album in albums for photo in album.photos]
    check = check_domain(model, images, domain_check, captioner.batch_size)
    # INTERNAL: the decision and counts only (never a private statistic in a released file)
    logger.info("captioner domain check: %s", {k: check[k] for k in (
        "checked", "in_domain", "n_photos", "n_low_confidence") if k in check})
    if not check["in_domain"]:
        if not allow_out_of_domain:
            raise CaptionerOutOfDomainError(out_of_domain_message(check))
        logger.warning("captioning.allow_out_of_domain is true: captioning photos the embedded "
                       "captioner was not made for; the data card and report say its texts are "
                       "out of domain")
    texts = describe_albums(albums, model, captioner, summariser)
    return texts, {**check, "allowed_out_of_domain": bool(allow_out_of_domain), "internal": True,
                   "internal_means": "counts over the PRIVATE photos, not covered by the "
                                     "privacy ledger; keep inside the team"}


def evaluate_captioning_node(album_texts: pd.DataFrame, ground_truth: pd.DataFrame) -> dict:
    """INTERNAL: caption and summary attribute accuracy against the private ground truth."""
    truth = {} if ground_truth is None or ground_truth.empty else {  # real data: no truth
        str(a): rows.sort_values("photo_index")
        for a, rows in ground_truth.groupby("album_id", sort=False)}
    predicted, expected, unmatched = [], [], []
    hits = {"protagonist_accuracy": 0, "main_scene_accuracy": 0, "event_accuracy": 0}
    for album_id, summary, captions in zip(
        album_texts["album_id"], album_texts["summary"], album_texts["captions"]
    ):
        rows = truth.get(str(album_id))
        if rows is None or len(rows) != len(captions):  # no truth, or photos were skipped
            unmatched.append(str(album_id))
            continue
        for caption, row in zip(captions, rows.itertuples()):
            parsed = parse_caption(caption)
            predicted.append({k: parsed[k] for k in ("scene", "colour", "shape", MULTI_LABEL)})
            expected.append({"scene": row.scene, "colour": row.colour, "shape": row.shape,
                             MULTI_LABEL: str(getattr(row, MULTI_LABEL)).split()})
        said = parse_caption(summary)
        hits["protagonist_accuracy"] += (
            (said["colour"], said["shape"]) == (rows["colour"].iloc[0], rows["shape"].iloc[0]))
        hits["main_scene_accuracy"] += said["scene"] in set(rows["scene"].mode())  # ties: any
        hits["event_accuracy"] += said["event"] == rows["event"].iloc[0]
    if unmatched:
        logger.warning("captioning quality: %d albums have no matching ground truth (e.g. %s)",
                       len(unmatched), unmatched[:3])
    n_albums = len(album_texts) - len(unmatched)
    captions_report = attribute_accuracy(predicted, expected)
    return {
        "internal": True,
        "note": "INTERNAL: compares captions of PRIVATE photos with the private ground truth; "
                "never release this file",
        "n_albums": n_albums,
        "n_photos": len(predicted),
        "n_albums_without_ground_truth": len(unmatched),
        "captions": captions_report,
        "summaries": {k: round(v / max(1, n_albums), 4) for k, v in hits.items()},
        "targets": QUALITY_TARGETS,
        "meets_targets": all(captions_report.get(k, 0.0) >= v
                             for k, v in QUALITY_TARGETS.items()),
    }
