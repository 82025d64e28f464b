"""The sweep's figure to read (scripts/epsilon_sweep.py): utility, text MAUVE, image FD and the
canary audit against ε, mean ± s.d. over repeats, the non-private run as a line; the full grid as
the appendix; both redrawn from a CSV without running anything (what docs/sweep holds)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from dpalbum.pipelines.evaluation import report
from tests.pipelines.test_evaluation_world import ledger

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _script():
    spec = importlib.util.spec_from_file_location("epsilon_sweep_figure",
                                                  ROOT / "scripts/epsilon_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sweep = _script()
EPSILONS = (1.0, 4.0, 10.0, math.inf)


def _document(eps: float, quality: float) -> dict:
    """metrics.json of one run whose numbers all follow ``quality`` (0..1)."""
    return report.assemble_metrics(ledger("inf" if math.isinf(eps) else eps), [
        report.section("utility", internal=True,
                       metrics={"event_relative": quality, "protagonist_relative": quality + 0.05,
                                "event_n_test": 60}),
        report.section("text_fidelity", internal=True,
                       metrics={"caption_mauve": quality / 2, "summary_mauve": quality / 3}),
        report.section("image_fidelity", internal=True, metrics={"local_fd": 100 / quality}),
        report.section("privacy_audit", internal=True,
                       metrics={"caption_lm_canary_auc": 0.5 + quality / 4,
                                "summary_lm_canary_auc": 0.5 + quality / 5}),
    ])


def _table(repeats: int, noise: float = 0.05) -> pd.DataFrame:
    """A sweep of ``repeats`` runs per ε: quality grows with ε, each repeat a known offset."""
    results = []
    for eps in EPSILONS:
        base = {1.0: 0.4, 4.0: 0.6, 10.0: 0.7, math.inf: 0.9}[eps]
        for r in range(repeats):
            quality = base + noise * (r - (repeats - 1) / 2)
            results.append({"epsilon": eps, "repeat": r, "metrics": _document(eps, quality),
                            "run_id": f"run-{eps:g}-{r}"})
    return sweep.sweep_table(results)


def _panel(fig, title_start: str):
    return next(ax for ax in fig.axes if ax.get_title().startswith(title_start))


def _bars(ax) -> dict[str, list[tuple[float, float, float]]]:
    """Per series label: (x, lower, upper) of each error bar drawn."""
    out = {}
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            _, _, barcols = container.lines
            segments = barcols[0].get_segments() if barcols else []
            out[container.get_label()] = [(s[0][0], s[0][1], s[1][1]) for s in segments]
    return out


def test_spread_is_mean_sd_and_count_per_epsilon():
    table = _table(3)
    points = sweep.spread(table, "utility.event_relative").set_index("epsilon")
    assert list(points["n"]) == [3, 3, 3, 3]
    assert points.loc[4.0, "mean"] == pytest.approx(0.6)
    assert points.loc[4.0, "sd"] == pytest.approx(np.std([0.55, 0.6, 0.65], ddof=1))
    assert math.isnan(sweep.spread(_table(1), "utility.event_relative")["sd"].iloc[0])


def test_key_figure_draws_error_bars_and_the_non_private_line():
    table = _table(3)
    fig, drawn = sweep.key_figure(table)
    assert drawn == ["utility.event_relative", "utility.protagonist_relative",
                     "text_fidelity.caption_mauve", "text_fidelity.summary_mauve",
                     "image_fidelity.local_fd", "privacy_audit.caption_lm_canary_auc",
                     "privacy_audit.summary_lm_canary_auc"]
    utility = _panel(fig, "Utility")
    bars = _bars(utility)["event classifier"]
    sd = np.std([0.55, 0.6, 0.65], ddof=1)
    assert [x for x, _, _ in bars] == [1.0, 4.0, 10.0]  # finite ε only: ∞ is the line
    assert all(hi - lo == pytest.approx(2 * sd) for _, lo, hi in bars)
    dashed = {line.get_label(): line.get_ydata()[0] for line in utility.get_lines()
              if line.get_linestyle() == "--"}
    assert dashed["event classifier, ε = ∞ (non-private)"] == pytest.approx(0.9)
    assert utility.get_xscale() == "log"
    audit = _panel(fig, "Privacy audit")
    assert any(line.get_linestyle() == ":" and line.get_ydata()[0] == 0.5
               for line in audit.get_lines())  # chance
    assert "n = 3 runs per ε" in fig._suptitle.get_text()
    assert "mean ± 1 s.d." in fig._suptitle.get_text()


def test_key_figure_with_one_run_per_epsilon_says_n_1_and_draws_no_bars():
    fig, _ = sweep.key_figure(_table(1))
    assert "n = 1 run per ε" in fig._suptitle.get_text()
    assert "no error bars" in fig._suptitle.get_text()
    assert all(points == [] for ax in fig.axes for points in _bars(ax).values())


def test_a_panel_nobody_measured_says_so():
    table = _table(2).drop(columns=[c for c in _table(2).columns
                                    if c.startswith("privacy_audit.")])
    fig, drawn = sweep.key_figure(table)
    assert not any(m.startswith("privacy_audit.") for m in drawn)
    audit = _panel(fig, "Privacy audit")
    assert any("not measured in this sweep" in t.get_text() for t in audit.texts)
    assert "n = 2 runs per ε" in fig._suptitle.get_text()


def test_run_order_and_repeat_seeds():
    assert sweep.run_order([1, 10, math.inf], default=10, repeats=2) == [
        (1, 0), (math.inf, 0), (1, 1), (math.inf, 1), (10, 1), (10, 0)]
    assert sweep.repeat_params(0, 100) == {}
    assert sweep.repeat_params(2, 100) == {k: 102 for k in sweep.REPEAT_SEEDS}
    nested = sweep.runtime_params(4.0, sweep.repeat_params(1, sweep.project_seed(ROOT)))
    assert nested["rendering"]["renderer"]["seed"] == nested["sampling"]["seed"]
    assert "seed" not in nested.get("privacy", {})  # no DP noise seed, ever
    assert sweep.parse_args([]).repeats == 3


def test_figures_from_a_csv_without_repeats_run_nothing(tmp_path):
    """docs/sweep/privacy_utility.csv predates repeats: it reads as one run per ε."""
    csv = tmp_path / "privacy_utility.csv"
    _table(1).drop(columns="repeat").to_csv(csv, index=False)
    assert sweep.main(["--from-csv", str(csv), "--out", str(tmp_path / "out")]) == 0
    for name in ("privacy_utility.png", "privacy_utility_appendix.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG
    assert list(sweep.read_table(csv)["repeat"]) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="not a CSV written by epsilon_sweep"):
        pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad.csv", index=False)
        sweep.read_table(tmp_path / "bad.csv")


def test_appendix_keeps_every_metric_with_its_spread(tmp_path):
    table = _table(3)
    metrics = sweep.plot_privacy_utility(table, tmp_path / "appendix.png")
    assert "utility.event_relative" in metrics and "utility.event_n_test" not in metrics
    assert (tmp_path / "appendix.png").read_bytes()[:8] == PNG
    key = sweep.key_metrics(table)
    assert key.loc["utility.event_relative", "4"] == pytest.approx(0.6)  # mean of the repeats
