"""The project's own promises: one requirement source, README commands match CI, honest registry."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must start with a bash block holding the two commands"
    return [ln for ln in block.group(1).splitlines() if ln and not ln.startswith("#")]


def test_readme_starts_with_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    setup_and_run, setup_and_test = commands
    assert setup_and_run.startswith("bash scripts/setup.sh && ") and "kedro run" in setup_and_run
    assert "pytest" in setup_and_test
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_and_test in ci.splitlines(), ".ci/run must call README's test command verbatim"


def test_one_requirement_source_for_setup_pyproject_and_docker():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"]["file"] == ["requirements.txt"]
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    docker = (ROOT / "Dockerfile").read_text()
    for text in (setup, docker):
        assert "-c requirements.lock -r requirements.txt" in text
        assert "grep '^torch==' requirements.txt" in text
    reqs = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert all("==" in r for r in reqs), "every direct dependency is pinned"
    assert "torch==2.13.0" in reqs


def test_lock_agrees_with_direct_pins():
    lock = {}
    for ln in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in ln and not ln.startswith("#"):
            name, version = ln.split("==", 1)
            lock[name.lower().replace("_", "-")] = version.strip()
    for ln in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" not in ln or ln.startswith(("#", "torch==")):
            continue
        name, version = ln.split("==", 1)
        assert lock.get(name.lower().replace("_", "-")) == version, f"{name} pinned differently"


def test_registry_lists_existing_pipelines_in_order():
    from dpalbum.pipeline_registry import PIPELINE_ORDER, register_pipelines

    pipelines = register_pipelines()
    names = [n for n in pipelines if n != "__default__"]
    assert names == [n for n in PIPELINE_ORDER if n in names], "registered in data-walk order"
    for name in names:
        assert (ROOT / "src" / "dpalbum" / "pipelines" / name / "pipeline.py").exists()
        assert len(pipelines[name].nodes) > 0, f"pipeline {name} is registered but empty"
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    assert default_nodes == {n.name for name in names for n in pipelines[name].nodes}


@pytest.mark.parametrize("name", ["catalog.yml", "mlflow.yml", "globals.yml"])
def test_base_config_present(name):
    assert (ROOT / "conf" / "base" / name).exists()


def test_mlflow_store_is_a_local_sqlite_file():
    assert "mlflow_tracking_uri: sqlite:///mlflow.db" in (ROOT / "conf/base/mlflow.yml").read_text()


def test_no_machine_paths_in_tracked_sources():
    bad = re.compile(r"(/w[o]rk/|/r[o]ot/|/t[m]p/[a-z])")  # classes: no literal path here
    offenders = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "conf").rglob("*.yml"),
                 ROOT / "README.md", ROOT / "dvc.yaml"]:
        if path.exists() and bad.search(path.read_text(errors="ignore")):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_notebook_loads_only_catalog_datasets_that_exist():
    import json as _json

    from kedro.config import OmegaConfigLoader

    cells = _json.loads((ROOT / "notebooks" / "explore_run.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    names = set(re.findall(r'catalog\.load\("([a-z_]+)"\)', code))
    assert names, "the notebook should open outputs through the catalog"
    from dpalbum.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base",
                               custom_resolvers=CONFIG_LOADER_ARGS["custom_resolvers"])
    catalog = loader["catalog"]
    assert names <= set(catalog), names - set(catalog)
    assert not names & {"private_albums", "heldout_albums", "album_texts", "ground_truth"}


def test_readme_verify_commands_run_as_written(tmp_path):
    """README's ledger and account checks, run verbatim on a small secure ledger and account."""
    import shlex
    import subprocess
    import sys

    from dpalbum.privacy import PrivacyAccount, plan_run, write_ledger

    commands = re.findall(r"`(\.venv/bin/python scripts/verify_ledger\.py [^`]+)`",
                          (ROOT / "README.md").read_text())
    assert len(commands) >= 2, commands
    reporting = tmp_path / "data" / "08_reporting"
    account = PrivacyAccount(reporting / "privacy_account.json")
    params = {"epsilon": 2.0, "shares": {"album_count": 0.1, "summary_lm": 0.45,
                                         "caption_lm": 0.45}, "max_grad_norm": 1.0}
    lm = {"dp": {"expected_batch_albums": 10, "epochs": 1, "noise_multiplier": 3.0}}
    dp = {"selection": {"mode": "none"}, "summary_lm": lm, "caption_lm": lm}
    plan = plan_run([f"a{i}" for i in range(100)], account, params, dp, {})
    write_ledger(plan, reporting / "privacy_ledger.json")
    for command in commands:
        argv = [sys.executable, str(ROOT / "scripts/verify_ledger.py"), *shlex.split(command)[2:]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stdout, done.stderr)


def test_readme_run_on_your_albums_names_real_parameters():
    """Every `--params` key of README's "Run on your albums" section exists in the shipped
    configuration (a renamed parameter must not leave the documented command stale)."""
    from kedro.config import OmegaConfigLoader

    from dpalbum.settings import CONFIG_LOADER_ARGS

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Run on your albums"):]
    section = section[:section.index("\n## ", 5)]
    assert '.venv/bin/kedro run --params "albums_dir=/path/to/albums"' in section
    keys = {item.split("=", 1)[0] for group in re.findall(r'--params "([^"]+)"', section)
            for item in group.split(",")}
    keys |= set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)=true`", section))
    assert {"albums_dir", "captioning.allow_out_of_domain",
            "captioning.captioner.backend"} <= keys, keys
    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base",
                               custom_resolvers=CONFIG_LOADER_ARGS["custom_resolvers"])
    params, globals_ = loader["parameters"], loader["globals"]
    for key in keys - {"albums_dir"}:
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"README names unknown {key}"
            node = node[part]
    assert "albums_dir" in globals_
