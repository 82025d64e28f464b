"""Privacy audit (INTERNAL: reads private texts): loss-based membership inference and canaries.

Membership inference: the attacker scores each album by its mean token loss under the DP-trained
LM (lower loss: more likely a training member). Members are the training albums, non-members the
held-out albums, texts produced the same way (captioner + summariser). AUC and TPR at 1% FPR come
from scikit-learn's ROC; an empirical ε lower bound follows from Clopper–Pearson intervals on
(TPR, FPR) (Jagielski et al. 2020): a DP model's bound must stay at or below the claimed ε, and a
non-private control must show a clear signal, or the audit has no power.

Canaries: albums planted in the training data in a dedicated audit run; we count how many of
their captions the samplers regenerate verbatim in N samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from dpalbum.albums.vocabulary import parse_caption
from dpalbum.models.language_model import caption_rows, encode_rows, row_losses, summary_rows
from dpalbum.pipelines.evaluation.metrics import UNPARSED, protagonist_of


@torch.no_grad()
def album_losses(model, tokenizer, album_texts: pd.DataFrame, role: str, max_length: int = 64,
                 batch_size: int = 64) -> pd.Series:
    """Mean token loss per album (index album_id) of its summary row or of its caption rows.

    Rows are built by the same functions as in training (``dpalbum.models.language_model``), so
    the caption LM is scored on the caption tokens only, conditioned on the album's summary.
    """
    if role not in ("summary", "caption"):
        raise ValueError(f"role must be 'summary' or 'caption', got {role!r}")
    rows = (summary_rows if role == "summary" else caption_rows)(album_texts, tokenizer)
    device = next(model.parameters()).device
    model.eval()
    losses: list[float] = []
    for start in range(0, len(rows.texts), batch_size):
        stop = start + batch_size
        starts = None if rows.loss_start is None else rows.loss_start[start:stop]
        batch = encode_rows(tokenizer, rows.texts[start:stop], starts, max_length)
        losses += row_losses(model, {k: v.to(device) for k, v in batch.items()}).tolist()
    per_row = pd.Series(losses, index=pd.Index(rows.album_ids, name="album_id"), dtype=float)
    return per_row.groupby(level=0, sort=False).mean()


def clopper_pearson(successes: np.ndarray, trials: int, alpha: float) -> tuple[np.ndarray, ...]:
    """Two-sided (1 − alpha) Clopper–Pearson interval for binomial proportions."""
    from scipy.stats import beta

    k = np.asarray(successes, dtype=float)
    lower = np.where(k > 0, beta.ppf(alpha / 2, k, trials - k + 1), 0.0)
    upper = np.where(k < trials, beta.ppf(1 - alpha / 2, k + 1, trials - k), 1.0)
    return np.nan_to_num(lower), np.nan_to_num(upper, nan=1.0)


def epsilon_lower_bound(member_scores: Sequence[float], nonmember_scores: Sequence[float],
                        delta: float, alpha: float = 0.05) -> float:
    """Largest ε any threshold attack certifies at confidence 1 − alpha (both directions).

    For (ε, δ)-DP every test has TPR ≤ e^ε·FPR + δ and (1 − FPR) ≤ e^ε·(1 − TPR) + δ; plugging in
    the interval ends least favourable to the attacker (TPR low, FPR high) gives a lower bound
    on ε. Thresholds are
    chosen on the same scores, so treat the bound as indicative (no separate threshold split).
    """
    from sklearn.metrics import roc_curve

    pos, neg = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, tpr, _ = roc_curve(y, np.r_[pos, neg])
    tp, fp = np.round(tpr * len(pos)), np.round(fpr * len(neg))
    tpr_lo, tpr_hi = clopper_pearson(tp, len(pos), alpha)
    fpr_lo, fpr_hi = clopper_pearson(fp, len(neg), alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = np.log((tpr_lo - delta) / fpr_hi)
        mirror = np.log((1 - fpr_hi - delta) / (1 - tpr_lo))
    bounds = np.r_[direct, mirror]
    bounds = bounds[np.isfinite(bounds)]
    return float(max(0.0, bounds.max())) if len(bounds) else 0.0


def membership_inference(member_losses: Sequence[float], nonmember_losses: Sequence[float],
                         delta: float = 1e-5, max_fpr: float = 0.01) -> dict[str, float]:
    """AUC, TPR at ``max_fpr`` FPR and the ε lower bound of the loss-threshold attack."""
    from sklearn.metrics import roc_auc_score, roc_curve

    member, nonmember = np.asarray(member_losses, float), np.asarray(nonmember_losses, float)
    if min(len(member), len(nonmember)) < 2:
        raise ValueError(f"membership inference needs 2+ members and non-members, got "
                         f"{len(member)} and {len(nonmember)}")
    scores = -np.r_[member, nonmember]  # lower loss -> more "member"
    y = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
    fpr, tpr, _ = roc_curve(y, scores)
    return {"auc": float(roc_auc_score(y, scores)),
            "tpr_at_1pct_fpr": float(tpr[fpr <= max_fpr].max()),
            "epsilon_lower_bound": epsilon_lower_bound(-member, -nonmember, delta),
            "mean_loss_members": float(member.mean()),
            "mean_loss_nonmembers": float(nonmember.mean()),
            "n_members": float(len(member)), "n_nonmembers": float(len(nonmember)),
            # the finest FPR step the non-member count allows: TPR at 1% FPR means TPR at FPR
            # 0 when there are fewer than 100 non-members
            "fpr_resolution": 1.0 / len(nonmember)}


def _normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


def canary_exposure(sampled_captions: Sequence[str], canary_captions: Sequence[str],
                    canary_protagonists: Sequence[str],
                    control_protagonists: Sequence[str]) -> dict[str, float]:
    """Verbatim canary regenerations and how often canary vs control protagonists appear.

    Protagonist rates are the share of samples naming one protagonist of the set, averaged over
    the set. ``control_protagonists`` are protagonists no private album (canary or not) shows:
    samples naming them come from public pre-training alone, the baseline for the canary rate.
    """
    sampled = [_normalise(c) for c in sampled_captions]
    canaries = {_normalise(c) for c in canary_captions}
    hits = [c for c in sampled if c in canaries]
    protagonists = [protagonist_of(parse_caption(c)) for c in sampled]
    n = max(len(sampled), 1)
    canary_p, control_p = set(canary_protagonists), set(control_protagonists)
    return {"n_samples": float(len(sampled)), "n_canary_captions": float(len(canaries)),
            "canary_captions_regenerated": float(len(set(hits))),
            "canary_caption_hits": float(len(hits)),
            # per protagonist, so that sets of different sizes compare
            "canary_protagonist_rate": (sum(p in canary_p for p in protagonists) / n
                                        / max(len(canary_p), 1)),
            "control_protagonist_rate": (sum(p in control_p for p in protagonists) / n
                                         / max(len(control_p), 1)),
            "unparsed_rate": sum(p == UNPARSED for p in protagonists) / n}


def n_albums_for(n_samples: int, captions_per_album: int) -> int:
    """Albums to sample so that at least ``n_samples`` captions come out."""
    return max(1, math.ceil(n_samples / max(captions_per_album, 1)))
