"""The planning node: the only writer of ``privacy_plan`` (every mechanism of the run composed,
the album count released, the albums' lifetime account checked) before any private read."""

from __future__ import annotations

from typing import Any

from dpalbum import privacy


def plan_privacy_node(private_album_index: list[str], privacy_account: privacy.PrivacyAccount,
                      privacy_params: dict[str, Any], dp_training: dict[str, Any],
                      rendering: Any) -> dict[str, Any]:
    """Plan and compose the whole run's privacy budget; refuse over budget or lifetime."""
    return privacy.plan_run(private_album_index, privacy_account, privacy_params, dp_training,
                            rendering)
