"""A Kedro dataset for renderer folders (either backend), written with ``save_pretrained``.

Same guarantees as :class:`dpalbum.models.io.ModelFolderDataset` (no pickle; atomic replace; only
folders dpalbum wrote are replaced), with the loader fixed to
:func:`dpalbum.models.renderer.load_renderer`::

    renderer_model:
      type: dpalbum.models.renderer_io.RendererFolderDataset
      path: data/06_models/renderer
      device: auto        # optional: where the loaded renderer runs (default: as saved)
"""

from __future__ import annotations

from typing import Any

from kedro.io import DatasetError

from dpalbum.models.io import ModelFolderDataset

LOADER = "dpalbum.models.renderer.load_renderer"


class RendererFolderDataset(ModelFolderDataset):
    """A renderer saved as a folder: ``renderer.json`` + safetensors (see ``models/renderer.py``).
    """

    def __init__(self, path: str, device: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(path=path, loader=LOADER,
                         load_args={"device": device} if device else None, metadata=metadata)

    def save(self, data: Any) -> None:
        from dpalbum.models.renderer import EmbeddedRenderer, PretrainedRenderer

        if not isinstance(data, EmbeddedRenderer | PretrainedRenderer):
            raise DatasetError(f"RendererFolderDataset({self._path}) saves dpalbum renderers, got "
                               f"{type(data).__name__}")
        super().save(data)
