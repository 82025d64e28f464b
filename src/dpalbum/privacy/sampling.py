"""Poisson sampling over albums: each album joins a step's batch independently with probability q.

Privacy amplification by Poisson subsampling (what the accountants assume) holds only for this
scheme: batch sizes are random, Binomial(N, q), and an empty batch is still a step (noise only).
A shuffled fixed-size loader is a different mechanism and must never be accounted as this one.
The draws come from the mechanism's own sampling stream (``NoiseSource.stream(name,
"sampling", rank)``): a CSPRNG in secure mode, independent of every other mechanism.

On W processes (torch.distributed), rank r owns albums r, r + W, ... and draws each of them with
the same q from its own stream: every album still joins each step independently with
probability q, so the global batch is the single-process Poisson batch in distribution and the
accountant's q is unchanged. No seed is shared between ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .randomness import restore_checkpoint_state, state_for_checkpoint


class PoissonAlbumSampler:
    """Draws the album indices of each DP-SGD step from a (secure) NumPy generator."""

    def __init__(self, n_albums: int, sample_rate: float, generator: np.random.Generator,
                 rank: int = 0, world: int = 1) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} of world {world} is not a valid shard")
        self.n_albums = n_albums
        self.sample_rate = sample_rate
        self.owned = np.arange(rank, n_albums, world)  # this rank's albums (all when W = 1)
        self.generator = generator

    def sample(self) -> list[int]:
        """Indices of this rank's albums in the next batch (possibly none)."""
        draws = self.generator.random(len(self.owned))  # (N_rank,) uniform in [0, 1)
        return self.owned[draws < self.sample_rate].tolist()

    def state_dict(self) -> dict[str, Any]:
        """Replayable mode only: the stream's position (a secure stream's key is never saved)."""
        return {"generator": state_for_checkpoint(self.generator), "n_albums": self.n_albums,
                "sample_rate": self.sample_rate}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_albums"] != self.n_albums or state["sample_rate"] != self.sample_rate:
            raise ValueError("checkpointed sampler was built for a different N or sample rate")
        restore_checkpoint_state(self.generator, state["generator"])
