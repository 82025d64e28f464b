"""Nodes of dp_training. Every read of private text goes through ``dpalbum.privacy`` and is
charged to the ledger; everything else reads public data or DP outputs only."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from dpalbum import privacy
from dpalbum.models import language_model as lm
from dpalbum.models import semantic_labeller as sl
from dpalbum.models.summariser import template_summary
from dpalbum.models.text_encoder import encode_texts
from dpalbum.models.tokenizer import TokenizerConfig, build_tokenizer

logger = logging.getLogger(__name__)


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def public_caption_labels_node(
    public_corpus: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the semantic labeller from PUBLIC data only and label every public image.

    ``public_labels``: the public corpus' own label space (PRIVIMAGE's query is a classifier of
    public labels; here the public-trained captioner names them in captions). ``kmeans``: a
    label-free alternative for unlabelled public corpora, clusters of MiniLM caption embeddings.
    """
    spec = params["semantic_query"]
    if spec["labeller"] == "public_labels":
        space = sl.public_label_space(public_corpus, spec["label_columns"])
        labels = sl.public_labels(public_corpus, spec["label_columns"], space)
        labeller = pd.DataFrame({"label_name": space})
    elif spec["labeller"] == "kmeans":
        captions = public_corpus["caption"].astype(str)
        unique = captions.unique().tolist()  # templates repeat: embed each distinct text once
        emb = encode_texts(unique)
        centroids = sl.fit_labeller(emb, int(spec["n_labels"]), params["seed"])
        label_of = dict(zip(unique, sl.assign_labels(emb, centroids).tolist()))
        labels = captions.map(label_of).to_numpy(dtype=np.int64)
        labeller = sl.centroids_frame(centroids)
    else:
        raise ValueError(f"dp_training.semantic_query.labeller {spec['labeller']!r}: use "
                         "public_labels or kmeans")
    logger.info("semantic labeller (%s): %d labels", spec["labeller"], len(labeller))
    return labeller, pd.DataFrame({"image_id": public_corpus["image_id"].astype(str),
                                   "label": labels})


def _album_labels(captions: list[str], labeller: pd.DataFrame, spec: dict) -> np.ndarray:
    if spec["labeller"] == "public_labels":
        return sl.caption_labels(captions, spec["label_columns"],
                                 labeller["label_name"].tolist())
    return sl.assign_labels(encode_texts(captions), labeller.to_numpy(dtype=np.float32))


def semantic_query_node(
    album_texts: pd.DataFrame, semantic_labeller: pd.DataFrame, privacy_plan: dict[str, Any],
    privacy_account: privacy.PrivacyAccount, params: dict[str, Any],
    privacy_params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """PRIVIMAGE query: noisy album-level top-k histogram of semantic labels (charged)."""
    if params["selection"]["mode"] != "semantic":
        return {"mode": params["selection"]["mode"], "distribution": None}, privacy_plan
    spec = params["semantic_query"]
    per_album = [_album_labels(list(caps), semantic_labeller, spec)
                 for caps in album_texts["captions"]]
    k = int(spec["k"])
    result, ledger = privacy.run_mechanism(
        privacy_plan, "semantic_query", privacy_account, privacy_params,
        lambda stream: _query(sl.album_top_k(per_album, k), len(semantic_labeller), k,
                              privacy_plan, stream))
    names = (semantic_labeller["label_name"].tolist() if "label_name" in semantic_labeller
             else [f"cluster_{i}" for i in range(len(semantic_labeller))])
    histogram = {"mode": "semantic", "labeller": spec["labeller"], "k": k,
                 "noise_std": result.mechanism["noise_std"], "labels": names,
                 "noisy_counts": result.noisy_counts.tolist(),
                 "distribution": result.distribution.tolist(),
                 "noise_source": ledger["noise_source"]}
    return histogram, ledger


def _query(label_sets, n_labels: int, k: int, plan: dict[str, Any], stream):
    result = privacy.semantic_query(label_sets, n_labels, k,
                                    privacy.mechanism_sigma(plan, "semantic_query"), stream,
                                    allow_non_private=plan["baseline"])
    return result, result.mechanism


def _thresholded(semantic_histogram: dict[str, Any], selection: dict[str, Any]) -> np.ndarray:
    """The noisy distribution without labels whose count is within noise of zero.

    Post-processing of the DP release: a label survives when its noisy count exceeds
    ``min_count_in_noise_std`` noise standard deviations (PRIVIMAGE keeps the high-probability
    labels); if none survives, the plain clipped distribution is used.
    """
    counts = np.asarray(semantic_histogram["noisy_counts"], dtype=np.float64)
    keep = counts > selection.get("min_count_in_noise_std", 0.0) * semantic_histogram["noise_std"]
    if not keep.any():
        return np.asarray(semantic_histogram["distribution"])
    return np.where(keep, counts, 0.0) / counts[keep].sum()


def select_public_node(
    public_semantic_labels: pd.DataFrame, semantic_histogram: dict[str, Any],
    params: dict[str, Any],
) -> pd.DataFrame:
    """Public image ids for pre-training: by the noisy distribution, all, or none."""
    mode = params["selection"]["mode"]
    ids = public_semantic_labels["image_id"]
    if mode == "all":
        chosen = np.arange(len(ids))
    elif mode == "none":
        chosen = np.zeros(0, dtype=np.int64)
    elif mode == "semantic":
        n = int(round(params["selection"]["fraction"] * len(ids)))
        chosen = sl.select_public(public_semantic_labels["label"].to_numpy(),
                                  _thresholded(semantic_histogram, params["selection"]), n,
                                  params["seed"])
    else:
        raise ValueError(f"dp_training.selection.mode {mode!r}: use semantic, all or none")
    logger.info("public selection (%s): %d of %d public images", mode, len(chosen), len(ids))
    return pd.DataFrame({"image_id": ids.iloc[chosen].to_numpy(),
                         "label": public_semantic_labels["label"].iloc[chosen].to_numpy()})


def public_album_texts_node(
    public_corpus: pd.DataFrame, public_selection: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """PUBLIC pseudo-albums: captions of one semantic label (and 1-2 themes), summarised."""
    spec, rng = params["pseudo_albums"], np.random.default_rng(params["seed"])
    corpus = public_corpus.set_index(public_corpus["image_id"].astype(str))
    selected = public_selection.assign(
        caption=corpus.loc[public_selection["image_id"], "caption"].to_numpy(),
        theme=(corpus.loc[public_selection["image_id"], spec["theme_column"]].to_numpy()
               if spec.get("theme_column") else ""))
    groups = {lab: g for lab, g in selected.groupby("label")}
    rows = []
    if groups:
        labels = list(groups)
        weights = np.array([len(groups[lab]) for lab in labels], dtype=float)
        for i in range(int(spec["n_albums"])):
            group = groups[labels[rng.choice(len(labels), p=weights / weights.sum())]]
            themes = group["theme"].unique()
            n_themes = int(rng.integers(1, min(spec.get("max_themes", 1), len(themes)) + 1))
            group = group[group["theme"].isin(rng.choice(themes, n_themes, replace=False))]
            size = int(rng.integers(spec["min_captions"], spec["max_captions"] + 1))
            picks = rng.choice(len(group), size=min(size, len(group)), replace=False)
            captions = group["caption"].iloc[np.sort(picks)].tolist()
            rows.append({"album_id": f"public_{i:05d}", "summary": template_summary(captions),
                         "captions": captions})
    logger.info("built %d public pseudo-albums for LM pre-training", len(rows))
    return pd.DataFrame(rows, columns=["album_id", "summary", "captions"])


def train_tokenizer_node(
    public_corpus: pd.DataFrame, public_album_texts: pd.DataFrame, params: dict[str, Any]
):
    """The LM tokenizer, from PUBLIC text only (public captions and pseudo-album summaries)."""
    texts = public_corpus["caption"].astype(str).unique().tolist()
    texts += public_album_texts["summary"].astype(str).tolist()
    return build_tokenizer(TokenizerConfig(**params["tokenizer"]), texts)


def pretrain_lm(
    role: str, public_album_texts: pd.DataFrame, lm_tokenizer, params: dict[str, Any]
):
    """Build the role's LM and pre-train it on PUBLIC pseudo-album rows (skipped if none)."""
    return lm.build_and_pretrain(role, public_album_texts, lm_tokenizer, params[role],
                                 int(params["seed"]), _device(params["device"]))


def dp_finetune_lm(
    role: str, pretrained_lm, lm_tokenizer, album_texts: pd.DataFrame, ledger: dict[str, Any],
    privacy_account: privacy.PrivacyAccount, params: dict[str, Any],
    privacy_params: dict[str, Any], public_album_texts: pd.DataFrame | None = None,
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """DP-SGD LoRA fine-tune on private album texts (album = unit), charged to the ledger; C
    tuned on the PUBLIC pseudo-albums when ``privacy.max_grad_norm`` is auto."""
    cfg, device = params[role]["dp"], _device(params["device"])
    pretrained_lm.to(device)  # before LoRA and Opacus hooks (opacus #820)
    torch.manual_seed(int(params["seed"]))  # LoRA init: the public seed, never a DP stream
    model = lm.make_lora(pretrained_lm, **cfg["lora"])
    albums_rows = lm.rows_by_album(role, album_texts, lm_tokenizer)
    collate = lm.RowCollate(lm_tokenizer, params[role]["pretrain"]["max_length"])
    result, ledger = privacy.finetune(
        model, albums_rows, lm.row_losses, collate, ledger=ledger, mechanism=role,
        privacy_params=privacy_params, account=privacy_account, lr=cfg["lr"],
        public_seed=int(params["seed"]), device=device,
        nproc=int(params.get("distributed", {}).get("nproc_per_node", 1)),
        public_albums_rows=(None if public_album_texts is None else
                            lm.rows_by_album(role, public_album_texts, lm_tokenizer)))
    merged = result.model.merge_and_unload()  # LoRA folded into the public base weights
    merged.config.dpalbum_privacy = privacy.model_record(ledger, role)
    history = [{"role": role, **h} for h in result.history]
    return merged.eval(), ledger, history


def finalise_ledger_node(
    ledger: dict[str, Any], summary_history: list, caption_history: list
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The text path's ledger, its ε as MLflow metrics, and the internal training history."""
    logger.info("privacy ledger:\n%s", privacy.describe(ledger))
    history = {"internal": True, "internal_means": "non-private training losses and per-step "
               "batch sizes computed on the private albums: never released",
               "steps": [*summary_history, *caption_history]}
    return ledger, privacy.ledger_metrics(ledger), history


def pretrain_summary_lm_node(public_album_texts: pd.DataFrame, lm_tokenizer, params: dict):
    """Pre-train the summary LM on public pseudo-album summaries."""
    return pretrain_lm("summary_lm", public_album_texts, lm_tokenizer, params)


def pretrain_caption_lm_node(public_album_texts: pd.DataFrame, lm_tokenizer, params: dict):
    """Pre-train the caption LM on public (summary -> caption) rows."""
    return pretrain_lm("caption_lm", public_album_texts, lm_tokenizer, params)


def dp_finetune_summary_lm_node(pretrained, lm_tokenizer, album_texts, ledger, account,
                                public_album_texts, params, privacy_params):
    """DP-SGD fine-tune of the summary LM: one row per private album."""
    return dp_finetune_lm("summary_lm", pretrained, lm_tokenizer, album_texts, ledger, account,
                          params, privacy_params, public_album_texts)


def dp_finetune_caption_lm_node(pretrained, lm_tokenizer, album_texts, ledger, account,
                                public_album_texts, params, privacy_params):
    """DP-SGD fine-tune of the caption LM: rows = (summary -> each caption) of an album."""
    return dp_finetune_lm("caption_lm", pretrained, lm_tokenizer, album_texts, ledger, account,
                          params, privacy_params, public_album_texts)
