"""Noise calibration: choose noise multipliers so the *composed* ε lands just below the target.

Two stages, both searched with dp-accounting's PLD accountant:
1. each mechanism to calibrate gets a standalone noise multiplier σ⁰ᵢ that spends its share
   ``shareᵢ · ε_target`` on its own (this fixes how the budget is split between mechanisms);
2. one common factor c scales all of them, σᵢ = c·σ⁰ᵢ, until the joint composition (far
   tighter than a sum of per-mechanism ε) sits in [(1 − tolerance)·ε_target, ε_target].
Searches run on coarse PLD grids. dp-accounting's discretisation is pessimistic, so the final
check on the ``SEARCH_DISCRETIZATION`` grid bounds the ε the ledger reports on the finer grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy.optimize import brentq

from .accounting import ROUGH_DISCRETIZATION, SEARCH_DISCRETIZATION, pld_epsilon
from .errors import PrivacyBudgetExceeded

SIGMA_MIN, SIGMA_MAX = 0.3, 1e4  # below ~0.3 DP-SGD accounting is meaningless in practice


@dataclass
class CalibrationResult:
    """Calibrated mechanism records and how they were found."""

    mechanisms: list[dict[str, Any]]
    epsilon: float  # PLD ε of the joint composition on the search grid (≥ the fine-grid ε)
    scale: float  # the common factor c
    standalone_targets: dict[str, float] = field(default_factory=dict)


def _eps(mechanisms: Sequence[Mapping[str, Any]], delta: float, grid: float) -> float:
    return pld_epsilon(mechanisms, delta, discretization=grid)


def _with_sigma(mechanism: Mapping[str, Any], sigma: float) -> dict[str, Any]:
    return {**mechanism, "noise_multiplier": float(sigma)}


def standalone_noise_multiplier(
    mechanism: Mapping[str, Any], target_epsilon: float, delta: float
) -> float:
    """σ for which ``mechanism`` alone spends about ``target_epsilon`` (rough grid, ~1%)."""

    def gap(log_sigma: float) -> float:
        eps = _eps([_with_sigma(mechanism, math.exp(log_sigma))], delta, ROUGH_DISCRETIZATION)
        return math.log(max(eps, 1e-12)) - math.log(target_epsilon)

    lo, hi = math.log(SIGMA_MIN), math.log(SIGMA_MAX)
    if gap(lo) <= 0:  # even the least noise we allow spends less than the share
        return SIGMA_MIN
    return math.exp(brentq(gap, lo, hi, xtol=1e-3))


def _secant_to_band(
    eps_of: Callable[[float], float], x0: float, x1: float, aim: float, band: tuple[float, float]
) -> tuple[float, float]:
    """Secant steps in log c on a (decreasing) ε(log c) until ε falls in ``band``."""
    e0, e1 = eps_of(x0), eps_of(x1)
    for _ in range(20):
        if band[0] <= e1 <= band[1]:
            return x1, e1
        if e1 == e0:
            x0, e0, x1 = x1, e1, x1 + (1e-3 if e1 > aim else -1e-3)
        else:
            x0, e0, x1 = x1, e1, x1 + (aim - e1) * (x1 - x0) / (e1 - e0)
        e1 = eps_of(x1)
    raise RuntimeError(f"calibration did not converge (last ε={e1:.4f}, band {band})")


def calibrate_noise_multipliers(
    mechanisms: Sequence[Mapping[str, Any]],
    target_epsilon: float,
    delta: float,
    shares: Mapping[str, float],
    *,
    tolerance: float = 0.01,
) -> CalibrationResult:
    """Fill in ``noise_multiplier`` of every mechanism whose value is ``None`` or ``"auto"``.

    ``shares`` weighs the mechanisms (normalised over all mechanisms listed); mechanisms with an
    explicit noise multiplier keep it and are composed as they are. Raises
    ``PrivacyBudgetExceeded`` when the fixed mechanisms alone already reach the target.
    """
    records = [dict(m) for m in mechanisms]
    auto = [i for i, m in enumerate(records) if m.get("noise_multiplier") in (None, "auto")]
    fixed = [records[i] for i in range(len(records)) if i not in auto]
    if not auto:
        return CalibrationResult(records, _eps(records, delta, SEARCH_DISCRETIZATION), 1.0)
    fixed_eps = _eps(fixed, delta, SEARCH_DISCRETIZATION) if fixed else 0.0
    if fixed and fixed_eps >= target_epsilon * (1 - tolerance):
        plan = ", ".join(f"{m['name']} (σ={m['noise_multiplier']:g}"
                         + (f", q={m['sample_rate']:.4g}, steps={m['steps']}" if "steps" in m
                            else "") + ")" for m in fixed)
        raise PrivacyBudgetExceeded(
            f"privacy plan refused before reading any private data: budget ε={target_epsilon} "
            f"(δ={delta:g}), but the mechanisms with fixed noise alone compose to "
            f"ε={fixed_eps:.3g}: {plan}; nothing is left for "
            f"{[records[i]['name'] for i in auto]}. Raise their noise_multiplier (or set it to "
            "auto), lower their epochs/batch, or raise privacy.epsilon."
        )
    total_share = sum(float(shares[m["name"]]) for m in records)
    targets = {
        records[i]["name"]: target_epsilon * float(shares[records[i]["name"]]) / total_share
        for i in auto
    }
    base = {i: standalone_noise_multiplier(records[i], targets[records[i]["name"]], delta)
            for i in auto}

    def scaled(log_c: float) -> list[dict[str, Any]]:
        c = math.exp(log_c)
        return [_with_sigma(m, c * base[i]) if i in base else m for i, m in enumerate(records)]

    # Stage 2a, rough grid: bracket and solve for ε = target.
    def rough_gap(log_c: float) -> float:
        return _eps(scaled(log_c), delta, ROUGH_DISCRETIZATION) - target_epsilon

    lo, hi = math.log(0.5), math.log(2.0)
    while rough_gap(lo) < 0 and lo > math.log(1e-3):  # composition is sub-additive: go down
        lo -= math.log(2.0)
    while rough_gap(hi) > 0 and hi < math.log(1e4):
        hi += math.log(2.0)
    log_c = brentq(rough_gap, lo, hi, xtol=1e-3)
    # Stage 2b, search grid: aim at the middle of [(1 - tol)·ε, ε] so the finer grid the ledger
    # uses (never above this one, at most ~0.05% below) also lands inside the band.
    band = (target_epsilon * (1 - tolerance * 0.8), target_epsilon)
    aim = target_epsilon * (1 - tolerance / 2)
    log_c, eps = _secant_to_band(
        lambda x: _eps(scaled(x), delta, SEARCH_DISCRETIZATION), log_c, log_c + 0.01, aim, band
    )
    return CalibrationResult(scaled(log_c), eps, math.exp(log_c), targets)
