"""Poisson sampling over albums: each album joins a step's batch independently with probability q.

Privacy amplification by Poisson subsampling (what the accountants assume) holds only for this
scheme: batch sizes are random, Binomial(N, q), and an empty batch is still a step (noise only).
A shuffled fixed-size loader is a different mechanism and must never be accounted as this one.

On W processes (torch.distributed), rank r owns albums r, r + W, ... and draws each of them with
the same q from its own generator: every album still joins each step independently with
probability q, so the global batch is the single-process Poisson batch in distribution and the
accountant's q is unchanged. (Opacus' DistributedUniformWithReplacementSampler does the same per
epoch; ours draws per step, so its generator state can be checkpointed between steps.)
"""

from __future__ import annotations

from typing import Any

import torch


class PoissonAlbumSampler:
    """Draws the album indices of each DP-SGD step; its generator state is checkpointed."""

    def __init__(self, n_albums: int, sample_rate: float, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} of world {world} is not a valid shard")
        self.n_albums = n_albums
        self.sample_rate = sample_rate
        self.owned = torch.arange(rank, n_albums, world)  # this rank's albums (all when W = 1)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> list[int]:
        """Indices of this rank's albums in the next batch (possibly none)."""
        draws = torch.rand(len(self.owned), generator=self.generator)  # (N_rank,)
        return self.owned[draws < self.sample_rate].tolist()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "n_albums": self.n_albums,
                "sample_rate": self.sample_rate}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_albums"] != self.n_albums or state["sample_rate"] != self.sample_rate:
            raise ValueError("checkpointed sampler was built for a different N or sample rate")
        self.generator.set_state(state["generator"])
