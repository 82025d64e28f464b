"""DVC tells the truth (issue 15, item 3): dvc.yaml is generated from the Kedro pipelines and never
drifts; each stage depends on every module its nodes import, every file they read and the
parameters they take; and outputs are the same bytes for the same inputs (no wall-clock time, no
absolute path), so a re-run with nothing changed leaves nothing stale."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path, PurePath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "src" / "dpalbum"


def load_script(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"dpalbum_scripts_{name}",
                                                  ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated():
    make_dvc = load_script("make_dvc")
    return make_dvc, make_dvc.build_stages(ROOT)


@pytest.fixture(scope="module")
def pipelines():
    from dpalbum.pipeline_registry import register_pipelines

    return {k: v for k, v in register_pipelines().items() if k != "__default__"}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_dvc_yaml_is_exactly_what_the_generator_writes(generated):
    make_dvc, stages = generated
    assert (ROOT / "dvc.yaml").read_text() == make_dvc.render(stages), (
        "dvc.yaml drifted from the pipelines: run .venv/bin/python scripts/make_dvc.py")


def test_one_stage_per_pipeline_running_it_plus_the_account_snapshot(generated, pipelines):
    _, stages = generated
    assert list(stages) == [*pipelines, "privacy_account_snapshot"]
    for name in pipelines:
        assert stages[name]["cmd"] == f"kedro run --pipelines {name}"
        assert {"conf/local", "requirements.lock"} <= set(stages[name]["deps"])
    for stage in stages.values():  # every output is cached: a release can come back
        for out in stage.get("outs", []) + stage.get("metrics", []):
            assert isinstance(out, str), f"{out}: cache: false outputs cannot be restored"


def _imported_modules(roots: set[str]) -> set[str]:
    """dpalbum modules reachable from ``roots`` through what their namespaces hold at run time
    (modules, and the modules of functions and classes), and their parent packages (imported
    with them): independent of the generator's bytecode scan."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] != "dpalbum":
            continue
        seen.add(name)
        module = importlib.import_module(name)
        todo += [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]
        for value in vars(module).values():
            if isinstance(value, types.ModuleType):
                # a package's own submodules sit in its namespace once anything imported them
                # (here: every pipeline): not an import of the package's
                if not value.__name__.startswith(name + "."):
                    todo.append(value.__name__)
            elif isinstance(getattr(value, "__module__", None), str):
                todo.append(value.__module__)
    return seen


def _file(module: str) -> str:
    path = Path(sys.modules[module].__file__).resolve()
    return path.relative_to(ROOT.resolve()).as_posix()


def test_each_stage_depends_on_every_module_its_nodes_import(generated, pipelines):
    _, stages = generated
    for name, pipeline in pipelines.items():
        roots = {n.func.__module__ for n in pipeline.nodes}
        files = {_file(m) for m in _imported_modules(roots)}
        deps = stages[name]["deps"]
        missing = sorted(f for f in files
                         if not covered(f, deps) and (ROOT / f).stat().st_size > 0)
        assert not missing, f"stage {name} does not depend on {missing}"
    # the modules issue 15 found missing: each is now a dependency where a node imports it
    expect = {"sampling": ["models/text_format.py", "models/io.py"],
              "text_filtering": ["models/text_encoder.py", "albums/vocabulary.py"],
              "rendering": ["models/text_encoder.py", "models/io.py"],
              "evaluation": ["models/text_encoder.py", "models/text_format.py",
                             "albums/vocabulary.py"],
              "dp_training": ["models/text_format.py", "models/io.py"]}
    for name, modules in expect.items():
        for module in modules:
            assert covered(f"src/dpalbum/{module}", stages[name]["deps"]), (name, module)


def _dataset_paths(dataset) -> list[str]:
    """Where a Kedro dataset object reads or writes (its own attributes, wrapped datasets too)."""
    found = []
    for key, value in vars(dataset).items():
        if key in ("_filepath", "_path") and isinstance(value, str | PurePath):
            found.append(PurePath(value).as_posix())
        elif hasattr(value, "load") and hasattr(value, "save") and value is not dataset:
            found += _dataset_paths(value)
        elif key == "_dataset_config" and isinstance(value, dict):  # deferred wrappers
            found += [v for k, v in value.items() if k in ("filepath", "path") and v]
    return found


def test_each_stage_depends_on_every_file_it_reads_and_writes_every_file_it_writes(
        generated, pipelines):
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    from dpalbum.settings import CONFIG_LOADER_ARGS

    make_dvc, stages = generated
    loader = OmegaConfigLoader(str(ROOT / "conf"), env="base", **CONFIG_LOADER_ARGS)
    catalog = DataCatalog.from_config(loader["catalog"])
    for name, pipeline in pipelines.items():
        stage = stages[name]
        outs = stage["outs"] + stage.get("metrics", [])
        for dataset in sorted(pipeline.inputs()):
            if dataset.startswith("params:") or dataset not in catalog:
                continue
            for path in _dataset_paths(catalog.get(dataset)):
                if dataset in make_dvc.NOT_DEPS:
                    assert not covered(path, stage["deps"]), (name, dataset)
                else:
                    assert covered(path, stage["deps"]) or covered(path, outs), (name, dataset)
        for dataset in sorted(pipeline.all_outputs()):
            if dataset in catalog:
                for path in _dataset_paths(catalog.get(dataset)):
                    assert covered(path, outs), f"stage {name} writes {path}: not an out"
    # issue 15: evaluation read 8 files it did not depend on
    for path in ("data/06_models/captioner", "data/06_models/lm_tokenizer",
                 "data/08_reporting/privacy_ledger.json", "data/01_raw/ground_truth.parquet",
                 "data/01_raw/public/corpus.parquet", "data/01_raw/albums",
                 "data/05_model_input/public_album_texts.parquet"):
        assert covered(path, stages["evaluation"]["deps"]), path


def test_each_stage_tracks_the_parameters_its_nodes_take(generated, pipelines):
    _, stages = generated
    for name, pipeline in pipelines.items():
        tracked = {(file, key) for entry in stages[name]["params"] for file, keys in entry.items()
                   for key in keys}
        for dataset in pipeline.inputs():
            if not dataset.startswith("params:"):
                continue
            key = dataset.removeprefix("params:")
            hits = [(f, k) for f, k in tracked if key == k or key.startswith(k + ".")]
            assert hits, f"stage {name} reads {dataset} but does not track it in params:"
            for file, tracked_key in hits:  # DVC finds the key where the stage says it is
                value = yaml.safe_load((ROOT / file).read_text())
                for part in tracked_key.split("."):
                    value = value[part]
    # the catalog's album paths and image size follow globals.yml: tracked where they are read
    assert {"conf/base/globals.yml": ["albums_dir", "demo_albums_dir", "image_size", "seed"]} in \
        stages["captioning"]["params"]


def test_sampling_writes_the_same_bytes_for_the_same_inputs(tmp_path):
    """No wall-clock seconds in the parquet: a re-run with nothing changed changes nothing."""
    from kedro_datasets.pandas import ParquetDataset

    from dpalbum.pipelines.sampling.nodes import sample_albums
    from tests.models.tiny_sampling_lms import single_thread, trained_toy_lms
    from tests.pipelines.test_sampling import PARAMS, text_ledger, trained_under

    summary_lm, caption_lm, tokenizer = trained_toy_lms()
    ledger = text_ledger()
    written = []
    with single_thread(), trained_under(ledger, summary_lm, caption_lm):
        for run in range(2):
            frame = sample_albums(summary_lm, caption_lm, tokenizer, ledger, dict(PARAMS))
            path = tmp_path / f"run{run}" / "synthetic_texts.parquet"
            ParquetDataset(filepath=str(path)).save(frame)
            written.append(path.read_bytes())
    assert written[0] == written[1]
    assert "seconds" not in frame.attrs["sampling"]


def test_ingestion_report_names_the_albums_relative_to_the_project(tmp_path, monkeypatch):
    """Two checkouts of one project at different places write the same report bytes."""
    from kedro_datasets.json import JSONDataset

    from dpalbum.albums.dataset import AlbumFolderDataset
    from dpalbum.pipelines.captioning.nodes import report_ingestion_node
    from tests.models.synthetic_photos import private_albums

    reports = []
    for place in ("first", "second/deeper"):
        project = tmp_path / place / "project"
        (project / "data/01_raw/albums").mkdir(parents=True)
        shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
        AlbumFolderDataset(path=str(project / "data/01_raw/albums")).save(
            private_albums(1)[0])
        monkeypatch.chdir(project)
        # Kedro hands datasets absolute paths (the project root joined with the catalog's)
        albums = AlbumFolderDataset(path=str(project / "data/01_raw/albums")).load()
        report = report_ingestion_node(albums, {"plan_id": "x"})
        assert report["path"] == "data/01_raw/albums" and report["albums_read"] == 1
        out = project / "data/08_reporting/ingestion_report.json"
        JSONDataset(filepath=str(out), save_args={"indent": 2}).save(report)
        reports.append(out.read_bytes())
    assert reports[0] == reports[1]
    # a folder of the user's own, outside the project, is named as given
    outside = tmp_path / "my albums"
    AlbumFolderDataset(path=str(outside)).save(private_albums(1)[0])
    report = report_ingestion_node(AlbumFolderDataset(path=str(outside)).load(), {})
    assert report["path"] == str(outside)
    assert json.loads(reports[0])["internal"] is True
