"""scripts/epsilon_sweep.py: ε parsing and order, the runtime override Kedro really applies, and
the table and plot written from per-ε metrics documents (no kedro run here: too slow)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from dpalbum.pipelines.evaluation import report
from tests.pipelines.test_evaluation_world import ledger

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("epsilon_sweep",
                                                  ROOT / "scripts/epsilon_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sweep = _script()


def test_epsilon_parsing_and_order():
    assert [sweep.parse_epsilon(t) for t in ("1", "4.5", "inf", ".inf")] == [1, 4.5, math.inf,
                                                                              math.inf]
    with pytest.raises(Exception, match="positive"):
        sweep.parse_epsilon("0")
    assert sweep.sweep_order([1, 4, 10, math.inf, 4], default=10) == [1, 4, math.inf, 10]
    assert sweep.sweep_order([1, 4], default=None) == [1, 4]
    assert sweep.parse_args([]).epsilons == [1, 4, 10, math.inf]


def test_runtime_params_override_privacy_epsilon_in_the_real_config():
    params = sweep.runtime_params(1.0, {**sweep.AUDIT, "evaluation.privacy_audit.n_samples": 99})
    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base",
                               default_run_env="local", runtime_params=params,
                               config_patterns={"parameters": ["parameters*"]})
    merged = loader["parameters"]
    assert merged["privacy"]["epsilon"] == 1.0
    assert merged["privacy"]["delta"] == 1e-5  # the rest of the group is kept
    audit = merged["evaluation"]["privacy_audit"]
    assert audit["enabled"] is True and audit["n_samples"] == 99
    assert audit["captions_per_album"] == 5  # the rest of the group is kept
    assert sweep.default_epsilon(ROOT) == 10.0


def _document(eps: float, quality: float) -> dict:
    return report.assemble_metrics(ledger("inf" if math.isinf(eps) else eps), [
        report.section("image_fidelity", internal=True,
                       metrics={"local_fd": 10 / quality, "n_real": 60}),
        report.section("utility", internal=True, metrics={"event_accuracy_synthetic": quality,
                                                          "event_n_test": 60}),
        report.section("caption_agreement", internal=False,
                       metrics={"protagonist_agreement": quality}),
        report.section("privacy_audit", internal=True,
                       metrics={"caption_lm_canary_auc": quality, "n_samples": 10000,
                                "heldout_canary_caption_hits": 0.0})])


def test_table_and_plot(tmp_path):
    results = [{"epsilon": eps, "metrics": _document(eps, q), "run_id": f"run{i}"}
               for i, (eps, q) in enumerate([(10, 0.8), (1, 0.4), (math.inf, 0.9), (4, 0.6)])]
    table = sweep.sweep_table(results)
    assert list(table["epsilon"]) == [1, 4, 10, math.inf]
    assert list(table["utility.event_accuracy_synthetic"]) == [0.4, 0.6, 0.8, 0.9]
    assert math.isinf(table["ledger_epsilon"].iloc[-1]) and table["ledger_epsilon"].iloc[0] == 1
    path = tmp_path / "privacy_utility.png"
    plotted = sweep.plot_privacy_utility(table, path)
    # counts (n_real, event_n_test, n_samples) and the held-out canary control left out
    assert sorted(plotted) == ["caption_agreement.protagonist_agreement", "image_fidelity.local_fd",
                       "privacy_audit.caption_lm_canary_auc",
                       "utility.event_accuracy_synthetic"]
    key = sweep.key_metrics(table)
    assert list(key.columns) == ["1", "4", "10", "∞ (non-private)"]
    assert list(key.loc["privacy_audit.caption_lm_canary_auc"]) == [0.4, 0.6, 0.8, 0.9]
    assert sweep.parse_args([]).no_audit is False
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table.to_csv(tmp_path / "privacy_utility.csv", index=False)
    assert "inf" in (tmp_path / "privacy_utility.csv").read_text()
