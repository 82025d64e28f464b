"""A parquet table whose kedro-viz preview is JSON: image bytes and array cells are summarised.

kedro-datasets' ``ParquetDataset.preview`` hands the first rows to kedro-viz as they are, and a
PNG ``bytes`` cell (the public corpus) or a numpy array cell (centroids, caption lists) cannot be
serialised: the node's page answered HTTP 500. Load and save are kedro-datasets' own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from kedro_datasets._typing import TablePreview
from kedro_datasets.pandas import ParquetDataset

MAX_ITEMS = 8  # array cells show at most this many items in a preview


def preview_cell(value: Any) -> Any:
    """A JSON-safe stand-in for one cell: bytes as their size, arrays as a short list."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        items = [preview_cell(v) for v in value[:MAX_ITEMS]]
        return items + [f"... {len(value) - MAX_ITEMS} more"] if len(value) > MAX_ITEMS else items
    if isinstance(value, np.generic):
        return value.item()
    return value


class PreviewableParquetDataset(ParquetDataset):
    """``pandas.ParquetDataset`` with a preview kedro-viz can serve (bytes, arrays summarised)."""

    def preview(self, nrows: int = 5) -> TablePreview:  # the annotation names kedro-viz's view
        table = super().preview(nrows=nrows)
        table["data"] = [[preview_cell(v) for v in row] for row in table["data"]]
        return table
