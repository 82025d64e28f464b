"""Fidelity, coherence, attribute and utility metrics: plain functions over arrays and labels.

Each function takes features or labels (never a catalog entry) and returns a flat dict of floats,
so the nodes stay thin and every metric can be tested on inputs built by hand. Library code does
the maths where it exists: torchmetrics (Fréchet distance, KID), mauve-text (MAUVE), scikit-learn
(classifiers, cross-validation).
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


class PrecomputedFeatures(nn.Module):
    """Identity "extractor": lets torchmetrics' FID/KID run on features computed once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _as_tensor(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(features), dtype=torch.float64)


def _check_pair(real: np.ndarray, fake: np.ndarray, minimum: int, name: str) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"{name}: need two (N, D) feature arrays of the same D, got "
                         f"{real.shape} and {fake.shape}")
    if min(len(real), len(fake)) < minimum:
        raise ValueError(f"{name}: need at least {minimum} samples on each side, got "
                         f"{len(real)} real and {len(fake)} synthetic")


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (torchmetrics' FID maths)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = np.asarray(real), np.asarray(fake)
    _check_pair(real, fake, 2, "Fréchet distance")
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]))
    metric.set_dtype(torch.float64)
    metric.update(_as_tensor(real), real=True)
    metric.update(_as_tensor(fake), real=False)
    return float(metric.compute())


def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 50,
                    subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (unbiased MMD², cubic polynomial kernel) mean and std over random subsets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = np.asarray(real), np.asarray(fake)
    _check_pair(real, fake, 2, "KID")
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "saves all features in a buffer": we hand it features
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]),
                                         subsets=subsets, subset_size=size)
    metric.update(_as_tensor(real).float(), real=True)
    metric.update(_as_tensor(fake).float(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # KID draws its subsets with torch's global RNG
        mean, std = metric.compute()
    return float(mean), float(std)


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019) with k-NN balls in feature space.

    Precision: share of synthetic samples inside the real manifold (some real sample's ball of
    radius = distance to its k-th real neighbour); recall: share of real samples inside the
    synthetic manifold.
    """
    real_t, fake_t = _as_tensor(real), _as_tensor(fake)
    _check_pair(real_t.numpy(), fake_t.numpy(), k + 1, "k-NN precision/recall")

    def radii(x: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x, x)  # (N, N); column 0 after sorting is the sample itself
        return d.sort(dim=1).values[:, k]

    def coverage(manifold: torch.Tensor, radius: torch.Tensor, probe: torch.Tensor) -> float:
        d = torch.cdist(probe, manifold)  # (M, N)
        return (d <= radius.unsqueeze(0)).any(dim=1).double().mean().item()

    return {"precision": coverage(real_t, radii(real_t), fake_t),
            "recall": coverage(fake_t, radii(fake_t), real_t)}


def mauve_score(real: np.ndarray, fake: np.ndarray, max_samples: int = 2000,
                seed: int = 0) -> float:
    """MAUVE (mauve-text) between two sets of precomputed text features (k-means histograms)."""
    import mauve

    real, fake = np.asarray(real, dtype=np.float32), np.asarray(fake, dtype=np.float32)
    _check_pair(real, fake, 2, "MAUVE")
    rng = np.random.default_rng(seed)
    if len(real) > max_samples:
        real = real[rng.choice(len(real), max_samples, replace=False)]
    if len(fake) > max_samples:
        fake = fake[rng.choice(len(fake), max_samples, replace=False)]
    buckets = max(2, min(len(real), len(fake)) // 10)  # mauve's "auto", floored at 2
    out = mauve.compute_mauve(p_features=real, q_features=fake, num_buckets=buckets,
                              kmeans_num_redo=2, kmeans_max_iter=100, seed=seed, verbose=False)
    return float(out.mauve)


def image_fidelity(real: np.ndarray, fake: np.ndarray, k: int = 3, kid_subsets: int = 50,
                   kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Fréchet distance, KID and k-NN precision/recall between two image feature sets."""
    kid_mean, kid_std = kernel_distance(real, fake, kid_subsets, kid_subset_size, seed)
    return {"fd": frechet_distance(real, fake), "kid": kid_mean, "kid_std": kid_std,
            **knn_precision_recall(real, fake, k)}


def text_fidelity(real: np.ndarray, fake: np.ndarray, max_samples: int = 2000,
                  seed: int = 0) -> dict[str, float]:
    """Fréchet distance and MAUVE between two sets of sentence embeddings."""
    return {"fd": frechet_distance(real, fake),
            "mauve": mauve_score(real, fake, max_samples, seed)}


# ---- album coherence ----------------------------------------------------------------------------

def album_coherence(features: np.ndarray, album_ids: Sequence[Hashable]) -> dict[str, float]:
    """Mean cosine similarity of item pairs within one album vs pairs from different albums.

    Exact and O(N·D): for unit vectors, the sum of similarities over ordered pairs (i ≠ j) of a
    group is ‖Σf‖² − Σ‖f‖², so within-album sums come from per-album sums, between-album ones
    from the total minus the within part.
    """
    x = np.asarray(features, dtype=np.float64)
    ids = list(album_ids)
    if len(x) != len(ids):
        raise ValueError(f"album coherence: {len(x)} feature rows but {len(ids)} album ids")
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    groups: dict[Hashable, list[int]] = {}
    for i, a in enumerate(ids):
        groups.setdefault(a, []).append(i)
    sizes = np.array([len(v) for v in groups.values()])
    within_pairs = int((sizes * (sizes - 1)).sum())
    all_pairs = len(x) * (len(x) - 1)
    between_pairs = all_pairs - within_pairs
    if within_pairs == 0 or between_pairs == 0:
        raise ValueError("album coherence needs at least one album with 2+ items and 2+ albums")
    self_sum = float((x * x).sum())
    within_sum = sum(float(np.square(x[idx].sum(axis=0)).sum()) for idx in groups.values())
    within_sum -= self_sum
    total = float(np.square(x.sum(axis=0)).sum()) - self_sum
    within, between = within_sum / within_pairs, (total - within_sum) / between_pairs
    return {"within": within, "between": between, "gap": within - between}


# ---- labels: agreement, distributions, total variation ------------------------------------------

UNPARSED = "(unparsed)"
NO_OBJECT = "(none)"


def protagonist_of(attrs: dict[str, Any]) -> str:
    """``"colour shape"`` of parsed or predicted attributes, ``(unparsed)`` if either is absent."""
    if attrs.get("colour") and attrs.get("shape"):
        return f"{attrs['colour']} {attrs['shape']}"
    return UNPARSED


def label_distributions(attrs: Sequence[dict[str, Any]]) -> dict[str, Counter]:
    """Counts of scene, protagonist and object labels over photos (objects: one per mention)."""
    counts = {"scene": Counter(), "protagonist": Counter(), "objects": Counter()}
    for a in attrs:
        counts["scene"][a.get("scene") or UNPARSED] += 1
        counts["protagonist"][protagonist_of(a)] += 1
        objects = a.get("objects") or []
        if isinstance(objects, str):
            objects = objects.split()
        counts["objects"].update(objects or [NO_OBJECT])
    return counts


def total_variation(p: Counter | dict, q: Counter | dict) -> float:
    """Total-variation distance ½ Σ |p − q| between two label count tables (normalised here)."""
    n_p, n_q = sum(p.values()), sum(q.values())
    if n_p == 0 or n_q == 0:
        raise ValueError("total variation needs two non-empty label distributions")
    return 0.5 * sum(abs(p.get(k, 0) / n_p - q.get(k, 0) / n_q) for k in set(p) | set(q))


def topic_gap(real_topics: Sequence[str | None],
              fake_topics: Sequence[str | None]) -> dict[str, float]:
    """How the synthetic summaries' topics (e.g. events) differ from the private ones: total
    variation between the two topic distributions (texts naming none count as "none"), and the
    share of synthetic texts whose topic no private text names (the hierarchical method's
    authors compare topic distributions)."""
    real = Counter(t or "none" for t in real_topics)
    fake = Counter(t or "none" for t in fake_topics)
    novel = sum(n for topic, n in fake.items() if topic != "none" and topic not in real)
    return {"topic_tv": total_variation(real, fake),
            "novel_topic_share": novel / max(1, sum(fake.values())),
            "no_topic_share": fake["none"] / max(1, sum(fake.values()))}


def attribute_tv(reference: Sequence[dict[str, Any]],
                 candidate: Sequence[dict[str, Any]]) -> dict[str, float]:
    """TV distance per attribute (scene, protagonist, objects) between two sets of photo labels."""
    ref, cand = label_distributions(reference), label_distributions(candidate)
    return {f"tv_{name}": total_variation(ref[name], cand[name]) for name in ref}


def caption_agreement(predicted: Sequence[dict[str, Any]], parsed: Sequence[dict[str, Any]],
                      album_ids: Sequence[Hashable]) -> dict[str, float]:
    """How often the photo shows what its caption says, and how stable the protagonist is.

    ``scene_agreement`` / ``protagonist_agreement``: share of photos whose predicted label equals
    the caption's (over photos whose caption names one). ``protagonist_consistency``: mean over
    albums of the share of photos showing the album's most frequent predicted protagonist;
    ``albums_consistent_90``: share of albums where that share is at least 90%.
    """
    if not (len(predicted) == len(parsed) == len(album_ids)) or not predicted:
        raise ValueError(f"caption agreement needs equal, non-empty lists, got "
                         f"{len(predicted)} predictions, {len(parsed)} captions, "
                         f"{len(album_ids)} album ids")
    scene = [p["scene"] == c["scene"] for p, c in zip(predicted, parsed) if c.get("scene")]
    prot = [protagonist_of(p) == protagonist_of(c) for p, c in zip(predicted, parsed)
            if protagonist_of(c) != UNPARSED]
    by_album: dict[Hashable, list[str]] = {}
    for p, a in zip(predicted, album_ids):
        by_album.setdefault(a, []).append(protagonist_of(p))
    shares = [Counter(v).most_common(1)[0][1] / len(v) for v in by_album.values()]
    nan = float("nan")
    return {"scene_agreement": float(np.mean(scene)) if scene else nan,
            "protagonist_agreement": float(np.mean(prot)) if prot else nan,
            "protagonist_consistency": float(np.mean(shares)),
            "albums_consistent_90": float(np.mean([s >= 0.9 for s in shares]))}


# ---- utility: train on synthetic, test on real --------------------------------------------------

def fit_and_score(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray,
                  test_y: Sequence[str], seed: int = 0, max_cv_folds: int = 3) -> float:
    """Accuracy on the test set of a logistic regression whose C is chosen by CV on train only.

    Model selection sees the training set alone: the test set (held-out private albums) is
    touched once, for the final score.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = Counter(train_y)
    if len(counts) < 2:
        raise ValueError(f"need at least two classes to train on, got {dict(counts)}")
    folds = min(max_cv_folds, min(counts.values()))
    if folds >= 2:
        clf = LogisticRegressionCV(Cs=5, cv=folds, l1_ratios=(0.0,), scoring="accuracy",
                                   max_iter=2000, random_state=seed, use_legacy_attributes=False)
    else:  # a class with one album: no stratified CV possible, keep the default C
        clf = LogisticRegression(max_iter=2000, random_state=seed)
    model = make_pipeline(StandardScaler(), clf).fit(np.asarray(train_x), list(train_y))
    return float(np.mean(model.predict(np.asarray(test_x)) == np.asarray(list(test_y))))


def tstr(synthetic: tuple[np.ndarray, Sequence[str]], real_train: tuple[np.ndarray, Sequence[str]],
         test: tuple[np.ndarray, Sequence[str]], seed: int = 0) -> dict[str, float]:
    """Train-on-synthetic-test-on-real accuracy vs train-on-real, and the majority baseline."""
    test_x, test_y = test
    acc_syn = fit_and_score(*synthetic, test_x, test_y, seed)
    acc_real = fit_and_score(*real_train, test_x, test_y, seed)
    majority = Counter(real_train[1]).most_common(1)[0][0]
    return {"accuracy_synthetic": acc_syn, "accuracy_real": acc_real,
            "relative": acc_syn / acc_real if acc_real > 0 else float("nan"),
            "majority_baseline": float(np.mean(np.asarray(list(test_y)) == majority)),
            "n_synthetic": float(len(synthetic[1])), "n_real": float(len(real_train[1])),
            "n_test": float(len(test_y))}
