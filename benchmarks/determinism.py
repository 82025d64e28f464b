"""Determinism under load: two cold default runs with replayable noise, the second beside a CPU
hog, must write identical results.

Each run is a fresh clone of HEAD (``end_to_end.fresh_copy``: data/ holds only what git tracks)
running ``kedro run`` with ``privacy.noise: replayable`` and the same ``DPALBUM_NOISE_SEED``
(replayable noise is NOT differentially private: this is a test mode, and the seed is a
benchmark constant, never a release's). The second run shares the machine with one busy-looping
process per core, so every step takes longer; training runs by steps, so nothing may change.

Compared, byte for byte: ``metrics.json`` (what the issue asks for) and
``released_metrics.json``; the privacy ledger and every file of the synthetic albums and of the
renderer's and both LMs' folders, with plan ids and timestamps taken out (a replay draws a new
plan id by design, and the data card and the ledger say when they were made).

    .venv/bin/python benchmarks/determinism.py            # two default runs, ~25-40 min
    .venv/bin/python benchmarks/determinism.py --quick    # end_to_end's shrunken world, ~5 min
Writes benchmarks/results/determinism.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from end_to_end import QUICK_PARAMS, ROOT, copy_env, fresh_copy, imports_from_copy, measure  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "determinism.json"
# --quick: end_to_end's shrunken world, and no text filter (post-processing only), so that its
# tiny LMs' albums all reach the renderer and the images are compared too.
QUICK_FILTERS_OFF = {f"text_filtering.{f}.enabled": "false" for f in (
    "well_formed", "repetition", "caption_similarity", "caption_vocabulary", "min_captions",
    "exact_duplicates", "near_duplicates")}
SEED = "20261203"  # a benchmark constant: replayable mode is a test mode, never a release
COMPARED_FILES = ("data/08_reporting/metrics.json", "data/08_reporting/released_metrics.json")
COMPARED_TREES = ("data/07_model_output/synthetic_albums", "data/06_models/renderer/unet",
                  "data/06_models/summary_lm", "data/06_models/caption_lm")
LEDGER = "data/08_reporting/privacy_ledger.json"
LEDGER_VOLATILE = ("plan_id", "privacy_plan_id", "created_at", "updated_at", "charged_at",
                   "settled_at", "finished_at", "rendered_at")


def _busy() -> None:
    while True:
        pass


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in LEDGER_VOLATILE}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def _normalised(path: Path) -> bytes:
    """A file's bytes, without what a replay does not reproduce by design: plan ids and
    timestamps (in JSON: the LEDGER_VOLATILE keys; in text: 32-hex ids and ISO times)."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return json.dumps(_without_volatile(json.loads(data)), sort_keys=True).encode()
    if path.suffix in (".md", ".txt", ".html"):
        text = re.sub(r"\b[0-9a-f]{32}\b", "<id>", data.decode(errors="replace"))
        return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^ |\"<]*", "<time>", text).encode()
    return data


def digest_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, normalised (relative path -> hex digest)."""
    return {str(p.relative_to(folder)): hashlib.sha256(_normalised(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def results_of(project: Path) -> dict[str, Any]:
    """What one run wrote: compared files verbatim (as digests), trees file by file."""
    out: dict[str, Any] = {}
    for name in COMPARED_FILES:
        path = project / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    ledger = project / LEDGER
    out[LEDGER + " (without ids and times)"] = hashlib.sha256(json.dumps(
        _without_volatile(json.loads(ledger.read_text())), sort_keys=True).encode()
    ).hexdigest() if ledger.exists() else None
    for name in COMPARED_TREES:
        folder = project / name
        out[name] = digest_tree(folder) if folder.is_dir() else None
    return out


def one_run(workdir: Path, label: str, kedro_args: list[str], hog: int, logs: Path,
            timeout: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A cold run in its own fresh clone, beside ``hog`` busy processes; (measure, results)."""
    project = workdir / label / ROOT.name
    project.parent.mkdir(parents=True)
    commit = fresh_copy(project)
    env = {**copy_env(project), "DPALBUM_NOISE_SEED": SEED}
    imports_from_copy(project, env)
    hogs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(hog)]
    for p in hogs:
        p.start()
    load_before = os.getloadavg()
    try:
        command = [str(Path(".venv") / "bin" / "kedro"), "run", "--params",
                   ",".join(["privacy.noise=replayable", *kedro_args])]
        print(f"{label}: {' '.join(command)[:160]} (beside {hog} busy processes) ...",
              flush=True)
        result = measure(command, project, env, logs / f"determinism.{label}.log", 0.5, timeout)
        load_after = os.getloadavg()
    finally:
        for p in hogs:
            p.terminate()
    result.update(commit=commit, hog_processes=hog,
                  load_average_before=[round(x, 2) for x in load_before],
                  load_average_after=[round(x, 2) for x in load_after])
    print(f"{label}: exit {result['returncode']}, {result['seconds']:.0f} s, load after "
          f"{result['load_average_after'][0]:.1f}", flush=True)
    return result, results_of(project) if result["returncode"] == 0 else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the shrunken world of end_to_end")
    ap.add_argument("--hog", type=int, default=os.cpu_count() or 2,
                    help="busy processes beside the second run (default: one per core)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    kedro_args = [f"{k}={v}" for k, v in {**QUICK_PARAMS, **QUICK_FILTERS_OFF}.items()] \
        if args.quick else []
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dpalbum_determinism_"))
    started = time.time()
    try:
        idle, idle_results = one_run(workdir, "idle", kedro_args, 0, logs, args.timeout)
        loaded, loaded_results = one_run(workdir, "loaded", kedro_args, args.hog, logs,
                                         args.timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # .venv and shared are symlinks
    differing = sorted(k for k in set(idle_results) | set(loaded_results)
                       if idle_results.get(k) != loaded_results.get(k))
    differing_files = {k: sorted(f for f in set(idle_results.get(k) or {}) |
                                 set(loaded_results.get(k) or {})
                                 if (idle_results.get(k) or {}).get(f) !=
                                 (loaded_results.get(k) or {}).get(f))[:20]
                       for k in differing if isinstance(idle_results.get(k), dict)}
    both_ran = idle["returncode"] == 0 and loaded["returncode"] == 0
    files_per_part = {k: len(v) if isinstance(v, dict) else int(v is not None)
                      for k, v in idle_results.items()}
    missing = sorted(k for k, n in files_per_part.items() if n == 0)  # nothing to compare
    report = {
        "benchmark": "determinism: two cold default runs with replayable noise, the second "
                     "beside a CPU hog; results compared byte for byte",
        "quick": args.quick,
        "compared": [*COMPARED_FILES, LEDGER + " (without ids and times)", *COMPARED_TREES],
        "runs": {"idle": idle, "loaded": loaded},
        "slowdown_under_load": round(loaded["seconds"] / max(idle["seconds"], 1e-9), 3),
        "files_compared": sum(len(v) if isinstance(v, dict) else 1
                              for v in idle_results.values()),
        "differing": differing,
        "differing_files": differing_files,
        "files_per_part": files_per_part,
        "missing": missing,
        "identical": both_ran and not differing and not missing,
        "minutes": round((time.time() - started) / 60, 1),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"identical: {report['identical']} ({report['files_compared']} files compared; "
          f"differing: {differing or 'none'}); wrote {args.out}")
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
