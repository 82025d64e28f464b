#!/usr/bin/env python
"""The privacy-utility sweep: one full ``kedro run`` per ε and repeat, each its own MLflow run.

    .venv/bin/python scripts/epsilon_sweep.py                      # ε ∈ {1, 4, 10, inf}, 3 repeats
    .venv/bin/python scripts/epsilon_sweep.py --repeats 1          # one run per ε (no error bars)
    .venv/bin/python scripts/epsilon_sweep.py --epsilons 2 8 --pipelines captioning dp_training \
        sampling text_filtering rendering evaluation               # reuse the demo world
    .venv/bin/python scripts/epsilon_sweep.py --no-audit           # skip the insertion audit
    .venv/bin/python scripts/epsilon_sweep.py --from-csv docs/sweep/privacy_utility.csv \
        --out docs/sweep                                           # redraw the figures, run nothing

Each run overrides ``privacy.epsilon`` through Kedro's runtime parameters (what ``kedro run
--params privacy.epsilon=4`` does), so every ε gets its own plan, ledger, models, synthetic albums
and metrics (a partial sweep must start at ``captioning``, whose first node plans the budget).
Repeat 0 runs the configuration as it is; repeat k > 0 moves the seeds of what makes the synthetic
data (``dp_training``, ``sampling``, ``rendering``: model initialisation, sampling, rendering) to
the project seed + k, the data and the evaluation staying put; the DP noise is fresh in every run
anyway (secure noise, never seeded). The project's default ε (``conf/base/parameters_privacy.yml``)
runs last, repeat 0 last of all, so the outputs left on disk are a default run's. Every run is
also an audit run (``evaluation.privacy_audit.enabled``): canaries planted in a copy of the
training texts, audit LMs trained in memory and attacked, so the table holds the audit's AUC /
TPR at 1% FPR per ε (``--no-audit`` leaves it out, ~5 min less per run on 2 CPU cores).

Then the script writes to ``data/08_reporting/``: ``privacy_utility.csv`` (one row per run, every
metric of metrics.json), ``privacy_utility.png`` (the figure to read: utility, text MAUVE, image FD
and the canary audit's AUC against ε, mean ± s.d. over the repeats, the non-private ε = ∞ run as a
line) and ``privacy_utility_appendix.png`` (every metric, one panel each), and re-renders
report.html so that its internal form shows the figure. The figures draw internal metrics
(computed on private data): they are for the data team, like metrics.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_EPSILONS = (1.0, 4.0, 10.0, math.inf)
DEFAULT_REPEATS = 3  # runs per ε: the figure's error bars (mean ± s.d.) need at least 2, and 3
#                      is the fewest that make the spread worth reading
REPORTING = Path("data/08_reporting")
# What a repeat k > 0 moves to the project seed + k: the seeds of what makes the synthetic data.
# The demo world, the captioner and the evaluation keep theirs (same data, same instrument).
REPEAT_SEEDS = ("dp_training.seed", "sampling.seed", "rendering.seed", "rendering.renderer.seed")
# Counts and spreads are context, not utility: kept in the CSV, left out of the plot.
NOT_PLOTTED = ("kid_std", "fpr_resolution", "synthetic_unlabelled", "majority_baseline",
               "mean_loss", "heldout_canary", "hits")
AUDIT = {"evaluation.privacy_audit.enabled": True}
# The columns printed at the end (and pasted into notes): one per question a reader asks.
KEY_METRICS = (
    "ledger_epsilon", "image_fidelity.local_fd", "image_fidelity.kid",
    "text_fidelity.caption_mauve", "text_fidelity.summary_mauve",
    "caption_agreement.protagonist_agreement",
    "attribute_fidelity.text_tv_protagonist", "utility.event_relative",
    "utility.protagonist_relative", "membership_inference.summary_lm_auc",
    "membership_inference.caption_lm_auc", "privacy_audit.summary_lm_canary_auc",
    "privacy_audit.summary_lm_canary_tpr_at_1pct_fpr", "privacy_audit.caption_lm_canary_auc",
    "privacy_audit.caption_lm_canary_tpr_at_1pct_fpr", "privacy_audit.summary_lm_member_auc",
    "privacy_audit.caption_lm_member_auc", "privacy_audit.canary_captions_regenerated",
    "privacy_audit.canary_summaries_regenerated", "privacy_audit.n_samples")


def plotted(column: str) -> bool:
    """A ``section.metric`` column worth a panel (not a count, spread or baseline)."""
    if "." not in column:
        return False
    metric = column.split(".", 1)[1]
    is_count = metric.startswith("n_") or "_n_" in metric
    return not is_count and not any(token in metric for token in NOT_PLOTTED)

logger = logging.getLogger("epsilon_sweep")


def parse_epsilon(text: str) -> float:
    """``4`` -> 4.0; ``inf`` / ``.inf`` / ``infinity`` -> math.inf (the non-private baseline)."""
    value = float(text.lstrip(".") if text.lower().lstrip(".").startswith("inf") else text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"ε must be positive, got {text}")
    return value


def default_epsilon(project: Path) -> float | None:
    """``privacy.epsilon`` of conf/base/parameters_privacy.yml, None when the file is absent."""
    path = project / "conf/base/parameters_privacy.yml"
    if not path.is_file():
        return None
    value = (yaml.safe_load(path.read_text()) or {}).get("privacy", {}).get("epsilon")
    return None if value is None else float(value)


def sweep_order(epsilons: list[float], default: float | None) -> list[float]:
    """Distinct ε values, the project default last (its outputs stay on disk)."""
    unique = list(dict.fromkeys(epsilons))
    if default in unique:
        unique.remove(default)
        unique.append(default)
    return unique


def run_order(epsilons: list[float], default: float | None,
              repeats: int) -> list[tuple[float, int]]:
    """(ε, repeat) pairs, the default ε's repeat 0 (the configuration as it is) last of all."""
    pairs = [(eps, r) for r in range(repeats) for eps in sweep_order(epsilons, default)]
    last = (default, 0)
    return [p for p in pairs if p != last] + ([last] if last in pairs else [])


def project_seed(project: Path) -> int:
    """``seed`` of conf/base/globals.yml: what repeat k adds k to."""
    return int(yaml.safe_load((project / "conf/base/globals.yml").read_text())["seed"])


def repeat_params(repeat: int, base_seed: int) -> dict[str, Any]:
    """The dotted runtime overrides of repeat ``repeat``: none for 0, else the generation seeds."""
    return {} if repeat == 0 else {key: base_seed + repeat for key in REPEAT_SEEDS}


def runtime_params(epsilon: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested runtime parameters (Kedro merges them over conf/; dotted keys would not nest).

    Every run of the sweep reads the same albums, so every run is charged to their privacy
    account; the ∞ baseline makes that account infinite, which ``privacy.lifetime_epsilon: inf``
    allows explicitly (the sweep is an internal evaluation: the account shows what it spent)."""
    params: dict[str, Any] = {"privacy": {"epsilon": epsilon, "lifetime_epsilon": "inf"}}
    for key, value in (extra or {}).items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return params


def flatten_metrics(document: dict[str, Any]) -> dict[str, float]:
    """``section.metric`` -> value for the released and internal sections of metrics.json."""
    flat: dict[str, float] = {}
    for part in ("released", "internal_sections"):
        for section, values in document.get(part, {}).items():
            for key, value in values.items():
                if isinstance(value, int | float):
                    flat[f"{section}.{key}"] = float(value)
    return flat


def sweep_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: the requested ε, the repeat, the ledger's ε, the MLflow run id, then
    every metric; sorted by ε, then repeat."""
    rows = []
    for r in results:
        privacy = r["metrics"].get("privacy", {})
        ledger_eps = privacy.get("epsilon")
        rows.append({"epsilon": r["epsilon"], "repeat": r.get("repeat", 0),
                     "ledger_epsilon": math.inf if ledger_eps in (None, "inf") else ledger_eps,
                     "mlflow_run_id": r.get("run_id"), **flatten_metrics(r["metrics"])})
    return (pd.DataFrame(rows).sort_values(["epsilon", "repeat"], kind="stable")
            .reset_index(drop=True))


def read_table(path: Path) -> pd.DataFrame:
    """A sweep CSV back as a table; one from before repeats (no ``repeat`` column) is repeat 0."""
    table = pd.read_csv(path)
    if "epsilon" not in table.columns:
        raise ValueError(f"{path}: no 'epsilon' column: not a CSV written by epsilon_sweep.py")
    if "repeat" not in table.columns:
        table.insert(1, "repeat", 0)
    return table.sort_values(["epsilon", "repeat"], kind="stable").reset_index(drop=True)


def spread(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per ε: mean, sample s.d. (NaN below 2 runs) and the number of runs that measured it."""
    grouped = table.dropna(subset=[metric]).groupby("epsilon")[metric]
    return pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1),
                         "n": grouped.count()}).reset_index()


# The figure to read: one panel per question, each a few series (column, label). Which way is
# better is in the panel's y label; ``reference`` is a value worth a line (chance, parity).
KEY_PANELS: tuple[dict[str, Any], ...] = (
    {"title": "Utility: train on synthetic, test on real",
     "ylabel": "accuracy relative to real data (higher is better)",
     "series": (("utility.event_relative", "event classifier"),
                ("utility.protagonist_relative", "protagonist classifier")),
     "reference": (1.0, "as useful as the real albums")},
    {"title": "Text fidelity: MAUVE vs the private texts",
     "ylabel": "MAUVE (1 = indistinguishable)",
     "series": (("text_fidelity.caption_mauve", "captions"),
                ("text_fidelity.summary_mauve", "album summaries")),
     "reference": None},
    {"title": "Image fidelity: Fréchet distance to real photos",
     "ylabel": "local FD (lower is better)",
     "series": (("image_fidelity.local_fd", "synthetic vs held-out photos"),),
     "reference": None},
    {"title": "Privacy audit: canaries found by a loss attack",
     "ylabel": "canary membership AUC (0.5 = nothing leaks)",
     "series": (("privacy_audit.caption_lm_canary_auc", "caption LM"),
                ("privacy_audit.summary_lm_canary_auc", "summary LM")),
     "reference": (0.5, "chance: no membership signal")},
)


def runs_per_epsilon(table: pd.DataFrame) -> str:
    """'n = 3 runs per ε', or the range when the ε differ ('n = 1–3 runs per ε')."""
    counts = table.groupby("epsilon").size()
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low} run{'s' * (high > 1)} per ε" if low == high else (
        f"n = {low}–{high} runs per ε")


def key_figure(table: pd.DataFrame) -> tuple[Any, list[str]]:
    """The sweep's few numbers that matter against ε (log axis): mean ± s.d. over the repeats per
    finite ε, the non-private ε = ∞ run(s) as a dashed line (± s.d. band). Returns the figure and
    the series drawn; a panel whose metrics no run measured says so instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = table[table["epsilon"].map(math.isfinite)]
    private = table[~table["epsilon"].map(math.isfinite)]
    ticks = sorted(set(finite["epsilon"]))
    n_text = runs_per_epsilon(table)
    single = table.groupby("epsilon").size().max() < 2
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    drawn: list[str] = []
    for ax, panel, colour_offset in zip(axes.flat, KEY_PANELS, (0, 2, 4, 5)):
        present = [(m, label) for m, label in panel["series"]
                   if m in table.columns and table[m].notna().any()]
        ax.set_title(panel["title"], fontsize=11)
        if not present:
            ax.text(0.5, 0.5, "not measured in this sweep\n(" + ", ".join(
                m for m, _ in panel["series"]) + ")", ha="center", va="center",
                transform=ax.transAxes, color="#777", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for i, (metric, label) in enumerate(present):
            colour = f"C{colour_offset + i}"
            points = spread(finite, metric)
            if not points.empty:
                ax.errorbar(points["epsilon"], points["mean"],
                            yerr=None if single else points["sd"].fillna(0), marker="o",
                            capsize=4, color=colour, label=label)
            baseline = spread(private, metric)
            if not baseline.empty:
                mean, sd = baseline["mean"].iloc[0], baseline["sd"].iloc[0]
                ax.axhline(mean, color=colour, linestyle="--", linewidth=1.2,
                           label=f"{label}, ε = ∞ (non-private)")
                if not math.isnan(sd):
                    ax.axhspan(mean - sd, mean + sd, color=colour, alpha=0.12, linewidth=0)
            drawn.append(metric)
        if panel["reference"] is not None:
            value, label = panel["reference"]
            ax.axhline(value, color="#555", linestyle=":", linewidth=1, label=label)
        ax.set_xscale("log")
        if ticks:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("ε per album (log scale)")
        ax.set_ylabel(panel["ylabel"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    bars = ("no error bars (a sweep with --repeats 3 draws mean ± s.d.)" if single
            else "points: mean ± 1 s.d. over the runs; dashed: ε = ∞, its band ± 1 s.d.")
    fig.suptitle("What ε costs: dpalbum privacy–utility sweep (internal metrics: data team only)"
                 f"\n{n_text}: {bars}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig, drawn


def plot_key_figure(table: pd.DataFrame, path: Path) -> list[str]:
    """privacy_utility.png: ``key_figure`` written to ``path``; returns the series drawn."""
    import matplotlib.pyplot as plt

    fig, drawn = key_figure(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def plot_privacy_utility(table: pd.DataFrame, path: Path) -> list[str]:
    """The appendix: a grid with one panel per metric against ε (log axis, ∞ drawn at the right
    end), mean ± s.d. over the repeats."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in table.columns if plotted(c) and table[c].notna().any()]
    epsilons = sorted(set(table["epsilon"]))
    finite = [e for e in epsilons if math.isfinite(e)]
    x_inf = (max(finite) if finite else 1.0) * 4
    ticks = finite + ([x_inf] if len(finite) < len(epsilons) else [])
    labels = [f"{t:g}" for t in finite] + (["∞"] if len(finite) < len(epsilons) else [])
    ncols = 4
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, metrics):
        points = spread(table, name)
        xs = [e if math.isfinite(e) else x_inf for e in points["epsilon"]]
        ax.errorbar(xs, points["mean"], yerr=points["sd"].fillna(0), marker="o", capsize=3)
        ax.set_xscale("log")
        ax.set_xticks(ticks, labels)
        ax.minorticks_off()
        ax.set_title(name, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle("Appendix: every metric of the dpalbum privacy-utility sweep (x: ε per album; "
                 f"∞ = non-private baseline; {runs_per_epsilon(table)}, mean ± s.d.)",
                 y=1 - 0.1 / (2.6 * nrows), va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.6 * nrows)))  # the title's own half inch
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return metrics


def kept_path(project: Path, epsilon: float, repeat: int) -> Path:
    """Where a run's metrics.json is kept for ``--reuse``."""
    return project / REPORTING / "sweep" / f"metrics_epsilon_{epsilon:g}_repeat_{repeat}.json"


def run_one(project: Path, epsilon: float, repeat: int, pipelines: list[str] | None,
            env: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """One ``kedro run`` at ε (repeat ``repeat``); returns its metrics.json and MLflow run id."""
    from kedro.framework.session import KedroSession

    logger.info("=== ε = %s%s, repeat %d ===", epsilon,
                " (NON-PRIVATE baseline)" if math.isinf(epsilon) else "", repeat)
    _close_mlflow_run()  # a run left open would swallow this ε's parameters and metrics
    params = runtime_params(epsilon, {**extra, **repeat_params(repeat, project_seed(project))})
    with KedroSession.create(project_path=project, env=env,
                             runtime_params=params) as session:
        session.run(pipeline_names=pipelines)
    run_id = _close_mlflow_run()
    metrics_path = project / REPORTING / "metrics.json"
    document = json.loads(metrics_path.read_text())
    spent = document.get("privacy", {}).get("epsilon")
    spent = math.inf if spent in (None, "inf") else float(spent)
    if (math.isinf(epsilon) != math.isinf(spent)) or (math.isfinite(spent)
                                                      and spent > epsilon * 1.01):
        logger.warning("ε = %s requested but the ledger reports ε = %s: the run did not re-plan "
                       "its budget (run the pipelines from privacy_plan on, which plan it)",
                       epsilon, spent)
    keep = kept_path(project, epsilon, repeat)
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metrics_path, keep)
    return {"epsilon": epsilon, "repeat": repeat, "metrics": document, "run_id": run_id}


def kept_result(project: Path, epsilon: float, repeat: int) -> dict[str, Any]:
    """The metrics an earlier sweep kept for ``epsilon`` (``--reuse``), not run again."""
    keep = kept_path(project, epsilon, repeat)
    if not keep.exists():
        raise FileNotFoundError(f"--reuse {epsilon:g}: no kept metrics at {keep} (repeat "
                                f"{repeat}); run that ε, or leave it out of --reuse")
    logger.info("=== ε = %s, repeat %d: reusing the kept %s ===", epsilon, repeat, keep)
    return {"epsilon": epsilon, "repeat": repeat, "metrics": json.loads(keep.read_text()),
            "run_id": None}


def _close_mlflow_run() -> str | None:
    """End the MLflow run a session left open; return the id of the run that was just logged.

    kedro-mlflow's run stays active after ``session.run`` inside one Python process (after a full
    run it can even sit twice on mlflow's run stack), and the next session would then log into it
    and fail on the changed ``privacy.epsilon`` param: close it until none is active, so every ε
    gets its own run.
    """
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        logger.info("closed MLflow run %s", active.info.run_id)
        return active.info.run_id
    last = mlflow.last_active_run()
    logger.info("no MLflow run left open; last run %s", last.info.run_id if last else None)
    return last.info.run_id if last else None


def rerender_report(project: Path, env: str | None, extra: dict[str, Any]) -> None:
    """Run the report node once more so report.html embeds the new plot."""
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params(
            default_epsilon(project) or 10.0, extra)) as session:
        session.run(pipeline_names=["evaluation"], node_names=["build_report_node"])
    _close_mlflow_run()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epsilons", nargs="+", type=parse_epsilon, default=list(DEFAULT_EPSILONS),
                        help="ε values (inf = non-private baseline); default: 1 4 10 inf")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"runs per ε (default {DEFAULT_REPEATS}): repeat k > 0 moves the "
                             "seeds of training, sampling and rendering to the project seed + k; "
                             "1 draws no error bars")
    parser.add_argument("--from-csv", type=Path, default=None, metavar="CSV",
                        help="run nothing: redraw the figures from a sweep's privacy_utility.csv")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where the CSV and figures go (default: data/08_reporting)")
    parser.add_argument("--pipelines", nargs="+", default=None,
                        help="pipelines to run per ε (default: __default__, everything)")
    parser.add_argument("--env", default=None, help="Kedro environment (default: local)")
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra runtime parameters, e.g. "
                             "evaluation.privacy_audit.n_samples=2000")
    parser.add_argument("--no-audit", action="store_true",
                        help="plain runs: no canaries, no audit LMs (the audit is on by default)")
    parser.add_argument("--reuse", nargs="+", type=parse_epsilon, default=[], metavar="EPS",
                        help="after an interrupted sweep: take these ε (every repeat) from the "
                             "metrics.json kept in data/08_reporting/sweep/ instead of running "
                             "them again")
    parser.add_argument("--no-report", action="store_true",
                        help="do not re-render report.html with the plot at the end")
    return parser.parse_args(argv)


def write_figures(table: pd.DataFrame, out: Path) -> tuple[list[str], list[str]]:
    """privacy_utility.png (the figure to read) and privacy_utility_appendix.png (every metric)."""
    key = plot_key_figure(table, out / "privacy_utility.png")
    appendix = plot_privacy_utility(table, out / "privacy_utility_appendix.png")
    logger.info("wrote %s (%s: %d series) and privacy_utility_appendix.png (%d panels)",
                out / "privacy_utility.png", runs_per_epsilon(table), len(key), len(appendix))
    return key, appendix


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    args = parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    if args.from_csv is not None:
        table = read_table(args.from_csv)
        write_figures(table, args.out or args.from_csv.parent)
        print(key_metrics(table).to_string(float_format=lambda v: f"{v:.4g}"))
        return 0
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT)
    runs = run_order(args.epsilons, default_epsilon(PROJECT), args.repeats)
    logger.warning("the sweep runs the pipeline %d times on the same private albums: every run is "
                   "charged to their privacy account (data/08_reporting/privacy_account.json), "
                   "and a non-private ε = inf run leaves it at ε = inf", len(runs))
    extra = {**({} if args.no_audit else AUDIT),
             **{k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.params)}}
    results = [kept_result(PROJECT, eps, r) if eps in args.reuse
               else run_one(PROJECT, eps, r, args.pipelines, args.env, extra)
               for eps, r in runs]
    table = sweep_table(results)
    out = args.out or PROJECT / REPORTING
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "privacy_utility.csv", index=False)
    write_figures(table, out)
    if not args.no_report:
        rerender_report(PROJECT, args.env, extra)
    print(key_metrics(table).to_string(float_format=lambda v: f"{v:.4g}"))
    return 0


def key_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """The sweep's headline numbers, one row per metric and one column per ε (the mean over
    the repeats)."""
    columns = [c for c in KEY_METRICS if c in table.columns]
    return table.groupby("epsilon")[columns].mean().T.rename(
        columns=lambda e: "∞ (non-private)" if math.isinf(e) else f"{e:g}")


if __name__ == "__main__":
    sys.exit(main())
