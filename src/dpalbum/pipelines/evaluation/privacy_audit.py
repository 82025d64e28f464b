"""Nodes of the insertion audit (INTERNAL): canaries planted in a dedicated audit run.

``kedro run --params evaluation.privacy_audit.enabled=true`` adds canary albums to the private
album texts, re-trains both LMs on them exactly as dp_training does (its own plan over N + the
inserted canaries, the same ``privacy.finetune`` and LoRA, charged to an audit ledger; not to the
albums' account: nothing trained here is ever released), and attacks inserted vs
held-out canaries (Jagielski et al. 2020; Nasr et al. 2023). The release run is untouched: the
audit LMs live in memory only (never saved, never sampled for the release), the canaries never
reach ``album_texts``, and with ``enabled: false`` (the default) these nodes do nothing.

Two attacks per LM: the loss attack (lower loss: member), and the same loss minus the loss under
the public pre-trained LM (the reference-calibrated attack of Watson et al. 2022), which takes out
how hard a text is by itself and keeps what fine-tuning on it added.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

import pandas as pd
import torch

from dpalbum import privacy
from dpalbum.models import language_model as lm
from dpalbum.models.devices import generation_device
from dpalbum.models.sampler import AlbumSizePrior, SamplingConfig, sample_album_texts
from dpalbum.pipelines.evaluation import audit, report
from dpalbum.pipelines.evaluation.config import PrivacyAuditConfig

logger = logging.getLogger(__name__)

NOT_AN_AUDIT_RUN = ("not an audit run (the release run plants no canary): run kedro run --params "
                    "evaluation.privacy_audit.enabled=true")
LM_ROLES = ("summary_lm", "caption_lm")


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, nested dicts key by key (inputs unchanged)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def plant_canaries_node(album_texts: pd.DataFrame, public_corpus: pd.DataFrame,
                        privacy_audit: PrivacyAuditConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Audit run: the canaries (``inserted`` column) and the audit's training texts.

    The canaries are random strings of PUBLIC caption words; a seeded random subset of
    ``n_inserted_canaries`` joins the private album texts, the rest are the held-out canaries.
    Returns empty frames when the audit is off.
    """
    if not privacy_audit.enabled:
        return pd.DataFrame(columns=[*album_texts.columns, "inserted"]), album_texts.iloc[:0]
    n = privacy_audit.n_inserted_canaries + privacy_audit.n_heldout_canaries
    canaries = audit.canary_album_texts(audit.canary_words(public_corpus["caption"]), n,
                                        privacy_audit.captions_per_canary,
                                        privacy_audit.words_per_text, privacy_audit.seed,
                                        privacy_audit.distinct_captions)
    order = pd.Series(range(n)).sample(frac=1.0, random_state=privacy_audit.seed).to_numpy()
    canaries["inserted"] = False
    canaries.loc[order[:privacy_audit.n_inserted_canaries], "inserted"] = True
    clash = set(canaries["album_id"]) & set(album_texts["album_id"].astype(str))
    if clash:
        raise ValueError(f"canary album ids {sorted(clash)[:3]} clash with private album ids")
    training = pd.concat([album_texts, canaries.loc[canaries["inserted"], album_texts.columns]],
                         ignore_index=True)
    logger.info("privacy audit: %d canary albums planted among %d private albums (%d held out)",
                privacy_audit.n_inserted_canaries, len(album_texts),
                privacy_audit.n_heldout_canaries)
    return canaries, training


def train_audit_lms_node(audit_training_texts: pd.DataFrame, public_album_texts: pd.DataFrame,
                         lm_tokenizer: Any, privacy_params: dict[str, Any],
                         dp_training: dict[str, Any],
                         privacy_audit: PrivacyAuditConfig) -> dict[str, Any]:
    """Audit run: both LMs trained as dp_training trains them, on the texts with canaries.

    The plan is composed for the audit's own N (private albums + inserted canaries) with the
    release's budget and shares, so each audit LM carries the ε the release's LM carries; the
    public pre-training is re-run (seeded, so it is the release's) and kept as the reference
    model of the calibrated attack. Nothing here is saved: the models stay in memory. Returns
    ``{}`` when the audit is off (Kedro saves no None).
    """
    if not privacy_audit.enabled:
        return {}
    params = deep_merge(dp_training, privacy_audit.training)
    if privacy_audit.training:
        logger.warning("privacy audit: dp_training overridden for the audit LMs only: %s",
                       privacy_audit.training)
    plan = privacy.audit_plan(privacy_params, params, len(audit_training_texts))
    device = str(generation_device(params["device"]))  # auto: the GPU when there is one
    models: dict[str, Any] = {}
    for role in LM_ROLES:
        reference = lm.build_and_pretrain(role, public_album_texts, lm_tokenizer, params[role],
                                          int(params["seed"]), device)
        # fine-tuning wraps and merges LoRA in place: train a copy, keep the public reference
        torch.manual_seed(int(params["seed"]))  # LoRA init: public seed
        model = lm.make_lora(copy.deepcopy(reference).to(device), **params[role]["dp"]["lora"])
        result, plan = privacy.finetune(
            model, lm.rows_by_album(role, audit_training_texts, lm_tokenizer), lm.row_losses,
            lm.RowCollate(lm_tokenizer, params[role]["pretrain"]["max_length"]), ledger=plan,
            mechanism=role, privacy_params=privacy_params, account=None,
            lr=params[role]["dp"]["lr"], public_seed=int(params["seed"]), device=device,
            public_albums_rows=lm.rows_by_album(role, public_album_texts, lm_tokenizer))
        models[role] = result.model.merge_and_unload().eval()
        models[f"{role}_reference"] = reference.eval()
    return {"models": models, "ledger": plan}


def _attack(model: Any, reference: Any, tokenizer: Any, positives: pd.DataFrame,
            negatives: pd.DataFrame, role: str, config: PrivacyAuditConfig,
            delta: float) -> dict[str, float]:
    """Loss attack and reference-calibrated attack, positives (trained on) vs negatives."""
    def losses(lm: Any, texts: pd.DataFrame) -> pd.Series:
        return audit.album_losses(lm, tokenizer, texts, role, config.max_length,
                                  config.batch_size)

    found: dict[str, float] = {}
    loss = [losses(model, positives), losses(model, negatives)]
    ref = [losses(reference, positives), losses(reference, negatives)]
    for attack, scores in (("", loss), ("ref_", [loss[0] - ref[0], loss[1] - ref[1]])):
        result = audit.membership_inference(scores[0], scores[1], delta)
        found |= {f"{attack}{k}": result[k] for k in
                  ("auc", "tpr_at_1pct_fpr", "epsilon_lower_bound")}
    return found


def _mechanism_epsilons(ledger: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m.get("epsilon_alone") for m in ledger.get("mechanisms", [])}


def privacy_audit_node(audit_lms: dict[str, Any], audit_canaries: pd.DataFrame,
                       album_texts: pd.DataFrame, heldout_album_texts: pd.DataFrame,
                       lm_tokenizer: Any, sampling: SamplingConfig,
                       privacy_audit: PrivacyAuditConfig) -> dict[str, Any]:
    """Audit run: membership of canaries and of albums in the audit LMs; verbatim canaries.

    Per LM: AUC, TPR at 1% FPR and the ε lower bound of both attacks, inserted vs held-out
    canaries and training vs held-out albums, with the verbatim ceiling of the latter. Then
    ``n_samples`` captions (and their summaries) are sampled from the audit LMs with the
    release's decoding and matched verbatim against the inserted and the held-out canaries.
    """
    if not audit_lms:
        return report.section("privacy_audit", internal=True, absent=NOT_AN_AUDIT_RUN)
    models, ledger = audit_lms["models"], audit_lms["ledger"]
    delta = float(ledger.get("delta", 1e-5))
    inserted = audit_canaries[audit_canaries["inserted"]]
    heldout = audit_canaries[~audit_canaries["inserted"]]
    values: dict[str, float] = {"n_inserted_canaries": len(inserted),
                                "n_heldout_canaries": len(heldout),
                                "n_members": len(album_texts),
                                "n_nonmembers": len(heldout_album_texts)}
    for role in LM_ROLES:
        kind = role.split("_")[0]
        model, reference = models[role], models[f"{role}_reference"]
        canary = _attack(model, reference, lm_tokenizer, inserted, heldout, kind,
                         privacy_audit, delta)
        values |= {f"{role}_canary_{k}": v for k, v in canary.items()}
        if min(len(album_texts), len(heldout_album_texts)) >= 2:
            member = _attack(model, reference, lm_tokenizer, album_texts, heldout_album_texts,
                             kind, privacy_audit, delta)
            values |= {f"{role}_member_{k}": v for k, v in member.items()}
            values[f"{role}_member_verbatim_ceiling_auc"] = audit.verbatim_ceiling_auc(
                audit.album_text_units(album_texts, kind),
                audit.album_text_units(heldout_album_texts, kind))
    values |= _verbatim_canaries(models, lm_tokenizer, inserted, heldout, sampling,
                                 privacy_audit)
    return report.section("privacy_audit", internal=True, metrics=values, notes={
        "audit_ledger_epsilon": ledger.get("epsilon"),
        "audit_mechanism_epsilons": _mechanism_epsilons(ledger),
        "training_overrides": privacy_audit.training or None,
        "canaries": f"{privacy_audit.words_per_text} random public words per text; "
                    f"{privacy_audit.distinct_captions} secret caption(s) over "
                    f"{privacy_audit.captions_per_canary} photos per canary album"})


def _verbatim_canaries(models: dict[str, Any], tokenizer: Any, inserted: pd.DataFrame,
                       heldout: pd.DataFrame, sampling: SamplingConfig,
                       config: PrivacyAuditConfig) -> dict[str, float]:
    """Verbatim canary summaries and captions in ``n_samples`` sampled captions."""
    if config.n_samples == 0:
        return {"n_samples": 0.0}
    per_album = config.captions_per_album
    run = replace(SamplingConfig.from_params(sampling),
                  n_albums=audit.n_albums_for(config.n_samples, per_album),
                  photos_per_album=AlbumSizePrior(min=per_album, max=per_album),
                  seed=config.sampling_seed, show_progress=False)
    sampled, _ = sample_album_texts(models["summary_lm"], models["caption_lm"], tokenizer, run)
    captions = [c for album in sampled for c in album.captions][:config.n_samples]
    summaries = [album.summary for album in sampled]
    values = {"n_samples": float(len(captions)), "n_sampled_summaries": float(len(summaries))}
    for name, canaries in (("canary", inserted), ("heldout_canary", heldout)):
        caps = audit.verbatim_regenerations(captions, [c for cs in canaries["captions"]
                                                       for c in cs])
        sums = audit.verbatim_regenerations(summaries, list(canaries["summary"]))
        values |= {f"{name}_captions_regenerated": caps["distinct"],
                   f"{name}_caption_hits": caps["hits"],
                   f"{name}_summaries_regenerated": sums["distinct"]}
    return values
