"""What a run was made from, and how its privacy was spent as it went.

- :func:`lineage_tags`: the git commit the code came from (and whether the checkout had
  uncommitted changes, with a hash of them), and the hash of ``dvc.lock`` (the data and stage
  versions) when the project has one.
- :func:`epsilon_histories`: the ε spent up to each DP-SGD step, as MLflow metric histories. It is
  computed from the ledger alone (σ, q and the steps taken of each mechanism, every one public:
  q derives from the DP album count), so it is RELEASED like the ledger. It is the PLD composition
  of every mechanism spent before, plus the first t steps; its last point is the ledger's ε spent.
  Each point is one self-composition of the mechanism's one-step PLD; a mechanism gets every
  step up to ``EPSILON_POINTS`` steps and that many evenly spaced steps beyond (first and last
  included).
- :func:`log_internal_histories`: the DP-SGD training losses, clipped fractions and Poisson batch
  sizes are computed on the private albums outside the ledger: INTERNAL. They go to a separate
  experiment ``<experiment>-internal`` (runs tagged ``dpalbum.internal=true`` and pointing at the
  released run), never to the released run or its experiment: a separate experiment rather than a
  child run, so the released experiment lists the released runs and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import math
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

INTERNAL_TAG = "dpalbum.internal"  # the same tag evaluation puts on its internal run
RELEASED_RUN_TAG = "dpalbum.released_run_id"
INTERNAL_SUFFIX = "-internal"
EPSILON_POINTS = 20  # ε points per DP-SGD mechanism (one self-composition of a shared PLD each)
HISTORY_METRICS = ("loss", "clipped_fraction", "batch_albums")


def _git(project: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(project), *args], capture_output=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


def git_tags(project: Path) -> dict[str, str]:
    """``dpalbum.git.commit`` (also MLflow's own ``mlflow.source.git.commit``),
    ``dpalbum.git.dirty`` and, when dirty, ``dpalbum.git.diff_sha256`` over the uncommitted diff
    and the untracked files."""
    commit = _git(project, "rev-parse", "HEAD")
    if commit is None:
        return {"dpalbum.git.commit": "unknown (not a git checkout)",
                "dpalbum.git.dirty": "unknown"}
    commit = commit.strip()
    status = _git(project, "status", "--porcelain") or ""
    tags = {"dpalbum.git.commit": commit, "mlflow.source.git.commit": commit,
            "dpalbum.git.dirty": str(bool(status.strip())).lower()}
    if status.strip():
        digest = hashlib.sha256((_git(project, "diff", "HEAD", "--binary") or "").encode())
        for line in sorted(status.splitlines()):
            if line.startswith("??"):  # untracked: its name and bytes
                path = project / line[3:].strip()
                digest.update(line.encode())
                if path.is_file():
                    digest.update(path.read_bytes())
        tags["dpalbum.git.diff_sha256"] = digest.hexdigest()
    return tags


def dvc_lock_tags(project: Path) -> dict[str, str]:
    """``dpalbum.dvc.lock_sha256``: the hash of ``dvc.lock`` (``absent`` when there is none)."""
    lock = project / "dvc.lock"
    if not lock.is_file():
        return {"dpalbum.dvc.lock_sha256": "absent"}
    return {"dpalbum.dvc.lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest()}


def lineage_tags(project: Path) -> dict[str, str]:
    """Every lineage tag of a run made from ``project``."""
    return {**git_tags(project), **dvc_lock_tags(project)}


def _sample_steps(steps: int, points: int) -> list[int]:
    """Every step up to ``points`` steps; beyond, ``points`` evenly spaced ones (first and last
    always included)."""
    if steps <= points:
        return list(range(1, steps + 1))
    return sorted({round(1 + i * (steps - 1) / (points - 1)) for i in range(points)})


def epsilon_histories(ledger: Mapping[str, Any], points: int = EPSILON_POINTS,
                      skip: Sequence[str] = ()) -> dict[str, list[tuple[int, float]]]:
    """``{mechanism: [(step, ε spent after that step), ...]}`` for each spent DP-SGD mechanism
    of ``ledger`` not in ``skip``, composed (PLD, the ledger's grid) with every mechanism spent
    before it; empty for a non-private baseline (ε is ∞ from the first step)."""
    from dpalbum.privacy.accounting import SEARCH_DISCRETIZATION, pld_epsilon_after_steps

    if ledger.get("baseline"):
        return {}
    delta, before, out = float(ledger["delta"]), [], {}
    for mech in ledger["mechanisms"]:
        if mech.get("status") != "spent":
            continue
        if mech["kind"] == "dpsgd" and int(mech.get("steps", 0)) > 0 and mech["name"] not in skip:
            steps = _sample_steps(int(mech["steps"]), points)
            out[mech["name"]] = list(zip(steps, pld_epsilon_after_steps(
                before, mech, steps, delta, discretization=SEARCH_DISCRETIZATION), strict=True))
        before.append(mech)
    return out


def log_epsilon_histories(client: Any, run_id: str, ledger: Mapping[str, Any],
                          skip: Sequence[str] = ()) -> list[str]:
    """Log ``dpsgd.<mechanism>.epsilon_spent`` histories on the (released) run; returns the
    mechanisms logged (those in ``skip`` were logged before in this run)."""
    from mlflow.entities import Metric

    started = time.perf_counter()
    histories = epsilon_histories(ledger, skip=skip)
    now = int(time.time() * 1000)
    metrics = [Metric(f"dpsgd.{name}.epsilon_spent", float(eps), now, int(step))
               for name, points in histories.items() for step, eps in points
               if math.isfinite(eps)]
    for start in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    if histories:
        logger.info("logged the ε spent per DP-SGD step of %s (%d points, %.1f s)",
                    ", ".join(histories), len(metrics), time.perf_counter() - started)
    return list(histories)


def internal_experiment_id(client: Any, released_experiment_id: str) -> str:
    """The id of ``<released experiment>-internal`` (created on first use, tagged internal, its
    artifacts beside the released experiment's rather than under the working directory)."""
    released = client.get_experiment(released_experiment_id)
    found = client.get_experiment_by_name(released.name + INTERNAL_SUFFIX)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(
        released.name + INTERNAL_SUFFIX, tags={INTERNAL_TAG: "true"},
        artifact_location=released.artifact_location.rstrip("/") + "/internal")


def log_internal_histories(client: Any, released_run: Any, history: Mapping[str, Any],
                           run_name: str) -> str | None:
    """Log an INTERNAL DP-SGD history (``{"internal": true, "steps": [{role, step, loss, ...}]}``
    or a plain list of such records) to a new run of the internal experiment; returns its id
    (``None`` when there is nothing to log)."""
    from mlflow.entities import Metric

    records = history.get("steps", []) if isinstance(history, Mapping) else list(history)
    now = int(time.time() * 1000)
    metrics = [Metric(f"dpsgd.{r.get('role', r.get('mechanism', 'model'))}.{key}",
                      float(r[key]), now, int(r["step"]))
               for r in records for key in HISTORY_METRICS
               if isinstance(r.get(key), int | float) and "step" in r]
    if not metrics:
        return None
    experiment_id = internal_experiment_id(client, released_run.info.experiment_id)
    run = client.create_run(experiment_id, run_name=run_name, tags={
        INTERNAL_TAG: "true", RELEASED_RUN_TAG: released_run.info.run_id})
    for start in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
    client.set_terminated(run.info.run_id)
    logger.info("logged %d INTERNAL DP-SGD training metrics to run %s of experiment %s (tagged "
                "%s=true; never on the released run)", len(metrics), run.info.run_id,
                experiment_id, INTERNAL_TAG)
    return run.info.run_id
