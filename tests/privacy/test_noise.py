"""Issue 12: DP-SGD's noise is N(0, σ²C²), fresh every step, added once (also on 2 processes),
divided by the public expected batch; every mechanism has its own streams; a secure release
cannot be replayed from any configured seed; the album count is Laplace(b).

Most tests use a "pure noise" model (zero loss, so zero gradients): with SGD and lr 1 a step's
parameter change is exactly -noise / expected_batch, so ~20k parameters give ~20k noise draws.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from dpalbum.privacy import (
    DPSGDConfig,
    NoiseSource,
    PoissonAlbumSampler,
    album_label_histogram,
    dp_album_count,
    semantic_query,
    train_dp,
    train_dp_multiprocess,
)
from tests.privacy.tiny_models import replay

from .tiny_models import (
    TinyRegressor,
    make_regression_albums,
    regression_collate,
    regression_row_loss,
)

PROJECT = Path(__file__).resolve().parents[2]
PROJECT_SEED = 20261123  # conf/base/globals.yml `seed`
IN_FEATURES, OUT_FEATURES = 200, 100  # 20,100 parameters: 20,100 noise draws per step


# ---- a model whose gradient is exactly zero: its update is the noise alone -------------------
def pure_noise_model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(IN_FEATURES, OUT_FEATURES)


def zero_row_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).sum(-1) * 0.0  # (B,): every per-album gradient is 0 (module level: pickles)


def stack_rows(rows):
    return torch.stack(rows)


def zero_albums(n: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(IN_FEATURES, generator=g) for _ in range(1 + i % 2)] for i in range(n)]


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().double() for p in model.parameters()])


def noise_config(sigma: float, c: float, **kw) -> DPSGDConfig:
    values = {"steps": 1, "sample_rate": 1.0, "lr": 1.0, "optimizer": "sgd",
              "mechanism": "summary_lm", "noise_source": replay(12)}
    return DPSGDConfig(noise_multiplier=sigma, max_grad_norm=c, **{**values, **kw})


def step_noises(config: DPSGDConfig, n_albums: int) -> tuple[list[np.ndarray], object]:
    """The noise of every step (update × expected batch) of a pure-noise run; q = 1, so
    ``on_epoch`` (every round(1/q) steps) snapshots the parameters after every step."""
    model = pure_noise_model()
    snaps = [flat(model)]
    result = train_dp(model, zero_albums(n_albums), zero_row_loss, stack_rows, config,
                      progress=False, on_epoch=lambda _m, _s: snaps.append(flat(model)))
    expected = config.sample_rate * n_albums
    # SGD, lr 1: θ_t = θ_{t-1} - noise_t / expected_batch
    return [((a - b) * -expected).numpy() for a, b in zip(snaps[1:], snaps[:-1])], result


def assert_gaussian(noise: np.ndarray, std: float) -> None:
    """Mean 0, std, excess kurtosis 0 (uniform: -1.2, Laplace: 3), KS test against N(0, std²)."""
    n = noise.size
    assert abs(noise.mean()) < 5 * std / math.sqrt(n), noise.mean()
    assert noise.std() == pytest.approx(std, rel=0.03), (noise.std(), std)
    assert abs(stats.kurtosis(noise)) < 0.25, stats.kurtosis(noise)
    p = stats.kstest(noise, stats.norm(0.0, std).cdf).pvalue  # uniform of the same std: ~1e-15
    assert p > 1e-6, f"DP-SGD noise is not N(0, {std:.4g}²): KS p = {p:.3g}"


# ---- 1, 2: the noise of a step is N(0, σ²C²) (then divided by the expected batch) ------------
@pytest.mark.parametrize("c", [0.5, 3.0])
def test_step_noise_is_gaussian_with_std_sigma_times_c(c):
    sigma, n_albums = 1.3, 4
    (noise,), _ = step_noises(noise_config(sigma, c), n_albums)
    assert noise.size == IN_FEATURES * OUT_FEATURES + OUT_FEATURES
    assert_gaussian(noise, sigma * c)  # uniform noise, or std σ without C, fail here


def test_secure_step_noise_is_gaussian_too():
    """The release mode (fresh OS keys): same distribution."""
    (noise,), _ = step_noises(noise_config(0.8, 3.0, noise_source=NoiseSource("secure")), 4)
    assert_gaussian(noise, 0.8 * 3.0)


# ---- 3: fresh noise every step ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["replayable", "secure"])
def test_each_step_draws_fresh_independent_noise(mode):
    source = replay(3) if mode == "replayable" else NoiseSource("secure")
    sigma, c = 1.0, 2.0
    noises, _ = step_noises(noise_config(sigma, c, steps=3, noise_source=source), 4)
    assert len(noises) == 3
    for i in range(3):
        assert_gaussian(noises[i], sigma * c)
        for j in range(i):
            r = np.corrcoef(noises[i], noises[j])[0, 1]
            # 20k draws: |r| of independent noises is ~0.007; the same noise again gives 1
            assert abs(r) < 0.05, f"steps {j + 1} and {i + 1} share their noise (r = {r:.3f})"
            assert not np.allclose(noises[i], noises[j])


# ---- 4: the noisy sum is divided by the public expected batch, never the actual batch -------
def _clipped_album_sum(model: nn.Module, albums, c: float) -> list[torch.Tensor]:
    """Σ_albums clip_C(∇ mean row loss of the album), by plain autograd (independent of Opacus)."""
    params = list(model.parameters())
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for rows in albums:
        loss = regression_row_loss(model, regression_collate(rows)).mean()
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads))
        factor = min(1.0, c / float(norm))
        for t, g in zip(total, grads):
            t += factor * g.double()
    return total


@pytest.mark.parametrize("public_expected_batch", [None, 5.0])
def test_update_is_clipped_sum_plus_noise_over_public_expected_batch(public_expected_batch):
    """q = 0.5 over 8 albums: the actual batch (Poisson) differs from qN = 4. With replayable
    streams the batch and the noise are redrawn here, independently of the trainer, and the
    update must be exactly -(Σ clip_C(g) + N(0, σ²C²)) / expected_batch. ``5.0``: the plan's
    public q·N̂ (a DP count), which is what must be used, not q × the true N."""
    n, q, sigma, c, mech = 8, 0.5, 0.7, 0.5, "caption_lm"
    albums = make_regression_albums(n, seed=4)
    seed = next(s for s in range(100)  # a seed whose first Poisson batch is not qN albums
                if len(PoissonAlbumSampler(n, q, replay(s).stream(mech, "sampling")).sample())
                not in (0, 4, 5))
    batch = PoissonAlbumSampler(n, q, replay(seed).stream(mech, "sampling")).sample()
    expected = public_expected_batch or q * n
    torch.manual_seed(0)
    base = TinyRegressor()
    model = copy.deepcopy(base)
    config = DPSGDConfig(noise_multiplier=sigma, steps=1, max_grad_norm=c, sample_rate=q,
                         lr=1.0, optimizer="sgd", mechanism=mech, noise_source=replay(seed),
                         expected_batch=public_expected_batch)
    result = train_dp(model, albums, regression_row_loss, regression_collate, config,
                      progress=False)
    assert result.history[0]["batch_albums"] == len(batch) != expected

    clipped = _clipped_album_sum(copy.deepcopy(base), [albums[i] for i in batch], c)
    noise_gen = replay(seed).stream(mech, "noise")
    for p0, p1, s in zip(base.parameters(), model.parameters(), clipped):
        noise = torch.from_numpy(noise_gen.standard_normal(tuple(p0.shape), dtype=np.float32))
        want = -(s + noise.double() * sigma * c) / expected
        got = p1.detach().double() - p0.detach().double()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# ---- 5: on 2 processes the noise is added exactly once ---------------------------------------
def test_two_processes_add_the_noise_exactly_once(monkeypatch):
    """Rank 0 alone adds N(0, σ²C²): the 2-process update of a zero-gradient model has std
    σC / expected_batch (not 0: no noise; not √2 times: every rank adding its own)."""
    monkeypatch.chdir(PROJECT)  # the workers import this module to unpickle the loss
    sigma, c, n = 1.2, 3.0, 6
    config = noise_config(sigma, c, noise_source=NoiseSource("secure"), physical_batch_rows=16)
    model = pure_noise_model()
    before = flat(model)
    result = train_dp_multiprocess(model, zero_albums(n), zero_row_loss, stack_rows, config,
                                   nproc=2, progress=False)
    assert result.steps_taken == 1 and result.history[0]["batch_albums"] == n
    noise = ((flat(model) - before) * -(config.sample_rate * n)).numpy()
    assert noise.std() > 0.5 * sigma * c, "no noise at all on 2 processes"
    assert_gaussian(noise, sigma * c)


# ---- 6: a secure release cannot be replayed from any seed the project knows -----------------
N_LABELS, K, SIGMA_Q = 2000, 1, 3.0


def _labels(n_albums: int = 300) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [[int(rng.integers(50))] for _ in range(n_albums)]


def _candidate_streams(seed: int):
    """Every way a configured seed could have keyed the query's noise."""
    from randomgen import ChaCha

    yield "numpy default_rng", np.random.default_rng(seed)
    yield "replayable stream", replay(seed).stream("semantic_query")
    yield "ChaCha20 keyed by the seed", np.random.Generator(ChaCha(key=seed, counter=0, rounds=20))


def test_secure_semantic_query_cannot_be_replayed_from_any_configured_seed():
    labels = _labels()
    exact = album_label_histogram(labels, N_LABELS, K)
    std = SIGMA_Q * math.sqrt(K)
    seeds = [PROJECT_SEED, *range(101)]

    # teeth: a replayable release IS recovered exactly by subtracting the right stream
    replayed = semantic_query(labels, N_LABELS, K, SIGMA_Q, replay(42).stream("semantic_query"))
    guess = replay(42).stream("semantic_query").normal(0.0, std, N_LABELS)
    assert np.abs(replayed.noisy_counts - guess - exact).max() < 1e-9

    secure = semantic_query(labels, N_LABELS, K, SIGMA_Q,
                            NoiseSource("secure").stream("semantic_query"))
    assert np.abs(secure.noisy_counts - exact).max() > 1.0  # it is noisy at all
    for seed in seeds:
        for what, gen in _candidate_streams(seed):
            residual = secure.noisy_counts - gen.normal(0.0, std, N_LABELS) - exact
            # wrong noise subtracted: residual ~ N(0, 2 std²), nowhere near 0
            assert np.abs(residual).max() > 1.0, f"secure noise replayed by {what}({seed})"
            assert residual.std() > std, f"secure noise replayed by {what}({seed})"


# ---- 7: two mechanisms planned alike draw different batches and different noise -------------
@pytest.mark.parametrize("mode", ["replayable", "secure"])
def test_two_mechanisms_draw_different_batches_and_noise(mode):
    source = replay(7) if mode == "replayable" else NoiseSource("secure")
    n, steps = 16, 12
    runs = {}
    for mech in ("summary_lm", "caption_lm"):
        model = pure_noise_model()
        before = flat(model)
        config = noise_config(1.0, 1.0, steps=steps, sample_rate=0.5, mechanism=mech,
                              noise_source=source)
        result = train_dp(model, zero_albums(n), zero_row_loss, stack_rows, config,
                          progress=False)
        runs[mech] = ([h["batch_albums"] for h in result.history], (flat(model) - before).numpy())
    (sizes_a, update_a), (sizes_b, update_b) = runs["summary_lm"], runs["caption_lm"]
    assert sizes_a != sizes_b, "both mechanisms drew the same Poisson batches"
    r = np.corrcoef(update_a, update_b)[0, 1]
    assert abs(r) < 0.05, f"both mechanisms drew the same noise (r = {r:.3f})"
    # and the streams themselves: per mechanism and per purpose, all different
    draws = {(m, p): source.stream(m, p).random(64)
             for m in ("summary_lm", "caption_lm") for p in ("noise", "sampling")}
    keys = list(draws)
    for i, a in enumerate(keys):
        for b in keys[:i]:
            assert not np.array_equal(draws[a], draws[b]), (a, b)
    if mode == "secure":  # fresh keys: even the same mechanism never repeats its draws
        assert not np.array_equal(source.stream("summary_lm").random(64),
                                  source.stream("summary_lm").random(64))


# ---- 8: the album count is N + Laplace(b) ----------------------------------------------------
@pytest.mark.parametrize("b", [4.0, 25.0])
def test_album_count_noise_is_laplace_of_scale_b(b):
    n_true, draws = 100_000, 20_000
    gen = replay(8).stream("album_count")
    noise = np.array([dp_album_count(n_true, b, gen).n_albums - n_true for _ in range(draws)],
                     dtype=np.float64)
    # Laplace(b): std b√2 (rounding adds 1/12 to the variance), excess kurtosis 3
    assert noise.std() == pytest.approx(math.sqrt(2 * b * b + 1 / 12), rel=0.04)
    assert abs(noise.mean()) < 5 * b * math.sqrt(2 / draws)
    assert 1.5 < stats.kurtosis(noise) < 5.0  # Gaussian: 0 (the estimate's sd here is ~0.35)
    assert np.mean(np.abs(noise)) == pytest.approx(b, rel=0.04)  # E|Laplace(b)| = b
    record = dp_album_count(n_true, b, gen).mechanism
    assert record == {"name": "album_count", "kind": "laplace", "noise_multiplier": b,
                      "l1_sensitivity": 1.0}


def test_album_count_is_exact_only_without_noise():
    gen = NoiseSource("secure").stream("album_count")
    assert all(dp_album_count(500, 0.0, gen).n_albums == 500 for _ in range(50))
    released = [dp_album_count(500, 2.0, gen).n_albums for _ in range(200)]
    assert len(set(released)) > 5 and np.mean(np.array(released) != 500) > 0.5
