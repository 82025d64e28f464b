"""A Kedro dataset for model folders: ``save_pretrained`` on save, a named loader on load.

Models never go through pickle (unsafe to load, tied to class layout): anything with a
``save_pretrained(folder)`` method (transformers / peft / diffusers models, tokenizers, dpalbum's
captioners) is written as a folder of config files and safetensors, and read back by the loader
named in the catalog, e.g. ``dpalbum.models.captioner.load_captioner`` or
``transformers.AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

MARKER = ".dpalbum_model"  # written in every folder this dataset saves: only those are replaced


def resolve_callable(dotted: str) -> Callable[..., Any]:
    """Import ``package.module.attr[.attr]`` (e.g. a classmethod like ``X.from_pretrained``)."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # a shorter prefix may be the module, the rest attributes
            raise  # the module exists but one of its own imports is missing
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        if callable(obj):
            return obj
        break
    raise DatasetError(f"loader {dotted!r} is not an importable callable")


class ModelFolderDataset(AbstractDataset[Any, Any]):
    """A model saved as a folder with ``save_pretrained`` and loaded with ``loader(path)``.

    Example catalog entry::

        captioner_model:
          type: dpalbum.models.io.ModelFolderDataset
          path: data/06_models/captioner
          loader: dpalbum.models.captioner.load_captioner
    """

    def __init__(self, path: str, loader: str, load_args: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self._loader = loader
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    @property
    def path(self) -> Path:
        """The model folder."""
        return self._path

    def load(self) -> Any:
        if not self._exists():
            raise DatasetError(f"no model folder at {self._path}: run the node that writes it "
                               "first (e.g. `kedro run --pipelines captioning`)")
        return resolve_callable(self._loader)(str(self._path), **self._load_args)

    def save(self, data: Any) -> None:
        if not hasattr(data, "save_pretrained"):
            raise DatasetError(f"{type(data).__name__} has no save_pretrained(folder): "
                               f"cannot save it to {self._path} (pickle is not an option)")
        if self._path.exists() and any(self._path.iterdir()) and not (self._path / MARKER).exists():
            raise DatasetError(f"{self._path} holds files dpalbum did not write; refusing to "
                               "replace it. Point the catalog entry at an empty or new folder.")
        # Write next to the target, then swap: a crash mid-save never leaves half a model.
        staging = self._path.with_name(self._path.name + ".saving")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        data.save_pretrained(str(staging))
        (staging / MARKER).write_text(f"written by {type(self).__module__}.{type(self).__name__}\n")
        shutil.rmtree(self._path, ignore_errors=True)
        staging.rename(self._path)

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self._path.iterdir())

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "loader": self._loader, "load_args": self._load_args}
