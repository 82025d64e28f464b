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
LM_ROLES = ("summary_lm", "caption_lm")


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def mechanism_specs(
    dp_training: dict[str, Any], rendering: Any | None = None
) -> list[dict[str, Any]]:
    """Every private mechanism of the run, in run order, as ``plan_privacy`` specs: the text
    path's, then the renderer's optional DP fine-tune (``params:rendering``) when it is on."""
    from dpalbum.pipelines.rendering.nodes import renderer_mechanism_spec

    specs: list[dict[str, Any]] = []
    if dp_training["selection"]["mode"] == "semantic":
        k = int(dp_training["semantic_query"]["k"])
        specs.append({"name": "semantic_query", "kind": "gaussian", "l2_sensitivity": k ** 0.5,
                      "noise_multiplier": dp_training["semantic_query"].get("noise_multiplier",
                                                                            "auto")})
    for role in LM_ROLES:
        dp = dp_training[role]["dp"]
        specs.append({"name": role, "kind": "dpsgd",
                      "expected_batch_albums": dp["expected_batch_albums"],
                      "epochs": dp["epochs"],
                      "noise_multiplier": dp.get("noise_multiplier", "auto")})
    if rendering is not None:
        specs += renderer_mechanism_spec(rendering)
    return specs


def plan_privacy_budget_node(
    private_album_index: list[str], privacy_params: dict[str, Any], dp_training: dict[str, Any],
    rendering: Any | None = None,
) -> dict[str, Any]:
    """Compose every planned mechanism of the run (text path and, when on, the renderer's DP
    fine-tune) before private data is read; refuse if over budget."""
    plan = privacy.plan_privacy(privacy_params, len(private_album_index),
                                mechanism_specs(dp_training, rendering))
    logger.info("privacy plan accepted:\n%s", privacy.describe(plan))
    return plan


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
    params: dict[str, Any], privacy_params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """PRIVIMAGE query: noisy album-level top-k histogram of semantic labels (charged)."""
    if params["selection"]["mode"] != "semantic":
        return {"mode": params["selection"]["mode"], "distribution": None}, privacy_plan
    spec = params["semantic_query"]
    per_album = [_album_labels(list(caps), semantic_labeller, spec)
                 for caps in album_texts["captions"]]
    k = int(spec["k"])
    result = privacy.semantic_query(
        sl.album_top_k(per_album, k), len(semantic_labeller), k,
        privacy.mechanism_sigma(privacy_plan, "semantic_query"),
        seed=privacy_params.get("noise_seed"), allow_non_private=privacy_plan["baseline"])
    ledger = privacy.charge(privacy_plan, result.mechanism)
    names = (semantic_labeller["label_name"].tolist() if "label_name" in semantic_labeller
             else [f"cluster_{i}" for i in range(len(semantic_labeller))])
    histogram = {"mode": "semantic", "labeller": spec["labeller"], "k": k,
                 "noise_std": result.mechanism["noise_std"], "labels": names,
                 "noisy_counts": result.noisy_counts.tolist(),
                 "distribution": result.distribution.tolist()}
    return histogram, ledger


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


def _rows(role: str, texts: pd.DataFrame, tokenizer) -> lm.TextRows:
    return (lm.summary_rows if role == "summary_lm" else lm.caption_rows)(texts, tokenizer)


def pretrain_lm(
    role: str, public_album_texts: pd.DataFrame, lm_tokenizer, params: dict[str, Any]
):
    """Build the role's LM and pre-train it on PUBLIC pseudo-album rows (skipped if none)."""
    cfg = params[role]
    model = lm.build_language_model(lm.LanguageModelConfig(seed=params["seed"], **cfg["model"]),
                                    lm_tokenizer)
    if len(public_album_texts) == 0:
        logger.warning("%s: no public pre-training data (selection: none); DP fine-tuning "
                       "starts from random weights", role)
        return model
    rows = _rows(role, public_album_texts, lm_tokenizer)
    config = lm.PretrainConfig(seed=params["seed"], device=_device(params["device"]),
                               **cfg["pretrain"])
    return lm.pretrain_lm(model, lm_tokenizer, rows.texts, rows.loss_start, config)


def dp_finetune_lm(
    role: str, pretrained_lm, lm_tokenizer, album_texts: pd.DataFrame, ledger: dict[str, Any],
    params: dict[str, Any], privacy_params: dict[str, Any],
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """DP-SGD LoRA fine-tune on private album texts (album = unit), charged to the ledger."""
    cfg, device = params[role]["dp"], _device(params["device"])
    pretrained_lm.to(device)  # before LoRA and Opacus hooks (opacus #820)
    model = lm.make_lora(pretrained_lm, **cfg["lora"])
    rows = _rows(role, album_texts, lm_tokenizer)
    by_album: dict[str, list[tuple[str, int | None]]] = {}
    for i, (text, album) in enumerate(zip(rows.texts, rows.album_ids)):
        by_album.setdefault(album, []).append((text, None if rows.loss_start is None
                                               else rows.loss_start[i]))
    albums_rows = [by_album.get(str(a), []) for a in album_texts["album_id"]]
    collate = lm.RowCollate(lm_tokenizer, params[role]["pretrain"]["max_length"])
    config = privacy.DPSGDConfig.from_plan(ledger, role, privacy_params, lr=cfg["lr"],
                                           seed=privacy_params.get("noise_seed"), device=device)
    nproc = int(params.get("distributed", {}).get("nproc_per_node", 1))
    result = privacy.train_dp_multiprocess(model, albums_rows, lm.row_losses, collate, config,
                                           nproc=nproc)
    ledger = privacy.charge(ledger, result.ledger_record(role))
    merged = result.model.merge_and_unload()  # LoRA folded into the public base weights
    merged.config.dpalbum_privacy = {"mechanism": role, "ledger_epsilon": ledger["epsilon"],
                                     "delta": ledger["delta"], "unit": ledger["unit"],
                                     "run_epsilon": result.epsilon_so_far}
    history = [{"role": role, **h} for h in result.history]
    return merged.eval(), ledger, history


def finalise_ledger_node(
    ledger: dict[str, Any], summary_history: list, caption_history: list
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The released ledger, its ε as MLflow metrics, and the internal training history."""
    ledger = {**ledger, "status": "spent" if all(
        m.get("status") == "spent" for m in ledger["mechanisms"]) else "partially spent"}
    logger.info("privacy ledger:\n%s", privacy.describe(ledger))
    return ledger, privacy.ledger_metrics(ledger), [*summary_history, *caption_history]


def pretrain_summary_lm_node(public_album_texts: pd.DataFrame, lm_tokenizer, params: dict):
    """Pre-train the summary LM on public pseudo-album summaries."""
    return pretrain_lm("summary_lm", public_album_texts, lm_tokenizer, params)


def pretrain_caption_lm_node(public_album_texts: pd.DataFrame, lm_tokenizer, params: dict):
    """Pre-train the caption LM on public (summary -> caption) rows."""
    return pretrain_lm("caption_lm", public_album_texts, lm_tokenizer, params)


def dp_finetune_summary_lm_node(pretrained, lm_tokenizer, album_texts, ledger, params, privacy):
    """DP-SGD fine-tune of the summary LM: one row per private album."""
    return dp_finetune_lm("summary_lm", pretrained, lm_tokenizer, album_texts, ledger, params,
                          privacy)


def dp_finetune_caption_lm_node(pretrained, lm_tokenizer, album_texts, ledger, params, privacy):
    """DP-SGD fine-tune of the caption LM: rows = (summary -> each caption) of an album."""
    return dp_finetune_lm("caption_lm", pretrained, lm_tokenizer, album_texts, ledger, params,
                          privacy)
