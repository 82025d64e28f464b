"""The Gaussian semantic query (PRIVIMAGE): a noisy histogram of the albums' top-k labels.

A public labeller (trained on public data only) gives each private album its top-k semantic
labels. Each album adds 1 to each of at most k *distinct* labels, so adding or removing one album
changes the histogram by at most √k in L2 norm. Gaussian noise of std σ·√k on every bin makes the
release a Gaussian mechanism with noise multiplier σ (std / sensitivity), which is what the ledger
records. Labels are deduplicated and cut to k before counting: a repeated label would count twice
in one bin and break the √k bound.

Several label families share one histogram (and one release): the protagonist labels and, when
on, the album's theme (the set of its most frequent scenes) sit side by side as bins of one
vector; an album adds 1 to at most k protagonist bins and 1 theme bin, so the caller passes
k + 1 as ``k`` and the bound √(k + 1) holds for the joint vector.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class SemanticQueryResult:
    """Noisy label counts, the normalised distribution, and the ledger record."""

    noisy_counts: np.ndarray  # (n_labels,) float64, may be negative
    distribution: np.ndarray  # (n_labels,) clipped at 0 and normalised (uniform if all ≤ 0)
    mechanism: dict[str, Any]  # what ``charge`` takes


def album_label_histogram(
    album_label_sets: Sequence[Sequence[int]], n_labels: int, k: int
) -> np.ndarray:
    """Exact counts: each album adds 1 to each of its first k distinct labels (private!)."""
    counts = np.zeros(n_labels, dtype=np.float64)
    for labels in album_label_sets:
        distinct = list(dict.fromkeys(int(x) for x in labels))[:k]
        if any(not 0 <= x < n_labels for x in distinct):
            raise ValueError(f"labels {distinct} outside [0, {n_labels})")
        counts[distinct] += 1.0
    return counts


def semantic_query(
    album_label_sets: Sequence[Sequence[int]],
    n_labels: int,
    k: int,
    noise_multiplier: float,
    generator: np.random.Generator,
    *,
    name: str = "semantic_query",
    allow_non_private: bool = False,
) -> SemanticQueryResult:
    """Release the album-level top-k label histogram with Gaussian noise of std σ·√k.

    ``generator``: this mechanism's own noise stream, ``NoiseSource.stream(name)`` (a CSPRNG in
    secure mode; never shared with another mechanism). ``noise_multiplier`` 0 (exact counts) is
    only accepted with ``allow_non_private=True``, for the ε = inf baseline plan.
    """
    if noise_multiplier < 0 or (noise_multiplier == 0 and not allow_non_private):
        raise ValueError("the semantic query needs noise_multiplier > 0 (0 only for the "
                         "non-private baseline, with allow_non_private=True)")
    if noise_multiplier == 0:
        logger.warning("NON-PRIVATE BASELINE: semantic query released WITHOUT noise (ε = inf)")
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    sensitivity = math.sqrt(k)  # L2 change of the histogram when one album is added/removed
    std = noise_multiplier * sensitivity
    counts = album_label_histogram(album_label_sets, n_labels, k)
    noisy = counts + generator.normal(0.0, std, size=n_labels) if std > 0 else counts.copy()
    clipped = np.clip(noisy, 0.0, None)  # post-processing: free
    total = clipped.sum()
    distribution = clipped / total if total > 0 else np.full(n_labels, 1.0 / n_labels)
    mechanism = {"name": name, "kind": "gaussian", "noise_multiplier": float(noise_multiplier),
                 "l2_sensitivity": sensitivity, "noise_std": std, "k": int(k)}
    return SemanticQueryResult(noisy, distribution, mechanism)


@dataclass
class AlbumCountResult:
    """The released album count and the ledger record of the Laplace mechanism."""

    n_albums: int  # max(1, round(N + Laplace(b))): what the plan uses as N
    mechanism: dict[str, Any]


def dp_album_count(n_albums: int, noise_multiplier: float, generator: np.random.Generator,
                   *, name: str = "album_count") -> AlbumCountResult:
    """Release N with Laplace noise of scale b = ``noise_multiplier`` (L1 sensitivity 1: adding
    or removing one album changes N by one), so that q = batch / N can be public. Rounding and
    the floor at 1 are post-processing. ``noise_multiplier`` 0 is the non-private baseline."""
    if noise_multiplier < 0:
        raise ValueError(f"album count: noise_multiplier must be ≥ 0, got {noise_multiplier}")
    noise = generator.laplace(0.0, noise_multiplier) if noise_multiplier > 0 else 0.0
    released = max(1, int(round(n_albums + noise)))
    mechanism = {"name": name, "kind": "laplace", "noise_multiplier": float(noise_multiplier),
                 "l1_sensitivity": 1.0}
    return AlbumCountResult(released, mechanism)
