"""Where every DP draw comes from: a cryptographically secure generator, one stream per mechanism.

Two modes (``privacy.noise``):

- ``secure`` (the default, always for a release): every stream is a ChaCha20 bit generator
  (``randomgen.ChaCha``, 20 rounds) keyed with 256 fresh bits from the OS (``secrets``). Nobody,
  us included, can replay the noise or the Poisson batches, and no key is ever stored: a resumed
  DP-SGD run continues on fresh keys (the steps it re-does are counted again).
- ``replayable`` (tests and exact reproduction of the demo only): the same ChaCha20 streams, keyed
  from an explicit integer seed read from the environment variable ``DPALBUM_NOISE_SEED`` (never
  from parameters, so kedro-mlflow cannot log it). Whoever knows the seed can subtract the noise:
  such a run is **NOT differentially private** and every release says so.

Why ChaCha20 (randomgen) rather than Opacus' secure mode: Opacus needs ``torchcsprng``, which is
unmaintained and has no wheel for current torch; ChaCha20 is a standard stream cipher used as a
CSPRNG (as in Linux's ``/dev/urandom``), randomgen exposes it as a NumPy bit generator, so
Gaussian and uniform draws go through NumPy's tested transforms. The floating-point attack on
Gaussian sampling (Mironov 2012) is not addressed (see ``docs/privacy.md``).

Independence: each mechanism (``semantic_query``, ``album_count``, ``summary_lm``, ...) and, in
multi-process DP-SGD, each rank gets its own stream: fresh keys in secure mode, a SeedSequence
child keyed by (mechanism name, rank, purpose) in replayable mode. Model initialisation and
dropout never draw from these streams: they use the public project seed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

NOISE_MODES = ("secure", "replayable")
SEED_ENV = "DPALBUM_NOISE_SEED"
NOT_DP = "NOT differentially private: noise is replayable from a seed"
PURPOSES = ("noise", "sampling")


def _name_key(text: str) -> int:
    """A stable 32-bit key of a mechanism name (SeedSequence spawn keys are integers)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _chacha(seed: np.random.SeedSequence | None) -> np.random.Generator:
    from randomgen import ChaCha

    if seed is None:  # 256 bits from the OS: the key is never stored anywhere
        return np.random.Generator(ChaCha(key=secrets.randbits(256), counter=0, rounds=20))
    return np.random.Generator(ChaCha(seed=seed, rounds=20))


@dataclass(frozen=True)
class NoiseSource:
    """The run's source of DP randomness. ``stream(mechanism, purpose, rank)`` is independent of
    every other stream. The replay seed is kept out of ``repr`` (and so out of logs)."""

    mode: str = "secure"
    seed: int | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in NOISE_MODES:
            raise ValueError(f"privacy.noise must be one of {NOISE_MODES}, got {self.mode!r}")
        if self.mode == "replayable" and self.seed is None:
            raise ValueError(f"privacy.noise: replayable needs an integer seed in the environment "
                             f"variable {SEED_ENV} (never in parameters)")
        if self.mode == "secure" and self.seed is not None:
            raise ValueError("privacy.noise: secure draws its keys from the OS; a seed is only "
                             "accepted with privacy.noise: replayable")

    @property
    def replayable(self) -> bool:
        return self.mode == "replayable"

    def stream(self, mechanism: str, purpose: str = "noise", rank: int = 0) -> np.random.Generator:
        """A fresh generator for one mechanism's ``purpose`` (noise | sampling) on one rank."""
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
        if not self.replayable:
            return _chacha(None)
        child = np.random.SeedSequence(
            entropy=int(self.seed), spawn_key=(_name_key(mechanism), PURPOSES.index(purpose), rank))
        return _chacha(child)


def noise_source(privacy_params: Mapping[str, Any] | None = None) -> NoiseSource:
    """The run's noise source from ``privacy.noise`` (default secure) and, in replayable mode,
    the seed in ``$DPALBUM_NOISE_SEED``. Replayable mode is logged loudly."""
    mode = str((privacy_params or {}).get("noise", "secure"))
    if mode != "replayable":
        return NoiseSource(mode)
    raw = os.environ.get(SEED_ENV)
    try:
        seed = int(raw) if raw is not None else None
    except ValueError:
        raise ValueError(f"{SEED_ENV}={raw!r} is not an integer seed") from None
    source = NoiseSource("replayable", seed)
    logger.warning("privacy.noise = replayable: %s. For tests and demos only; never release.",
                   NOT_DP)
    return source


def gaussian_tensor(generator: np.random.Generator, shape: torch.Size | tuple[int, ...],
                    std: float, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, std²) of ``shape`` drawn from ``generator`` (on the CPU, then moved to ``device``)."""
    np_dtype = np.float32 if dtype in (torch.float32, torch.bfloat16, torch.float16) else np.float64
    draw = generator.standard_normal(tuple(shape), dtype=np_dtype)
    return (torch.from_numpy(draw) * float(std)).to(device=device, dtype=dtype)


def state_for_checkpoint(generator: np.random.Generator) -> dict[str, Any]:
    """A replayable stream's state as plain lists (``torch.load(weights_only=True)`` safe)."""
    state = generator.bit_generator.state["state"]
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}


def restore_checkpoint_state(generator: np.random.Generator, saved: Mapping[str, Any]) -> None:
    """Put a replayable stream back where ``state_for_checkpoint`` found it."""
    full = generator.bit_generator.state
    dtypes = {k: v.dtype for k, v in full["state"].items() if isinstance(v, np.ndarray)}
    full["state"] = {k: (np.asarray(v, dtype=dtypes[k]) if k in dtypes else v)
                     for k, v in saved.items()}
    generator.bit_generator.state = full
