#!/usr/bin/env python3
"""Keep and restore releases (README: "Keep and restore a release").

    .venv/bin/kedro run                                # (or `dvc repro`) make a release
    .venv/bin/python scripts/release.py keep eps10     # keep it (git tag release/eps10)
    .venv/bin/python scripts/release.py restore eps10  # bring it back, byte for byte

``keep NAME``: copies the privacy account to its per-release snapshot, records every stage's
inputs and outputs in ``dvc.lock`` (``dvc commit``: each output goes into DVC's cache), commits
``dvc.lock`` to git with the release's ε and δ in the message, tags the commit ``release/NAME``
and pushes the files to the DVC remote (``dvc push``; .dvc-storage/ unless scripts/setup.sh was
told another folder). ``restore NAME``: takes that commit's ``dvc.yaml`` and ``dvc.lock``
(``git checkout release/NAME -- dvc.yaml dvc.lock``) and ``dvc pull``s its files (from the
cache, else the remote). Back to the newest: ``git checkout HEAD -- dvc.yaml dvc.lock && dvc
checkout``. Every git and DVC command is printed before it runs.

Why DVC and not Kedro dataset versioning: a release is a set of files that must come back
together (synthetic albums and their data card, the ledger that covers them, metrics, report,
the models), and DVC keeps the set as one ``dvc.lock`` that git commits and tags, with the files
in a content-addressed cache and a remote. Kedro's versioning keeps each dataset in its own
timestamped folder with no record of which versions make one release, and DVC on top of Kedro
versions would version everything twice.

The privacy account is the one file no release may roll back: it only ever grows, and restoring
an older copy would forget what the albums already spent. So it is no DVC output; the
``privacy_account_snapshot`` stage (and ``keep``) copies it to
``data/08_reporting/privacy_account_snapshot.json``, which a release restores instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = Path("data/08_reporting/privacy_account.json")
ACCOUNT_SNAPSHOT = Path("data/08_reporting/privacy_account_snapshot.json")
LEDGER = Path("data/08_reporting/privacy_ledger.json")
TAG_PREFIX = "release/"


class ReleaseError(SystemExit):
    """A release command refused, with what to do (exit status 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"release: {message}")


def snapshot_account(account: Path, snapshot: Path) -> None:
    """Copy the privacy account, byte for byte, to ``snapshot`` (written atomically)."""
    if not account.is_file():
        raise ReleaseError(f"no privacy account at '{account}'. The privacy_plan pipeline writes "
                           "it: run `kedro run` (or `dvc repro`) first.")
    data = account.read_bytes()
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ReleaseError(f"'{account}' is not JSON ({exc}).") from exc
    if not isinstance(doc, dict) or "datasets" not in doc:
        raise ReleaseError(f"'{account}' is not a privacy account (no 'datasets' key); pass "
                           f"{ACCOUNT}.")
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=snapshot.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, snapshot)
    print(f"release: {account} -> {snapshot} ({len(data)} bytes)")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    print("+ " + shlex.join(args), flush=True)
    done = subprocess.run(args, cwd=ROOT, text=True, capture_output=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if check and done.returncode != 0:
        raise ReleaseError(f"`{shlex.join(args)}` failed (exit {done.returncode}); see above.")
    return done


def _dvc() -> str:
    beside = Path(sys.executable).parent / "dvc"  # the venv's dvc, activated or not
    return str(beside) if beside.exists() else "dvc"


def _missing_outputs() -> list[str]:
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    paths = [next(iter(o)) if isinstance(o, dict) else o
             for s in stages.values() for kind in ("outs", "metrics") for o in s.get(kind, [])]
    return [p for p in paths if not (ROOT / p).exists()]


def keep(name: str) -> None:
    """Record the outputs on disk as release ``name``: dvc.lock in git (tagged), files pushed."""
    tag = TAG_PREFIX + name
    if _run("git", "check-ref-format", f"refs/tags/{tag}", check=False).returncode:
        raise ReleaseError(f"'{name}' cannot name a git tag; use letters, digits, '.', '-', '_'.")
    if _run("git", "tag", "--list", tag).stdout.strip():
        raise ReleaseError(f"a release named '{name}' exists already (git tag {tag}); choose "
                           "another name.")
    snapshot_account(ROOT / ACCOUNT, ROOT / ACCOUNT_SNAPSHOT)
    missing = _missing_outputs()
    if missing:
        raise ReleaseError("these outputs of dvc.yaml are missing, so there is no whole release "
                           f"to keep: {', '.join(missing)}. Run the whole pipeline (`kedro run` "
                           "or `dvc repro`) first.")
    _run(_dvc(), "commit", "--force")
    ledger = json.loads((ROOT / LEDGER).read_text())
    message = (f"release {name}: ε={ledger.get('epsilon')} δ={ledger.get('delta')} "
               f"(unit {ledger.get('unit')}, noise {ledger.get('noise_source')})")
    _run("git", "add", "dvc.lock")
    if _run("git", "diff", "--cached", "--quiet", "--", "dvc.lock", check=False).returncode:
        _run("git", "commit", "--quiet", "-m", message, "--", "dvc.lock")
    _run("git", "tag", "-a", tag, "-m", message)
    _run(_dvc(), "push")
    print(f"release: kept '{name}' ({message}); restore it with "
          f"`.venv/bin/python scripts/release.py restore {name}`")


def restore(name: str) -> None:
    """Bring release ``name``'s files back, byte for byte, from the DVC cache or remote."""
    tag = TAG_PREFIX + name
    if not _run("git", "tag", "--list", tag).stdout.strip():
        kept = _run("git", "tag", "--list", TAG_PREFIX + "*").stdout.split()
        raise ReleaseError(f"no release named '{name}' (no git tag {tag}); kept releases: "
                           f"{', '.join(t.removeprefix(TAG_PREFIX) for t in kept) or 'none'}.")
    _run("git", "checkout", tag, "--", "dvc.yaml", "dvc.lock")
    _run(_dvc(), "pull")
    print(f"release: the workspace holds release '{name}' (dvc.yaml and dvc.lock from {tag}); "
          "back to the newest: `git checkout HEAD -- dvc.yaml dvc.lock && .venv/bin/dvc "
          "checkout`")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for command, what in (("keep", "keep the outputs on disk as a release"),
                          ("restore", "restore a kept release, byte for byte")):
        sub.add_parser(command, help=what).add_argument("name", help="the release's name")
    snap = sub.add_parser("snapshot-account", help="copy the privacy account (the DVC stage)")
    snap.add_argument("account", type=Path)
    snap.add_argument("snapshot", type=Path)
    args = ap.parse_args(argv)
    if args.command == "keep":
        keep(args.name)
    elif args.command == "restore":
        restore(args.name)
    else:
        snapshot_account(args.account, args.snapshot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
