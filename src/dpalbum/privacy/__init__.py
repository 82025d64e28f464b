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
  Ghost clipping is refused (it cannot sum rows per album before clipping).
- Gaussian semantic query (``semantic_query``): album-level top-k label histogram, L2 sensitivity
  √k, noise std σ√k.

Ledger workflow (Kedro nodes stay pure: dicts in, dicts out)
------------------------------------------------------------
::

    plan = plan_privacy(params["privacy"], n_albums, [
        {"name": "semantic_query", "kind": "gaussian", "l2_sensitivity": k ** 0.5},
        {"name": "summary_lm", "kind": "dpsgd", "expected_batch_albums": 16, "epochs": 5},
    ])                                   # composes; raises PrivacyBudgetExceeded if over budget
    sq = semantic_query(label_sets, n_labels, k, mechanism_sigma(plan, "semantic_query"), seed,
                        allow_non_private=plan["baseline"])
    ledger = charge(plan, sq.mechanism)                           # sq.distribution -> selection
    config = DPSGDConfig.from_plan(plan, "summary_lm", params["privacy"], lr=1e-3,
                                   checkpoint_dir="data/06_models/summary_lm_ckpt")
    result = train_dp(model, albums_rows, row_loss, collate, config)   # LoRA: peft model built
    ledger = charge(ledger, result.ledger_record("summary_lm"))   # -> privacy_ledger.json
    ledger_metrics(ledger), ledger_tags(ledger)                   # -> kedro-mlflow datasets

``row_loss(model, batch) -> Tensor (n_rows,)`` returns one loss per row (mean over its tokens /
pixels); ``collate(rows) -> batch``; ``albums_rows[i]`` lists album i's rows. Rows of one album
are summed (or averaged: ``album_reduction``) into one gradient before the single clip.
Checkpoints (``checkpoint_dir``, ``checkpoint_every``) carry trainable weights, optimizer,
step, every RNG and the accountant history; a second call with the same directory resumes.
Seeds: ``seed=None`` (the default) draws the noise seed from OS entropy; a known seed lets
anyone who knows it replay the noise, so use fixed seeds for tests only.

``noise_multiplier`` in a spec is a number or ``"auto"`` (default: calibrated so the composed ε
lands within 1% below the budget, split by ``privacy.shares``). ``privacy.epsilon: .inf`` (or
``"inf"``) is the loudly-logged non-private baseline: σ = 0, no clipping, ledger ε ``"inf"``.
"""

from .accounting import (
    EpsilonReport,
    compose_epsilon,
    opacus_prv_epsilon,
    pld_epsilon,
    rdp_epsilon,
)
from .album_gradients import album_gradients, clipped_album_sum, unwrap_dp, wrap_for_dp
from .calibration import CalibrationResult, calibrate_noise_multipliers
from .conv_guard import guard_conv_inputs
from .distributed import train_dp_multiprocess
from .dpsgd import DPSGDConfig, DPTrainResult, train_dp
from .errors import PrivacyBudgetExceeded
from .ledger import (
    LedgerError,
    PrivacyParams,
    charge,
    describe,
    ledger_metrics,
    ledger_tags,
    mechanism_sigma,
    plan_privacy,
    recompose,
    write_ledger,
)
from .query import SemanticQueryResult, album_label_histogram, semantic_query
from .sampling import PoissonAlbumSampler

__all__ = [
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
