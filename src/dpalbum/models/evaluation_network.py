"""The evaluation feature extractor: a small CNN trained here on PUBLIC images only.

Its penultimate features feed the *local* Fréchet distance ("local FD"), KID and k-NN
precision/recall of the evaluation pipeline; its attribute heads (scene, protagonist colour and
shape, objects as multi-label) read the demo world's labels back from any photo, rendered or real.
Inception weights cannot be downloaded here, so numbers on these features are local: comparable
between runs of this project, not with published FID. A user with Inception weights on disk
switches the image metrics to the standard extractor (``inception_extractor``), one with a CLIP
(or SigLIP) model to its image embeddings (``ClipImageFeatures``).

The network never sees private data while training; the evaluation pipeline applies it to private
photos only to measure (internal metrics), like the public captioner does.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from dpalbum.models.captioner import corpus_labels, corpus_targets

logger = logging.getLogger(__name__)

CONFIG_FILE = "evaluation_network.json"
WEIGHTS_FILE = "model.safetensors"
SINGLE_LABEL: tuple[str, ...] = ("scene", "colour", "shape")  # one class per image
MULTI_LABEL = "objects"  # space-joined object names in the public corpus (may be empty)


@dataclass
class EvaluationNetworkConfig:
    """Architecture and public-data training of the evaluation network."""

    image_size: int = 32
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    feature_dim: int = 128  # width of the penultimate layer: the local FD feature space
    object_threshold: float = 0.5
    objects_loss_weight: float = 4.0  # small objects are learnt last: weigh their loss up
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    max_train_images: int | None = 8000  # public images used (None: all); CPU time budget
    heldout_fraction: float = 0.1  # public images kept aside to report accuracy
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available
    inference_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.feature_dim < 2 or not self.channels:
            raise ValueError("evaluation network: need feature_dim >= 2 and at least one channel "
                             f"width, got feature_dim={self.feature_dim}, "
                             f"channels={self.channels}")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


def resolve_device(device: str) -> str:
    """``auto`` means the GPU when there is one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def to_uint8_batch(images: Sequence[np.ndarray], image_size: int) -> torch.Tensor:
    """RGB arrays (H, W, 3) uint8 to one (B, 3, S, S) uint8 tensor, resized where needed."""
    arrays = []
    for image in images:
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
        if array.shape[:2] != (image_size, image_size):
            array = np.asarray(Image.fromarray(array).resize((image_size, image_size),
                                                             Image.BILINEAR))
        arrays.append(array)
    if not arrays:
        return torch.zeros((0, 3, image_size, image_size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S)


class EvaluationNetwork(nn.Module):
    """CNN backbone -> penultimate features (B, feature_dim) -> one head per attribute."""

    def __init__(self, labels: dict[str, list[str]], channels: Sequence[int] = (16, 32, 64),
                 feature_dim: int = 128, image_size: int = 32,
                 object_threshold: float = 0.5) -> None:
        super().__init__()
        missing = [n for n in (*SINGLE_LABEL, MULTI_LABEL) if n not in labels]
        if missing:
            raise ValueError(f"evaluation network needs label lists for {missing}")
        self.labels = {name: list(values) for name, values in labels.items()}
        self.channels = list(channels)
        self.feature_dim = feature_dim
        self.image_size = image_size
        self.object_threshold = object_threshold
        self.training_report: dict[str, Any] = {}
        blocks: list[nn.Module] = []
        c_in = 3
        for c_out in self.channels:
            # One conv per resolution: demo-world images are simple, and CPU time is scarce.
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.backbone = nn.Sequential(*blocks)
        # Average pooling sees the scene, max pooling keeps small objects from washing out.
        self.project = nn.Sequential(nn.Linear(2 * c_in, feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict(
            {name: nn.Linear(feature_dim, len(values)) for name, values in self.labels.items()}
        )

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) to float in about [-2, 2]."""
        return (images.float() / 255.0 - 0.5) / 0.25

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) of uint8 images (B, 3, H, W)."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images.float(), size=(self.image_size, self.image_size),
                                   mode="bilinear", antialias=True, align_corners=False)
        x = self.backbone(self.normalise(images))  # (B, C, h, w)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.project(pooled)  # (B, D)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute for uint8 images (B, 3, H, W)."""
        feats = self.features(images)
        return {name: head(feats) for name, head in self.heads.items()}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Penultimate features of RGB arrays, (N, feature_dim) float32."""
        self.eval()
        out = [self.features(to_uint8_batch(images[i:i + batch_size], self.image_size)
                             .to(self.device)).cpu()
               for i in range(0, len(images), batch_size)]
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], batch_size: int = 256) -> list[dict[str, Any]]:
        """Scene, colour, shape (argmax) and objects (above threshold) for each RGB array."""
        self.eval()
        predictions: list[dict[str, Any]] = []
        for start in range(0, len(images), batch_size):
            batch = to_uint8_batch(images[start:start + batch_size], self.image_size)
            logits = self(batch.to(self.device))
            best = {n: logits[n].argmax(dim=1).tolist() for n in SINGLE_LABEL}
            present = (torch.sigmoid(logits[MULTI_LABEL]) > self.object_threshold).tolist()
            for i in range(len(batch)):
                attrs: dict[str, Any] = {n: self.labels[n][best[n][i]] for n in SINGLE_LABEL}
                attrs[MULTI_LABEL] = [o for o, p in zip(self.labels[MULTI_LABEL], present[i]) if p]
                predictions.append(attrs)
        return predictions

    def save_pretrained(self, path: str) -> None:
        """Write the config JSON (labels, architecture, training report) and safetensors weights."""
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"kind": "dpalbum evaluation network (trained on public images only)",
                  "labels": self.labels, "channels": self.channels,
                  "feature_dim": self.feature_dim, "image_size": self.image_size,
                  "object_threshold": self.object_threshold,
                  "training_report": self.training_report}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, path: str) -> EvaluationNetwork:
        """Load a folder written by ``save_pretrained``."""
        from safetensors.torch import load_file

        folder = Path(path)
        if not (folder / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{folder / CONFIG_FILE} is missing: {path} is not an "
                                    "evaluation network folder (run the evaluation pipeline's "
                                    "train_evaluation_network_node)")
        config = json.loads((folder / CONFIG_FILE).read_text())
        model = cls(config["labels"], config["channels"], config["feature_dim"],
                    config["image_size"], config["object_threshold"])
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        model.training_report = config.get("training_report", {})
        return model.eval()


def load_evaluation_network(path: str) -> EvaluationNetwork:
    """The loader named in the catalog (``dpalbum.models.io.ModelFolderDataset``)."""
    return EvaluationNetwork.from_pretrained(path)


class FeatureExtractor(nn.Module):
    """The penultimate layer as a torchmetrics feature extractor: uint8 (B, 3, H, W) -> (B, D)."""

    def __init__(self, network: EvaluationNetwork) -> None:
        super().__init__()
        self.network = network.eval()
        self.num_features = network.feature_dim

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.features(images.to(self.network.device))


def inception_extractor(weights_path: str) -> nn.Module:
    """torchmetrics' Inception-v3 (2048-d pool features) from weights on local disk."""
    if not weights_path or not Path(weights_path).exists():
        raise FileNotFoundError(
            f"image_features: inception needs the FID Inception weights on disk "
            f"(inception_weights_path={weights_path!r} not found); download "
            "pt_inception-2015-12-05-6726825d.pth where you have internet, or use "
            "image_features: local")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as exc:  # torchmetrics hides the class when torch-fidelity is missing
        raise ImportError("image_features: inception needs torch-fidelity "
                          "(pip install torch-fidelity)") from exc
    return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                              feature_extractor_weights_path=weights_path)


@functools.lru_cache(maxsize=2)
def clip_image_features(model_name_or_path: str, device: str = "auto") -> ClipImageFeatures:
    """The CLIP feature extractor, loaded once per process (both sides of a comparison)."""
    return ClipImageFeatures(model_name_or_path, device)


class ClipImageFeatures:
    """A pretrained CLIP-style image tower (hub id or folder) as an image feature extractor:
    its projected image embeddings (``get_image_features``), photos resized by its own image
    processor. Public weights, fp32 (Fréchet distances are sensitive to rounding)."""

    def __init__(self, model_name_or_path: str, device: str = "auto") -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.model_name_or_path = model_name_or_path
        self.device = resolve_device(device)
        self.model = AutoModel.from_pretrained(model_name_or_path).to(self.device).eval()
        if not hasattr(self.model, "get_image_features"):
            raise ValueError(f"image_features: clip needs a model with an image tower "
                             f"(get_image_features, e.g. CLIP or SigLIP); {model_name_or_path} "
                             f"is a {type(self.model).__name__}")
        self.processor = AutoImageProcessor.from_pretrained(model_name_or_path)

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """(N, D) float32 image embeddings of RGB uint8 arrays (H, W, 3)."""
        out = []
        for start in range(0, len(images), batch_size):
            pil = [Image.fromarray(np.asarray(im, dtype=np.uint8))
                   for im in images[start:start + batch_size]]
            pixels = self.processor(images=pil, return_tensors="pt")["pixel_values"]
            features = self.model.get_image_features(
                pixel_values=pixels.to(self.device, torch.float32))
            if not isinstance(features, torch.Tensor):  # transformers 5: an output object
                features = features.pooler_output  # the projected embedding
            out.append(features.float().cpu())  # (B, D)
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)


# ---- training on the public corpus --------------------------------------------------------------

# label space and targets: shared with the captioner (same public corpus columns)


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes to an (H, W, 3) uint8 RGB array."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def heldout_accuracy(model: EvaluationNetwork, images: torch.Tensor,
                     targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy per single-label head, protagonist (colour and shape) and objects micro-F1."""
    model.eval()
    with torch.no_grad():
        logits = model(images.to(model.device))
    hit = {n: (logits[n].argmax(1).cpu() == targets[n]) for n in SINGLE_LABEL}
    report = {f"{n}_accuracy": hit[n].float().mean().item() for n in SINGLE_LABEL}
    report["protagonist_accuracy"] = (hit["colour"] & hit["shape"]).float().mean().item()
    pred = (torch.sigmoid(logits[MULTI_LABEL]).cpu() > model.object_threshold).float()
    true = targets[MULTI_LABEL]
    denom = (pred.sum() + true.sum()).item()
    report["objects_f1"] = 2 * (pred * true).sum().item() / denom if denom else 1.0
    return {k: round(v, 4) for k, v in report.items()}


def train_evaluation_network(corpus: pd.DataFrame,
                             config: EvaluationNetworkConfig) -> EvaluationNetwork:
    """Train on PUBLIC images (all heads jointly); report accuracy on public held-out images."""
    labels = corpus_labels(corpus)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(corpus), generator=generator)
    if config.max_train_images is not None:
        order = order[:config.max_train_images]
    corpus = corpus.iloc[order.tolist()].reset_index(drop=True)
    images = to_uint8_batch([decode_png(b) for b in corpus["image"]], config.image_size)
    targets = corpus_targets(corpus, labels)
    n_heldout = int(round(config.heldout_fraction * len(corpus)))
    heldout, train = torch.arange(n_heldout), torch.arange(n_heldout, len(corpus))
    if len(train) == 0:
        raise ValueError(f"public corpus has {len(corpus)} usable images: too few to train the "
                         "evaluation network")

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = EvaluationNetwork(labels, config.channels, config.feature_dim, config.image_size,
                              config.object_threshold).to(device)
    steps = math.ceil(len(train) / config.batch_size) * config.epochs
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate,
                                                   total_steps=steps)
    model.train()
    with tqdm(total=steps, unit="step", desc="evaluation network on public images") as progress:
        for _epoch in range(config.epochs):
            shuffled = train[torch.randperm(len(train), generator=generator)]
            for start in range(0, len(shuffled), config.batch_size):
                idx = shuffled[start:start + config.batch_size]
                batch = images[idx]  # (B, 3, S, S) uint8
                flip = torch.rand(len(idx), generator=generator) < 0.5
                batch[flip] = batch[flip].flip(dims=(3,))  # the demo world is mirror-symmetric
                logits = model(batch.to(device))
                loss = sum(F.cross_entropy(logits[n], targets[n][idx].to(device))
                           for n in SINGLE_LABEL)
                loss = loss + config.objects_loss_weight * F.binary_cross_entropy_with_logits(
                    logits[MULTI_LABEL], targets[MULTI_LABEL][idx].to(device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}")
    report: dict[str, Any] = {"n_train": len(train), "n_heldout": n_heldout,
                              "config": asdict(config), "data": "public corpus only"}
    if n_heldout:
        report["public_heldout"] = heldout_accuracy(
            model, images[heldout], {k: v[heldout] for k, v in targets.items()})
        logger.info("evaluation network, public held-out accuracy: %s", report["public_heldout"])
    model.training_report = report
    return model.cpu().eval()
