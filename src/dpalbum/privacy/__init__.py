"""dpalbum.privacy — the only package that knows differential privacy.

Guarantee
---------
Every released artefact is (ε, δ)-differentially private with respect to **one album** (all of
one person's photos and texts): add or remove any one album and the distribution of everything
released changes by at most (ε, δ). ε is the PLD composition (dp-accounting) of every mechanism
on the ledger; RDP is reported beside it as a second opinion; ``shared/tools/verify_ledger.py``
recomposes it independently. The number of albums N is treated as public. Not covered: the
floating-point attack on Gaussian sampling (no secure RNG is used), the non-private training
losses kept in ``DPTrainResult.history`` (internal only), and anything the pipelines read from
private data outside the mechanisms listed here (e.g. internal evaluation, marked internal).

Mechanisms
----------
- DP-SGD (``train_dp``): Poisson sampling over albums (q = expected batch / N; empty batches are
  steps), every row of a sampled album in the batch, per-row gradients (Opacus hooks) summed per
  album and clipped once to C, noise N(0, σ²C²), division by the expected batch qN. Conv2d
  inputs are made contiguous (Opacus 1.6.0 gets channels-last per-sample gradients wrong).
  ``grad_sample_mode: ghost`` (``ghost_clipping``) gets the same album norms and clipped sum
  without per-row gradients (activations x output gradients per album).
- Gaussian semantic query (``semantic_query``): album-level top-k label histogram, L2 sensitivity
  √k, noise std σ√k.

Randomness
----------
Every DP draw (Gaussian noise, Poisson sampling, the album count's Laplace noise) comes from
``randomness.NoiseSource``: ChaCha20 keyed from the OS (``privacy.noise: secure``, the default)
or, for tests and demos only, from ``$DPALBUM_NOISE_SEED`` (``replayable``: every release then
says "NOT differentially private"). Each mechanism (and each rank) has its own stream.

Workflow (Kedro nodes stay pure: dicts in, dicts out; the account is a catalog handle)
------------------------------------------------------------------------------------
::

    plan = plan_run(album_ids, account, params["privacy"], params["dp_training"],
                    params["rendering"])     # pipeline privacy_plan: catalogue, DP album count,
                                             # calibration, lifetime check; refuses over budget
    sq, ledger = run_mechanism(plan, "semantic_query", account, params["privacy"],
                               lambda stream: ...)   # charged to the account before the draw
    result, ledger = finetune(model, albums_rows, row_loss, collate, ledger=ledger,
                              mechanism="summary_lm", privacy_params=params["privacy"],
                              account=account, lr=1e-3, public_seed=seed)
    model.config.dpalbum_privacy = model_record(ledger, "summary_lm")
    check_release(ledger, {"summary_lm": record, ...}, "sampling")   # stale models refused

``row_loss(model, batch) -> Tensor (n_rows,)`` returns one loss per row; ``collate(rows) ->
batch``; ``albums_rows[i]`` lists album i's rows, summed (or averaged) into one album gradient
before the single clip. ``privacy.epsilon: .inf`` is the loudly-logged non-private baseline
(σ = 0, no clipping, ledger ε "inf"); it needs ``privacy.lifetime_epsilon: .inf`` too.
The pitfalls this package guards against, each with its test, are listed in docs/privacy.md.
"""

from .account import PrivacyAccount, PrivacyAccountDataset, dataset_key
from .accounting import (
    EpsilonReport,
    compose_epsilon,
    opacus_prv_epsilon,
    pld_epsilon,
    rdp_epsilon,
)
from .album_gradients import album_gradients, clipped_album_sum, unwrap_dp, wrap_for_dp
from .calibration import CalibrationResult, calibrate_noise_multipliers
from .config import PrivacyConfigError, PrivacyParams, SemanticQueryParams
from .conv_guard import guard_conv_inputs
from .distributed import train_dp_multiprocess
from .dpsgd import DPSGDConfig, DPTrainResult, train_dp
from .errors import PrivacyBudgetExceeded
from .finetune import StaleReleaseError, check_release, finetune, model_record, run_mechanism
from .ledger import (
    LedgerError,
    charge,
    describe,
    ledger_metrics,
    ledger_tags,
    mechanism_sigma,
    plan_privacy,
    recompose,
    write_ledger,
)
from .plan import audit_plan, mechanism_catalogue, plan_run
from .query import SemanticQueryResult, album_label_histogram, dp_album_count, semantic_query
from .randomness import NOT_DP, NoiseSource, noise_source
from .sampling import PoissonAlbumSampler

__all__ = [
    "NOT_DP",
    "audit_plan",
    "NoiseSource",
    "PrivacyAccount",
    "PrivacyAccountDataset",
    "PrivacyConfigError",
    "SemanticQueryParams",
    "StaleReleaseError",
    "run_mechanism",
    "check_release",
    "dataset_key",
    "dp_album_count",
    "finetune",
    "mechanism_catalogue",
    "model_record",
    "noise_source",
    "plan_run",
    "CalibrationResult",
    "DPSGDConfig",
    "DPTrainResult",
    "EpsilonReport",
    "LedgerError",
    "PoissonAlbumSampler",
    "PrivacyBudgetExceeded",
    "PrivacyParams",
    "SemanticQueryResult",
    "album_gradients",
    "album_label_histogram",
    "calibrate_noise_multipliers",
    "charge",
    "clipped_album_sum",
    "compose_epsilon",
    "describe",
    "guard_conv_inputs",
    "ledger_metrics",
    "ledger_tags",
    "mechanism_sigma",
    "opacus_prv_epsilon",
    "plan_privacy",
    "pld_epsilon",
    "rdp_epsilon",
    "recompose",
    "semantic_query",
    "train_dp",
    "train_dp_multiprocess",
    "unwrap_dp",
    "wrap_for_dp",
    "write_ledger",
]

