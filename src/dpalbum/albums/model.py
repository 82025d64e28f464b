"""The album data model shared by every pipeline: one album is one event, the privacy unit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Photo:
    """One photo of an album: its file name inside the album and its RGB pixels."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8, RGB, already oriented and resized
    caption: str | None = None


@dataclass
class Album:
    """One album (the privacy unit): an id, its photos in order and free-form metadata."""

    album_id: str
    photos: list[Photo]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.photos)


@dataclass
class AlbumSet:
    """Albums read from (or to be written to) an album folder, with the ingestion report."""

    albums: list[Album]
    report: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.albums)

    def __iter__(self):
        return iter(self.albums)

    @property
    def n_photos(self) -> int:
        return sum(len(a) for a in self.albums)
