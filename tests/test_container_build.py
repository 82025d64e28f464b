"""The build context as a real builder sends it: Debian's buildah (daemonless, no registry
needed for a ``FROM scratch`` image) copies the context through .dockerignore, and what arrives
must be exactly what tests/test_container.py's reading of .dockerignore lets through, private
decoys (albums, conf/local, an MLflow store) left out. Skipped where buildah is not installed
(CI installs none: the reading in tests/test_container.py is then the check)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_container import NEEDED, NEVER, ROOT, dockerignore

BUILDAH = shutil.which("buildah")
pytestmark = pytest.mark.skipif(
    BUILDAH is None, reason="buildah is not installed (Debian: apt-get install buildah); "
    "tests/test_container.py checks .dockerignore without a builder")


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_buildah_sends_exactly_what_dockerignore_allows(tmp_path):
    context = tmp_path / "context"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    for path in [*tracked, ".dockerignore"]:
        if (ROOT / path).is_file():
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / path, context / path)
    for decoy in NEVER:  # what a working copy holds beside the code
        (context / decoy).parent.mkdir(parents=True, exist_ok=True)
        (context / decoy).write_text("private")
    containerfile = tmp_path / "Containerfile"
    containerfile.write_text("FROM scratch\nCOPY . /context/\n")
    out, iid = tmp_path / "out", tmp_path / "iid"
    done = subprocess.run(
        [BUILDAH, "build", "--isolation", "chroot", "--pull=never", "-f", str(containerfile),
         "--iidfile", str(iid), "--output", f"type=local,dest={out}", str(context)],
        capture_output=True, text=True, timeout=300)
    if iid.exists():
        subprocess.run([BUILDAH, "rmi", iid.read_text().strip()], capture_output=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    sent = _files(out / "context")
    spec = dockerignore()
    assert sent == {p for p in _files(context) if not spec.match_file(p)}
    assert set(NEEDED) <= sent and not set(NEVER) & sent
