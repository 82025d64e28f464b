"""Shared fixtures of the MLflow tests: a private sqlite store per module, ledgers, one thread."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import mlflow
import pytest
import torch

from dpalbum import privacy

# A ledger as dp_training releases it (every mechanism spent), built by hand with fixed public noise
# multipliers: one PLD composition instead of a plan's calibration and re-compositions.
MECHANISMS = [
    {"name": "album_count", "kind": "laplace", "noise_multiplier": 4.0, "l1_sensitivity": 1.0},
    {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 1.5, "sample_rate": 0.25,
     "steps": 10},
    {"name": "caption_lm", "kind": "dpsgd", "noise_multiplier": 1.5, "sample_rate": 0.25,
     "steps": 6},
]


def spent_ledger(epsilon: float = 10.0, noise: str = "secure", plan_id: str = "plan-a") -> dict:
    """A spent ledger under budget ``epsilon`` (``inf``: the non-private baseline, no noise)."""
    ledger = copy.deepcopy(_spent_ledger(math.isinf(epsilon)))
    ledger.update(budget_epsilon="inf" if math.isinf(epsilon) else epsilon, noise_source=noise,
                  plan_id=plan_id)
    return ledger


@functools.lru_cache(maxsize=2)
def _spent_ledger(baseline: bool) -> dict:
    from dpalbum.privacy.accounting import SEARCH_DISCRETIZATION

    mechanisms = [{**m, "status": "spent", "noise_multiplier": 0.0 if baseline
                   else m["noise_multiplier"]} for m in MECHANISMS]
    epsilon = privacy.pld_epsilon(mechanisms, 1e-5, discretization=SEARCH_DISCRETIZATION)
    return {"unit": "album", "neighbouring": "add or remove one album (all of its photos and "
            "texts)", "delta": 1e-5, "epsilon": "inf" if math.isinf(epsilon) else epsilon,
            "epsilon_spent": "inf" if math.isinf(epsilon) else epsilon, "accountant": "pld",
            "baseline": baseline, "n_albums": 100, "album_count": "dp", "status": "spent",
            "mechanisms": mechanisms}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core box
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """An MLflow tracking + registry store of its own (sqlite, artifacts beside it)."""
    root = tmp_path_factory.mktemp("mlflow_store")
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment_id = mlflow.create_experiment("dpalbum",
                                             artifact_location=(root / "mlruns").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    yield root
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
