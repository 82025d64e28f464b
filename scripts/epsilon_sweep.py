#!/usr/bin/env python
"""The privacy-utility sweep: one full ``kedro run`` per ε, each its own MLflow run.

    .venv/bin/python scripts/epsilon_sweep.py                      # ε ∈ {1, 4, 10, inf}
    .venv/bin/python scripts/epsilon_sweep.py --epsilons 2 8 --pipelines captioning dp_training \
        sampling text_filtering rendering evaluation               # reuse the demo world
    .venv/bin/python scripts/epsilon_sweep.py --no-audit           # skip the insertion audit

Each run overrides ``privacy.epsilon`` through Kedro's runtime parameters (what ``kedro run
--params privacy.epsilon=4`` does), so every ε gets its own plan, ledger, models, synthetic albums
and metrics (a partial sweep must start at ``captioning``, whose first node plans the budget). The
project's default ε (``conf/base/parameters_privacy.yml``) runs last, so the outputs left on disk
are the default run's. Every run is also an audit run (``evaluation.privacy_audit.enabled``):
canaries planted in a copy of the training texts, audit LMs trained in memory and attacked, so the
table holds the audit's AUC / TPR at 1% FPR per ε (``--no-audit`` leaves it out, ~5 min less per
ε on 2 CPU cores). Then the script writes ``data/08_reporting/privacy_utility.{csv,png}``
(every metric of metrics.json against ε; ``inf`` is the NON-PRIVATE baseline) and re-renders
report.html so that it shows the plot.
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
REPORTING = Path("data/08_reporting")
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
    """One row per ε: the requested ε, the ledger's ε, the MLflow run id, then every metric."""
    rows = []
    for r in results:
        privacy = r["metrics"].get("privacy", {})
        ledger_eps = privacy.get("epsilon")
        rows.append({"epsilon": r["epsilon"],
                     "ledger_epsilon": math.inf if ledger_eps in (None, "inf") else ledger_eps,
                     "mlflow_run_id": r.get("run_id"), **flatten_metrics(r["metrics"])})
    return pd.DataFrame(rows).sort_values("epsilon", kind="stable").reset_index(drop=True)


def plot_privacy_utility(table: pd.DataFrame, path: Path) -> list[str]:
    """A grid with one panel per metric against ε (log axis, ∞ drawn at the right end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in table.columns if plotted(c) and table[c].notna().any()]
    finite = [e for e in table["epsilon"] if math.isfinite(e)]
    top = max(finite) if finite else 1.0
    x_inf = top * 4
    xs = [e if math.isfinite(e) else x_inf for e in table["epsilon"]]
    ticks = sorted(set(finite)) + ([x_inf] if len(finite) < len(xs) else [])
    labels = [f"{t:g}" for t in sorted(set(finite))] + (["∞"] if len(finite) < len(xs) else [])
    ncols = 4
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, metrics):
        ax.plot(xs, table[name], marker="o")
        ax.set_xscale("log")
        ax.set_xticks(ticks, labels)
        ax.minorticks_off()
        ax.set_title(name, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle("dpalbum privacy-utility sweep (x: ε per album; ∞ = non-private baseline)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (2.6 * nrows)))  # leave the title its own band
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return metrics


def run_one(project: Path, epsilon: float, pipelines: list[str] | None, env: str | None,
            extra: dict[str, Any]) -> dict[str, Any]:
    """One ``kedro run`` at ε; returns its metrics.json and MLflow run id."""
    from kedro.framework.session import KedroSession

    logger.info("=== ε = %s%s ===", epsilon, " (NON-PRIVATE baseline)" if math.isinf(epsilon)
                else "")
    _close_mlflow_run()  # a run left open would swallow this ε's parameters and metrics
    with KedroSession.create(project_path=project, env=env,
                             runtime_params=runtime_params(epsilon, extra)) as session:
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
    keep = project / REPORTING / "sweep" / f"metrics_epsilon_{epsilon:g}.json"
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metrics_path, keep)
    return {"epsilon": epsilon, "metrics": document, "run_id": run_id}


def kept_result(project: Path, epsilon: float) -> dict[str, Any]:
    """The metrics an earlier sweep kept for ``epsilon`` (``--reuse``), not run again."""
    keep = project / REPORTING / "sweep" / f"metrics_epsilon_{epsilon:g}.json"
    if not keep.exists():
        raise FileNotFoundError(f"--reuse {epsilon:g}: no kept metrics at {keep}; run that ε")
    logger.info("=== ε = %s: reusing the kept %s ===", epsilon, keep)
    return {"epsilon": epsilon, "metrics": json.loads(keep.read_text()), "run_id": None}


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
    parser.add_argument("--pipelines", nargs="+", default=None,
                        help="pipelines to run per ε (default: __default__, everything)")
    parser.add_argument("--env", default=None, help="Kedro environment (default: local)")
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra runtime parameters, e.g. "
                             "evaluation.privacy_audit.n_samples=2000")
    parser.add_argument("--no-audit", action="store_true",
                        help="plain runs: no canaries, no audit LMs (the audit is on by default)")
    parser.add_argument("--reuse", nargs="+", type=parse_epsilon, default=[], metavar="EPS",
                        help="after an interrupted sweep: take these ε from the metrics.json "
                             "kept in data/08_reporting/sweep/ instead of running them again")
    parser.add_argument("--no-report", action="store_true",
                        help="do not re-render report.html with the plot at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    args = parse_args(argv)
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT)
    logger.warning("the sweep runs the pipeline %d times on the same private albums: every run is "
                   "charged to their privacy account (data/08_reporting/privacy_account.json), "
                   "and a non-private ε = inf run leaves it at ε = inf", len(args.epsilons))
    extra = {**({} if args.no_audit else AUDIT),
             **{k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.params)}}
    results = [kept_result(PROJECT, eps) if eps in args.reuse
               else run_one(PROJECT, eps, args.pipelines, args.env, extra)
               for eps in sweep_order(args.epsilons, default_epsilon(PROJECT))]
    table = sweep_table(results)
    csv_path = PROJECT / REPORTING / "privacy_utility.csv"
    table.to_csv(csv_path, index=False)
    plotted = plot_privacy_utility(table, PROJECT / REPORTING / "privacy_utility.png")
    logger.info("wrote %s (%d metrics) and privacy_utility.png (%d panels)", csv_path,
                table.shape[1] - 3, len(plotted))
    if not args.no_report:
        rerender_report(PROJECT, args.env, extra)
    print(key_metrics(table).to_string(float_format=lambda v: f"{v:.4g}"))
    return 0


def key_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """The sweep's headline numbers, one row per metric and one column per ε."""
    columns = [c for c in KEY_METRICS if c in table.columns]
    return table.set_index("epsilon")[columns].T.rename(
        columns=lambda e: "∞ (non-private)" if math.isinf(e) else f"{e:g}")


if __name__ == "__main__":
    sys.exit(main())
