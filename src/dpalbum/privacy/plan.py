"""The one privacy plan of a run: the catalogue of mechanisms, the DP album count, calibration,
the cumulative account, all before any private data is read by any other node.

Order (``plan_run``, the only writer of ``privacy_plan``; pipeline ``privacy_plan``, first):
1. parse the privacy-relevant parameters strictly (``privacy.config``): a typo is refused;
2. build the catalogue of mechanisms of this run from the parameters (album count, semantic
   query, summary LM, caption LM, the renderer's optional fine-tune), with their sensitivities;
3. check the albums' cumulative account: it must have room for a run at this budget;
4. release the album count N̂ = N + Laplace(1/ε_count) (its own share, its own stream), unless the
   user declared N public (``privacy.album_count: public``);
5. calibrate every "auto" noise multiplier so the joint composition lands just under the budget,
   with q = expected batch / N̂, and refuse over budget or over the lifetime budget;
6. give the plan a random id (never derived from data): every model trained under it records
   that id and its mechanism, so a release whose models and ledger disagree is refused.
A run killed before it finished is resumed with its plan (``privacy.checkpoint_dir``): same id,
same N̂, same σ, and the DP-SGD jobs continue from their checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .account import PrivacyAccount, dataset_key
from .config import DPSGDParams, PrivacyConfigError, PrivacyParams, SemanticQueryParams
from .errors import PrivacyBudgetExceeded
from .ledger import charge, describe, plan_privacy
from .query import dp_album_count
from .randomness import noise_source

logger = logging.getLogger(__name__)
LM_MECHANISMS = ("summary_lm", "caption_lm")
RENDERER = "renderer"
ALBUM_COUNT = "album_count"
SEMANTIC_QUERY = "semantic_query"


def _group(params: Any) -> dict[str, Any]:
    """A parameter group as a plain dict (Kedro may hand over a validated dataclass)."""
    if hasattr(params, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(params)
    return dict(params or {})


def lm_dp_params(dp_training: Mapping[str, Any], role: str) -> DPSGDParams:
    """``dp_training.<role>.dp``, strictly parsed."""
    return DPSGDParams.from_dict(_group(dp_training)[role]["dp"], f"dp_training.{role}.dp")


def renderer_dp_params(rendering: Any) -> DPSGDParams:
    """``rendering.dp_finetune``, strictly parsed (``enabled: false`` by default)."""
    raw = _group(rendering).get("dp_finetune") or {"enabled": False}
    return DPSGDParams.from_dict({"expected_batch_albums": 16, "epochs": 2, **raw},
                                 "rendering.dp_finetune")


def mechanism_catalogue(privacy_params: Mapping[str, Any] | PrivacyParams,
                        dp_training: Mapping[str, Any], rendering: Any) -> list[dict[str, Any]]:
    """Every mechanism of this run that reads private data, in run order, as plan specs (the
    album count's scale is filled in by ``plan_run`` once its share of ε is known)."""
    params = PrivacyParams.from_dict(privacy_params)
    params.check_run_shares()
    dp_training = _group(dp_training)
    specs: list[dict[str, Any]] = []
    if params.album_count == "dp":
        specs.append({"name": ALBUM_COUNT, "kind": "laplace", "l1_sensitivity": 1.0})
    selection = dp_training.get("selection", {}).get("mode", "semantic")
    if selection == "semantic":
        query = SemanticQueryParams.from_dict(dp_training["semantic_query"])
        # one album adds 1 to each of at most k distinct labels, and 1 to its theme's bin
        # when the theme family is on: L2 sensitivity √(k [+ 1])
        specs.append({"name": SEMANTIC_QUERY, "kind": "gaussian",
                      "l2_sensitivity": math.sqrt(query.labels_per_album),
                      "noise_multiplier": query.noise_multiplier})
    for role in LM_MECHANISMS:
        dp = lm_dp_params(dp_training, role)
        specs.append({"name": role, "kind": "dpsgd",
                      "expected_batch_albums": dp.expected_batch_albums, "epochs": dp.epochs,
                      "noise_multiplier": dp.noise_multiplier,
                      "batch_parameter": f"dp_training.{role}.dp.expected_batch_albums"})
    renderer = renderer_dp_params(rendering)
    if renderer.enabled:
        specs.append({"name": RENDERER, "kind": "dpsgd",
                      "expected_batch_albums": renderer.expected_batch_albums,
                      "epochs": renderer.epochs, "noise_multiplier": renderer.noise_multiplier,
                      "batch_parameter": "rendering.dp_finetune.expected_batch_albums"})
    for spec in specs:
        if spec["name"] not in params.shares:
            raise PrivacyConfigError(f"privacy.shares has no share for the mechanism "
                                     f"{spec['name']!r}, which this run uses")
    return specs


def config_fingerprint(specs: Sequence[Mapping[str, Any]], params: PrivacyParams) -> str:
    """A hash of everything the plan depends on besides the data (a resumed plan must match)."""
    keys = ("epsilon", "delta", "shares", "max_grad_norm", "album_count", "noise",
            "calibration_tolerance")
    blob = json.dumps({"specs": list(specs), **{k: getattr(params, k) for k in keys}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _count_scale(params: PrivacyParams, specs: Sequence[Mapping[str, Any]]) -> float:
    """Laplace scale b of the album count: ε_count = its share of the budget, b = 1 / ε_count."""
    if params.is_baseline:
        return 0.0
    total = sum(params.shares[s["name"]] for s in specs)
    return 1.0 / (params.epsilon * params.shares[ALBUM_COUNT] / total)


def plan_run(album_ids: Sequence[str], account: PrivacyAccount,
             privacy_params: Mapping[str, Any] | PrivacyParams, dp_training: Mapping[str, Any],
             rendering: Any) -> dict[str, Any]:
    """The run's privacy plan (a ledger with every mechanism planned, the album count spent).

    With ``privacy.checkpoint_dir`` set, the account's last plan for these albums and this
    config is resumed when its run never released (killed part-way)."""
    params = PrivacyParams.from_dict(privacy_params)
    specs = mechanism_catalogue(params, dp_training, rendering)
    key = dataset_key(album_ids)
    fingerprint = config_fingerprint(specs, params)
    if params.checkpoint_dir:
        resumed = account.unfinished_plan(key, fingerprint)
        if resumed is not None:
            logger.warning("privacy plan %s did not finish: resuming it (same N, σ and q; DP-SGD "
                           "jobs continue from %s)", resumed["plan_id"][:8], params.checkpoint_dir)
            return resumed
    if params.is_baseline and not math.isinf(params.lifetime_epsilon):
        raise PrivacyBudgetExceeded(
            "privacy.epsilon is inf (the NON-PRIVATE baseline): it spends an infinite budget on "
            "these albums, so their account would be at ε = inf for good. Refused before reading "
            "any private data; to run it anyway set privacy.lifetime_epsilon: .inf as well.")
    so_far = account.epsilon(key, params.delta)
    if so_far + params.epsilon > params.lifetime_epsilon * (1 + 1e-9):
        raise PrivacyBudgetExceeded(
            f"privacy plan refused before reading any private data: the albums' privacy account "
            f"is at ε={so_far:.4g}; a run at ε={params.epsilon:g} could take it past "
            f"privacy.lifetime_epsilon={params.lifetime_epsilon:g}.\nHistory of this dataset:\n"
            f"{account.history(key)}\nEvery run on these albums spends from one lifetime "
            "budget: raise privacy.lifetime_epsilon only if the data owner agrees.")
    if params.checkpoint_dir and int(params.checkpoint_every) > 0:
        for spec in specs:  # room for the steps a kill between two checkpoints makes us re-do
            if spec["kind"] == "dpsgd":
                spec["reserve_steps"] = int(params.checkpoint_every)
    plan_id = uuid.uuid4().hex  # random: never derived from the data or a seed
    source = noise_source({"noise": params.noise})
    n_true = len(album_ids)
    if params.album_count == "dp":
        count_spec = next(s for s in specs if s["name"] == ALBUM_COUNT)
        count_spec["noise_multiplier"] = _count_scale(params, specs)
        provisional = {"plan_id": plan_id, "delta": params.delta, "config_fingerprint": fingerprint}
        account.open_plan(provisional, key)
        charge_id = account.charge(provisional, {**count_spec}, params.lifetime_epsilon)
        count = dp_album_count(n_true, count_spec["noise_multiplier"],
                               source.stream(ALBUM_COUNT))
        account.settle(provisional, charge_id, count.mechanism)
        n_albums = count.n_albums
        logger.info("album count released with Laplace noise (scale %.3g): N̂ = %d",
                    count_spec["noise_multiplier"], n_albums)
    else:
        n_albums = n_true
        logger.warning("privacy.album_count: public — the number of albums (%d) is treated as "
                       "public and is not protected", n_albums)
    plan = plan_privacy(params, n_albums, specs)  # q capped at 1 when a batch exceeds N̂
    plan.update(plan_id=plan_id, config_fingerprint=fingerprint)
    if params.album_count == "dp":
        plan = charge(plan, count.mechanism)
    if params.album_count != "dp":
        account.open_plan(plan, key)
    total = account.check(key, params.delta,
                          [m for m in plan["mechanisms"] if m["name"] != ALBUM_COUNT],
                          params.lifetime_epsilon, "privacy plan")
    account.save_plan(plan)
    logger.info("privacy plan %s accepted (account after this run: ε ≤ %.4g of lifetime %g):\n%s",
                plan_id[:8], total, params.lifetime_epsilon, describe(plan))
    return plan


def audit_plan(privacy_params: Mapping[str, Any] | PrivacyParams, dp_training: Mapping[str, Any],
               n_albums: int) -> dict[str, Any]:
    """The INTERNAL insertion audit's own plan: the release's budget, shares and text-path
    mechanisms over the audit's N (albums + inserted canaries). Its models are never released,
    so it is not charged to the albums' account."""
    params = PrivacyParams.from_dict(privacy_params)
    public = PrivacyParams.from_dict({**vars(params), "album_count": "public",
                                      "lifetime_epsilon": math.inf})
    specs = mechanism_catalogue(public, dp_training, {"dp_finetune": {"enabled": False}})
    plan = plan_privacy(public, n_albums, specs)
    plan.update(plan_id=uuid.uuid4().hex, internal=True, purpose="insertion audit (internal)")
    return plan
