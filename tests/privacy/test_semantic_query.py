"""Test 7: the semantic query's noise is Gaussian with std σ·√k (uniform noise fails)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dpalbum.privacy import album_label_histogram, semantic_query
from tests.privacy.tiny_models import replay

N_LABELS, K, SIGMA = 2000, 4, 3.0


def _label_sets(n_albums: int = 300, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(rng.choice(50, size=K, replace=False)) for _ in range(n_albums)]


def gaussian_ks_pvalue(noise: np.ndarray, std: float) -> float:
    return float(stats.kstest(noise, stats.norm(0.0, std).cdf).pvalue)


def test_query_noise_is_gaussian_with_std_sigma_sqrt_k():
    labels = _label_sets()
    exact = album_label_histogram(labels, N_LABELS, K)
    noise = np.concatenate(
        [
            semantic_query(
                labels, N_LABELS, K, SIGMA, replay(s).stream("semantic_query")
            ).noisy_counts
            - exact
            for s in range(10)
        ]
    )  # 20,000 draws
    std = SIGMA * math.sqrt(K)
    assert gaussian_ks_pvalue(noise, std) > 1e-3
    assert noise.std() == pytest.approx(std, rel=0.03)
    # Power: the same test rejects the known bug (uniform noise of the same std) and Laplace.
    rng = np.random.default_rng(1)
    half_width = std * math.sqrt(3.0)
    assert gaussian_ks_pvalue(rng.uniform(-half_width, half_width, noise.size), std) < 1e-6
    assert gaussian_ks_pvalue(rng.laplace(0.0, std / math.sqrt(2.0), noise.size), std) < 1e-6
    assert gaussian_ks_pvalue(rng.normal(0.0, SIGMA, noise.size), std) < 1e-6  # std without √k


def test_sensitivity_is_sqrt_k_per_album_and_record_matches():
    labels = _label_sets(50)
    adversary = [7, 7, 7, 1, 2, 3, 4, 5]  # repeats and more than k labels
    with_adv = album_label_histogram([*labels, adversary], N_LABELS, K)
    without = album_label_histogram(labels, N_LABELS, K)
    assert np.linalg.norm(with_adv - without) <= math.sqrt(K) + 1e-12
    result = semantic_query(labels, N_LABELS, K, SIGMA, replay(0).stream("semantic_query"))
    assert result.mechanism == {
        "name": "semantic_query",
        "kind": "gaussian",
        "noise_multiplier": SIGMA,
        "l2_sensitivity": math.sqrt(K),
        "noise_std": SIGMA * math.sqrt(K),
        "k": K,
    }
    assert result.distribution.min() >= 0 and result.distribution.sum() == pytest.approx(1.0)


def test_query_refuses_no_noise_and_bad_labels(caplog):
    with pytest.raises(ValueError, match="baseline"):
        semantic_query([[0]], 3, 1, 0.0, replay(0).stream("semantic_query"))
    with caplog.at_level("WARNING"):
        exact = semantic_query(
            [[0, 1], [1]], 3, 2, 0.0, replay(0).stream("semantic_query"), allow_non_private=True
        )
    assert "NON-PRIVATE" in caplog.text and exact.noisy_counts.tolist() == [1.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="outside"):
        semantic_query([[5]], 3, 1, 1.0, replay(0).stream("semantic_query"))
