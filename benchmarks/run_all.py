"""Run every benchmark, one subprocess each, and write their JSON results plus SUMMARY.md.

    .venv/bin/python benchmarks/run_all.py            # full run, ~35 min on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py --quick    # smoke run of the plumbing, a few minutes

Each benchmark (``BENCHMARKS``) runs as ``python benchmarks/<name>.py --out <out>/<name>.json``
in its own process, so one failure or memory blow-up does not take the others down; its output
goes to ``<out>/logs/<name>.log``. ``SUMMARY.md`` then describes the machine and tabulates every
figure as a ratio against a baseline measured in the same run, read from the JSON each benchmark
wrote in this run (a JSON left over from an earlier run counts as no result). A benchmark that
fails, times out or is missing is named in the summary and makes the exit status non-zero; a
target that is not met does not (the table says so).

Order: ``end_to_end`` first (its cold ``kedro run`` on a fresh clone must not share the machine
with another benchmark), then the micro-benchmarks. ``rendering`` needs pipeline outputs (a trained
renderer and captioner, the public corpus): it reads those of end_to_end's fresh clone of this run
when there are any, else this checkout's ``data/``.

``--quick`` passes each benchmark its own small settings (``quick_args``) and writes under
``benchmarks/results/quick/`` (git-ignored) so the committed full results stay untouched; its
figures check the plumbing and are not comparable to the targets. On a machine with CUDA the
files are named ``<name>.cuda.json`` / ``SUMMARY.cuda.md``, next to the CPU ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
RESULTS = HERE / "results"


# ---- what a benchmark reports ------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """``ratio <op> bound``, e.g. Target("<=", 1.2)."""

    op: str
    bound: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.bound if self.op == "<=" else ratio >= self.bound

    def __str__(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {self.bound:g}"


@dataclass
class Figure:
    """One row of the summary table: a measured value against its same-run baseline."""

    figure: str
    value: float | None
    baseline: float | None
    unit: str = ""
    ratio: float | None = None        # value / baseline unless the benchmark defines its own
    target: Target | None = None
    ok: bool = True                   # False: the measurement itself failed (e.g. exit status)
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline is not None:
            if self.baseline:
                self.ratio = self.value / self.baseline
            elif self.value > 0:  # e.g. an accuracy of 0.25 against a baseline's 0
                self.ratio = math.inf

    @property
    def met(self) -> bool | None:
        if not self.ok:
            return False
        if self.target is None or self.ratio is None:
            return None
        return self.target.met(self.ratio)


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    text = f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{text} {unit}".strip()


def dp_overhead_figures(r: dict[str, Any]) -> list[Figure]:
    """Issue 3: LoRA LM ≤ 1.2× time, ≤ 1.15× peak memory; album clipping ≤ 1.1× example.
    Issue 14: the renderer's full-parameter UNet by ghost clipping ≤ 1.3× non-private."""
    rows = []
    for model, m in r["models"].items():
        lora = "lora" in model
        t = m["step_seconds_median"]
        paired = "ratio: median of per-step paired ratios"
        rows += [
            Figure(f"dp_overhead {model}: step time, DP-SGD (album) vs non-private",
                   t["dp_album"], t["nonprivate"], "s", m["time_ratio_dp_album_vs_nonprivate"],
                   Target("<=", 1.2) if lora else None, note=paired),
            Figure(f"dp_overhead {model}: step time, album-level vs example-level clipping",
                   t["dp_album"], t["dp_example"], "s",
                   m["time_ratio_album_vs_example_clipping"], Target("<=", 1.1), note=paired),
        ]
        if "dp_ghost" in t:  # issue 14: the full-parameter renderer UNet by ghost clipping
            rows.append(Figure(
                f"dp_overhead {model}: step time, DP-SGD (album, ghost clipping) vs non-private",
                t["dp_ghost"], t["nonprivate"], "s", m["time_ratio_dp_ghost_vs_nonprivate"],
                Target("<=", 1.3) if model == "renderer" else None, note=paired))
        if "memory" in m:
            peak = {k: v["peak_rss_mb"] for k, v in m["memory"]["per_mode"].items()}
            rows.append(Figure(f"dp_overhead {model}: peak RSS, DP-SGD (album) vs non-private",
                               peak["dp_album"], peak["nonprivate"], "MiB",
                               target=Target("<=", 1.15) if lora else None))
            if "dp_ghost" in peak:
                rows.append(Figure(
                    f"dp_overhead {model}: peak RSS, DP-SGD (album, ghost clipping) vs "
                    "non-private", peak["dp_ghost"], peak["nonprivate"], "MiB"))
    return rows


def sampling_figures(r: dict[str, Any]) -> list[Figure]:
    """Issue 14: the batched sampler ≥ 3× an album-batched generate loop (num_return_sequences=k
    per album); older results only hold issue 4's naive per-caption loop (≥ 10×)."""
    model = r.get("setup", {}).get("model", "")
    if "album_batched" not in r:
        return [Figure("sampling: captions/s, batched sampler vs naive generate loop",
                       r["batched"]["captions_per_s"], r["naive"]["captions_per_s"],
                       "captions/s", target=Target(">=", float(r.get("target", 10.0))))]
    return [Figure(f"sampling: captions/s, batched sampler vs album-batched generate loop "
                   f"({model})", r["batched"]["captions_per_s"],
                   r["album_batched"]["captions_per_s"], "captions/s",
                   target=Target(">=", float(r.get("target", 3.0)))),
            Figure(f"sampling: captions/s, batched sampler vs one generate per caption ({model})",
                   r["batched"]["captions_per_s"], r["naive"]["captions_per_s"], "captions/s")]


def rendering_figures(r: dict[str, Any]) -> list[Figure]:
    """Issue 5: our renderer ≥ 1.0× the plain diffusers loop per album; steps vs local FD."""
    ips = r["speed"]["images_per_second"]
    rows = [
        Figure("rendering: images/s, ours vs diffusers loop per album", ips["ours"],
               ips["reference_per_album"], "img/s", target=Target(">=", 1.0)),
        Figure("rendering: images/s, ours vs diffusers loop at our batch size", ips["ours"],
               ips["reference_same_batch"], "img/s"),
    ]
    floor = r["quality"]["real_vs_real_floor"]
    for steps, q in r["quality"]["by_steps"].items():
        rows.append(Figure(f"rendering: local FD at {steps} sampler steps vs real-vs-real floor",
                           q["frechet_distance"], floor, note="lower is better"))
    return rows


def privimage_figures(r: dict[str, Any]) -> list[Figure]:
    """Issue 5: renderer pre-trained on the semantic selection vs all public data vs none, each
    DP fine-tuned at the same ε (the paper: selection gives the lowest FD and the highest
    downstream accuracy)."""
    after = {arm: a["after_dp_finetune"] for arm, a in r["arms"].items()}
    semantic = after["semantic"]
    tasks = [k.removeprefix("accuracy_") for k in semantic
             if k.startswith("accuracy_") and not k.endswith("_note")]
    verified = {arm: a.get("privacy", {}).get("verified") for arm, a in r["arms"].items()}
    unverified = [arm for arm, v in verified.items() if v is not True]
    ledgers = f"ledgers not verified: {', '.join(unverified)}" if unverified else ""
    rows = []
    for baseline in (arm for arm in ("all", "none") if arm in after):
        rows.append(Figure(f"privimage: local FD after DP fine-tune, semantic selection vs "
                           f"{baseline}", semantic["local_fd"], after[baseline]["local_fd"],
                           target=Target("<=", 1.0),
                           note="; ".join(filter(None, ["lower is better", ledgers]))))
        for task in tasks:
            value, base = semantic[f"accuracy_{task}"], after[baseline][f"accuracy_{task}"]
            why = semantic.get(f"accuracy_{task}_note") or after[baseline].get(
                f"accuracy_{task}_note", "")
            rows.append(Figure(f"privimage: {task} accuracy (train on rendered, test on held-out "
                               f"private), semantic selection vs {baseline}", value, base,
                               target=Target(">=", 1.0), note=why))
    return rows


def end_to_end_figures(r: dict[str, Any]) -> list[Figure]:
    """Cold default `kedro run` ≤ 10 min (issue 14), test suite ≤ 5 min (2-core CPU)."""
    names = {"kedro_run": "end_to_end: cold default `kedro run`", "tests": "end_to_end: tests"}
    rows = []
    for part, p in r["parts"].items():
        ok = p["returncode"] == 0
        failed = "" if ok else f"exit status {p['returncode']}, see logs/{p['log']}"
        summary = p.get("pytest_summary") or ""
        rows += [
            Figure(f"{names.get(part, part)}: wall time vs budget", p["seconds"],
                   p["budget_seconds"], "s", target=Target("<=", 1.0), ok=ok,
                   note="; ".join(filter(None, [failed, summary]))),
            Figure(f"{names.get(part, part)}: peak RSS, process tree (largest process "
                   f"{_num(p['peak_rss_process_mb'], 'MiB')})", p["peak_rss_tree_mb"], None,
                   "MiB", ok=ok),
        ]
    return rows


def determinism_figures(r: dict[str, Any]) -> list[Figure]:
    """Issue 14: two cold replayable runs, one beside a CPU hog, write identical results."""
    idle, loaded = r["runs"]["idle"], r["runs"]["loaded"]
    ok = idle["returncode"] == 0 and loaded["returncode"] == 0
    differing = ", ".join(r["differing"]) or "none"
    return [Figure(
        f"determinism: files differing between an idle and a loaded cold run "
        f"({r['files_compared']} compared; load average after "
        f"{idle['load_average_after'][0]:.1f} vs {loaded['load_average_after'][0]:.1f})",
        len(r["differing"]), None, "", target=None, ok=ok and r["identical"],
        note=f"identical: {r['identical']}; differing: {differing}; wall time "
             f"{idle['seconds']:.0f} s idle, {loaded['seconds']:.0f} s loaded"
             + ("; shrunken world (--quick)" if r.get("quick") else ""))]


# ---- the benchmarks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Benchmark:
    name: str
    figures: Callable[[dict[str, Any]], list[Figure]]
    quick_args: tuple[str, ...] = ()
    needs_pipeline_data: bool = False   # reads a trained renderer etc. (see pipeline_data_args)
    script: Path | None = None          # default: benchmarks/<name>.py

    @property
    def path(self) -> Path:
        return self.script or HERE / f"{self.name}.py"


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("end_to_end", end_to_end_figures, ("--quick",)),
    Benchmark("dp_overhead", dp_overhead_figures,
              ("--n-albums", "32", "--batch-albums", "4", "--steps", "2", "--memory-steps", "1",
               "--seq-len", "32", "--vocab", "1024", "--latent", "8")),
    Benchmark("sampling", sampling_figures, ("--n-albums", "4", "--max-new-tokens", "8")),
    Benchmark("rendering", rendering_figures,
              ("--albums", "2", "--photos", "3", "--repeats", "1", "--n-quality", "24",
               "--steps", "2", "4"), needs_pipeline_data=True),
    Benchmark("privimage", privimage_figures, ("--quick",)),
    Benchmark("determinism", determinism_figures, ("--quick",)),
)

# Pipeline outputs the rendering benchmark reads, relative to a project root (conf/base/catalog*).
PIPELINE_DATA = {
    "--renderer": "data/06_models/renderer",
    "--captioner": "data/06_models/captioner",
    "--corpus": "data/01_raw/public/corpus.parquet",
    "--reference": "data/05_model_input/renderer_pretraining_set.parquet",
}


def pipeline_data_args(candidates: Sequence[tuple[Path, str]]) -> tuple[list[str], str]:
    """Arguments pointing at the first project root whose pipeline outputs exist, and which."""
    for root, described in candidates:
        if (root / PIPELINE_DATA["--renderer"]).is_dir():
            return [a for flag, rel in PIPELINE_DATA.items() for a in (flag, str(root / rel))], \
                described
    raise FileNotFoundError(
        f"no trained renderer ({PIPELINE_DATA['--renderer']}) in "
        + " or ".join(described for _, described in candidates)
        + ": run `.venv/bin/kedro run` first, or include end_to_end (its fresh clone's outputs "
        "are used)")


# ---- running them ------------------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    status: str                      # ok | failed | skipped | earlier (not rerun, last JSON)
    seconds: float | None = None
    returncode: int | None = None
    log: str | None = None
    message: str = ""
    figures: list[Figure] = field(default_factory=list)


def run_benchmark(bench: Benchmark, command_args: list[str], json_path: Path, log: Path,
                  timeout: float | None) -> Outcome:
    """One benchmark in its own process (group); its results read back from a fresh JSON."""
    if not bench.path.is_file():
        return Outcome(bench.name, "failed", message=f"script not found: {_shown(bench.path)}")
    log.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(bench.path), "--out", str(json_path), *command_args]
    before = _stamp(json_path)  # a JSON left from an earlier run is not a result of this one
    started = time.perf_counter()
    with log.open("w") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group: all of it, nothing else
            returncode, timed_out = proc.wait(), True
    seconds = time.perf_counter() - started
    outcome = Outcome(bench.name, "ok", seconds, returncode, _shown(log))
    if timed_out:
        outcome.status, outcome.message = "failed", f"killed after the {timeout:g} s timeout"
    elif returncode != 0:
        outcome.status = "failed"
        outcome.message = f"exit status {returncode}: {_last_line(log)}"
    if not json_path.is_file() or _stamp(json_path) == before:
        outcome.status = "failed"
        outcome.message = outcome.message or f"wrote no {json_path.name}"
        return outcome
    try:
        outcome.figures = bench.figures(json.loads(json_path.read_text()))
    except (KeyError, TypeError, ValueError) as err:
        outcome.status = "failed"
        outcome.message = (outcome.message + "; " if outcome.message else "") + \
            f"{json_path.name} lacks what the summary reads: {type(err).__name__}: {err}"
    return outcome


def earlier_outcome(bench: Benchmark, json_path: Path) -> Outcome:
    """A benchmark not selected this time: its figures from the JSON an earlier run left, marked
    as such (commit named), so a partial rerun keeps one complete SUMMARY.md."""
    try:
        document = json.loads(json_path.read_text())
        figures = bench.figures(document)
    except (KeyError, TypeError, ValueError) as err:
        return Outcome(bench.name, "skipped", message=f"not selected (--only); its earlier "
                       f"{json_path.name} is unreadable: {type(err).__name__}: {err}")
    if document.get("commit"):
        origin = f"run at commit {str(document['commit'])[:7]}"
    else:  # the commit that last committed this JSON, else the file's date
        logged = subprocess.run(["git", "log", "-1", "--format=%h %cs", "--", str(json_path)],
                                cwd=ROOT, capture_output=True, text=True).stdout.strip()
        origin = (f"committed in {logged}" if logged else "from " + time.strftime(
            "%Y-%m-%d", time.localtime(json_path.stat().st_mtime)))
    for figure in figures:
        figure.note = "; ".join(filter(None, [figure.note, f"earlier run, {origin}"]))
    return Outcome(bench.name, "earlier", figures=figures,
                   message=f"not rerun (--only): figures from {_shown(json_path)}, {origin}")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _shown(path: Path) -> str:
    """A path for the summary: relative to the project, never a machine path."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


# ---- the summary -------------------------------------------------------------------------------
def machine_description() -> dict[str, str]:
    info: dict[str, str] = {}
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                  if ln.startswith("model name")]
        cpu = models[0] if models else cpu
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["CPU"] = f"{cpu}, {os.cpu_count()} logical cores ({usable} usable by this process)"
    try:
        import psutil

        info["RAM"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pass
    info["load average at start (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    info["OS"] = platform.platform()
    info["Python"] = platform.python_version()
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            devices = [torch.cuda.get_device_properties(i)
                       for i in range(torch.cuda.device_count())]
            info["CUDA"] = ", ".join(f"{d.name} ({d.total_memory / 2**30:.0f} GiB)"
                                     for d in devices) + f"; CUDA {torch.version.cuda}"
        else:
            info["CUDA"] = "none (CPU only)"
    except ImportError:
        info["torch"] = "not installed"
    info["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["git commit"] = _git_commit()
    return info


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes (end_to_end measures the commit; the others "
                   "the working tree)" if dirty.strip() else "")


def _met(f: Figure) -> str:
    met = f.met
    return "—" if met is None else ("yes" if met else "**no**")


def render_summary(outcomes: Sequence[Outcome], machine: dict[str, str], quick: bool,
                   command: str) -> str:
    lines = [f"# Benchmarks{' — quick smoke run' if quick else ''}", ""]
    if quick:
        lines += ["Quick run: every benchmark on its smallest settings, to check the harness end",
                  "to end. Its figures are **not** comparable to the targets.", ""]
    lines += [f"Command: `{command}`", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## Figures", "",
              "Every ratio is computed from the JSON the benchmark wrote in this run (rows "
              "marked *earlier run* come from the JSON a previous run left: those benchmarks "
              "were not rerun); the baseline is measured in the same run as the value.", "",
              "| benchmark | figure | value | baseline (same run) | ratio | target | met? |",
              "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        for f in o.figures:
            figure = f.figure.removeprefix(f"{o.name}: ").removeprefix(f"{o.name} ")
            note = f" ({f.note})" if f.note else ""
            ratio = "—" if f.ratio is None else "∞" if math.isinf(f.ratio) else f"{f.ratio:.3f}×"
            lines.append(f"| {o.name} | {figure}{note} | {_num(f.value, f.unit)} | "
                         f"{_num(f.baseline, f.unit)} | {ratio} | {f.target or '—'} | {_met(f)} |")
    if not any(o.figures for o in outcomes):
        lines.append("| — | no benchmark reported a figure in this run | | | | | |")
    lines += ["", "## Runs", "", "| benchmark | status | wall time | log | note |",
              "|---|---|---|---|---|"]
    for o in outcomes:
        wall = "—" if o.seconds is None else f"{o.seconds:.0f} s"
        note = o.message.replace("|", "/") if o.status in ("ok", "earlier") else "see below"
        lines.append(f"| {o.name} | {o.status} | {wall} | {o.log or '—'} | {note} |")
    not_run = [o for o in outcomes if o.status not in ("ok", "earlier")]
    if not_run:
        lines += ["", "## Failed or skipped", ""]
        lines += [f"- **{o.name}** ({o.status}): {o.message}" for o in not_run]
    return "\n".join(lines) + "\n"


# ---- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None, names: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma list of benchmarks to run: " +
                    ", ".join(names))
    ap.add_argument("--skip", default="", help="comma list of benchmarks not to run")
    ap.add_argument("--quick", action="store_true",
                    help="each benchmark's small settings: a smoke run in a few minutes")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default: benchmarks/results, --quick: "
                         "benchmarks/results/quick)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per benchmark before it is killed (default: 7200, --quick: "
                         "900)")
    ap.add_argument("--keep-workdir", action="store_true",
                    help="keep end_to_end's fresh clone (and its data/) after the run")
    args = ap.parse_args(argv)
    for option in ("only", "skip"):
        chosen = [n for n in (getattr(args, option) or "").split(",") if n]
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            ap.error(f"--{option}: unknown benchmark(s) {unknown}; known: {', '.join(names)}")
        setattr(args, option, chosen)
    args.only = args.only or list(names)
    return args


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def main(argv: list[str] | None = None,
         benchmarks: Sequence[Benchmark] = BENCHMARKS) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv, [b.name for b in benchmarks])
    selected = [b for b in benchmarks if b.name in args.only and b.name not in args.skip]
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    logs = out / "logs"
    suffix = ".cuda" if cuda_available() else ""
    timeout = args.timeout or (900.0 if args.quick else 7200.0)
    machine = machine_description()
    workdir = Path(tempfile.mkdtemp(prefix="dpalbum_benchmarks_"))
    data_roots = [(ROOT, "this checkout's data/")]
    outcomes: list[Outcome] = []
    try:
        for i, bench in enumerate(selected, 1):
            print(f"[{i}/{len(selected)}] {bench.name} ...", flush=True)
            extra = list(bench.quick_args) if args.quick else []
            message = ""
            if bench.name == "end_to_end":
                extra += ["--logs", str(logs)]
                if any(b.needs_pipeline_data for b in selected):
                    # keep the fresh clone: its cold run's outputs feed the benchmarks after it
                    extra += ["--keep", "--workdir", str(workdir)]
                    data_roots.insert(0, (workdir / ROOT.name, "end_to_end's fresh clone "
                                          "(this run)"))
            if bench.needs_pipeline_data:
                try:
                    data_args, source = pipeline_data_args(data_roots)
                except FileNotFoundError as err:
                    outcomes.append(Outcome(bench.name, "failed", message=str(err)))
                    print(f"    failed: {err}", flush=True)
                    continue
                extra += data_args
                message = f"pipeline outputs read from {source}"
            outcome = run_benchmark(bench, extra, out / f"{bench.name}{suffix}.json",
                                    logs / f"{bench.name}{suffix}.log", timeout)
            outcome.message = "; ".join(filter(None, [outcome.message, message]))
            outcomes.append(outcome)
            wall = "" if outcome.seconds is None else f" in {outcome.seconds:.0f} s"
            print(f"    {outcome.status}{wall}"
                  f"{': ' + outcome.message if outcome.message else ''}", flush=True)
    finally:
        if args.keep_workdir:
            print(f"kept end_to_end's fresh clone under {workdir}")
        else:  # the clone's .venv and ../shared are symlinks: rmtree unlinks, never follows
            shutil.rmtree(workdir, ignore_errors=True)
    outcomes += [Outcome(b.name, "skipped", message="--skip") for b in benchmarks
                 if b.name in args.only and b.name in args.skip]
    outcomes += [earlier_outcome(b, out / f"{b.name}{suffix}.json") for b in benchmarks
                 if b.name not in args.only and (out / f"{b.name}{suffix}.json").is_file()]
    command = " ".join(["python benchmarks/run_all.py", *argv])
    summary = out / f"SUMMARY{suffix}.md"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(render_summary(outcomes, machine, args.quick, command))
    print(f"wrote {_shown(summary)}")
    failed = [o.name for o in outcomes if o.status == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
