"""Issue 12: the privacy configuration is typed and strict: a misspelt key or a bad value stops the
run naming the parameter, and the budget shares must cover exactly the catalogued mechanisms."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from dpalbum.privacy import PrivacyConfigError, PrivacyParams, mechanism_catalogue
from dpalbum.privacy.config import DPSGDParams

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def _resolve(value, globals_):
    """``${globals:x}`` -> globals.yml's x (what Kedro's resolver does)."""
    if isinstance(value, dict):
        return {k: _resolve(v, globals_) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, globals_) for v in value]
    if isinstance(value, str) and (m := re.fullmatch(r"\$\{globals:(\w+)\}", value)):
        return globals_[m.group(1)]
    return value


@pytest.fixture(scope="module")
def shipped():
    """The shipped privacy, dp_training and rendering parameters."""
    globals_ = yaml.safe_load((CONF / "globals.yml").read_text())
    out = {}
    for group, name in (("privacy", "parameters_privacy.yml"),
                        ("dp_training", "parameters_dp_training.yml"),
                        ("rendering", "parameters_rendering.yml")):
        out[group] = _resolve(yaml.safe_load((CONF / name).read_text())[group], globals_)
    return out


def test_shipped_parameters_parse_and_name_every_mechanism(shipped):
    """Teeth for the refusals below: the shipped config itself is accepted."""
    params = PrivacyParams.from_dict(shipped["privacy"])
    # secure noise, and C tuned on public pseudo-albums per DP-SGD job
    assert params.noise == "secure" and params.max_grad_norm == "auto"
    specs = mechanism_catalogue(shipped["privacy"], shipped["dp_training"], shipped["rendering"])
    assert [s["name"] for s in specs] == ["album_count", "semantic_query", "summary_lm",
                                          "caption_lm"]


@pytest.mark.parametrize(("change", "named"), [
    ({"noise_multipler": 1.0}, "privacy.noise_multipler"),  # a typo is never ignored
    ({"epsilon": -1.0}, "privacy.epsilon"),
    ({"epsilon": 0}, "privacy.epsilon"),
    ({"lifetime_epsilon": -5}, "privacy.lifetime_epsilon"),
    ({"delta": 1.0}, "privacy.delta"),
    ({"delta": 1.5}, "privacy.delta"),
    ({"delta": 0.0}, "privacy.delta"),
    ({"max_grad_norm": 0.0}, "privacy.max_grad_norm"),
    ({"max_grad_norm": -1.0}, "privacy.max_grad_norm"),
    ({"max_grad_norm": "sometimes"}, "privacy.max_grad_norm"),
    ({"clip_quantile": 1.5}, "privacy.clip_quantile"),
    ({"noise": "insecure"}, "privacy.noise"),
    ({"noise": "seeded"}, "privacy.noise"),
    ({"album_count": "guess"}, "privacy.album_count"),
    ({"grad_sample_mode": "ghosts"}, "privacy.grad_sample_mode"),
])
def test_privacy_params_refuse_unknown_keys_and_bad_values(shipped, change, named):
    with pytest.raises(PrivacyConfigError, match=re.escape(named)):
        PrivacyParams.from_dict({**shipped["privacy"], **change})


def test_dpsgd_params_refuse_a_misspelt_key_with_its_full_name(shipped):
    dp = shipped["dp_training"]["summary_lm"]["dp"]
    assert DPSGDParams.from_dict(dp, "dp_training.summary_lm.dp").epochs == dp["epochs"]
    with pytest.raises(PrivacyConfigError, match=re.escape("dp_training.summary_lm.dp.epochz")):
        DPSGDParams.from_dict({"epochz": 50, "expected_batch_albums": 64},
                              "dp_training.summary_lm.dp")
    with pytest.raises(PrivacyConfigError, match=re.escape("dp_training.summary_lm.dp.epochs")):
        DPSGDParams.from_dict({**dp, "epochs": -2}, "dp_training.summary_lm.dp")
    # and through the catalogue, from the dp_training group itself
    dp_training = copy.deepcopy(shipped["dp_training"])
    dp_training["caption_lm"]["dp"]["epochz"] = 50
    with pytest.raises(PrivacyConfigError, match=re.escape("dp_training.caption_lm.dp.epochz")):
        mechanism_catalogue(shipped["privacy"], dp_training, shipped["rendering"])


def test_catalogue_refuses_shares_not_summing_to_one(shipped):
    privacy = copy.deepcopy(shipped["privacy"])
    privacy["shares"]["summary_lm"] += 0.3
    with pytest.raises(PrivacyConfigError, match="sum to 1"):
        mechanism_catalogue(privacy, shipped["dp_training"], shipped["rendering"])


def test_catalogue_refuses_a_share_for_an_unknown_mechanism(shipped):
    privacy = copy.deepcopy(shipped["privacy"])
    privacy["shares"]["summary_lm"] -= 0.05
    privacy["shares"]["sumary_lm"] = 0.05  # a typo beside the real share: the sum is still 1
    with pytest.raises(PrivacyConfigError, match="sumary_lm"):
        mechanism_catalogue(privacy, shipped["dp_training"], shipped["rendering"])


def test_catalogue_refuses_a_running_mechanism_without_a_share(shipped):
    rendering = {**shipped["rendering"], "dp_finetune": {**shipped["rendering"]["dp_finetune"],
                                                         "enabled": True}}
    privacy = copy.deepcopy(shipped["privacy"])
    privacy["shares"]["summary_lm"] += privacy["shares"].pop("renderer")
    with pytest.raises(PrivacyConfigError, match="'renderer'"):
        mechanism_catalogue(privacy, shipped["dp_training"], rendering)
