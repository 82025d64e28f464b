"""``DeferredDataset``: hands a node a handle on a dataset instead of its contents.

Kedro loads every input of a node before calling it. The renderer's DP fine-tune reads the
PRIVATE albums only when ``rendering.dp_finetune.enabled`` is true, and only after it has checked
that the privacy plan holds its mechanism; with the inner dataset deferred, a run with the
fine-tune off opens no private file at all::

    private_albums_for_renderer:
      type: dpalbum.pipelines.rendering.datasets.DeferredDataset
      dataset:
        type: dpalbum.albums.dataset.AlbumFolderDataset
        path: data/01_raw/albums

The node calls ``handle.load()`` when (and if) it needs the data. Read-only.
"""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError


class DeferredLoad:
    """A not-yet-read dataset: ``load()`` reads it (each call reads again)."""

    def __init__(self, dataset: AbstractDataset, name: str) -> None:
        self._dataset = dataset
        self.name = name
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        return self._dataset.load()

    def __repr__(self) -> str:
        return f"DeferredLoad({self.name}: {self._dataset!r}, loads={self.loads})"


class DeferredDataset(AbstractDataset[None, DeferredLoad]):
    """Wraps a dataset (a catalog config dict or a dataset object); loading it reads nothing."""

    def __init__(self, dataset: dict[str, Any] | AbstractDataset,
                 metadata: dict[str, Any] | None = None) -> None:
        if isinstance(dataset, AbstractDataset):
            self._dataset = dataset
        elif isinstance(dataset, dict) and "type" in dataset:
            self._dataset = AbstractDataset.from_config("deferred", dict(dataset))
        else:
            raise DatasetError(f"DeferredDataset needs `dataset:` as a catalog entry with a type "
                               f"(or a dataset object), got {dataset!r}")
        self.metadata = metadata

    def load(self) -> DeferredLoad:
        return DeferredLoad(self._dataset, type(self._dataset).__name__)

    def save(self, data: None) -> None:
        raise DatasetError("DeferredDataset is read-only: save to the wrapped dataset's own "
                           "catalog entry instead")

    def _exists(self) -> bool:
        return self._dataset.exists()

    def _describe(self) -> dict[str, Any]:
        return {"deferred": self._dataset._describe()}
