"""Wiring of ``privacy_plan``: one node, first in ``__default__``. Every node that reads private
data takes ``privacy_plan`` (or a ledger derived from it) as an input, so none can run before it."""

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.privacy_plan.nodes import plan_privacy_node


def create_pipeline(**kwargs) -> Pipeline:
    """The run's privacy plan from public facts, the DP album count and the account."""
    return Pipeline([
        Node(plan_privacy_node,
             ["private_album_index", "privacy_account", "params:privacy", "params:dp_training",
              "params:rendering"],
             "privacy_plan", name="plan_privacy_node"),
    ])
