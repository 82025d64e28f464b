"""The project's catalog releases the three models, each wired to entries that exist."""

from __future__ import annotations

from pathlib import Path

import yaml
from kedro.io import DataCatalog

from dpalbum.tracking.release import MlflowModelReleaseDataset

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
EXPECTED = {"summary_lm_mlflow": ("summary_lm", "dpalbum-summary-lm", "text_privacy_ledger"),
            "caption_lm_mlflow": ("caption_lm", "dpalbum-caption-lm", "text_privacy_ledger"),
            "renderer_mlflow": ("renderer", "dpalbum-renderer", "privacy_ledger")}


def test_the_catalog_releases_the_lms_and_the_renderer():
    entries = {}
    for path in sorted(CONF.glob("catalog*.yml")):
        entries.update(yaml.safe_load(path.read_text()) or {})
    releases = {name: entry for name, entry in entries.items()
                if isinstance(entry, dict)
                and entry.get("type") == "dpalbum.tracking.release.MlflowModelReleaseDataset"}
    assert set(releases) == set(EXPECTED)
    catalog = DataCatalog.from_config(releases)
    for name, (role, registered, ledger) in EXPECTED.items():
        dataset = catalog.get(name)
        assert isinstance(dataset, MlflowModelReleaseDataset)
        assert (dataset.role, dataset.registered_model_name, dataset.ledger_dataset) == (
            role, registered, ledger)
        for wired in (dataset.model_dataset, dataset.ledger_dataset, dataset.tokenizer_dataset):
            assert wired is None or wired in entries, f"{name} names {wired}: no such entry"
