#!/usr/bin/env python3
"""dpalbum's own independent check of a privacy ledger (and, optionally, of a privacy account).

Independent on purpose: it imports nothing from ``dpalbum``. It reads the JSON alone, rebuilds
every mechanism as a dp-accounting event, recomposes them with the PLD accountant on
dp-accounting's default grid (RDP beside it) and compares with what the file reports. The ledger
format is the one documented at the top of ``shared/tools/verify_ledger.py`` (unit, delta,
epsilon, budget_epsilon, noise_source, mechanisms with kind gaussian | laplace | dpsgd).

Usage:
    python scripts/verify_ledger.py data/08_reporting/privacy_ledger.json [--strict]
    python scripts/verify_ledger.py --account data/08_reporting/privacy_account.json

Exit 0 when every check passes, 1 when one fails (each printed as PROBLEM), 2 when a file is
missing or malformed. ``--strict`` also requires ``"noise_source": "secure"`` on a private ledger.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

RELATIVE_TOLERANCE = 0.02  # reported ε may exceed the recomposed one by this much (grid rounding)
UNDER_REPORT = 1e-4  # reported ε below the recomposed one by more than this: under-reported


def _events(mechanisms: list[dict[str, Any]]):
    """dp-accounting events for the mechanisms, or None if one of them is non-private."""
    import dp_accounting as dpa

    events = []
    for m in mechanisms:
        kind, sigma = m["kind"], float(m["noise_multiplier"])
        if sigma <= 0:
            return None
        if kind == "gaussian":
            events.append(dpa.GaussianDpEvent(sigma))
        elif kind == "laplace":
            events.append(dpa.LaplaceDpEvent(sigma))
        elif kind == "dpsgd":
            q, steps = float(m["sample_rate"]), int(m["steps"])
            if not 0 < q <= 1:
                raise ValueError(f"{m.get('name')!r}: sample_rate {q} outside (0, 1]")
            if steps > 0:
                events.append(dpa.SelfComposedDpEvent(
                    dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps))
        else:
            raise ValueError(f"unknown mechanism kind {kind!r} in {m.get('name')!r}")
    return events


def recompose(mechanisms: list[dict[str, Any]], delta: float) -> tuple[float, float]:
    """(PLD ε, RDP ε) of the joint composition; (inf, inf) when a mechanism has no noise."""
    import dp_accounting as dpa
    from dp_accounting import pld, rdp

    events = _events(mechanisms)
    if events is None:
        return math.inf, math.inf
    if not events:
        return 0.0, 0.0
    composed = dpa.ComposedDpEvent(events)
    a_pld, a_rdp = pld.PLDAccountant(), rdp.RdpAccountant()
    a_pld.compose(composed)
    a_rdp.compose(composed)
    return float(a_pld.get_epsilon(delta)), float(a_rdp.get_epsilon(delta))


def _eps(value: Any) -> float:
    return math.inf if value in (None, "inf", "Infinity") else float(value)


def check_ledger(ledger: dict[str, Any], strict: bool = False) -> tuple[list[str], str]:
    """Problems found in one ledger, and a one-line summary."""
    problems: list[str] = []
    mechs, delta = ledger["mechanisms"], float(ledger["delta"])
    reported = _eps(ledger.get("epsilon"))
    if ledger.get("unit") != "album":
        problems.append(f"unit is {ledger.get('unit')!r}, expected 'album'")
    if not mechs:
        problems.append("no mechanisms listed")
    eps_pld, eps_rdp = recompose(mechs, delta)
    if math.isinf(eps_pld) or math.isinf(reported):
        if math.isinf(eps_pld) != math.isinf(reported):
            problems.append(f"reported ε={reported} but recomposed ε={eps_pld}")
    elif reported < eps_pld * (1 - UNDER_REPORT):
        problems.append(f"reported ε={reported:.6f} is below the recomposed PLD ε={eps_pld:.6f}")
    elif reported - eps_pld > RELATIVE_TOLERANCE * eps_pld:
        problems.append(f"reported ε={reported:.4f} exceeds the recomposed {eps_pld:.4f} by more "
                        f"than {RELATIVE_TOLERANCE:.0%}")
    for m in mechs:
        sens, std = m.get("l2_sensitivity"), m.get("noise_std")
        if sens is not None and std is not None and float(m["noise_multiplier"]) > 0:
            if abs(float(std) - float(m["noise_multiplier"]) * float(sens)) > 1e-6 * max(
                    1.0, float(std)):
                problems.append(f"{m.get('name')}: noise_std {std} != σ × sensitivity")
    source = ledger.get("noise_source")
    if source not in ("secure", "replayable"):
        problems.append(f"noise_source is {source!r}: expected 'secure' or 'replayable'")
    if strict and not math.isinf(reported) and source != "secure":
        problems.append(f"noise_source is {source!r}; --strict requires 'secure'")
    if "seed" in json.dumps(ledger).lower():
        problems.append("the ledger mentions a seed: no seed of a DP draw may be released")
    budget = ledger.get("budget_epsilon")
    if budget is not None and not math.isinf(reported) and reported > _eps(budget) * (1 + 1e-9):
        problems.append(f"ε={reported:.4f} exceeds the budget {budget}")
    summary = (f"reported ε={reported:.4g}, recomposed PLD ε={eps_pld:.4g}, RDP ε={eps_rdp:.4g}, "
               f"δ={delta:g}, {len(mechs)} mechanisms, noise {source}")
    return problems, summary


def check_account(account: dict[str, Any]) -> tuple[list[str], str]:
    """Problems in a privacy account: each dataset's cumulative ε recomposed from its charges."""
    problems, lines = [], []
    for key, entry in account.get("datasets", {}).items():
        mechs = [c["mechanism"] for c in entry.get("charges", [])]
        delta = float(entry["delta"])
        eps_pld, _ = recompose(mechs, delta) if mechs else (0.0, 0.0)
        reported = _eps(entry.get("epsilon"))
        if math.isinf(eps_pld) != math.isinf(reported) or (
                not math.isinf(eps_pld) and reported < eps_pld * (1 - UNDER_REPORT)):
            problems.append(f"dataset {key}: account ε={reported} but its {len(mechs)} charges "
                            f"recompose to {eps_pld:.6g}")
        lines.append(f"{key}: {len(mechs)} charges, ε={eps_pld:.4g}")
    return problems, "; ".join(lines) or "empty account"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ledger", nargs="?", default="data/08_reporting/privacy_ledger.json")
    ap.add_argument("--account", help="check a privacy_account.json instead of a ledger")
    ap.add_argument("--strict", action="store_true", help="require noise_source: secure")
    a = ap.parse_args(argv)
    path = Path(a.account or a.ledger)
    try:
        data = json.loads(path.read_text())
        problems, summary = check_account(data) if a.account else check_ledger(data, a.strict)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"unreadable: {path}: {err}")
        return 2
    for p in problems:
        print("PROBLEM:", p)
    print(f"{'FAIL' if problems else 'OK'}: {summary}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
