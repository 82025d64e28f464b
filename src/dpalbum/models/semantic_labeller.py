"""PRIVIMAGE's semantic query function, fitted on PUBLIC text only, and public-data selection.

The labeller clusters public caption embeddings (MiniLM) into ``n_labels`` semantic labels with
k-means; a private album is then described by the ``k`` labels its captions fall into most often.
Only the noisy label histogram over albums (``dpalbum.privacy``) ever leaves the private side;
selection of public data reads that noisy histogram and public data only (post-processing).
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def fit_labeller(public_embeddings: np.ndarray, n_labels: int, seed: int) -> np.ndarray:
    """k-means centroids (n_labels, D) of public embeddings: the public semantic label space."""
    from sklearn.cluster import KMeans

    n_labels = min(n_labels, len(public_embeddings))
    km = KMeans(n_clusters=n_labels, n_init=3, random_state=seed).fit(public_embeddings)
    logger.info("semantic labeller: %d labels from %d public texts", n_labels,
                len(public_embeddings))
    return km.cluster_centers_.astype(np.float32)


def assign_labels(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest-centroid label of each embedding, (N,) int."""
    if len(embeddings) == 0:
        return np.zeros(0, dtype=np.int64)
    d2 = ((embeddings[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)  # (N, K)
    return d2.argmin(1)


def album_top_k(caption_labels: list[np.ndarray], k: int) -> list[list[int]]:
    """Each album's k most frequent labels (distinct; fewer if the album has fewer)."""
    tops = []
    for labels in caption_labels:
        ranked = sorted(Counter(labels.tolist()).items(), key=lambda kv: (-kv[1], kv[0]))
        tops.append([label for label, _ in ranked[:k]])
    return tops


def select_public(
    public_labels: np.ndarray, label_distribution: np.ndarray, n_select: int, seed: int,
    item_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of ``n_select`` public items drawn so their label mix follows the distribution.

    Each label gets ``round(n_select * p_label)`` items drawn without replacement among the public
    items carrying it (all of them if it has fewer); labels with p = 0 contribute nothing.
    ``item_weights`` (e.g. each item's scene share of the theme distribution) weight the draw
    within a label: items of weight 0 are drawn only once a label's weighted items run out.
    """
    rng = np.random.default_rng(seed)
    p = np.clip(np.asarray(label_distribution, dtype=np.float64), 0, None)
    if p.sum() <= 0:
        raise ValueError("the noisy label distribution is all zero: nothing to select by; "
                         "lower the semantic query's noise or use selection: all")
    p = p / p.sum()
    quota = np.floor(n_select * p + 0.5).astype(int)
    chosen = []
    for label, q in enumerate(quota):
        pool = np.flatnonzero(public_labels == label)
        if q <= 0 or not len(pool):
            continue
        if item_weights is None:
            chosen.append(rng.choice(pool, size=min(q, len(pool)), replace=False))
            continue
        w = np.asarray(item_weights, dtype=np.float64)[pool]
        weighted, rest = pool[w > 0], pool[w <= 0]
        take = min(q, len(weighted))
        if take:
            chosen.append(rng.choice(weighted, size=take, replace=False,
                                     p=w[w > 0] / w[w > 0].sum()))
        if q > take and len(rest):
            chosen.append(rng.choice(rest, size=min(q - take, len(rest)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def centroids_frame(centroids: np.ndarray) -> pd.DataFrame:
    """Centroids as a DataFrame (one row per label) for a parquet catalog entry."""
    return pd.DataFrame(centroids, columns=[f"d{i}" for i in range(centroids.shape[1])])


def public_label_space(public_corpus: pd.DataFrame, columns: list[str]) -> list[str]:
    """The label space of a labelled public corpus: every value combination of ``columns``."""
    keys = public_corpus[columns].astype(str).agg(" ".join, axis=1)
    return sorted(keys.unique().tolist())


def public_labels(public_corpus: pd.DataFrame, columns: list[str], space: list[str]) -> np.ndarray:
    """Each public item's label id in ``space`` (from its public label columns)."""
    index = {name: i for i, name in enumerate(space)}
    keys = public_corpus[columns].astype(str).agg(" ".join, axis=1)
    return keys.map(index).to_numpy(dtype=np.int64)


def caption_labels(captions: list[str], columns: list[str], space: list[str]) -> np.ndarray:
    """Label ids read from captions written by the public captioner (vocabulary parser).

    Captions whose attributes are missing or outside the public label space get no label
    (they are dropped from the album's ranking, never mapped to a wrong label).
    """
    from dpalbum.albums.vocabulary import parse_caption

    index = {name: i for i, name in enumerate(space)}
    out = []
    for caption in captions:
        parsed = parse_caption(caption)
        key = " ".join(str(parsed.get(c)) for c in columns)
        if key in index:
            out.append(index[key])
    return np.asarray(out, dtype=np.int64)


# ---- the theme family: an album's set of most frequent scenes ---------------------------------

THEME_JOIN = "+"


def theme_space(public_corpus: pd.DataFrame, column: str, size: int) -> list[str]:
    """Every theme the public corpus can show: each set of 1..``size`` distinct values of
    ``column`` (e.g. scenes), names sorted and joined with ``+`` ("beach+forest")."""
    from itertools import combinations

    values = sorted(public_corpus[column].astype(str).unique().tolist())
    return [THEME_JOIN.join(combo) for n in range(1, size + 1)
            for combo in combinations(values, n)]


def album_theme(captions: list[str], column: str, size: int, space: list[str]) -> int | None:
    """The theme id of one album: its ``size`` most frequent ``column`` values read from its
    captions (ties by name), as a set; ``None`` when no caption names one in the public space."""
    from dpalbum.albums.vocabulary import parse_caption

    counts = Counter(str(v) for v in (parse_caption(c).get(column) for c in captions) if v)
    ranked = [value for value, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    name = THEME_JOIN.join(sorted(ranked[:size]))
    index = {theme: i for i, theme in enumerate(space)}
    return index.get(name) if name else None


def theme_value_weights(themes: list[str], distribution: np.ndarray) -> dict[str, float]:
    """Each value's share of a theme distribution (a theme's mass split over its values)."""
    weights: Counter[str] = Counter()
    for theme, p in zip(themes, distribution):
        values = theme.split(THEME_JOIN)
        for value in values:
            weights[value] += float(p) / len(values)
    return dict(weights)
