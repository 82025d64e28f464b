"""Typed parameter groups of the evaluation pipeline (``parameters_evaluation.yml``).

Kedro instantiates each dataclass from ``params:evaluation.<group>`` before the node runs, so a
typo in a key fails before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dpalbum.models.text_encoder import EMBEDDED


@dataclass
class ImageFidelityConfig:
    """Image metrics: which features, and the settings of KID and k-NN precision/recall."""

    image_features: str = "local"  # local: the evaluation network; inception: standard FID
    inception_weights_path: str | None = None  # FID Inception weights on local disk
    k: int = 3  # neighbours defining the k-NN balls of precision/recall
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_features not in ("local", "inception"):
            raise ValueError(f"image_features must be 'local' or 'inception', got "
                             f"{self.image_features!r}")


@dataclass
class TextMetricsConfig:
    """Text fidelity and caption coherence: the sentence encoder and MAUVE's sample cap."""

    text_encoder: str = EMBEDDED  # the packaged MiniLM, or a sentence-transformers folder
    max_samples: int = 2000  # texts per side fed to MAUVE's k-means
    seed: int = 0


@dataclass
class UtilityConfig:
    """Train-on-synthetic-test-on-real classifiers over album-mean evaluation features."""

    tasks: list[str] = field(default_factory=lambda: ["event", "protagonist"])
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - {"event", "protagonist"}
        if unknown:
            raise ValueError(f"utility.tasks: unknown {sorted(unknown)}; use event, protagonist")


@dataclass
class MembershipConfig:
    """Loss-based membership inference on the summary and caption LMs."""

    max_length: int = 64  # tokens per row; keep equal to dp_training's
    batch_size: int = 64
    max_albums: int | None = None  # cap per side (None: every member and non-member)
    seed: int = 0


@dataclass
class CanaryConfig:
    """Canary regeneration: how many captions the audit samples from the LMs."""

    n_samples: int = 200  # 10000 in the dedicated audit run
    captions_per_album: int = 5
    seed: int = 1


@dataclass
class HeldoutTextsConfig:
    """How held-out albums get their texts (the same public captioner as the training albums)."""

    batch_size: int = 256  # photos per captioner forward pass
    device: str = "auto"


@dataclass
class ReportConfig:
    """What report.html shows."""

    n_gallery_albums: int = 8
    n_public_samples: int = 16
    include_internal_metrics: bool = True  # False: a report safe to release with the data
    thumbnail_px: int = 96  # display size of a photo (pixels are upscaled, not resampled)
    seed: int = 0
