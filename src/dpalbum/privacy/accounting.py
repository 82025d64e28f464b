"""Privacy accounting: turn mechanism records into dp-accounting events and compose them.

The neighbouring relation everywhere is add/remove one album (dp-accounting's default
``ADD_OR_REMOVE_ONE``). PLD is the primary accountant (it is what the released ε and the
independent ``verify_ledger.py`` use); RDP is reported beside it as a second opinion, and Opacus'
PRV accountant is available as an independent cross-check. Nothing here is derived by hand: every
number comes from dp-accounting or Opacus.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting as dpa
from dp_accounting import pld, rdp

logger = logging.getLogger(__name__)

# dp-accounting's default orders minus those below 1.5, whose series often fail to converge
# (and are only ever optimal at ε far beyond any budget we use).
RDP_ORDERS = [1 + x / 10.0 for x in range(5, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]

# dp-accounting's PLD discretisation is pessimistic: a coarser grid never reports less ε than a
# finer one. Searches use coarse grids (~10-50x faster) and finish on the fine one.
ROUGH_DISCRETIZATION = 1e-2  # bracketing searches; within ~2% above the fine value
SEARCH_DISCRETIZATION = 1e-3  # final search steps; measured within 0.05% above the fine value
REPORT_DISCRETIZATION = 1e-4  # dp-accounting's default, the one verify_ledger.py uses

MechanismRecord = Mapping[str, Any]


@dataclass(frozen=True)
class EpsilonReport:
    """ε of a composition at one δ: PLD (primary, released) and RDP (second opinion)."""

    pld: float
    rdp: float


def mechanism_event(mechanism: MechanismRecord) -> dpa.DpEvent:
    """The dp-accounting event of one ledger mechanism record (``gaussian``, ``laplace``,
    ``dpsgd``).

    A record whose noise multiplier is 0 (the non-private baseline) is ``NonPrivateDpEvent``.
    """
    kind = mechanism["kind"]
    sigma = float(mechanism["noise_multiplier"])
    if sigma <= 0:
        return dpa.NonPrivateDpEvent()
    if kind == "gaussian":
        # noise_multiplier = noise std / L2 sensitivity of one album's contribution.
        return dpa.GaussianDpEvent(sigma)
    if kind == "laplace":
        # noise_multiplier = Laplace scale / L1 sensitivity (the album count: sensitivity 1).
        return dpa.LaplaceDpEvent(sigma)
    if kind == "dpsgd":
        q, steps = float(mechanism["sample_rate"]), int(mechanism["steps"])
        if not 0 < q <= 1:
            raise ValueError(f"mechanism {mechanism.get('name')!r}: sample_rate {q} not in (0, 1]")
        if steps <= 0:
            return dpa.NoOpDpEvent()
        # Poisson sampling over albums, one Gaussian release of the clipped sum per step.
        one_step = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
        return dpa.SelfComposedDpEvent(one_step, steps)
    raise ValueError(f"unknown mechanism kind {kind!r} in {mechanism.get('name')!r}")


def composed_event(mechanisms: Sequence[MechanismRecord]) -> dpa.ComposedDpEvent:
    """All mechanisms composed jointly (never a hand-made sum of per-mechanism ε)."""
    return dpa.ComposedDpEvent([mechanism_event(m) for m in mechanisms])


def _is_non_private(mechanisms: Sequence[MechanismRecord]) -> bool:
    return any(float(m["noise_multiplier"]) <= 0 for m in mechanisms)


def pld_epsilon(
    mechanisms: Sequence[MechanismRecord],
    delta: float,
    *,
    discretization: float = REPORT_DISCRETIZATION,
) -> float:
    """ε of the joint composition by the privacy-loss-distribution accountant (primary)."""
    if _is_non_private(mechanisms):
        return math.inf
    return _pld_epsilon_of(tuple(mechanism_event(m) for m in mechanisms), float(delta),
                           float(discretization))


@functools.lru_cache(maxsize=4096)
def _pld_epsilon_of(events: tuple[dpa.DpEvent, ...], delta: float, discretization: float) -> float:
    """The PLD ε of the composed ``events`` (frozen, hashable): a pure function, so it is
    memoised; calibration and verification ask for the same compositions many times."""
    accountant = pld.PLDAccountant(value_discretization_interval=discretization)
    try:
        accountant.compose(dpa.ComposedDpEvent(list(events)))
        return float(accountant.get_epsilon(delta))
    except (ValueError, OverflowError, MemoryError) as err:
        # Tiny noise multipliers make the PLD grid explode; ε is then astronomically large and
        # reporting infinity is the safe (never under-counting) answer.
        logger.warning("PLD accountant failed (%s); reporting ε = inf", err)
        return math.inf



def pld_epsilon_after_steps(
    before: Sequence[MechanismRecord],
    mechanism: MechanismRecord,
    steps: Sequence[int],
    delta: float,
    *,
    discretization: float = REPORT_DISCRETIZATION,
) -> list[float]:
    """ε of ``before`` composed with the DP-SGD ``mechanism`` run for each of ``steps`` steps:
    the ε-per-step curve of a training. The same compositions, in the same order, as
    ``pld_epsilon([*before, {**mechanism, "steps": s}])`` (equal floats), but ``before`` and the
    one-step PLD are built once instead of once per point."""
    if mechanism["kind"] != "dpsgd":
        raise ValueError(f"mechanism {mechanism.get('name')!r} is {mechanism['kind']!r}: an ε "
                         "per step needs a dpsgd mechanism")
    if _is_non_private([*before, mechanism]):
        return [math.inf] * len(steps)
    q, sigma = float(mechanism["sample_rate"]), float(mechanism["noise_multiplier"])
    accountant = pld.PLDAccountant(value_discretization_interval=discretization)
    try:
        accountant.compose(composed_event(before))
        base = accountant._pld  # noqa: SLF001 (dp-accounting keeps the composed PLD here)
        one_step = pld.privacy_loss_distribution.from_gaussian_mechanism(
            standard_deviation=sigma, value_discretization_interval=discretization,
            sampling_prob=q, neighboring_relation=accountant.neighboring_relation)
        return [float(base.compose(one_step.self_compose(int(s))).get_epsilon_for_delta(delta))
                if int(s) > 0 else float(accountant.get_epsilon(delta)) for s in steps]
    except (ValueError, OverflowError, MemoryError) as err:
        logger.warning("PLD accountant failed (%s); reporting ε = inf", err)
        return [math.inf] * len(steps)


def rdp_epsilon(mechanisms: Sequence[MechanismRecord], delta: float) -> float:
    """ε of the joint composition by the Rényi-DP accountant (second opinion, an upper bound)."""
    if _is_non_private(mechanisms):
        return math.inf
    return _rdp_epsilon_of(tuple(mechanism_event(m) for m in mechanisms), float(delta))


@functools.lru_cache(maxsize=1024)
def _rdp_epsilon_of(events: tuple[dpa.DpEvent, ...], delta: float) -> float:
    """The RDP ε of the composed ``events`` (memoised like ``_pld_epsilon_of``)."""
    accountant = rdp.RdpAccountant(orders=RDP_ORDERS)
    accountant.compose(dpa.ComposedDpEvent(list(events)))
    return float(accountant.get_epsilon(delta))


def compose_epsilon(mechanisms: Sequence[MechanismRecord], delta: float) -> EpsilonReport:
    """Both accountants' ε for the joint composition of ``mechanisms`` at ``delta``."""
    return EpsilonReport(pld=pld_epsilon(mechanisms, delta), rdp=rdp_epsilon(mechanisms, delta))


def opacus_prv_epsilon(mechanisms: Sequence[MechanismRecord], delta: float) -> float:
    """Cross-check with Opacus' PRV accountant (an independent implementation; upper bound).

    Opacus models every mechanism as a Poisson-subsampled Gaussian; a plain Gaussian query is the
    special case sample rate 1, one step.
    """
    from opacus.accountants import PRVAccountant

    if _is_non_private(mechanisms):
        return math.inf
    accountant = PRVAccountant()
    for m in mechanisms:
        sigma = float(m["noise_multiplier"])
        if m["kind"] == "laplace":
            raise ValueError("Opacus' PRV accountant has no Laplace mechanism: cross-check the "
                             "Gaussian mechanisms alone (the ledger's PLD composes all of them)")
        if m["kind"] == "gaussian":
            accountant.history.append((sigma, 1.0, 1))
        elif int(m["steps"]) > 0:
            accountant.history.append((sigma, float(m["sample_rate"]), int(m["steps"])))
    if not accountant.history:
        return 0.0
    with warnings.catch_warnings():  # log(0) at q = 1 inside Opacus' PRV is harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(accountant.get_epsilon(delta))


def dpsgd_history_records(history: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """Ledger-style records from an Opacus-style accountant history ``[(σ, q, steps), ...]``."""
    return [
        {"kind": "dpsgd", "noise_multiplier": float(s), "sample_rate": float(q), "steps": int(t)}
        for s, q, t in history
    ]


class RunningRdpEpsilon:
    """Cheap ε-so-far for a progress bar: RDP of one step is cached, T steps scale it by T.

    An upper bound (RDP ≥ PLD); the released ε is always recomputed with PLD.
    """

    # Few fractional orders: Opacus computes those by slow series; integers are closed-form.
    ORDERS = [1.1, 1.25, 1.5, 1.75, *range(2, 64), 80, 128, 256, 512]

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self._one_step: dict[tuple[float, float], Any] = {}

    def __call__(self, history: Sequence[Sequence[float]]) -> float:
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

        total = 0.0
        for sigma, q, steps in history:
            if sigma <= 0:
                return math.inf
            key = (float(sigma), float(q))
            if key not in self._one_step:
                self._one_step[key] = compute_rdp(
                    q=q, noise_multiplier=sigma, steps=1, orders=self.ORDERS
                )
            total = total + self._one_step[key] * int(steps)
        if isinstance(total, float):
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            eps, _ = get_privacy_spent(orders=self.ORDERS, rdp=total, delta=self.delta)
        return float(eps)
