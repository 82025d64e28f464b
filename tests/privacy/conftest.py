"""Shared fixtures for the privacy tests: tiny models, a ledger verifier, one CPU thread."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# The repository's parent holds shared/ (CI checks the repo out with ../shared beside it).
VERIFY_LEDGER = Path(__file__).resolve().parents[2] / ".." / "shared" / "tools" / "verify_ledger.py"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core box: extra torch threads only fight each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def verify_ledger() -> Callable[[Path], str]:
    """Run the independent verifier on a written ledger; fail the test unless it passes."""

    def run(path: Path) -> str:
        assert VERIFY_LEDGER.exists(), f"verify_ledger.py not found at {VERIFY_LEDGER}"
        done = subprocess.run([sys.executable, str(VERIFY_LEDGER), str(path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"verify_ledger.py failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    return run
