"""Photo captioners: the embedded attribute captioner (trained here) or a pretrained HF model.

``embedded`` is an *attribute captioner*, not a free-text model: a small CNN with one head per
caption attribute (scene, protagonist colour, protagonist shape, objects as multi-label) trained
on the PUBLIC corpus; its predictions fill the demo world's caption template
(``dpalbum.albums.vocabulary.caption_for``). It is fast on CPU and its accuracy is easy to read.
``pretrained`` wraps any Hugging Face image-to-text model (BLIP, GIT, Florence-2, a
VisionEncoderDecoder, ...) loaded by id or local folder; vision-chat models that need a text
prompt get it from ``CaptionerConfig.prompt``.

Both captioners are public models: they read private photos only to caption them, after the
privacy plan was checked; their weights never see private data.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from dpalbum.albums.vocabulary import Protagonist, caption_for
from dpalbum.params import params

logger = logging.getLogger(__name__)

CONFIG_FILE = "captioner.json"  # which backend a saved captioner folder holds, and its settings
WEIGHTS_FILE = "model.safetensors"
SINGLE_LABEL = ("scene", "colour", "shape")  # public corpus columns, one class per image
MULTI_LABEL = "objects"  # public corpus column: space-joined object names (may be empty)
TORCH_DTYPES = ("float32", "bfloat16", "float16")  # precisions of pretrained inference models
SIZE_KEYS = ("height", "width", "shortest_edge", "longest_edge")  # an image processor's sides


@params
class CaptionerConfig:
    """How photos are captioned (``params:captioning.captioner``)."""

    backend: str = "embedded"  # "embedded" (attribute captioner trained here) or "pretrained"
    device: str = "auto"  # "auto": cuda when available, else cpu
    batch_size: int = 256  # photos per forward pass when captioning
    seed: int = 0
    # pretrained backend
    model_name_or_path: str | None = None  # any HF image-to-text model id or local folder
    prompt: str | None = None  # text prompt for models that need one (vision-chat models)
    max_new_tokens: int = 30
    store_weights: bool = True  # copy the weights into the model folder (False: keep the id)
    torch_dtype: str = "float32"  # float32 | bfloat16 | float16: inference only (public model)
    # embedded backend: architecture
    image_size: int = 32
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    object_threshold: float = 0.5
    # embedded backend: training on the public corpus
    epochs: int = 6
    train_batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    augment: bool = True  # random horizontal flips
    heldout_fraction: float = 0.1  # public images kept aside to report accuracy

    def __post_init__(self) -> None:
        if self.torch_dtype not in TORCH_DTYPES:
            raise ValueError(f"captioning.captioner.torch_dtype must be one of {TORCH_DTYPES}, "
                             f"got {self.torch_dtype!r}")


@params
class DomainCheckConfig:
    """Whether photos are the kind the embedded captioner was made for
    (``params:captioning.domain_check``); thresholds come from PUBLIC data only."""

    heldout_percentile: float = 5.0  # τ = this percentile of its confidence on PUBLIC held-out
    max_low_confidence_share: float = 0.25  # out of domain: more photos than this below τ


@params
class AlbumSource:
    """``params:album_source`` (derived in parameters.yml): whether the albums are the demo
    world's own; public facts about the run, no private data. Which captioner wrote the album
    texts is ``params:captioning.captioner`` itself, handed to ``provenance`` by the node (an
    interpolation in conf/base could not see a conf/local or profile override: Kedro resolves
    each environment on its own before merging them)."""

    demo_world: bool = True

    def provenance(self, captioner: CaptionerConfig | dict[str, Any]) -> dict[str, Any]:
        return captioner_provenance(captioner, self.demo_world)


PRETRAINED_HINT = (
    'kedro run --params "captioning.captioner.backend=pretrained,'
    'captioning.captioner.model_name_or_path=Salesforce/blip-image-captioning-base" (any Hugging '
    "Face image-to-text model id or local folder)")
DEMO_VOCABULARY_NOTE = (
    "the embedded captioner is a demo-world model: it names only the demo world's scenes and "
    "coloured shapes, so on other photos its texts are out of domain")


class CaptionerOutOfDomainError(ValueError):
    """The embedded captioner was asked to caption photos it was not made for."""


def check_domain(captioner: Any, images: Sequence[np.ndarray], config: DomainCheckConfig,
                 batch_size: int = 256) -> dict[str, Any]:
    """INTERNAL (reads private photos): does the embedded captioner know these photos?

    τ is a percentile of the captioner's confidence on PUBLIC held-out images (its training
    report); the photos are out of domain when more than ``max_low_confidence_share`` of them
    fall below τ (in domain: about ``heldout_percentile`` % do). Only the decision and counts
    leave this function. A pretrained captioner is not checked (no demo-world reference)."""
    result: dict[str, Any] = {"captioner": getattr(captioner, "kind", type(captioner).__name__),
                              "n_photos": len(images)}
    reference = getattr(captioner, "training_report", {}).get(
        "public_heldout_confidence_percentiles")
    if not isinstance(captioner, AttributeCaptioner) or not reference or not len(images):
        why = ("pretrained captioner: it is not a demo-world model" if not isinstance(
            captioner, AttributeCaptioner) else "no photo" if not len(images) else
            "the captioner has no public held-out confidences (retrain it)")
        return {**result, "checked": False, "in_domain": True, "why_not_checked": why}
    threshold = float(np.interp(config.heldout_percentile, np.arange(len(reference)), reference))
    low = int((captioner.confidence(list(images), batch_size) < threshold).sum())
    share = low / len(images)
    return {**result, "checked": True, "threshold": round(threshold, 6),
            "threshold_from": f"percentile {config.heldout_percentile:g} of the confidence on "
                              "PUBLIC held-out images",
            "n_low_confidence": low, "low_confidence_share": round(share, 4),
            "max_low_confidence_share": config.max_low_confidence_share,
            "in_domain": share <= config.max_low_confidence_share}


def out_of_domain_message(check: dict[str, Any]) -> str:
    """Why the run stops, and the two ways on (a pretrained captioner, or the override)."""
    return (
        f"Captioning stopped before any DP training: {DEMO_VOCABULARY_NOTE}. On these albums "
        f"{check['n_low_confidence']} of {check['n_photos']} photos "
        f"({check['low_confidence_share']:.0%}, limit "
        f"{check['max_low_confidence_share']:.0%}) are below its confidence threshold "
        f"{check['threshold']:.3f} ({check['threshold_from']}), so its captions would be "
        f"nonsense such as 'a black square in the city'. Caption real photos with a pretrained "
        f"captioner: {PRETRAINED_HINT}. To go on with the embedded captioner anyway: "
        f"--params captioning.allow_out_of_domain=true (the data card and report then say its "
        f"texts are out of domain). Only the album count was spent from the privacy budget.")


def captioner_provenance(captioner: CaptionerConfig | dict[str, Any],
                         demo_world_albums: bool) -> dict[str, Any]:
    """Which captioner wrote the album texts, and whether they are out of domain: from the
    configuration only (public), for the data card and the report."""
    config = captioner if isinstance(captioner, dict) else vars(captioner)
    backend = config.get("backend", "embedded")
    name = ("embedded attribute captioner (demo world; trained on the public demo corpus)"
            if backend == "embedded" else
            f"pretrained image-to-text captioner {config.get('model_name_or_path')}")
    out_of_domain = backend == "embedded" and not demo_world_albums
    return {"captioner": name, "backend": backend, "demo_world_albums": bool(demo_world_albums),
            "out_of_domain": out_of_domain,
            "statement": (f"OUT OF DOMAIN: {DEMO_VOCABULARY_NOTE}; these albums are not the demo "
                          "world's, so the album texts (and everything learnt from them) describe "
                          "the demo world's vocabulary, not the photos" if out_of_domain else
                          "in domain" if backend == "embedded" else
                          "captions written by the pretrained model named here")}


def torch_dtype_of(name: str) -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` as a torch dtype (names the bad value)."""
    if name not in TORCH_DTYPES:
        raise ValueError(f"torch_dtype must be one of {TORCH_DTYPES}, got {name!r}")
    return getattr(torch, name)


def resolve_device(device: str) -> str:
    """``auto`` means the GPU when there is one; anything else is passed to torch as is."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def decode_png(data: bytes, image_size: int | None = None) -> np.ndarray:
    """PNG/JPEG bytes to an (H, W, 3) uint8 RGB array, resized to ``image_size`` if given."""
    with Image.open(io.BytesIO(data)) as image:
        return to_rgb_array(image.convert("RGB"), image_size)


def to_rgb_array(image: Image.Image | np.ndarray, image_size: int | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 array, resized (bilinear) to a square ``image_size`` when it differs."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {array.shape}")
    if image_size is not None and array.shape[:2] != (image_size, image_size):
        resized = Image.fromarray(array).resize((image_size, image_size), Image.BILINEAR)
        array = np.asarray(resized, dtype=np.uint8)
    return array


class AttributeCaptioner(nn.Module):
    """Embedded attribute captioner: a small CNN with one head per caption attribute."""

    kind = "embedded attribute captioner"

    def __init__(self, labels: dict[str, list[str]], channels: Sequence[int] = (32, 64, 128),
                 image_size: int = 32, object_threshold: float = 0.5) -> None:
        super().__init__()
        missing = [n for n in (*SINGLE_LABEL, MULTI_LABEL) if n not in labels]
        if missing:
            raise ValueError(f"attribute captioner needs label lists for {missing}")
        self.labels = {name: list(values) for name, values in labels.items()}
        self.channels = list(channels)
        self.image_size = image_size
        self.object_threshold = object_threshold
        self.training_report: dict[str, Any] = {}
        blocks: list[nn.Module] = []
        c_in = 3
        for c_out in self.channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.backbone = nn.Sequential(*blocks)
        # Average pooling sees the scene; max pooling keeps small objects from washing out.
        self.heads = nn.ModuleDict(
            {name: nn.Linear(2 * c_in, len(values)) for name, values in self.labels.items()}
        )

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute for float images in [-2, 2], (B, 3, H, W)."""
        features = self.backbone(pixels)  # (B, C, h, w)
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return {name: head(pooled) for name, head in self.heads.items()}

    @staticmethod
    def to_pixels(images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) to normalised float (B, 3, H, W)."""
        return (images.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.25

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], batch_size: int = 256) -> list[dict[str, Any]]:
        """Attributes per image: scene, colour, shape (argmax) and objects (above threshold)."""
        self.eval()
        device = next(self.parameters()).device
        predictions: list[dict[str, Any]] = []
        for start in range(0, len(images), batch_size):
            chunk = np.stack([to_rgb_array(im, self.image_size)
                              for im in images[start:start + batch_size]])
            logits = self(self.to_pixels(torch.from_numpy(chunk).to(device)))
            best = {n: logits[n].argmax(dim=1).tolist() for n in SINGLE_LABEL}
            present = (torch.sigmoid(logits[MULTI_LABEL]) > self.object_threshold).tolist()
            for i in range(len(chunk)):
                attrs: dict[str, Any] = {n: self.labels[n][best[n][i]] for n in SINGLE_LABEL}
                attrs[MULTI_LABEL] = [o for o, p in zip(self.labels[MULTI_LABEL], present[i]) if p]
                predictions.append(attrs)
        return predictions

    @torch.no_grad()
    def confidence(self, images: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Per image, the mean over scene, colour and shape of the top class probability: near 1
        on the photos it was trained for, lower on photos it knows nothing about. (N,) float."""
        self.eval()
        device = next(self.parameters()).device
        scores: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk = np.stack([to_rgb_array(im, self.image_size)
                              for im in images[start:start + batch_size]])
            logits = self(self.to_pixels(torch.from_numpy(chunk).to(device)))
            top = torch.stack([logits[n].softmax(dim=1).amax(dim=1) for n in SINGLE_LABEL])
            scores.append(top.mean(dim=0).cpu().numpy())  # (B,)
        return np.concatenate(scores) if scores else np.zeros(0)

    @property
    def input_size(self) -> int:
        """The side (pixels) photos are resized to before the CNN sees them."""
        return self.image_size

    def caption(self, images: Sequence[np.ndarray], batch_size: int = 256) -> list[str]:
        """One demo-world caption per image, in input order."""
        return [caption_for(Protagonist(p["colour"], p["shape"]), p["scene"], p[MULTI_LABEL])
                for p in self.predict(images, batch_size)]

    def save_pretrained(self, path: str) -> None:
        """Write captioner.json (labels, architecture, training report) and safetensors weights."""
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"backend": "embedded", "kind": self.kind, "labels": self.labels,
                  "channels": self.channels, "image_size": self.image_size,
                  "object_threshold": self.object_threshold,
                  "training_report": self.training_report}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, path: str) -> AttributeCaptioner:
        """Load a folder written by ``save_pretrained``."""
        from safetensors.torch import load_file

        folder = Path(path)
        config = json.loads((folder / CONFIG_FILE).read_text())
        model = cls(config["labels"], config["channels"], config["image_size"],
                    config["object_threshold"])
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        model.training_report = config.get("training_report", {})
        return model.eval()


def corpus_labels(corpus: pd.DataFrame) -> dict[str, list[str]]:
    """The label lists the public corpus defines (sorted, so training is order-independent)."""
    missing = [c for c in ("image", *SINGLE_LABEL, MULTI_LABEL) if c not in corpus.columns]
    if missing:
        raise ValueError(f"public corpus lacks columns {missing}; it needs image (PNG bytes), "
                         f"{', '.join(SINGLE_LABEL)} and {MULTI_LABEL} (space-joined)")
    labels = {name: sorted(set(map(str, corpus[name]))) for name in SINGLE_LABEL}
    labels[MULTI_LABEL] = sorted({o for objs in corpus[MULTI_LABEL] for o in str(objs).split()})
    return labels


def corpus_targets(corpus: pd.DataFrame, labels: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Class indices per single-label head and a multi-hot object matrix, per public image."""
    targets = {name: torch.tensor([labels[name].index(str(v)) for v in corpus[name]])
               for name in SINGLE_LABEL}
    objects = torch.zeros(len(corpus), len(labels[MULTI_LABEL]))  # (N, n_objects)
    for row, objs in enumerate(corpus[MULTI_LABEL]):
        for o in str(objs).split():
            objects[row, labels[MULTI_LABEL].index(o)] = 1.0
    targets[MULTI_LABEL] = objects
    return targets


def attribute_accuracy(
    predicted: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """Accuracy per attribute, protagonist (colour and shape), objects exact set and micro-F1."""
    n = len(truth)
    if n == 0:
        return {}
    report = {f"{a}_accuracy": sum(p[a] == t[a] for p, t in zip(predicted, truth)) / n
              for a in SINGLE_LABEL}
    report["protagonist_accuracy"] = sum(
        p["colour"] == t["colour"] and p["shape"] == t["shape"] for p, t in zip(predicted, truth)
    ) / n
    pred_sets = [set(p[MULTI_LABEL]) for p in predicted]
    true_sets = [set(t[MULTI_LABEL]) for t in truth]
    report["objects_exact_accuracy"] = sum(p == t for p, t in zip(pred_sets, true_sets)) / n
    hits = sum(len(p & t) for p, t in zip(pred_sets, true_sets))
    n_pred, n_true = sum(map(len, pred_sets)), sum(map(len, true_sets))
    report["objects_f1"] = 2 * hits / (n_pred + n_true) if n_pred + n_true else 1.0
    return {k: round(v, 4) for k, v in report.items()}


def train_attribute_captioner(corpus: pd.DataFrame, config: CaptionerConfig) -> AttributeCaptioner:
    """Train the embedded attribute captioner on the PUBLIC corpus; report held-out accuracy."""
    labels = corpus_labels(corpus)
    images = torch.from_numpy(np.stack([decode_png(b, config.image_size)
                                        for b in corpus["image"]]))  # (N, H, W, 3) uint8
    targets = corpus_targets(corpus, labels)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(corpus), generator=generator)
    n_heldout = int(round(config.heldout_fraction * len(corpus)))
    heldout, train = order[:n_heldout], order[n_heldout:]
    if len(train) == 0:
        raise ValueError(f"public corpus has {len(corpus)} images: too few to train on")

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = AttributeCaptioner(labels, config.channels, config.image_size,
                               config.object_threshold).to(device)
    steps_per_epoch = math.ceil(len(train) / config.train_batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=steps_per_epoch * config.epochs)
    progress = tqdm(total=steps_per_epoch * config.epochs, unit="step",
                    desc="training the embedded attribute captioner on public images")
    model.train()
    for _epoch in range(config.epochs):
        shuffled = train[torch.randperm(len(train), generator=generator)]
        for start in range(0, len(shuffled), config.train_batch_size):
            idx = shuffled[start:start + config.train_batch_size]
            pixels = model.to_pixels(images[idx].to(device))  # (B, 3, H, W)
            if config.augment:
                flip = torch.rand(len(idx), generator=generator) < 0.5
                pixels[flip.to(device)] = pixels[flip.to(device)].flip(dims=(3,))
            logits = model(pixels)
            loss = sum(F.cross_entropy(logits[n], targets[n][idx].to(device))
                       for n in SINGLE_LABEL)
            # Summed over objects (not averaged): each object counts as much as the scene.
            loss = loss + F.binary_cross_entropy_with_logits(
                logits[MULTI_LABEL], targets[MULTI_LABEL][idx].to(device), reduction="sum"
            ) / len(idx)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    model.eval()

    report: dict[str, Any] = {"n_train": len(train), "n_heldout": n_heldout,
                              "epochs": config.epochs}
    if n_heldout:
        rows = corpus.iloc[heldout.tolist()]
        truth = [{**{a: str(r[a]) for a in SINGLE_LABEL}, MULTI_LABEL: str(r[MULTI_LABEL]).split()}
                 for _, r in rows.iterrows()]
        predicted = model.predict(list(images[heldout].numpy()), config.batch_size)
        report["public_heldout"] = attribute_accuracy(predicted, truth)
        logger.info("embedded attribute captioner, public held-out accuracy: %s",
                    report["public_heldout"])
        # The reference for the domain check (captioning): how sure it is on PUBLIC photos of
        # the world it was made for; percentiles 0..100 of the held-out confidences.
        confidence = model.confidence(list(images[heldout].numpy()), config.batch_size)
        report["public_heldout_confidence_percentiles"] = [
            round(float(v), 6) for v in np.percentile(confidence, np.arange(101))]
    model.training_report = report
    return model.cpu()


class PretrainedCaptioner:
    """Any Hugging Face image-to-text model (id or folder) with its processor, greedy decoding."""

    kind = "pretrained image-to-text captioner"

    def __init__(self, model, processor, tokenizer, model_name_or_path: str,
                 prompt: str | None = None, max_new_tokens: int = 30,
                 store_weights: bool = True, torch_dtype: str = "float32") -> None:
        self.model = model.eval()
        self.processor = processor  # a multimodal processor, or an image processor
        self.tokenizer = tokenizer  # decodes generated ids
        self.model_name_or_path = model_name_or_path
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.store_weights = store_weights
        self.torch_dtype = torch_dtype

    @classmethod
    def load(cls, model_name_or_path: str, prompt: str | None = None, max_new_tokens: int = 30,
             store_weights: bool = True, torch_dtype: str = "float32") -> PretrainedCaptioner:
        """Load model + processor; VisionEncoderDecoder folders get image processor + tokenizer."""
        from transformers import (
            AutoImageProcessor,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        model = AutoModelForImageTextToText.from_pretrained(model_name_or_path,
                                                            dtype=torch_dtype_of(torch_dtype))
        processor = AutoProcessor.from_pretrained(model_name_or_path)
        if hasattr(processor, "image_processor"):  # BLIP, GIT, Florence-2, vision-chat models
            tokenizer = processor.tokenizer
        else:  # AutoProcessor fell back to the tokenizer alone (e.g. VisionEncoderDecoder)
            processor = AutoImageProcessor.from_pretrained(model_name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        logger.info("loaded pretrained captioner %s (%s)", model_name_or_path,
                    type(model).__name__)
        return cls(model, processor, tokenizer, model_name_or_path, prompt, max_new_tokens,
                   store_weights, torch_dtype)

    def to(self, device: str) -> PretrainedCaptioner:
        self.model.to(device)
        return self

    @property
    def input_size(self) -> int:
        """The side (pixels) its image processor resizes photos to (photos are decoded at it)."""
        image_processor = getattr(self.processor, "image_processor", self.processor)
        size = getattr(image_processor, "size", None) or getattr(image_processor, "crop_size",
                                                                 None)
        if size is not None and not isinstance(size, int | float):
            # a dict, or transformers 5's SizeDict (iterates as (key, value) pairs); only the
            # side keys: a max_pixels-style area is not a side
            sides = {k: v for k, v in dict(size).items() if k in SIZE_KEYS}
            size = max((int(v) for v in sides.values() if isinstance(v, int | float)),
                       default=0)
        return int(size) if size else 384

    @torch.no_grad()
    def caption(self, images: Sequence[np.ndarray], batch_size: int = 16) -> list[str]:
        """One caption per image (greedy decoding), in input order."""
        device = next(self.model.parameters()).device
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            pil = [Image.fromarray(to_rgb_array(im)) for im in images[start:start + batch_size]]
            if self.prompt is not None:
                inputs = self.processor(images=pil, text=[self.prompt] * len(pil),
                                        return_tensors="pt", padding=True)
            else:
                inputs = self.processor(images=pil, return_tensors="pt")
            dtype = torch_dtype_of(self.torch_dtype)
            inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
                      for k, v in inputs.items()}  # pixels in the model's precision
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      do_sample=False)  # (B, T)
            prompt_ids = inputs.get("input_ids")
            if (prompt_ids is not None and out.shape[1] >= prompt_ids.shape[1]
                    and torch.equal(out[:, :prompt_ids.shape[1]], prompt_ids)):
                out = out[:, prompt_ids.shape[1]:]  # decoder-only models echo their prompt
            captions += [t.strip() for t in
                         self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return captions

    def save_pretrained(self, path: str) -> None:
        """Write captioner.json and, when ``store_weights``, the model and processor files."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"backend": "pretrained", "kind": self.kind,
                  "model_name_or_path": self.model_name_or_path, "prompt": self.prompt,
                  "max_new_tokens": self.max_new_tokens, "store_weights": self.store_weights,
                  "torch_dtype": self.torch_dtype}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        if self.store_weights:
            for part in {id(p): p for p in (self.model, self.processor, self.tokenizer)}.values():
                part.save_pretrained(str(folder / "model"))

    @classmethod
    def from_pretrained(cls, path: str) -> PretrainedCaptioner:
        """Load a folder written by ``save_pretrained`` (weights copied, or the original id)."""
        config = json.loads((Path(path) / CONFIG_FILE).read_text())
        source = (str(Path(path) / "model") if config["store_weights"]
                  else config["model_name_or_path"])
        captioner = cls.load(source, config["prompt"], config["max_new_tokens"],
                             config["store_weights"], config.get("torch_dtype", "float32"))
        captioner.model_name_or_path = config["model_name_or_path"]
        return captioner


Captioner = AttributeCaptioner | PretrainedCaptioner


def build_captioner(public_corpus: pd.DataFrame, config: CaptionerConfig) -> Captioner:
    """Train the embedded captioner on the public corpus, or load the pretrained one."""
    if config.backend == "embedded":
        return train_attribute_captioner(public_corpus, config)
    if config.backend == "pretrained":
        if not config.model_name_or_path:
            raise ValueError("captioner backend 'pretrained' needs model_name_or_path "
                             "(e.g. Salesforce/blip-image-captioning-base or a local folder)")
        return PretrainedCaptioner.load(config.model_name_or_path, config.prompt,
                                        config.max_new_tokens, config.store_weights,
                                        config.torch_dtype)
    raise ValueError(f"unknown captioner backend {config.backend!r}: use 'embedded' or "
                     "'pretrained'")


def load_captioner(path: str) -> Captioner:
    """Load a captioner folder of either backend (the ModelFolderDataset loader)."""
    config_file = Path(path) / CONFIG_FILE
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} is missing: {path} is not a dpalbum captioner "
                                "folder (write one with save_pretrained)")
    backend = json.loads(config_file.read_text())["backend"]
    if backend == "embedded":
        return AttributeCaptioner.from_pretrained(path)
    return PretrainedCaptioner.from_pretrained(path)
