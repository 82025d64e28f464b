"""Privacy audit (INTERNAL: reads private texts): loss-based membership inference and canaries.

Membership inference: the attacker scores each album by its mean token loss under the DP-trained
LM (lower loss: more likely a training member). Members are the training albums, non-members the
held-out albums, texts produced the same way (captioner + summariser). AUC and TPR at 1% FPR come
from scikit-learn's ROC; an empirical ε lower bound follows from Clopper–Pearson intervals on
(TPR, FPR) (Jagielski et al. 2020): a DP model's bound must stay at or below the claimed ε, and a
non-private control must show a clear signal, or the audit has no power.

Membership on templated texts is bounded by how often non-members repeat members' texts
verbatim (``verbatim_ceiling_auc``): on the demo world most held-out summaries are some training
album's summary, so even a perfect memoriser scores them like members. The insertion audit
(``privacy_audit``) therefore plants canary albums of random public words, unique by
construction, in the training set of a dedicated audit run and attacks inserted vs held-out
canaries; it also counts how many canary texts the samplers regenerate verbatim in N samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from dpalbum.models.language_model import caption_rows, encode_rows, row_losses, summary_rows


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


def verbatim_regenerations(sampled_texts: Sequence[str],
                           secret_texts: Sequence[str]) -> dict[str, float]:
    """How many sampled texts equal a secret (canary) text, up to case and spacing.

    ``hits``: sampled texts that are a secret; ``distinct``: secrets written at least once.
    """
    secrets = {_normalise(t) for t in secret_texts}
    hits = [t for t in map(_normalise, sampled_texts) if t in secrets]
    return {"hits": float(len(hits)), "distinct": float(len(set(hits)))}


def verbatim_ceiling_auc(member_texts: Sequence[Sequence[str]],
                         nonmember_texts: Sequence[Sequence[str]]) -> float:
    """AUC of an oracle that knows every member text verbatim (the best text memorisation does).

    Each album is scored by the share of its texts found verbatim among all member albums'
    texts: members score 1; a non-member whose texts all repeat members' texts scores 1 too
    and cannot be told apart. Templated texts from a small vocabulary repeat across albums, so
    this ceiling is what a loss attack can approach on them, however well the LM memorises.
    """
    if not len(member_texts) or not len(nonmember_texts):
        raise ValueError("verbatim_ceiling_auc needs members and non-members")
    seen = {_normalise(t) for texts in member_texts for t in texts}
    shares = np.array([np.mean([_normalise(t) in seen for t in texts]) if len(texts) else 1.0
                       for texts in nonmember_texts], dtype=float)
    # members all score 1: a pair is won when the non-member scores < 1, tied when it scores 1
    return float(np.mean(np.where(shares < 1.0, 1.0, 0.5)))


def album_text_units(album_texts: pd.DataFrame, role: str) -> list[list[str]]:
    """Per album, the texts an LM of ``role`` is trained on: its summary, or (summary, caption)
    pairs (the caption LM learns captions conditioned on the summary)."""
    if role == "summary":
        return [[str(s)] for s in album_texts["summary"]]
    return [[f"{s} || {c}" for c in captions]
            for s, captions in zip(album_texts["summary"], album_texts["captions"])]


def canary_words(public_captions: Sequence[str]) -> list[str]:
    """The canary alphabet: distinct words of PUBLIC captions (no private text is read)."""
    words = sorted({w for caption in public_captions for w in _normalise(caption).split()
                    if w.isalpha()})
    if len(words) < 2:
        raise ValueError(f"canaries need 2+ distinct words in the public captions, got {words}")
    return words


def canary_album_texts(words: Sequence[str], n_albums: int, captions_per_album: int,
                       words_per_text: int, seed: int,
                       distinct_captions: int | None = None) -> pd.DataFrame:
    """Canary albums whose summary and captions are random strings of public words.

    Each text draws ``words_per_text`` words uniformly (with replacement), so it carries
    words_per_text·log2(len(words)) bits: unique with overwhelming probability and far from the
    templated private texts, so what an LM knows about one came from training on it (Carlini et
    al. 2019; the insertion audit of Jagielski et al. 2020). ``distinct_captions`` (default: all)
    secret captions are cycled over the album's ``captions_per_album`` photos: an album's loss is
    the mean over its rows, so one secret repeated carries the album's whole weight in the
    gradient, the strongest canary one album can be. Columns as album_texts, ids
    ``canary_text_0001``...
    """
    rng = np.random.default_rng(seed)
    vocab = np.asarray(words)
    k = captions_per_album if distinct_captions is None else distinct_captions
    if not 1 <= k <= captions_per_album:
        raise ValueError(f"distinct_captions must be in [1, {captions_per_album}], got {k}")

    def text() -> str:
        return " ".join(rng.choice(vocab, size=words_per_text))

    summaries, captions = [], []
    for _ in range(n_albums):
        summaries.append(text())
        secrets = [text() for _ in range(k)]
        captions.append([secrets[j % k] for j in range(captions_per_album)])
    return pd.DataFrame({"album_id": [f"canary_text_{i + 1:04d}" for i in range(n_albums)],
                         "summary": summaries, "captions": captions})


def n_albums_for(n_samples: int, captions_per_album: int) -> int:
    """Albums to sample so that at least ``n_samples`` captions come out."""
    return max(1, math.ceil(n_samples / max(captions_per_album, 1)))
