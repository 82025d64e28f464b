"""Checkpoints of a DP-SGD run: trainable weights, optimizer, step, every RNG, accountant history.

Why the accountant history and the RNG states travel together: a resumed run continues the
history it loaded, so ε is never under-counted; and if the run died after the checkpoint, the
steps it re-does use the same Poisson draws and the same noise, so they release nothing that the
lost steps had not already released. Files are written atomically (tmp + rename) and loaded with
``torch.load(weights_only=True)``: tensors and plain containers only, no pickled code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "dp_checkpoint.pt"


def global_rng_state() -> dict[str, Any]:
    """torch / numpy / python global RNG states (dropout and the loss's own randomness)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": list(random.getstate()),
    }


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``global_rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(directory: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/dp_checkpoint.pt`` atomically; returns the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The latest checkpoint in ``directory``, or None if there is none."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, weights_only=True, map_location="cpu")
