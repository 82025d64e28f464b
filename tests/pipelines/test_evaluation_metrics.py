"""Metric functions on inputs built by hand: each must separate "same" from "different"."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dpalbum.pipelines.evaluation import metrics


def _gaussians(shift: float = 0.0, n: int = 150, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(loc=shift, size=(n, d))


def test_frechet_distance_matches_closed_form_and_grows_with_shift():
    real, same = _gaussians(0.0)
    _, moved = _gaussians(2.0)
    # closed form for identity-ish covariances: |mu1 - mu2|^2 dominates (8 dims x 2^2 = 32)
    assert metrics.frechet_distance(real, same) < 1.0
    assert 28 < metrics.frechet_distance(real, moved) < 36
    assert metrics.frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    real, same = _gaussians(0.0)
    _, moved = _gaussians(1.0)
    kid_same, _ = metrics.kernel_distance(real, same, subsets=10, subset_size=100)
    kid_moved, _ = metrics.kernel_distance(real, moved, subsets=10, subset_size=100)
    assert abs(kid_same) < 0.1 < kid_moved


def test_knn_precision_recall_sees_mode_collapse():
    real, same = _gaussians(0.0)
    collapsed = real[:5] + np.random.default_rng(1).normal(scale=0.01, size=(5, 8))
    collapsed = np.repeat(collapsed, 30, axis=0)  # realistic samples, little diversity
    pr_same = metrics.knn_precision_recall(real, same, k=3)
    pr_collapsed = metrics.knn_precision_recall(real, collapsed, k=3)
    assert pr_same["precision"] > 0.6 and pr_same["recall"] > 0.6
    assert pr_collapsed["precision"] > 0.95  # every sample looks real ...
    assert pr_collapsed["recall"] < 0.2  # ... but most real samples are not covered


def test_mauve_high_for_same_low_for_different():
    real, same = _gaussians(0.0, n=120, d=16)
    _, moved = _gaussians(3.0, n=120, d=16)
    assert metrics.mauve_score(real, same) > 0.8
    assert metrics.mauve_score(real, moved) < 0.2


def test_album_coherence_exact_against_brute_force():
    rng = np.random.default_rng(0)
    ids = ["a"] * 3 + ["b"] * 4 + ["c"] * 2
    x = rng.normal(size=(9, 5)) + np.repeat(rng.normal(size=(3, 5)) * 3, [3, 4, 2], axis=0)
    found = metrics.album_coherence(x, ids)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    same = np.array([[i != j and ids[i] == ids[j] for j in range(9)] for i in range(9)])
    diff = np.array([[ids[i] != ids[j] for j in range(9)] for i in range(9)])
    assert found["within"] == pytest.approx(sims[same].mean())
    assert found["between"] == pytest.approx(sims[diff].mean())
    assert found["gap"] > 0.3


def test_album_coherence_needs_albums_with_two_items():
    with pytest.raises(ValueError, match="2\\+ items"):
        metrics.album_coherence(np.eye(3), ["a", "b", "c"])


def test_total_variation_values():
    assert metrics.total_variation(Counter(a=1, b=1), Counter(a=2, b=2)) == 0.0
    assert metrics.total_variation(Counter(a=1), Counter(b=5)) == 1.0
    assert metrics.total_variation(Counter(a=3, b=1), Counter(a=1, b=1)) == pytest.approx(0.25)


def test_attribute_tv_counts_unparsed_and_objects():
    private = [{"scene": "beach", "colour": "red", "shape": "circle", "objects": ["ball"]}] * 4
    good = [{"scene": "beach", "colour": "red", "shape": "circle", "objects": ["ball"]}] * 2
    broken = [{"scene": None, "colour": None, "shape": "circle", "objects": []}] * 2
    assert metrics.attribute_tv(private, good) == {"tv_scene": 0, "tv_protagonist": 0,
                                                   "tv_objects": 0}
    assert metrics.attribute_tv(private, broken) == {"tv_scene": 1, "tv_protagonist": 1,
                                                     "tv_objects": 1}


def test_caption_agreement():
    said = [{"scene": "beach", "colour": "red", "shape": "circle"}] * 5
    shown = [{"scene": "beach", "colour": "red", "shape": "circle"}] * 4 + [
        {"scene": "city", "colour": "blue", "shape": "square"}]
    found = metrics.caption_agreement(shown, said, ["a", "a", "b", "b", "b"])
    assert found["scene_agreement"] == 0.8
    assert found["protagonist_agreement"] == 0.8
    assert found["protagonist_consistency"] == pytest.approx((1 + 2 / 3) / 2)  # a: 2/2, b: 2/3
    assert found["albums_consistent_90"] == 0.5


def test_tstr_synthetic_like_real_scores_like_real_and_noise_does_not():
    rng = np.random.default_rng(0)

    def data(n, noise_labels=False):
        y = rng.integers(0, 3, n)
        x = rng.normal(size=(n, 4)) + np.eye(3, 4)[y] * 4
        labels = [f"c{v}" for v in (rng.permutation(y) if noise_labels else y)]
        return x, labels

    real, test = data(60), data(40)
    good = metrics.tstr(data(60), real, test)
    bad = metrics.tstr(data(60, noise_labels=True), real, test)
    assert good["accuracy_real"] > 0.9 and good["accuracy_synthetic"] > 0.9
    assert good["relative"] > 0.9
    assert bad["accuracy_synthetic"] < 0.6
    with pytest.raises(ValueError, match="two classes"):
        metrics.fit_and_score(real[0], ["x"] * 60, *test)


def test_topic_gap_counts_novel_topics_and_distribution_distance():
    real = ["hike", "hike", "birthday", None]
    same = metrics.topic_gap(real, ["birthday", "hike", None, "hike"])
    assert same == {"topic_tv": 0.0, "novel_topic_share": 0.0, "no_topic_share": 0.25}
    shifted = metrics.topic_gap(real, ["wedding", "hike", "wedding", "hike"])
    assert shifted["novel_topic_share"] == 0.5
    assert shifted["topic_tv"] == pytest.approx(0.5)  # hike 0.5 vs 0.5; 0.5 moved to wedding
