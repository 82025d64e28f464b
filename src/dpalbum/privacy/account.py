"""The cumulative privacy account: every run on the same albums adds up on one account.

A ledger tells what one release cost; the account tells what the albums have paid in total. It
is keyed by a hash of the private album index (album ids, not photos), and every execution of a
mechanism on those albums is a charge: a second run, a re-run of one pipeline, a sweep over ε all
add charges. The account's ε is the PLD composition (dp-accounting) of every charge, and a charge
that would take it past ``privacy.lifetime_epsilon`` is refused before the mechanism reads
anything. A mechanism is charged in full (as planned) when it starts and settled to what it
actually ran when it ends, so a killed run is never under-counted.

The file (``data/08_reporting/privacy_account.json``) is INTERNAL: it belongs to the data team
and is never released (it holds a hash of the album ids). Writes are atomic under a file lock.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from .accounting import SEARCH_DISCRETIZATION, pld_epsilon
from .errors import PrivacyBudgetExceeded

logger = logging.getLogger(__name__)
RECORD_KEYS = ("name", "kind", "noise_multiplier", "sample_rate", "steps", "l2_sensitivity",
               "l1_sensitivity")


def dataset_key(album_ids: Sequence[str]) -> str:
    """The account key of a private dataset: sha256 of its sorted album ids."""
    joined = "\n".join(sorted(str(a) for a in album_ids))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(mechanism: Mapping[str, Any]) -> dict[str, Any]:
    return {k: mechanism[k] for k in RECORD_KEYS if k in mechanism}


def _epsilon(mechanisms: Sequence[Mapping[str, Any]], delta: float) -> float:
    return pld_epsilon(mechanisms, delta, discretization=SEARCH_DISCRETIZATION) if mechanisms \
        else 0.0


class PrivacyAccount:
    """A handle on the account file. Nodes get it from the catalog (``privacy_account``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # ---- file -------------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """The account document (empty when no run charged anything yet)."""
        if not self.path.exists():
            return {"internal": True, "unit": "album", "datasets": {}, "plans": {}}
        return json.loads(self.path.read_text())

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = self.read()
            yield doc
            for entry in doc["datasets"].values():
                mechs = [c["mechanism"] for c in entry["charges"]]
                entry["epsilon"] = _json(_epsilon(mechs, float(entry["delta"])))
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
            os.replace(tmp, self.path)

    # ---- queries ----------------------------------------------------------------------------
    def charges(self, key: str) -> list[dict[str, Any]]:
        """Every charge made to dataset ``key`` so far."""
        return list(self.read()["datasets"].get(key, {}).get("charges", []))

    def epsilon(self, key: str, delta: float) -> float:
        """The dataset's cumulative ε at ``delta`` (PLD composition of every charge)."""
        return _epsilon([c["mechanism"] for c in self.charges(key)], delta)

    def history(self, key: str) -> str:
        """The dataset's charges, one line each (for refusals and logs)."""
        lines = [f"  {c['at']} plan {c['plan_id'][:8]} {c['mechanism']['name']:<15} "
                 f"σ={c['mechanism']['noise_multiplier']:.4g}"
                 + (f" q={c['mechanism']['sample_rate']:.4g} steps={c['mechanism']['steps']}"
                    if c["mechanism"]["kind"] == "dpsgd" else "") + f" [{c['status']}]"
                 for c in self.charges(key)]
        return "\n".join(lines) or "  (no charges yet)"

    def check(self, key: str, delta: float, mechanisms: Sequence[Mapping[str, Any]],
              lifetime_epsilon: float, what: str) -> float:
        """ε of the account with ``mechanisms`` added; refuses past ``lifetime_epsilon``."""
        before = [c["mechanism"] for c in self.charges(key)]
        after = _epsilon([*before, *[_record(m) for m in mechanisms]], delta)
        if not math.isinf(lifetime_epsilon) and after > lifetime_epsilon * (1 + 1e-9):
            raise PrivacyBudgetExceeded(
                f"{what} refused before reading any private data: the albums' privacy account "
                f"({self.path.name}, dataset {key}) is at ε={_epsilon(before, delta):.4g} and "
                f"would reach ε={after:.4g}, past privacy.lifetime_epsilon={lifetime_epsilon:g}."
                f"\nHistory of this dataset:\n{self.history(key)}\nEvery run on these albums "
                "spends from one lifetime budget: raise privacy.lifetime_epsilon only if the data "
                "owner agrees to the larger total.")
        return after

    # ---- charges ----------------------------------------------------------------------------
    def open_plan(self, plan: Mapping[str, Any], key: str) -> None:
        """Register a plan (its id -> dataset key), so mechanisms can charge by plan."""
        with self._edit() as doc:
            doc["plans"][plan["plan_id"]] = {"dataset": key, "at": _now(),
                                             "config_fingerprint": plan.get("config_fingerprint")}
            doc["datasets"].setdefault(key, {"delta": float(plan["delta"]), "charges": []})
            doc["datasets"][key]["delta"] = float(plan["delta"])

    def save_plan(self, plan: Mapping[str, Any]) -> None:
        """Keep the accepted plan (a killed run resumes it: same N̂, σ and q)."""
        with self._edit() as doc:
            doc["plans"][plan["plan_id"]]["plan"] = copy.deepcopy(dict(plan))

    def unfinished_plan(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        """The latest plan for dataset ``key`` with this config fingerprint that never finished."""
        plans = [p for p in self.read()["plans"].values() if p["dataset"] == key
                 and p.get("config_fingerprint") == fingerprint and "plan" in p]
        if not plans or plans[-1].get("finished"):
            return None
        return plans[-1]["plan"]

    def finish_plan(self, plan: Mapping[str, Any]) -> None:
        """Mark a plan's run as released: a later run makes a new plan instead of resuming it.
        The first release's time stays: re-rendering the same release leaves the account's bytes
        as they were (DVC then calls nothing stale)."""
        with self._edit() as doc:
            if plan["plan_id"] in doc["plans"]:
                doc["plans"][plan["plan_id"]].setdefault("finished", _now())

    def plan_dataset(self, plan: Mapping[str, Any]) -> str:
        """The dataset key a plan was opened for (refuses plans the account never saw)."""
        entry = self.read()["plans"].get(plan["plan_id"])
        if entry is None:
            raise PrivacyBudgetExceeded(
                f"privacy plan {plan['plan_id'][:8]} is not on the privacy account "
                f"{self.path}: run the privacy_plan pipeline first (no private data was read)")
        return entry["dataset"]

    def charge(self, plan: Mapping[str, Any], mechanism: Mapping[str, Any],
               lifetime_epsilon: float, *, resumable: bool = False) -> str:
        """Charge a mechanism (as planned, in full) before it runs; returns the charge id.

        ``resumable``: a DP-SGD job with a checkpoint: if this plan already charged it, that
        charge is reused (its steps are settled to the total the job ever ran) instead of a new
        one. Otherwise every execution is a new charge, even of the same mechanism and plan."""
        key = self.plan_dataset(plan)
        record = _record(mechanism)
        existing = [c for c in self.charges(key) if c["plan_id"] == plan["plan_id"]
                    and c["mechanism"]["name"] == record["name"] and c.get("resumable")]
        if resumable and existing:
            return existing[-1]["id"]
        self.check(key, float(plan["delta"]), [record], lifetime_epsilon,
                   f"mechanism {record['name']!r}")
        with self._edit() as doc:
            charges = doc["datasets"][key]["charges"]
            charge_id = f"{plan['plan_id'][:8]}-{len(charges) + 1}"
            charges.append({"id": charge_id, "plan_id": plan["plan_id"], "at": _now(),
                            "status": "charged", "resumable": resumable, "mechanism": record})
        logger.info("privacy account: %s charged to dataset %s (ε so far %.4g)", record["name"],
                    key, self.epsilon(key, float(plan["delta"])))
        return charge_id

    def settle(self, plan: Mapping[str, Any], charge_id: str,
               mechanism: Mapping[str, Any]) -> None:
        """Replace a charge's planned record with what the mechanism actually ran."""
        key = self.plan_dataset(plan)
        with self._edit() as doc:
            for c in doc["datasets"][key]["charges"]:
                if c["id"] == charge_id:
                    c["mechanism"], c["status"], c["settled_at"] = _record(mechanism), "ran", _now()
                    return
        raise KeyError(f"no charge {charge_id} on the privacy account")

    def summary(self, key: str, delta: float) -> dict[str, Any]:
        """The account's state for one dataset, for logs and the run's reports (internal)."""
        charges = self.charges(key)
        return {"internal": True, "dataset": key, "n_charges": len(charges),
                "epsilon": _json(self.epsilon(key, delta)), "delta": delta,
                "charges": copy.deepcopy(charges)}


def _json(value: float) -> float | str:
    return "inf" if math.isinf(value) else float(value)


class PrivacyAccountDataset(AbstractDataset[PrivacyAccount, PrivacyAccount]):
    """Catalog entry of the account: ``load`` gives the file-backed handle (charges go through
    it as mechanisms run); ``save`` is refused, nothing overwrites the account wholesale."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = filepath
        self.metadata = metadata

    def load(self) -> PrivacyAccount:
        return PrivacyAccount(self._filepath)

    def save(self, data: PrivacyAccount) -> None:
        raise DatasetError("the privacy account is only ever appended to, through "
                                  "PrivacyAccount.charge; it cannot be saved over")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}
