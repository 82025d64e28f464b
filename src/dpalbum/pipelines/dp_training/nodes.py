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
    themes = pd.DataFrame()
    if spec["labeller"] == "public_labels":
        space = sl.public_label_space(public_corpus, spec["label_columns"])
        labels = sl.public_labels(public_corpus, spec["label_columns"], space)
        labeller = pd.DataFrame({"label_name": space, "family": "protagonist"})
        if spec.get("theme_column"):  # the theme family's bins follow the protagonist ones
            theme_names = sl.theme_space(public_corpus, spec["theme_column"],
                                         int(spec.get("theme_size", 2)))
            labeller = pd.concat([labeller, pd.DataFrame({"label_name": theme_names,
                                                          "family": "theme"})],
                                 ignore_index=True)
            themes = pd.DataFrame({"theme_value": public_corpus[spec["theme_column"]]
                                   .astype(str).to_numpy()})
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
    return labeller, pd.concat([pd.DataFrame({"image_id": public_corpus["image_id"].astype(str),
                                              "label": labels}), themes], axis=1)


def _families(labeller: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Each label family's slice of the histogram (one ``protagonist`` family without themes)."""
    if "family" not in labeller:
        return {"protagonist": (0, len(labeller))}
    families: dict[str, tuple[int, int]] = {}
    for name in dict.fromkeys(labeller["family"]):
        rows = np.flatnonzero(labeller["family"].to_numpy() == name)
        families[name] = (int(rows[0]), int(rows[-1]) + 1)
    return families


def _album_labels(captions: list[str], labeller: pd.DataFrame, spec: dict) -> np.ndarray:
    if spec["labeller"] == "public_labels":
        return sl.caption_labels(captions, spec["label_columns"],
                                 labeller["label_name"].tolist())
    return sl.assign_labels(encode_texts(captions), labeller.to_numpy(dtype=np.float32))


def album_bins(album_texts: pd.DataFrame, semantic_labeller: pd.DataFrame,
               spec: dict[str, Any]) -> list[list[int]]:
    """Each album's histogram bins (PRIVATE): its top-k protagonist labels, then its theme's bin
    (after the protagonist family's) when the theme family is on."""
    families = _families(semantic_labeller)
    start, stop = families["protagonist"]
    per_album = sl.album_top_k([_album_labels(list(caps), semantic_labeller.iloc[start:stop], spec)
                                for caps in album_texts["captions"]], int(spec["k"]))
    if "theme" in families:  # + at most one theme bin per album
        t0, t1 = families["theme"]
        theme_names = semantic_labeller["label_name"].iloc[t0:t1].tolist()
        for labels, caps in zip(per_album, album_texts["captions"]):
            theme = sl.album_theme(list(caps), spec["theme_column"], int(spec["theme_size"]),
                                   theme_names)
            if theme is not None:
                labels.append(t0 + theme)
    return per_album


def semantic_query_node(
    album_texts: pd.DataFrame, semantic_labeller: pd.DataFrame, privacy_plan: dict[str, Any],
    privacy_account: privacy.PrivacyAccount, params: dict[str, Any],
    privacy_params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """PRIVIMAGE query: noisy album-level top-k histogram of semantic labels (charged)."""
    if params["selection"]["mode"] != "semantic":
        return {"mode": params["selection"]["mode"], "distribution": None}, privacy_plan
    spec = params["semantic_query"]
    families, k = _families(semantic_labeller), int(spec["k"])
    # the most bins one album adds 1 to (the plan's sensitivity √ of it): one source of truth
    per_album_bins = privacy.SemanticQueryParams.from_dict(spec).labels_per_album
    result, ledger = privacy.run_mechanism(
        privacy_plan, "semantic_query", privacy_account, privacy_params,
        lambda stream: _query(album_bins(album_texts, semantic_labeller, spec),
                              len(semantic_labeller), per_album_bins, privacy_plan, stream))
    names = (semantic_labeller["label_name"].tolist() if "label_name" in semantic_labeller
             else [f"cluster_{i}" for i in range(len(semantic_labeller))])
    histogram = {"mode": "semantic", "labeller": spec["labeller"], "k": k,
                 "labels_per_album": per_album_bins,
                 "families": {name: list(bounds) for name, bounds in families.items()},
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


def _thresholded(semantic_histogram: dict[str, Any], selection: dict[str, Any],
                 family: str = "protagonist") -> np.ndarray:
    """One family's noisy distribution without labels whose count is within noise of zero.

    Post-processing of the DP release: a label survives when its noisy count exceeds
    ``min_count_in_noise_std`` noise standard deviations (PRIVIMAGE keeps the high-probability
    labels); if none survives, the family's plain clipped distribution is used.
    """
    start, stop = semantic_histogram.get("families", {}).get(
        family, (0, len(semantic_histogram["noisy_counts"])))
    counts = np.asarray(semantic_histogram["noisy_counts"], dtype=np.float64)[start:stop]
    keep = counts > selection.get("min_count_in_noise_std", 0.0) * semantic_histogram["noise_std"]
    if not keep.any():
        clipped = np.clip(counts, 0.0, None)
        return (clipped / clipped.sum() if clipped.sum() > 0
                else np.full(len(counts), 1.0 / len(counts)))
    return np.where(keep, counts, 0.0) / counts[keep].sum()


def _theme_distribution(semantic_histogram: dict[str, Any],
                        selection: dict[str, Any]) -> tuple[list[str], np.ndarray] | None:
    """The released theme family (names, thresholded distribution), or None without one."""
    families = (semantic_histogram.get("families") or {}) if semantic_histogram else {}
    if "theme" not in families:
        return None
    start, stop = families["theme"]
    return (semantic_histogram["labels"][start:stop],
            _thresholded(semantic_histogram, selection, "theme"))


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
        themes, weights = _theme_distribution(semantic_histogram, params["selection"]), None
        if themes is not None:  # within a protagonist, prefer the scenes the albums' themes show
            value_weight = sl.theme_value_weights(*themes)
            weights = (public_semantic_labels["theme_value"].map(value_weight).fillna(0.0)
                       .to_numpy(dtype=np.float64))
        chosen = sl.select_public(public_semantic_labels["label"].to_numpy(),
                                  _thresholded(semantic_histogram, params["selection"]), n,
                                  params["seed"], item_weights=weights)
    else:
        raise ValueError(f"dp_training.selection.mode {mode!r}: use semantic, all or none")
    logger.info("public selection (%s): %d of %d public images", mode, len(chosen), len(ids))
    return pd.DataFrame({"image_id": ids.iloc[chosen].to_numpy(),
                         "label": public_semantic_labels["label"].iloc[chosen].to_numpy()})


def public_album_texts_node(
    public_corpus: pd.DataFrame, public_selection: pd.DataFrame,
    semantic_histogram: dict[str, Any], params: dict[str, Any],
) -> pd.DataFrame:
    """PUBLIC pseudo-albums: captions of one semantic label (and 1-2 themes), summarised."""
    spec, rng = params["pseudo_albums"], np.random.default_rng(params["seed"])
    released = (_theme_distribution(semantic_histogram, params["selection"])
                if params["semantic_query"].get("theme_column") == spec.get("theme_column")
                else None)
    fallbacks = 0
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
            themed = None
            if released is not None:  # the theme mix the private albums show (DP, released)
                names, p = released
                values = names[rng.choice(len(names), p=p)].split(sl.THEME_JOIN)
                themed = group[group["theme"].isin(values)]
                fallbacks += themed.empty
            if themed is not None and not themed.empty:
                group = themed
            else:  # no released themes (or none this label's public captions show): at random
                themes = group["theme"].unique()
                n_themes = int(rng.integers(1, min(spec.get("max_themes", 1), len(themes)) + 1))
                group = group[group["theme"].isin(rng.choice(themes, n_themes, replace=False))]
            size = int(rng.integers(spec["min_captions"], spec["max_captions"] + 1))
            picks = rng.choice(len(group), size=min(size, len(group)), replace=False)
            captions = group["caption"].iloc[np.sort(picks)].tolist()
            rows.append({"album_id": f"public_{i:05d}", "summary": template_summary(captions),
                         "captions": captions})
    logger.info("built %d public pseudo-albums for LM pre-training, themes %s", len(rows),
                "from the released theme family" if released else "at random")
    if fallbacks:
        logger.info("%d pseudo-albums drew a released theme no public caption of their label "
                    "shows: their themes were drawn at random", fallbacks)
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
