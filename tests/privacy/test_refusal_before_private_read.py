"""Test 5: an over-budget plan is refused before the private dataset is loaded.

A tiny Kedro pipeline: ``plan_node`` (params + public N → privacy_plan) then ``train_node``
(privacy_plan + private_albums). ``private_albums`` is a dataset that records and fails every
load, so a load attempt cannot go unnoticed.
"""

from __future__ import annotations

from typing import Any

import pytest
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.io.core import DatasetError
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from dpalbum.privacy import PrivacyBudgetExceeded, plan_privacy

SPEC = [{"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 0.6,
         "expected_batch_albums": 32, "steps": 2000}]


class PrivateLoadAttempted(RuntimeError):
    """Raised by the tripwire dataset when something loads it."""


class TripwireAlbumsDataset(AbstractDataset):
    """Stands in for the private albums: every load is counted, then refused."""

    def __init__(self) -> None:
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        raise PrivateLoadAttempted("private albums were read")

    def save(self, data: Any) -> None:
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        return {"loads": self.loads}


def plan_node_fn(privacy: dict, n_albums: int) -> dict:
    return plan_privacy(privacy, n_albums, SPEC)


def train_node_fn(privacy_plan: dict, private_albums: Any) -> dict:
    return {"trained_on": len(private_albums)}


def _run(epsilon: float, tripwire: TripwireAlbumsDataset) -> None:
    catalog = DataCatalog({
        "params:privacy": MemoryDataset({"epsilon": epsilon, "delta": 1e-5,
                                         "shares": {"summary_lm": 1.0}}),
        "n_albums": MemoryDataset(400),  # public: from the album index, no private file opened
        "private_albums": tripwire,
    })
    pipeline = Pipeline([
        node(plan_node_fn, ["params:privacy", "n_albums"], "privacy_plan", name="plan_node"),
        node(train_node_fn, ["privacy_plan", "private_albums"], "model", name="train_node"),
    ])
    SequentialRunner().run(pipeline, catalog)


def test_over_budget_plan_is_refused_before_private_albums_load():
    tripwire = TripwireAlbumsDataset()
    with pytest.raises(PrivacyBudgetExceeded, match="before reading any private data"):
        _run(1.0, tripwire)
    assert tripwire.loads == 0


def test_affordable_plan_does_reach_the_private_load():
    """Control: with enough budget the pipeline goes on and trips the wire (the test has power)."""
    tripwire = TripwireAlbumsDataset()
    with pytest.raises(DatasetError) as err:  # Kedro wraps load errors
        _run(1000.0, tripwire)
    chain, cause = [], err.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    assert any(isinstance(e, PrivateLoadAttempted) for e in chain)
    assert tripwire.loads == 1
