"""The benchmark harness without the heavy benchmarks: the summary table from small JSON files,
failures recorded with a non-zero exit, and end_to_end's process-tree memory probe."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}",
                                                  ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


run_all = _load("run_all")
end_to_end = _load("end_to_end")

SAMPLING = {"batched": {"captions_per_s": 300.0}, "naive": {"captions_per_s": 20.0},
            "target": 10.0}
END_TO_END = {"parts": {
    "kedro_run": {"returncode": 0, "seconds": 450.0, "budget_seconds": 900.0,
                  "peak_rss_tree_mb": 2048.0, "peak_rss_process_mb": 1900.0,
                  "log": "end_to_end.kedro_run.log"},
    "tests": {"returncode": 1, "seconds": 120.0, "budget_seconds": 300.0,
              "peak_rss_tree_mb": 900.0, "peak_rss_process_mb": 800.0,
              "log": "end_to_end.tests.log", "pytest_summary": "1 failed, 9 passed in 100s"},
}}


def _row(summary: str, benchmark: str, text: str) -> list[str]:
    rows = [ln for ln in summary.splitlines() if ln.startswith(f"| {benchmark} |") and text in ln]
    assert len(rows) == 1, (text, summary)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_summary_ratios_and_verdicts_come_from_the_json_of_the_run():
    outcomes = [run_all.Outcome("sampling", "ok", 12.0, 0, "logs/sampling.log",
                                figures=run_all.sampling_figures(SAMPLING)),
                run_all.Outcome("end_to_end", "ok", 600.0, 0, "logs/end_to_end.log",
                                figures=run_all.end_to_end_figures(END_TO_END))]
    summary = run_all.render_summary(outcomes, {"CPU": "test"}, quick=False, command="x")
    cells = _row(summary, "sampling", "captions/s")
    assert cells[4:] == ["15.000×", "≥ 10", "yes"]
    assert _row(summary, "end_to_end", "`kedro run`: wall time")[4:] == ["0.500×", "≤ 1", "yes"]
    tests = _row(summary, "end_to_end", "tests: wall time")
    assert tests[4] == "0.400×" and tests[6] == "**no**"  # in budget, but the suite failed
    assert "1 failed" in tests[1]

    slower = {**SAMPLING, "naive": {"captions_per_s": 40.0}}  # a new measurement, a new verdict
    summary = run_all.render_summary(
        [run_all.Outcome("sampling", "ok", figures=run_all.sampling_figures(slower))],
        {}, quick=False, command="x")
    assert _row(summary, "sampling", "captions/s")[4:] == ["7.500×", "≥ 10", "**no**"]


def test_dp_overhead_and_rendering_rows_use_the_benchmarks_own_ratios_and_targets():
    modes = ("nonprivate", "dp_album", "dp_example")
    model = {"step_seconds_median": dict(zip(modes, (1.0, 1.3, 1.25))),
             "time_ratio_dp_album_vs_nonprivate": 1.31,
             "time_ratio_album_vs_example_clipping": 1.02,
             "memory": {"per_mode": {m: {"peak_rss_mb": v} for m, v in
                                     zip(modes, (1000.0, 1100.0, 1100.0))}}}
    rows = {f.figure: f for f in run_all.dp_overhead_figures({"models": {"gpt2_lora": model,
                                                                          "unet": model}})}
    lora_time = rows["dp_overhead gpt2_lora: step time, DP-SGD (album) vs non-private"]
    assert lora_time.ratio == 1.31 and lora_time.met is False  # target ≤ 1.2
    assert rows["dp_overhead unet: step time, DP-SGD (album) vs non-private"].met is None
    memory = rows["dp_overhead gpt2_lora: peak RSS, DP-SGD (album) vs non-private"]
    assert memory.ratio == pytest.approx(1.1) and memory.met is True

    rendering = {"speed": {"images_per_second": {"ours": 9.0, "reference_per_album": 10.0,
                                                 "reference_same_batch": 9.0}},
                 "quality": {"real_vs_real_floor": 40.0,
                             "by_steps": {"10": {"frechet_distance": 120.0}}}}
    speed, _, fd = run_all.rendering_figures(rendering)
    assert speed.ratio == pytest.approx(0.9) and speed.met is False
    assert fd.ratio == pytest.approx(3.0) and fd.met is None


def test_privimage_rows_compare_the_semantic_arm_with_each_baseline_arm():
    def arm(fd, protagonist, verified=True):
        return {"after_dp_finetune": {"local_fd": fd, "accuracy_protagonist": protagonist,
                                      "accuracy_scene": None,
                                      "accuracy_scene_note": "one class only"},
                "privacy": {"verified": verified}}

    result = {"arms": {"semantic": arm(30.0, 0.6), "all": arm(40.0, 0.5),
                       "none": arm(20.0, 0.8, verified=False)}}
    figures = run_all.privimage_figures(result)

    def row(metric: str, baseline: str, figures=figures):
        (figure,) = [f for f in figures if metric in f.figure and f.figure.endswith(baseline)]
        return figure

    assert row("local FD", "all").ratio == pytest.approx(0.75) and row("local FD", "all").met
    assert row("local FD", "none").ratio == pytest.approx(1.5)
    assert row("local FD", "none").met is False
    assert "ledgers not verified: none" in row("local FD", "none").note
    assert row("protagonist", "all").ratio == pytest.approx(1.2) and row("protagonist", "all").met
    assert row("protagonist", "none").met is False
    assert row("scene", "all").ratio is None and row("scene", "all").met is None
    assert row("scene", "all").note == "one class only"

    result["arms"]["all"]["after_dp_finetune"]["accuracy_protagonist"] = 0.0
    zero = row("protagonist", "all", run_all.privimage_figures(result))
    assert zero.ratio == float("inf") and zero.met is True  # beats a baseline of 0
    summary = run_all.render_summary([run_all.Outcome("privimage", "ok", figures=[zero])], {},
                                     quick=False, command="x")
    assert _row(summary, "privimage", "protagonist")[4:] == ["∞", "≥ 1", "yes"]


FAKE_OK = """
import argparse, json
ap = argparse.ArgumentParser(); ap.add_argument("--out"); ap.add_argument("--n-albums")
args = ap.parse_args()
open(args.out, "w").write(json.dumps({SAMPLING!r}))
print("n_albums", args.n_albums)
"""
FAKE_BROKEN = 'raise SystemExit("boom: this benchmark is broken on purpose")\n'
FAKE_STALE = "print('ran, but wrote nothing')\n"


def test_a_failing_a_missing_and_a_stale_benchmark_are_recorded_and_exit_non_zero(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "ok.py").write_text(FAKE_OK.format(SAMPLING=SAMPLING))
    (scripts / "broken.py").write_text(FAKE_BROKEN)
    (scripts / "stale.py").write_text(FAKE_STALE)
    out = tmp_path / "results"
    out.mkdir()
    (out / "stale.json").write_text(json.dumps(SAMPLING))  # left over from an earlier run
    benchmarks = [
        run_all.Benchmark("ok", run_all.sampling_figures, ("--n-albums", "2"), script=scripts
                          / "ok.py"),
        run_all.Benchmark("broken", run_all.sampling_figures, script=scripts / "broken.py"),
        run_all.Benchmark("missing", run_all.sampling_figures, script=scripts / "missing.py"),
        run_all.Benchmark("stale", run_all.sampling_figures, script=scripts / "stale.py"),
        run_all.Benchmark("unwanted", run_all.sampling_figures, script=scripts / "ok.py"),
    ]
    code = run_all.main(["--quick", "--only", "ok,broken,missing,stale", "--out", str(out)],
                        benchmarks=benchmarks)
    assert code == 1
    (summary_path,) = out.glob("SUMMARY*.md")
    summary = summary_path.read_text()
    assert _row(summary, "ok", "captions/s")[4:] == ["15.000×", "≥ 10", "yes"]
    assert "n_albums 2" in next(out.glob("logs/ok*.log")).read_text()  # its quick arguments
    assert "**broken** (failed): exit status 1: boom: this benchmark is broken on purpose" \
        in summary
    assert "**missing** (failed): script not found" in summary
    assert "**stale** (failed): wrote no stale" in summary
    assert "| unwanted |" not in summary
    assert "quick smoke run" in summary and "## Machine" in summary

    assert run_all.main(["--only", "ok", "--out", str(out)], benchmarks=benchmarks) == 0
    partial = next(out.glob("SUMMARY*.md")).read_text()  # the rest: last JSON, marked, if any
    stale_row = _row(partial, "stale", "captions/s")
    assert "earlier run, from " in stale_row[1] and stale_row[4:] == ["15.000×", "≥ 10", "yes"]
    assert "| stale | earlier |" in partial and "| broken |" not in partial
    assert run_all.main(["--skip", "broken,missing,stale,unwanted", "--out", str(out)],
                        benchmarks=benchmarks) == 0
    assert "**broken** (skipped): --skip" in next(out.glob("SUMMARY*.md")).read_text()
    with pytest.raises(SystemExit):
        run_all.main(["--only", "no_such_benchmark"], benchmarks=benchmarks)


def test_rendering_inputs_come_from_the_first_project_with_a_trained_renderer(tmp_path):
    fresh, checkout = tmp_path / "fresh", tmp_path / "checkout"
    candidates = [(fresh, "the fresh clone"), (checkout, "this checkout")]
    with pytest.raises(FileNotFoundError, match="the fresh clone or this checkout"):
        run_all.pipeline_data_args(candidates)
    (checkout / "data/06_models/renderer").mkdir(parents=True)
    args, source = run_all.pipeline_data_args(candidates)
    assert source == "this checkout"
    assert args[args.index("--renderer") + 1] == str(checkout / "data/06_models/renderer")


def test_end_to_end_measures_the_memory_of_the_whole_process_tree(tmp_path):
    child = "b = bytearray(120 * 2**20); import time; time.sleep(1.0)"
    parent = textwrap.dedent(f"""
        import subprocess, sys
        subprocess.run([sys.executable, "-c", {child!r}], check=True)
        raise SystemExit(3)
    """)
    result = end_to_end.measure([sys.executable, "-c", parent], tmp_path, None,
                                tmp_path / "log.txt", poll=0.1, timeout=60)
    assert result["returncode"] == 3
    assert result["peak_rss_process_mb"] >= 120  # the grandchild's allocation is seen
    assert result["peak_rss_tree_mb"] >= 120
    assert result["seconds"] >= 1.0


def test_determinism_compares_results_byte_for_byte_and_ignores_ids_and_times(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # determinism.py imports end_to_end by name
    determinism = _load("determinism")

    def project(name: str, album_bytes: bytes, plan_id: str) -> Path:
        root = tmp_path / name
        for rel in determinism.COMPARED_FILES:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text('{"a": 1}')
        (root / determinism.LEDGER).write_text(json.dumps(
            {"plan_id": plan_id, "mechanisms": [{"name": "m", "sigma": 1.0}]}))
        albums = root / "data/07_model_output/synthetic_albums/a0"
        albums.mkdir(parents=True)
        (albums / "000.png").write_bytes(album_bytes)
        (albums.parent / "DATA_CARD.md").write_text(
            f"| plan | {plan_id * 8} |\n| generated (UTC) | 2026-12-0{len(name)}T10:00:00+00:00 |")
        lm = root / "data/06_models/caption_lm"
        lm.mkdir(parents=True)
        (lm / "config.json").write_text(json.dumps(
            {"n_layer": 2, "dpalbum_privacy": {"plan_id": plan_id, "steps": 56}}))
        return root

    same = determinism.results_of(project("one", b"png", "0123"))
    assert determinism.results_of(project("two", b"png", "4567")) == same  # ids are not results
    other = determinism.results_of(project("three", b"PNG", "0123"))
    differing = sorted(k for k in same if same[k] != other[k])
    assert differing == ["data/07_model_output/synthetic_albums"]

    runs = {"idle": {"returncode": 0, "seconds": 500.0, "load_average_after": [1.9]},
            "loaded": {"returncode": 0, "seconds": 900.0, "load_average_after": [4.1]}}
    row = run_all.determinism_figures({"runs": runs, "differing": differing,
                                       "files_compared": 9, "identical": False})[0]
    assert row.met is False and "synthetic_albums" in row.note
    row = run_all.determinism_figures({"runs": runs, "differing": [], "files_compared": 9,
                                       "identical": True})[0]
    assert row.met is None and row.ok and "identical: True" in row.note


def test_sampling_is_judged_against_the_album_batched_loop_when_measured():
    result = {"batched": {"captions_per_s": 300.0}, "album_batched": {"captions_per_s": 120.0},
              "naive": {"captions_per_s": 20.0}, "target": 3.0,
              "setup": {"model": "the pipeline's trained LMs"}}
    against_album, against_naive = run_all.sampling_figures(result)
    assert against_album.ratio == 2.5 and against_album.met is False  # 2.5x < 3x
    assert "album-batched" in against_album.figure and against_naive.target is None
    assert against_naive.ratio == 15.0
