"""The one entry for every DP-SGD job (summary LM, caption LM, renderer, audit LMs), and the
records that tie a trained model to the plan and mechanism it was trained under.

``finetune`` takes the job's planned mechanism from the ledger, charges it to the albums'
account before training (refused past the lifetime budget), trains with the mechanism's own
secure streams (checkpointed under ``privacy.checkpoint_dir/<plan id>/<mechanism>`` when set, so
a killed run resumes and every step ever taken is counted), settles the account to what ran,
charges the ledger, and returns the model's privacy record.

``check_release`` is what every consumer of DP-trained models runs before it releases anything:
a model whose record names another plan, or a mechanism the ledger does not hold as spent with
the same σ, q and steps, is stale (e.g. left by a run killed between two fine-tunes), and the
release is refused, naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from .account import PrivacyAccount
from .album_gradients import Collate, RowLoss
from .clipping import public_album_grad_norms, public_clip_norm
from .config import PrivacyParams
from .distributed import train_dp_multiprocess
from .dpsgd import DPSGDConfig, DPTrainResult
from .ledger import LedgerError, charge
from .randomness import noise_source

logger = logging.getLogger(__name__)
RECORD_KEYS = ("noise_multiplier", "sample_rate", "steps")


class StaleReleaseError(LedgerError):
    """A model's privacy record and the ledger it would be released with disagree."""


def _planned(ledger: Mapping[str, Any], mechanism: str) -> dict[str, Any]:
    found = next((m for m in ledger["mechanisms"] if m["name"] == mechanism), None)
    if found is None:
        raise LedgerError(f"mechanism {mechanism!r} is not on the privacy plan "
                          f"{ledger.get('plan_id', '?')[:8]}: re-run the privacy_plan pipeline "
                          "with the same parameters (no private data was read)")
    return found


def finetune(
    model: nn.Module,
    albums_rows: Sequence[Sequence[Any]],
    row_loss: RowLoss,
    collate: Collate,
    *,
    ledger: Mapping[str, Any],
    mechanism: str,
    privacy_params: Mapping[str, Any] | PrivacyParams,
    account: PrivacyAccount | None,
    lr: float,
    public_seed: int,
    device: str | None = None,
    nproc: int = 1,
    progress: bool = True,
    stop_after: int | None = None,
    public_albums_rows: Sequence[Sequence[Any]] | None = None,
) -> tuple[DPTrainResult, dict[str, Any]]:
    """Run the planned DP-SGD job ``mechanism``; returns (result, the ledger charged with it).
    ``account`` None is accepted only for an internal plan (``audit_plan``).
    ``public_albums_rows``: PUBLIC pseudo-albums in the job's row format; with the plan's C
    ``auto`` (``privacy.max_grad_norm: auto``), C is the ``privacy.clip_quantile`` of their album
    gradient norms at ``model`` (no private read: no ε)."""
    params = PrivacyParams.from_dict(privacy_params)
    planned = _planned(ledger, mechanism)
    if planned.get("status") == "spent":
        raise LedgerError(f"the ledger already holds a finished {mechanism!r}: re-plan (run the "
                          "privacy_plan pipeline) before training it again")
    checkpoint_dir = (os.path.join(params.checkpoint_dir, ledger["plan_id"], mechanism)
                      if params.checkpoint_dir and nproc <= 1 and not ledger.get("internal")
                      else None)
    clip = planned.get("max_grad_norm", params.max_grad_norm)
    if clip in (None, "auto"):
        clip = _public_clip(model, public_albums_rows, row_loss, collate, params, mechanism,
                            device, baseline=bool(ledger.get("baseline")))
    config = DPSGDConfig.from_plan(
        ledger, mechanism, vars(params), lr=lr, public_seed=int(public_seed),
        noise_source=noise_source({"noise": params.noise}), device=device,
        checkpoint_dir=checkpoint_dir, checkpoint_every=int(params.checkpoint_every),
        max_grad_norm=float(clip))
    if account is None and not ledger.get("internal"):
        raise LedgerError(f"{mechanism!r}: only an internal plan (the insertion audit) may train "
                          "without charging the albums' privacy account")
    charge_id = account.charge(ledger, planned, params.lifetime_epsilon,
                               resumable=checkpoint_dir is not None) if account else None
    if nproc > 1:
        result = train_dp_multiprocess(model, albums_rows, row_loss, collate, config,
                                       nproc=nproc, progress=progress)
    else:
        from .dpsgd import train_dp

        result = train_dp(model, albums_rows, row_loss, collate, config, progress=progress,
                          stop_after=stop_after)
    record = result.ledger_record(mechanism)
    if account is not None:
        account.settle(ledger, charge_id, record)
    if not result.completed:
        raise LedgerError(f"{mechanism!r} stopped after {result.steps_taken} of "
                          f"{config.steps} steps; run again to resume from {checkpoint_dir}")
    return result, charge(ledger, record)


def _public_clip(model: nn.Module, public_albums_rows: Sequence[Sequence[Any]] | None,
                 row_loss: RowLoss, collate: Collate, params: PrivacyParams, mechanism: str,
                 device: str | None, baseline: bool) -> float:
    """C for ``mechanism`` from PUBLIC pseudo-albums (1.0 in the non-private baseline)."""
    if baseline:
        return 1.0  # no clipping in the ε = inf baseline: C is not used
    if not public_albums_rows:
        raise LedgerError(f"{mechanism}: privacy.max_grad_norm is auto but no public "
                          "pseudo-albums were given to tune C on; set privacy.max_grad_norm to a "
                          "number")
    if device is not None:
        model.to(device)
    rows = list(public_albums_rows)[: int(params.clip_public_albums)]
    norms = public_album_grad_norms(model, rows, row_loss, collate,
                                    grad_sample_mode=params.grad_sample_mode,
                                    physical_batch_rows=int(params.physical_batch_rows),
                                    album_reduction=params.album_reduction)
    return public_clip_norm(norms, float(params.clip_quantile), mechanism)


def run_mechanism(ledger: Mapping[str, Any], mechanism: str, account: PrivacyAccount,
                  privacy_params: Mapping[str, Any] | PrivacyParams,
                  release: Callable[[np.random.Generator], tuple[Any, Mapping[str, Any]]],
                  ) -> tuple[Any, dict[str, Any]]:
    """Run a one-shot mechanism (the semantic query): charged to the account before it draws,
    ``release(stream)`` -> (output, ledger record) on its own noise stream, then on the ledger."""
    params = PrivacyParams.from_dict(privacy_params)
    planned = _planned(ledger, mechanism)
    if planned.get("status") == "spent":
        raise LedgerError(f"the ledger already holds {mechanism!r} as spent: re-plan first")
    charge_id = account.charge(ledger, planned, params.lifetime_epsilon)
    output, record = release(noise_source({"noise": params.noise}).stream(mechanism))
    account.settle(ledger, charge_id, record)
    return output, charge(ledger, record)


def model_record(ledger: Mapping[str, Any], mechanism: str) -> dict[str, Any]:
    """What a DP-trained model carries: the plan id, its mechanism as charged, the guarantee."""
    spent = _planned(ledger, mechanism)
    return {"plan_id": ledger["plan_id"], "mechanism": mechanism,
            **{k: spent[k] for k in RECORD_KEYS if k in spent},
            "ledger_epsilon": ledger["epsilon"], "delta": ledger["delta"],
            "unit": ledger["unit"], "noise_source": ledger.get("noise_source")}


def check_release(ledger: Mapping[str, Any], records: Mapping[str, Mapping[str, Any] | None],
                  what: str) -> None:
    """Refuse ``what`` unless every named model was trained under this ledger's plan, with the
    mechanism the ledger holds as spent (same σ, q, steps). ``records``: {model name: record}."""
    for name, record in records.items():
        if not record or "plan_id" not in record:
            raise StaleReleaseError(
                f"{what} refused: {name} carries no privacy record (trained before records "
                "existed, or not by privacy.finetune); re-run dp_training (and rendering)")
        if record["plan_id"] != ledger.get("plan_id"):
            raise StaleReleaseError(
                f"{what} refused: {name} was trained under privacy plan "
                f"{str(record['plan_id'])[:8]} but the ledger is plan "
                f"{str(ledger.get('plan_id'))[:8]} (ε={ledger.get('epsilon')}): the model and "
                "the ledger come from different runs (a run killed part-way?). Re-run the whole "
                "pipeline (or privacy_plan and dp_training) so they are written together.")
        spent = _planned(ledger, record["mechanism"])
        same = all(spent.get(k) == record.get(k) for k in RECORD_KEYS if k in spent)
        if spent.get("status") != "spent" or not same:
            raise StaleReleaseError(
                f"{what} refused: {name}'s record {dict((k, record.get(k)) for k in RECORD_KEYS)} "
                f"does not match the ledger's {record['mechanism']!r} "
                f"{dict((k, spent.get(k)) for k in RECORD_KEYS)} [{spent.get('status')}]")
