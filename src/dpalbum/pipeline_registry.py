"""Pipeline registry: the demo world plus the six pipelines of DESIGN.md, run in data-walk order.

Only pipelines that exist in ``dpalbum.pipelines`` are registered, so ``kedro registry list``
tells the truth about what the project can run today.
"""

from __future__ import annotations

import importlib
import importlib.util

from kedro.pipeline import Pipeline

PIPELINE_ORDER: tuple[str, ...] = (
    "demo_world",
    "privacy_plan",
    "captioning",
    "dp_training",
    "sampling",
    "text_filtering",
    "rendering",
    "evaluation",
)


def register_pipelines() -> dict[str, Pipeline]:
    """Register each existing pipeline by name and ``__default__`` as all of them in order."""
    pipelines: dict[str, Pipeline] = {}
    for name in PIPELINE_ORDER:
        module_name = f"dpalbum.pipelines.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue  # not built yet: the registry lists only what exists
        pipelines[name] = importlib.import_module(module_name).create_pipeline()
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
