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
    public_labels: np.ndarray, label_distribution: np.ndarray, n_select: int, seed: int
) -> np.ndarray:
    """Indices of ``n_select`` public items drawn so their label mix follows the distribution.

    Each label gets ``round(n_select * p_label)`` items drawn without replacement among the public
    items carrying it (all of them if it has fewer); labels with p = 0 contribute nothing.
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
        if q > 0 and len(pool):
            chosen.append(rng.choice(pool, size=min(q, len(pool)), replace=False))
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
