"""The privacy ledger: plan every mechanism, compose before running, refuse, charge, report.

A ledger is a plain JSON-serialisable dict in the format of ``shared/tools/verify_ledger.py``
(unit, delta, epsilon, budget_epsilon, mechanisms with kind / noise_multiplier / sample_rate /
steps) plus extra keys. Functions take a ledger and return a new one, so Kedro nodes stay pure:
``plan_privacy`` makes the plan (every mechanism ``planned``) before any private data is read,
``charge`` records what a mechanism actually did (``spent``). The released ε is always the PLD
composition of *every* mechanism listed, planned or spent: a planned mechanism counts as if it
had run, which can only over-state ε.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .accounting import ROUGH_DISCRETIZATION, SEARCH_DISCRETIZATION, pld_epsilon, rdp_epsilon
from .calibration import calibrate_noise_multipliers
from .config import PrivacyParams
from .errors import PrivacyBudgetExceeded

logger = logging.getLogger(__name__)

UNIT = "album"
KINDS = ("gaussian", "laplace", "dpsgd")
STATUSES = ("planned", "partial", "spent")  # a ledger's and a mechanism's only status words
N_ALBUMS_NOTES = {
    "dp": "N is released by the album_count mechanism (Laplace, on this ledger): the plan's N "
          "and every sample rate q = expected batch / N derive from that DP count, so the number "
          "of albums is protected like everything else.",
    "public": "N was declared public by the user (privacy.album_count: public): it fixes the "
              "sample rates q = expected batch / N and is NOT protected by this guarantee.",
}
NEIGHBOURING = "add or remove one album (all of its photos and texts)"
AUTO_BATCH_ALBUMS = 64.0  # expected_batch_albums: auto on a large collection (q = 64 / N)
AUTO_MAX_SAMPLE_RATE = 0.25  # ... and on a small one q = 0.25 (steps = 4 x epochs)


class LedgerError(ValueError):
    """A ledger was used the wrong way (unknown or repeated mechanism, wrong kind)."""


def _eps_value(value: Any) -> float:
    """ε as stored in a ledger (a number, or ``"inf"``/``None`` for infinity) as a float."""
    return math.inf if value is None or value in ("inf", "Infinity") else float(value)


def _json_eps(value: float) -> float | str:
    return "inf" if math.isinf(value) else float(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _mechanism_from_spec(
    spec: Mapping[str, Any], n_albums: int, params: PrivacyParams
) -> dict[str, Any]:
    """A planned mechanism record from a pipeline's spec (kind, batch in albums, steps/epochs)."""
    name, kind = spec.get("name"), spec.get("kind")
    if not name or kind not in KINDS:
        raise LedgerError(f"mechanism spec {dict(spec)} needs a name and a kind in {KINDS}")
    sigma = spec.get("noise_multiplier", "auto")
    record: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "noise_multiplier": sigma if sigma in (None, "auto") else float(sigma),
    }
    if kind == "gaussian":
        record["l2_sensitivity"] = float(spec.get("l2_sensitivity", 1.0))
        return record
    if kind == "laplace":
        record["l1_sensitivity"] = float(spec.get("l1_sensitivity", 1.0))
        return record
    parameter = spec.get("batch_parameter", f"{name}: expected_batch_albums")
    if "sample_rate" in spec:
        q = float(spec["sample_rate"])
        batch = q * n_albums
    elif spec.get("expected_batch_albums", "auto") in (None, "auto"):
        batch = auto_batch_albums(n_albums)
        q = batch / n_albums
        logger.info("%s: auto = %.4g albums per step over N = %d (q = %.4g, %d steps for %g "
                    "epochs)", parameter, batch, n_albums, q,
                    math.ceil(float(spec["epochs"]) / q), float(spec["epochs"]))
    else:
        batch = float(spec["expected_batch_albums"])
        # Sampling is over albums: q = albums per batch / number of albums (never rows).
        q = batch / n_albums
        if q > 1:  # a batch larger than the (DP) album count: every album in every step
            logger.warning("%s = %g exceeds the %d albums: sample rate capped at 1, every album "
                           "in every step (set it to %s, or to at most %d, to silence this)",
                           parameter, batch, n_albums, "auto", n_albums)
            q, batch = 1.0, float(n_albums)
    if not 0 < q <= 1:
        raise LedgerError(f"{parameter} = {batch:g} gives a sample rate of {q:.4g} over "
                          f"{n_albums} albums, which must be in (0, 1]: set {parameter} to auto "
                          f"(here {auto_batch_albums(max(1, n_albums)):.3g}) or to a number in "
                          f"(0, {max(1, n_albums)}]")
    if "steps" in spec:
        steps = int(spec["steps"])
    else:
        steps = math.ceil(float(spec["epochs"]) / q)
    reserve = int(spec.get("reserve_steps", 0))
    if reserve:
        # composed as if they ran: a job killed between checkpoints re-does (and is charged for)
        # at most this many steps and still fits the plan; an uninterrupted job spends less
        record.update(train_steps=steps, reserve_steps=reserve)
    record.update(
        sample_rate=q,
        steps=steps + reserve,
        expected_batch_albums=batch,
        # "auto": C is chosen on public data when the job starts (σ, q, steps and ε do not
        # depend on C); the charge records the C that ran
        max_grad_norm=_clip(spec.get("max_grad_norm", params.max_grad_norm)),
        l2_sensitivity=_clip(spec.get("max_grad_norm", params.max_grad_norm)),
    )
    return record


def auto_batch_albums(n_albums: int) -> float:
    """``expected_batch_albums: auto``: ``AUTO_BATCH_ALBUMS`` albums per step, but at most
    ``AUTO_MAX_SAMPLE_RATE`` of the N albums, so that any collection (10 albums or 10,000) gets
    q ≤ 0.25 and steps = ceil(epochs / q). ``n_albums`` is the plan's N: the DP album count N̂
    (public: it is on the ledger) or the N the user declared public, never a private number."""
    return min(AUTO_BATCH_ALBUMS, AUTO_MAX_SAMPLE_RATE * n_albums)


def _clip(value: Any) -> float | str:
    return "auto" if value in (None, "auto") else float(value)


def _shares(specs: Sequence[Mapping[str, Any]], params: PrivacyParams) -> dict[str, float]:
    shares: dict[str, float] = {}
    for spec in specs:
        share = spec.get("epsilon_share", params.shares.get(spec["name"]))
        if share is None:
            raise LedgerError(
                f"no ε share for mechanism {spec['name']!r}: set privacy.shares.{spec['name']} "
                "or epsilon_share in its spec"
            )
        if float(share) <= 0:
            raise LedgerError(f"ε share of {spec['name']!r} must be positive, got {share}")
        shares[spec["name"]] = float(share)
    total = sum(shares.values())
    return {name: share / total for name, share in shares.items()}


def plan_privacy(
    privacy_params: Mapping[str, Any],
    n_albums: int,
    mechanisms_spec: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
    *,
    album_count: str | None = None,
) -> dict[str, Any]:
    """Compose the planned mechanisms before any private data is read; refuse if over budget.

    ``mechanisms_spec``: one mapping per mechanism, in the order they will run, e.g.
    ``{"name": "semantic_query", "kind": "gaussian", "l2_sensitivity": 2.0}`` or
    ``{"name": "summary_lm", "kind": "dpsgd", "expected_batch_albums": 16, "epochs": 5}``
    (``sample_rate`` / ``steps`` also accepted; a ``{name: spec}`` mapping works too).
    ``noise_multiplier``: a number, or ``"auto"``
    (default) to calibrate it to the mechanism's ε share. Returns the plan (a ledger dict, every
    mechanism ``planned``). Raises ``PrivacyBudgetExceeded`` when the composed ε exceeds the budget.
    """
    params = PrivacyParams.from_dict(privacy_params)
    if isinstance(mechanisms_spec, Mapping):  # {name: spec} as Kedro parameters often are
        mechanisms_spec = [{"name": k, **v} for k, v in mechanisms_spec.items()]
    if n_albums <= 0:
        raise LedgerError(f"cannot plan over {n_albums} albums")
    names = [s.get("name") for s in mechanisms_spec]
    if len(set(names)) != len(names):
        raise LedgerError(f"mechanism names must be unique, got {names}")
    if params.delta >= 1.0 / n_albums:
        msg = (f"δ={params.delta:g} ≥ 1/N = 1/{n_albums}: such a δ allows releasing a whole "
               "album outright; choose δ ≪ 1/N")
        warnings.warn(msg, UserWarning, stacklevel=2)
        logger.warning(msg)
    shares = _shares(mechanisms_spec, params)
    records = [_mechanism_from_spec(s, n_albums, params) for s in mechanisms_spec]
    if params.is_baseline:
        logger.warning(
            "NON-PRIVATE BASELINE: privacy.epsilon is inf; every mechanism runs without noise or "
            "clipping and the ledger reports ε = inf. Never release its outputs."
        )
        for r in records:
            r["noise_multiplier"] = 0.0
    else:
        records = calibrate_noise_multipliers(
            records, params.epsilon, params.delta, shares, tolerance=params.calibration_tolerance
        ).mechanisms if any(r["noise_multiplier"] in (None, "auto") for r in records) else records
    for r in records:
        r["epsilon_share"] = shares[r["name"]]
        r["status"] = "planned"
    ledger: dict[str, Any] = {
        "unit": UNIT,
        "neighbouring": NEIGHBOURING,
        "delta": params.delta,
        "epsilon": None,
        "budget_epsilon": _json_eps(params.epsilon),
        "accountant": "pld",
        "second_opinion": "rdp",
        "baseline": params.is_baseline,
        "n_albums": int(n_albums),
        "album_count": album_count or params.album_count,
        "n_albums_note": N_ALBUMS_NOTES[album_count or params.album_count],
        "noise_source": params.noise,
        "status": "planned",
        "created_at": _now(),
        "mechanisms": records,
    }
    ledger = recompose(ledger)
    _refuse_if_over_budget(ledger, "privacy plan refused before reading any private data")
    return ledger


def recompose(ledger: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``ledger`` with ε (PLD), ε_rdp and per-mechanism standalone ε recomputed."""
    out = copy.deepcopy(dict(ledger))
    delta, mechs = float(out["delta"]), out["mechanisms"]
    # The search grid is pessimistic (never below dp-accounting's default grid, within ~0.05% of
    # it) and ~10x cheaper; verify_ledger.py recomposes on the default grid independently.
    out["epsilon"] = _json_eps(pld_epsilon(mechs, delta, discretization=SEARCH_DISCRETIZATION))
    out["pld_discretization"] = SEARCH_DISCRETIZATION
    out["epsilon_rdp"] = _json_eps(rdp_epsilon(mechs, delta))
    spent = [m for m in mechs if m.get("status") == "spent"]
    if len(spent) == len(mechs):
        out["epsilon_spent"] = out["epsilon"]
    else:
        out["epsilon_spent"] = _json_eps(
            pld_epsilon(spent, delta, discretization=SEARCH_DISCRETIZATION) if spent else 0.0
        )
    for m in mechs:  # informative only: a coarse (pessimistic) PLD grid keeps this cheap
        m["epsilon_alone"] = _json_eps(pld_epsilon([m], delta, discretization=ROUGH_DISCRETIZATION))
    out["status"] = ("spent" if len(spent) == len(mechs) else "partial" if spent else "planned")
    out["updated_at"] = _now()
    return out


def describe(ledger: Mapping[str, Any]) -> str:
    """A human-readable account of a ledger: budget, composed ε and each mechanism's share."""
    lines = [
        f"budget ε={ledger['budget_epsilon']}, composed ε={_fmt(ledger['epsilon'])} (PLD; RDP "
        f"{_fmt(ledger.get('epsilon_rdp'))}), δ={ledger['delta']:g}, unit={ledger['unit']}, "
        f"N={ledger.get('n_albums')} albums"
    ]
    for m in ledger["mechanisms"]:
        detail = (f" q={m['sample_rate']:.4g} steps={m['steps']}" if m["kind"] == "dpsgd" else "")
        lines.append(
            f"  {m['name']:<16} {m['kind']:<8} σ={m['noise_multiplier']:.4g}{detail} "
            f"share={m.get('epsilon_share', float('nan')):.0%} "
            f"ε alone={_fmt(m.get('epsilon_alone'))} [{m.get('status', '?')}]"
        )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "?" if value is None else value if isinstance(value, str) else f"{value:.4g}"


def _refuse_if_over_budget(ledger: Mapping[str, Any], what: str) -> None:
    budget, eps = _eps_value(ledger["budget_epsilon"]), _eps_value(ledger["epsilon"])
    if not math.isinf(budget) and eps > budget * (1 + 1e-9):
        raise PrivacyBudgetExceeded(
            f"{what}: composed ε={eps:.4g} exceeds the budget ε={budget:g}.\n{describe(ledger)}\n"
            "Lower steps or batch sizes, raise noise multipliers, or set them to 'auto' to "
            "calibrate to the budget."
        )


def charge(ledger: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """Record what a planned mechanism actually did; returns the updated ledger.

    ``record``: ``{"name", "kind", "noise_multiplier"}`` plus ``sample_rate`` and ``steps`` for
    DP-SGD (steps actually taken, resumes included), e.g. ``DPTrainResult.ledger_record()`` or
    ``SemanticQueryResult.mechanism``. Raises ``PrivacyBudgetExceeded`` if what ran spends more than
    the budget (its outputs must then not be released), ``LedgerError`` on misuse.
    """
    out = copy.deepcopy(dict(ledger))
    name = record["name"]
    matches = [m for m in out["mechanisms"] if m["name"] == name]
    if not matches:
        raise LedgerError(f"mechanism {name!r} is not on the plan: every mechanism that reads "
                          "private data must be planned before it runs")
    mech = matches[0]
    if mech.get("status") == "spent":
        raise LedgerError(f"mechanism {name!r} was already charged")
    if record.get("kind", mech["kind"]) != mech["kind"]:
        raise LedgerError(f"{name!r} was planned as {mech['kind']}, charged as {record['kind']}")
    sigma = float(record["noise_multiplier"])
    if sigma <= 0 and not out.get("baseline"):
        raise PrivacyBudgetExceeded(f"{name!r} ran without noise but the plan is private")
    planned = {k: mech[k] for k in ("noise_multiplier", "sample_rate", "steps") if k in mech}
    if (sigma < float(planned["noise_multiplier"])
            or float(record.get("sample_rate", 0.0)) > float(planned.get("sample_rate", 1.0))
            or int(record.get("steps", 0)) > int(planned.get("steps", 0) or 0)):
        logger.warning("mechanism %r ran beyond its plan (%s, planned %s): ε recomposed",
                       name, {k: record.get(k) for k in planned}, planned)
    mech["planned"] = planned
    mech["noise_multiplier"] = sigma
    if mech["kind"] == "dpsgd":
        mech["sample_rate"] = float(record["sample_rate"])
        mech["steps"] = int(record["steps"])
    for key in ("l2_sensitivity", "max_grad_norm", "noise_std", "k"):
        if key in record:
            mech[key] = record[key]
    mech["status"] = "spent"
    mech["charged_at"] = _now()
    out = recompose(out)
    _refuse_if_over_budget(out, f"mechanism {name!r} spent more than planned")
    return out


def ledger_metrics(ledger: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """ε, ε_rdp, δ in kedro-mlflow's ``MlflowMetricsHistoryDataset`` format
    (``{key: {"value": v, "step": 0}}``); ε is inf for the non-private baseline."""
    values = {
        "privacy_epsilon": _eps_value(ledger["epsilon"]),
        "privacy_epsilon_rdp": _eps_value(ledger["epsilon_rdp"]),
        "privacy_delta": float(ledger["delta"]),
    }
    return {k: {"value": v, "step": 0} for k, v in values.items()}


def ledger_tags(ledger: Mapping[str, Any]) -> dict[str, str]:
    """Strings for MLflow tags: ε, δ, unit, noise source, neighbouring relation, album count,
    whether the run is a non-private baseline, and the NOT-DP warning of a replayable run."""
    from .randomness import NOT_DP

    tags = {
        "privacy.epsilon": str(ledger["epsilon"]),
        "privacy.delta": f"{float(ledger['delta']):g}",
        "privacy.unit": str(ledger["unit"]),
        "privacy.baseline": str(bool(ledger.get("baseline"))).lower(),
        "privacy.noise_source": str(ledger.get("noise_source", "unknown")),
        "privacy.neighbouring": str(ledger.get("neighbouring", NEIGHBOURING)),
        "privacy.album_count": str(ledger.get("album_count", "unknown")),
    }
    if ledger.get("noise_source") == "replayable":
        tags["privacy.warning"] = NOT_DP
    return tags


def write_ledger(ledger: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a ledger as JSON (atomic replace). Pipelines use the catalog's JSONDataset instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(ledger, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def mechanism_sigma(plan: Mapping[str, Any], name: str) -> float:
    """The planned noise multiplier of mechanism ``name`` (0 in a non-private baseline plan)."""
    for m in plan["mechanisms"]:
        if m["name"] == name:
            return float(m["noise_multiplier"])
    raise LedgerError(f"mechanism {name!r} is not on the plan")
