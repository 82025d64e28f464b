"""Typed, strict configuration of everything that decides a privacy guarantee.

Each class refuses unknown keys and bad values with the parameter's full name (a typo such as
``noise_multipler`` or ``epochz`` must never be silently ignored: the run would spend a budget
nobody planned). Read by the plan (``privacy.plan``) before any private data is touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# The catalogue of mechanisms that may read private data, in run order. Shares name only these.
MECHANISMS = ("album_count", "semantic_query", "summary_lm", "caption_lm", "renderer")
NOISE_MODES = ("secure", "replayable")
ALBUM_COUNT_MODES = ("dp", "public")
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost")
REDUCTIONS = ("mean", "sum")


class PrivacyConfigError(ValueError):
    """A privacy-relevant parameter is unknown or has a bad value (named in the message)."""


def _strict(cls: type, values: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """``values`` as constructor kwargs of ``cls``; unknown keys refused with their full name."""
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PrivacyConfigError(
            f"unknown parameter(s) {', '.join(f'{where}.{k}' for k in unknown)}: the known "
            f"keys of {where} are {sorted(known)} (a misspelt privacy key is never ignored)")
    return values


def parse_epsilon(value: Any, where: str = "privacy.epsilon") -> float:
    """ε from config or JSON: a positive number, or ``inf`` / ``"inf"`` / ``None`` for infinity."""
    if value is None or (isinstance(value, str) and value.lower() in ("inf", "infinity", ".inf")):
        return math.inf
    try:
        eps = float(value)
    except (TypeError, ValueError):
        raise PrivacyConfigError(
            f"{where} must be a positive number or .inf, got {value!r}") from None
    if not eps > 0:
        raise PrivacyConfigError(f"{where} must be positive, got {value}")
    return eps


def _positive(value: Any, where: str, *, integer: bool = False, allow_auto: bool = False) -> Any:
    if allow_auto and value in (None, "auto"):
        return "auto"
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise PrivacyConfigError(f"{where} must be a positive number, got {value!r}") from None
    if integer and float(value) != int(value) or not number > 0:
        raise PrivacyConfigError(f"{where} must be a positive {'integer' if integer else 'number'}"
                                 f", got {value!r}")
    return number


@dataclass
class PrivacyParams:
    """The ``privacy:`` block of ``conf/base/parameters_privacy.yml``."""

    epsilon: Any = 10.0
    delta: float = 1e-5
    shares: dict[str, float] = field(default_factory=dict)
    max_grad_norm: Any = "auto"
    clip_quantile: float = 0.5
    clip_public_albums: int = 256
    accountant: str = "pld"
    grad_sample_mode: str = "hooks"
    calibration_tolerance: float = 0.01
    album_reduction: str = "mean"
    physical_batch_rows: int = 32
    noise: str = "secure"
    album_count: str = "dp"
    lifetime_epsilon: Any = 30.0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 10

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | PrivacyParams) -> PrivacyParams:
        """Validate and parse (``epsilon: .inf`` = the non-private baseline)."""
        if isinstance(params, PrivacyParams):
            return params
        out = cls(**_strict(cls, params, "privacy"))
        out.epsilon = parse_epsilon(out.epsilon)
        out.lifetime_epsilon = parse_epsilon(out.lifetime_epsilon, "privacy.lifetime_epsilon")
        delta = float(out.delta)
        if not 0 < delta < 1:
            raise PrivacyConfigError(f"privacy.delta must be in (0, 1), got {out.delta}")
        out.delta = delta
        out.max_grad_norm = _positive(out.max_grad_norm, "privacy.max_grad_norm",
                                      allow_auto=True)
        if not 0 < float(out.clip_quantile) < 1:
            raise PrivacyConfigError(f"privacy.clip_quantile must be in (0, 1), got "
                                     f"{out.clip_quantile}")
        out.clip_public_albums = _positive(out.clip_public_albums, "privacy.clip_public_albums",
                                           integer=True)
        out.physical_batch_rows = _positive(out.physical_batch_rows, "privacy.physical_batch_rows",
                                            integer=True)
        if int(out.checkpoint_every) < 0:
            raise PrivacyConfigError("privacy.checkpoint_every must be ≥ 0 (0: only at the end)")
        if out.accountant != "pld":
            raise PrivacyConfigError(f"privacy.accountant {out.accountant!r} is not supported: the "
                                     "released ε is the PLD composition (RDP is reported beside)")
        choices = { "grad_sample_mode": GRAD_SAMPLE_MODES,
                   "album_reduction": REDUCTIONS, "noise": NOISE_MODES,
                   "album_count": ALBUM_COUNT_MODES}
        for key, allowed in choices.items():
            if getattr(out, key) not in allowed:
                raise PrivacyConfigError(f"privacy.{key} must be one of {allowed}, got "
                                         f"{getattr(out, key)!r}")
        if not 0 < float(out.calibration_tolerance) < 0.5:
            raise PrivacyConfigError("privacy.calibration_tolerance must be in (0, 0.5)")
        for name, share in out.shares.items():
            _positive(share, f"privacy.shares.{name}")
        return out

    @property
    def is_baseline(self) -> bool:
        return math.isinf(self.epsilon)

    def check_run_shares(self) -> None:
        """A run's shares name only catalogued mechanisms and sum to 1 (then renormalised over
        the mechanisms that run)."""
        unknown = sorted(set(self.shares) - set(MECHANISMS))
        if unknown:
            raise PrivacyConfigError(f"privacy.shares names unknown mechanism(s) {unknown}; the "
                                     f"mechanisms are {list(MECHANISMS)}")
        total = sum(float(v) for v in self.shares.values())
        if abs(total - 1.0) > 1e-6:
            raise PrivacyConfigError(f"privacy.shares must sum to 1 (they are renormalised over "
                                     f"the mechanisms that run), got {total:g}: {self.shares}")


@dataclass
class DPSGDParams:
    """A DP-SGD job's planning keys (``dp_training.<lm>.dp``, ``rendering.dp_finetune``)."""

    expected_batch_albums: Any = "auto"  # a number, or "auto": fitted to the DP album count N̂
    epochs: float = 12
    noise_multiplier: Any = "auto"
    lr: float = 1e-3
    lora: dict[str, Any] | None = None  # LMs only: the LoRA adapter (not a privacy setting)
    enabled: bool = True  # the renderer's fine-tune is optional

    @classmethod
    def from_dict(cls, params: Mapping[str, Any], where: str) -> DPSGDParams:
        out = cls(**_strict(cls, params, where))
        out.expected_batch_albums = _positive(out.expected_batch_albums,
                                              f"{where}.expected_batch_albums", allow_auto=True)
        out.epochs = _positive(out.epochs, f"{where}.epochs")
        out.noise_multiplier = _positive(out.noise_multiplier, f"{where}.noise_multiplier",
                                         allow_auto=True)
        out.lr = _positive(out.lr, f"{where}.lr")
        if not isinstance(out.enabled, bool):
            raise PrivacyConfigError(f"{where}.enabled must be true or false, got {out.enabled!r}")
        return out


@dataclass
class SemanticQueryParams:
    """``dp_training.semantic_query``: the PRIVIMAGE query's label space and noise."""

    labeller: str = "public_labels"
    label_columns: list[str] = field(default_factory=list)
    n_labels: int = 48
    k: int = 1
    theme_column: str | None = None
    theme_size: int = 2
    noise_multiplier: Any = "auto"

    @property
    def labels_per_album(self) -> int:
        """Most histogram bins one album adds 1 to: its k distinct labels, plus its one theme
        when the theme family is on. The L2 sensitivity is the square root of this."""
        return self.k + (1 if self.theme_column else 0)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any],
                  where: str = "dp_training.semantic_query") -> SemanticQueryParams:
        out = cls(**_strict(cls, params, where))
        out.k = _positive(out.k, f"{where}.k", integer=True)
        out.n_labels = _positive(out.n_labels, f"{where}.n_labels", integer=True)
        out.noise_multiplier = _positive(out.noise_multiplier, f"{where}.noise_multiplier",
                                         allow_auto=True)
        if out.labeller not in ("public_labels", "kmeans"):
            raise PrivacyConfigError(f"{where}.labeller must be public_labels or kmeans, got "
                                     f"{out.labeller!r}")
        out.theme_size = _positive(out.theme_size, f"{where}.theme_size", integer=True)
        if out.theme_column is not None and out.labeller != "public_labels":
            raise PrivacyConfigError(f"{where}.theme_column needs labeller: public_labels (a "
                                     f"public label column to read themes from); set it to null "
                                     f"with labeller {out.labeller!r}")
        return out
