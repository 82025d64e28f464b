"""A ledger's guarantee in plain words, for every place that states it (data card, report, tags).

Older ledgers lack some keys: what is missing is said to be "unknown", never guessed favourably.
"""

from __future__ import annotations

from typing import Any

from .randomness import NOT_DP

# Shown prominently on the data card and report.html when the ledger says the DP noise came from
# a known seed: whoever knows the seed can regenerate and subtract the noise, so ε means nothing.
REPLAYABLE_WARNING = NOT_DP
NOISE_SOURCES = ("secure", "replayable")
ALBUM_COUNT_SHORT = {"dp": "protected by a DP count", "public": "declared public",
                     "unknown": "unknown (older ledger)"}
ALBUM_COUNT_WORDS = {
    "dp": "protected: released by a DP count (the album_count Laplace mechanism on the ledger)",
    "public": "declared public by the data owner: not protected by this guarantee (it fixes the "
              "sampling rates and the noise calibration)",
    "unknown": "not recorded by this ledger (an older ledger): treat it as public, i.e. not "
               "protected",
}


def noise_source(ledger: dict[str, Any]) -> str:
    """The ledger's noise source: "secure", "replayable", or "unknown" (older ledgers)."""
    value = ledger.get("noise_source")
    return value if value in NOISE_SOURCES else "unknown"


def album_count(ledger: dict[str, Any]) -> str:
    """How the number of albums N was handled: "dp" (a DP count), "public", or "unknown"."""
    value = ledger.get("album_count")
    if value in ("dp", "public"):
        return value
    if any(m.get("name") == "album_count" and m.get("kind") == "laplace"
           for m in ledger.get("mechanisms") or []):
        return "dp"
    return "public" if ledger.get("n_albums_is_public") else "unknown"


def neighbouring(ledger: dict[str, Any]) -> str:
    """The neighbouring relation in plain words (older ledgers: add or remove one unit)."""
    return str(ledger.get("neighbouring") or f"add or remove one {ledger.get('unit', 'album')}")
