"""Configuration composes: an env file or ``--params`` overrides single keys, never a whole group.

Run through a real ``KedroSession`` on a copy of the project's conf, with and without a
``conf/local`` parameters file (the config loader's default merge is destructive: a local file
that sets one key of a group used to drop the rest of it, and ``--params`` with it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.test_end_to_end import make_project

LOCAL_FILES = {
    "no conf/local file": None,
    "conf/local file on other keys": {"sampling": {"batch_size": 8}, "demo_world": {"seed": 5}},
    "conf/local file on the same groups": {"privacy": {"delta": 1.0e-6},
                                           "sampling": {"temperature": 0.9}},
}


def cli_params(*items: str) -> dict:
    """What ``kedro run --params "a.b=1,c=2"`` hands the session (kedro's own dot-list parse)."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))


def load_context(project: Path, runtime_params: dict):
    """The session's context (its settings, config loader and runtime params), built as
    ``KedroSession.load_context`` builds it but without plugin hooks: kedro-mlflow's would set
    MLflow up globally for this temp project and leak into later sessions."""
    from kedro.framework.hooks.manager import _create_hook_manager
    from kedro.framework.project import settings
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    session = KedroSession.create(project_path=project, runtime_params=runtime_params)
    return settings.CONTEXT_CLASS(
        package_name=session._package_name, project_path=project,
        config_loader=session._get_config_loader(), env=None, runtime_params=runtime_params,
        hook_manager=_create_hook_manager())


@pytest.fixture(params=list(LOCAL_FILES), scope="module")
def project(request, tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("conf_project"))
    local = LOCAL_FILES[request.param]
    if local is not None:
        (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(local))
    return project, local or {}


def base_params() -> dict:
    from kedro.config import OmegaConfigLoader

    root = Path(__file__).resolve().parents[1]
    return OmegaConfigLoader(str(root / "conf"), base_env="base",
                             default_run_env="base")["parameters"]


def test_params_override_one_privacy_key_and_keep_the_rest(project):
    project, local = project
    params = load_context(project, cli_params("privacy.epsilon=1")).config_loader["parameters"]
    base = base_params()["privacy"]
    assert params["privacy"]["epsilon"] == 1
    assert params["privacy"]["shares"] == base["shares"]  # the LedgerError of issue 13
    assert params["privacy"]["delta"] == local.get("privacy", {}).get("delta", base["delta"])
    assert set(params["privacy"]) == set(base)


def test_params_override_one_sampling_key_and_keep_seed_and_top_p(project):
    project, local = project
    context = load_context(project, cli_params("sampling.n_albums=60"))
    sampling = context.config_loader["parameters"]["sampling"]
    base = base_params()["sampling"]
    assert sampling["n_albums"] == 60
    assert (sampling["seed"], sampling["top_p"]) == (base["seed"], base["top_p"])
    for key, value in local.get("sampling", {}).items():  # the env's keys stay too
        assert sampling[key] == value
    assert context.params["sampling"].top_p == base["top_p"]  # validated as its typed config


def test_env_file_overrides_one_nested_key(tmp_path):
    project = make_project(tmp_path)
    (project / "conf/local/parameters_dp.yml").write_text(
        yaml.safe_dump({"dp_training": {"summary_lm": {"dp": {"epochs": 3}}}}))
    params = load_context(project, {}).config_loader["parameters"]
    base = base_params()["dp_training"]
    assert params["dp_training"]["summary_lm"]["dp"]["epochs"] == 3
    assert params["dp_training"]["summary_lm"]["dp"]["lr"] == base["summary_lm"]["dp"]["lr"]
    assert params["dp_training"]["caption_lm"] == base["caption_lm"]
    assert params["dp_training"]["semantic_query"] == base["semantic_query"]


ALBUM_ENTRIES = ("private_albums", "private_album_index", "heldout_albums", "canary_albums",
                 "ground_truth", "private_albums_for_renderer")


def album_entries(project: Path, runtime_params: dict) -> dict[str, dict]:
    """Each album entry's resolved description (paths absolute, as Kedro makes them)."""
    catalog = load_context(project, runtime_params).catalog
    described = {}
    for name in ALBUM_ENTRIES:
        dataset = catalog.get(name)
        inner = getattr(dataset, "_dataset", dataset)  # the renderer's deferred entry
        described[name] = inner._describe()
    return described


def test_default_albums_are_the_demo_worlds(tmp_path):
    project = make_project(tmp_path)
    entries = album_entries(project, {})
    raw = (project / "data/01_raw").resolve()
    assert Path(entries["private_albums"]["path"]) == raw / "albums"
    assert Path(entries["private_album_index"]["path"]) == raw / "albums"
    assert Path(entries["private_albums_for_renderer"]["path"]) == raw / "albums"
    assert Path(entries["heldout_albums"]["path"]) == raw / "heldout_albums"
    assert Path(entries["ground_truth"]["filepath"]) == raw / "ground_truth.parquet"
    assert entries["private_albums"]["writable"] and entries["private_album_index"]["writable"]


@pytest.mark.parametrize("how", ["--params", "conf/local/globals.yml"])
def test_one_parameter_moves_every_album_entry(tmp_path, how):
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project")
    mine = tmp_path / "my albums"
    if how == "--params":
        runtime = cli_params(f"albums_dir={mine}")
    else:
        (project / "conf/local/globals.yml").write_text(yaml.safe_dump({"albums_dir": str(mine)}))
        runtime = {}
    entries = album_entries(project, runtime)
    for name in ("private_albums", "private_album_index", "private_albums_for_renderer"):
        assert Path(entries[name]["path"]) == mine, name
    # the demo world's held-out albums, canaries and ground truth describe its own albums only
    assert entries["heldout_albums"]["path"] is None
    assert entries["canary_albums"]["path"] is None
    assert entries["ground_truth"]["filepath"] is None
    # and the demo world writes none of your albums
    assert not entries["private_albums"]["writable"]
    assert not entries["private_album_index"]["writable"]
