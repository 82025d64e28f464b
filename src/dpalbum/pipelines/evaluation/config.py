"""Typed parameter groups of the evaluation pipeline (``parameters_evaluation.yml``).

Kedro instantiates each dataclass from ``params:evaluation.<group>`` before the node runs, so a
typo in a key fails before any model is loaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import field
from pathlib import Path
from typing import Any

from dpalbum.models.text_encoder import EMBEDDED
from dpalbum.params import params

IMAGE_FEATURES = ("local", "inception", "clip")


@params
class ImageFidelityConfig:
    """Image metrics: which features, and the settings of KID and k-NN precision/recall."""

    image_features: str = "local"  # local: the evaluation network; inception: standard FID;
    # clip: a CLIP-style model's image embeddings (Fréchet distance "clip_fd")
    inception_weights_path: str | None = None  # FID Inception weights on local disk
    clip_model_name_or_path: str | None = None  # clip: a hub id or folder (CLIP, SigLIP)
    device: str = "auto"  # clip: where the image tower runs
    k: int = 3  # neighbours defining the k-NN balls of precision/recall
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_features not in IMAGE_FEATURES:
            raise ValueError(f"image_features must be one of {IMAGE_FEATURES}, got "
                             f"{self.image_features!r}")
        if self.image_features == "inception":
            check_inception_available(self.inception_weights_path)
        if self.image_features == "clip" and not self.clip_model_name_or_path:
            raise ValueError("parameters_evaluation.yml (evaluation.image_fidelity): "
                             "image_features: clip needs clip_model_name_or_path (e.g. "
                             "openai/clip-vit-base-patch32 or a local folder)")

    @property
    def fd_name(self) -> str:
        """The Fréchet distance's name in metrics.json, by feature space."""
        return {"local": "local_fd", "inception": "fid", "clip": "clip_fd"}[self.image_features]


def check_inception_available(weights_path: str | None) -> None:
    """Fail before the run (Kedro validates parameters first) when standard FID cannot run.

    Standard FID needs the FID Inception-v3 weights on local disk (no hub access here) and the
    torch-fidelity package, which torchmetrics uses to build that network.
    """
    where = "parameters_evaluation.yml (evaluation.image_fidelity)"
    if not weights_path or not Path(weights_path).is_file():
        raise ValueError(
            f"{where}: image_features: inception needs the FID Inception weights "
            f"(pt_inception-2015-12-05-6726825d.pth) on local disk, but inception_weights_path="
            f"{weights_path!r} is not a file. Download them where you have internet and set "
            "inception_weights_path to the file, or use image_features: local")
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ValueError(
            f"{where}: image_features: inception needs the torch-fidelity package (torchmetrics "
            "builds the FID Inception network with it): pip install torch-fidelity, or use "
            "image_features: local")


@params
class TextMetricsConfig:
    """Text fidelity and caption coherence: the sentence encoder and MAUVE's sample cap."""

    text_encoder: str = EMBEDDED  # the packaged MiniLM, or a sentence-transformers folder
    max_samples: int = 2000  # texts per side fed to MAUVE's k-means
    seed: int = 0


@params
class UtilityConfig:
    """Train-on-synthetic-test-on-real classifiers over album-mean evaluation features."""

    tasks: list[str] = field(default_factory=lambda: ["event", "protagonist"])
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - {"event", "protagonist"}
        if unknown:
            raise ValueError(f"utility.tasks: unknown {sorted(unknown)}; use event, protagonist")


@params
class MembershipConfig:
    """Loss-based membership inference on the summary and caption LMs."""

    max_length: int = 64  # tokens per row; keep equal to dp_training's
    batch_size: int = 64
    max_albums: int | None = None  # cap per side (None: every member and non-member)
    seed: int = 0


@params
class PrivacyAuditConfig:
    """The insertion audit (INTERNAL): canary albums planted in a dedicated audit run.

    With ``enabled`` the evaluation re-trains both LMs exactly like dp_training (same plan rules,
    DP-SGD, LoRA), on the private album texts plus ``n_inserted_canaries`` canary albums, keeps
    those models in memory only (never released), and attacks inserted vs held-out canaries.
    ``training`` overrides ``params:dp_training`` for the audit LMs only (the shipped
    parameters use a smaller expected batch, where one album leaves a stronger trace); the audit
    plans and charges its own ledger, so the audit LMs carry the run's ε whatever the override.
    """

    enabled: bool = False
    n_inserted_canaries: int = 50  # planted in the audit run's training set
    n_heldout_canaries: int = 100  # drawn alike, never trained on: the attack's negatives
    captions_per_canary: int = 4
    distinct_captions: int = 1  # secret captions per canary album, cycled over its photos
    words_per_text: int = 8  # random public words per canary summary / caption
    n_samples: int = 10000  # captions sampled from the audit LMs for the verbatim count
    captions_per_album: int = 5
    max_length: int = 64  # tokens per scored row; keep equal to dp_training's
    batch_size: int = 64
    training: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # canary texts and their inserted / held-out split
    sampling_seed: int = 1  # not the release's sampling seed: fresh samples

    def __post_init__(self) -> None:
        small = {k: v for k, v in (("n_inserted_canaries", self.n_inserted_canaries),
                                   ("n_heldout_canaries", self.n_heldout_canaries),
                                   ("captions_per_canary", self.captions_per_canary),
                                   ("distinct_captions", self.distinct_captions),
                                   ("words_per_text", self.words_per_text),
                                   ("captions_per_album", self.captions_per_album)) if v < 1}
        if self.enabled and min(self.n_inserted_canaries, self.n_heldout_canaries) < 2:
            small |= {"n_inserted_canaries / n_heldout_canaries": "need 2+ each"}
        if self.distinct_captions > self.captions_per_canary:
            small |= {"distinct_captions": "must be <= captions_per_canary"}
        if small or self.n_samples < 0:
            raise ValueError(f"evaluation.privacy_audit: invalid {small or self.n_samples}")


@params
class HeldoutTextsConfig:
    """How held-out albums get their texts (the same public captioner as the training albums)."""

    batch_size: int = 256  # photos per captioner forward pass
    device: str = "auto"


@params
class ReportConfig:
    """What report.html shows."""

    n_gallery_albums: int = 8
    n_public_samples: int = 16
    include_internal_metrics: bool = False  # True: an INTERNAL report, for the data team only
    thumbnail_px: int = 96  # display size of a photo (pixels are upscaled, not resampled)
    seed: int = 0
    # the MLflow UI that the report's run links open (a tracking server's own URL wins)
    mlflow_ui_url: str = "http://127.0.0.1:5000"


@params
class TrackingConfig:
    """Where internal metrics go: a child MLflow run tagged internal, or nowhere."""

    internal_metrics_to_mlflow: str = "internal_run"  # internal_run | none

    def __post_init__(self) -> None:
        if self.internal_metrics_to_mlflow not in ("internal_run", "none"):
            raise ValueError("evaluation.tracking.internal_metrics_to_mlflow must be internal_run "
                             f"or none, got {self.internal_metrics_to_mlflow!r}")
