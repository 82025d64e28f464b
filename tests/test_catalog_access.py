"""Every catalog entry says who may see it, and the tools honour it: private and internal
datasets are never previewed by kedro-viz, and kedro-viz's run hooks (which write every
dataset's row count to .viz/stats.json) are off."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACCESS = {"private", "internal", "public", "released"}
# Where private data and what is derived from it before any DP mechanism live
PRIVATE_PATHS = ("${_albums_dir}", "data/01_raw/heldout_albums", "data/01_raw/canary_albums",
                 "data/01_raw/ground_truth", "data/02_intermediate/")


def catalog_entries() -> dict[str, tuple[Path, dict]]:
    entries = {}
    for path in sorted(ROOT.glob("conf/*/catalog*.yml")):
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if not name.startswith("_") and isinstance(entry, dict):
                entries[f"{path.parent.name}/{name}"] = (path, entry)
    return entries


def where(entry: dict) -> str:
    """Every path-like value of an entry (wrapped datasets included), as one string."""
    found = []
    for key, value in entry.items():
        if key in ("path", "filepath") and value is not None:
            found.append(str(value))
        elif isinstance(value, dict) and key == "dataset":
            found.append(where(value))
    return " ".join(found)


@pytest.mark.parametrize("name", sorted(catalog_entries()))
def test_every_catalog_entry_declares_its_access(name):
    path, entry = catalog_entries()[name]
    access = (entry.get("metadata") or {}).get("dpalbum", {}).get("access")
    assert access in ACCESS, (
        f"{path.relative_to(ROOT)}: {name.split('/')[1]} has no metadata.dpalbum.access; "
        f"add `metadata: {{dpalbum: {{access: <one of {sorted(ACCESS)}>}}}}`")
    preview = (entry["metadata"].get("kedro-viz") or {}).get("preview", True)
    if access in ("private", "internal"):
        assert preview is False, f"{name} is {access}: set kedro-viz: {{preview: false}}"
    if any(p in where(entry) for p in PRIVATE_PATHS):
        assert access in ("private", "internal"), (
            f"{name} lives under a private path ({where(entry)}) but says access: {access}")


def test_kedro_viz_run_hooks_are_disabled():
    from dpalbum import settings

    assert "kedro-viz" in settings.DISABLE_HOOKS_FOR_PLUGINS
