"""Shared fixtures for the privacy tests: tiny models, a ledger verifier, one CPU thread."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
OWN_VERIFIER = ROOT / "scripts" / "verify_ledger.py"  # the project's own, always run
# The shared verifier sits beside the repo in the team's workspace (and in CI), never in a
# user's clone: it is run in addition when present.
SHARED_VERIFIER = ROOT.parent / "shared" / "tools" / "verify_ledger.py"


def verifiers() -> list[Path]:
    """The independent ledger verifiers to run: ours, plus the shared one when it exists."""
    return [OWN_VERIFIER, *([SHARED_VERIFIER] if SHARED_VERIFIER.exists() else [])]


def run_verifiers(path: Path, *extra: str) -> str:
    """Run every available verifier on a written ledger; assert each passes; their output."""
    running = [(v, subprocess.Popen([sys.executable, str(v), str(path), *extra], text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE))
               for v in verifiers()]  # in parallel: each recomposes on the fine PLD grid
    out = []
    for verifier, proc in running:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{verifier} failed on {path}:\n{stdout}\n{stderr}"
        out.append(stdout)
    return "\n".join(out)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core box: extra torch threads only fight each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def verify_ledger() -> Callable[[Path], str]:
    """Run the independent verifiers on a written ledger; fail the test unless all pass."""

    return run_verifiers
