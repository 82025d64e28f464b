"""Poisson sampling over albums: each album joins a step's batch independently with probability q.

Privacy amplification by Poisson subsampling (what the accountants assume) holds only for this
scheme: batch sizes are random, Binomial(N, q), and an empty batch is still a step (noise only).
A shuffled fixed-size loader is a different mechanism and must never be accounted as this one.
"""

from __future__ import annotations

from typing import Any

import torch


class PoissonAlbumSampler:
    """Draws the album indices of each DP-SGD step; its generator state is checkpointed."""

    def __init__(self, n_albums: int, sample_rate: float, seed: int) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.n_albums = n_albums
        self.sample_rate = sample_rate
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> list[int]:
        """Indices of the albums in the next batch (possibly none)."""
        draws = torch.rand(self.n_albums, generator=self.generator)  # (N,)
        return torch.nonzero(draws < self.sample_rate).flatten().tolist()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "n_albums": self.n_albums,
                "sample_rate": self.sample_rate}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_albums"] != self.n_albums or state["sample_rate"] != self.sample_rate:
            raise ValueError("checkpointed sampler was built for a different N or sample rate")
        self.generator.set_state(state["generator"])
