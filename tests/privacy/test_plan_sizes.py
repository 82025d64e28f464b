"""Issue 13: DP-SGD sizes fit any collection from 10 albums up (``expected_batch_albums: auto``
over the plan's PUBLIC N), and a size that cannot work is refused naming the parameter and a
value that would."""

from __future__ import annotations

import logging
import math

import pytest

from dpalbum.privacy import PrivacyAccount, plan_run
from dpalbum.privacy.ledger import LedgerError, auto_batch_albums, plan_privacy
from tests.privacy.test_config import shipped  # noqa: F401 - the shipped parameters fixture

LMS = ("summary_lm", "caption_lm")


def plan(tmp_path, shipped, n_albums: int, album_count: str = "public", **dp):  # noqa: F811
    privacy = {**shipped["privacy"], "album_count": album_count, "checkpoint_dir": None}
    dp_training = {**shipped["dp_training"]}
    for role in LMS:
        dp_training[role] = {**dp_training[role], "dp": {**dp_training[role]["dp"], **dp}}
    account = PrivacyAccount(tmp_path / f"account_{n_albums}_{album_count}.json")
    return plan_run([f"album-{i}" for i in range(n_albums)], account, privacy, dp_training,
                    shipped["rendering"])


@pytest.mark.parametrize("n_albums", [10, 20, 26, 300])
def test_auto_batch_fits_any_collection_from_10_albums(tmp_path, shipped, n_albums):  # noqa: F811
    assert shipped["dp_training"]["summary_lm"]["dp"]["expected_batch_albums"] == "auto"
    ledger = plan(tmp_path, shipped, n_albums)
    epochs = shipped["dp_training"]["summary_lm"]["dp"]["epochs"]
    for m in ledger["mechanisms"]:
        if m["name"] in LMS:
            assert m["expected_batch_albums"] == pytest.approx(min(64, n_albums / 4))
            assert 0 < m["sample_rate"] <= 0.25
            assert m["train_steps" if "train_steps" in m else "steps"] == math.ceil(
                epochs / m["sample_rate"])
    assert ledger["epsilon"] <= ledger["budget_epsilon"]


def test_auto_batch_follows_the_dp_album_count_not_the_true_n(tmp_path, shipped):  # noqa: F811
    ledger = plan(tmp_path, shipped, 20, album_count="dp")
    n_hat = ledger["n_albums"]  # the released count: public
    for m in ledger["mechanisms"]:
        if m["name"] in LMS:
            assert m["expected_batch_albums"] == pytest.approx(auto_batch_albums(n_hat))


def test_a_batch_above_n_is_capped_naming_the_parameter(tmp_path, shipped, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING, logger="dpalbum.privacy.ledger"):
        ledger = plan(tmp_path, shipped, 20, expected_batch_albums=64)
    assert all(m["sample_rate"] == 1.0 for m in ledger["mechanisms"] if m["name"] in LMS)
    text = caplog.text
    assert "dp_training.summary_lm.dp.expected_batch_albums = 64" in text
    assert "auto" in text and "at most 20" in text


def test_an_impossible_sample_rate_is_refused_naming_the_parameter_and_a_value():
    spec = {"name": "summary_lm", "kind": "dpsgd", "sample_rate": 1.5, "epochs": 1,
            "noise_multiplier": 1.0, "max_grad_norm": 1.0,
            "batch_parameter": "dp_training.summary_lm.dp.expected_batch_albums"}
    with pytest.raises(LedgerError) as caught:
        plan_privacy({"epsilon": 10.0, "shares": {"summary_lm": 1.0}}, 20, [spec])
    message = str(caught.value)
    assert "dp_training.summary_lm.dp.expected_batch_albums" in message
    assert "set dp_training.summary_lm.dp.expected_batch_albums to auto (here 5)" in message
