"""The pretrained profiles (issue 13 items 5, 6): ``conf/hf`` (real Hugging Face ids, for GPU
users), ``conf/tiny_hf`` (the same shape, tiny local models) and ``conf/smollm2`` (the offline
SmolLM2 LMs) load through the project's config loader as ``kedro run --env <profile>`` loads
them, and every key they set is one the code accepts: each parameter group is validated by
Kedro's own validator against the nodes' typed configs, and the untyped ``dp_training`` group by
the dataclasses and the privacy plan that consume it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml

from tests.test_end_to_end import make_project

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("hf", "tiny_hf", "smollm2")
# keys whose value says which code path runs: tiny_hf must take the same one as hf
SAME_PATH = ("backend", "torch_dtype", "precision", "image_features", "labeller",
             "target_modules", "fan_in_fan_out", "selection", "enabled")


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def profile_file(profile: str) -> dict:
    """The profile's own keys, as written (interpolations unresolved)."""
    return yaml.safe_load((ROOT / "conf" / profile / "parameters.yml").read_text())


def context_of(project: Path, env: str):
    """The session's context for ``kedro run --env <env>`` (settings, config loader, runtime
    params), built as ``KedroSession.load_context`` builds it but without plugin hooks."""
    from kedro.framework.hooks.manager import _create_hook_manager
    from kedro.framework.project import settings
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    session = KedroSession.create(project_path=project, env=env)
    return settings.CONTEXT_CLASS(
        package_name=session._package_name, project_path=project,
        config_loader=session._get_config_loader(), env=env, runtime_params={},
        hook_manager=_create_hook_manager())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("profiles"))


def validate_dp_training(dp_training: dict, privacy: dict, rendering) -> None:
    """``params:dp_training`` as its consumers read it (nodes, LM builder, privacy plan)."""
    from dpalbum.models.language_model import LanguageModelConfig, PretrainConfig, make_lora
    from dpalbum.models.tokenizer import TokenizerConfig
    from dpalbum.privacy.config import DPSGDParams, SemanticQueryParams
    from dpalbum.privacy.plan import mechanism_catalogue

    base = yaml.safe_load((ROOT / "conf/base/parameters_dp_training.yml").read_text())
    assert set(dp_training) == set(base["dp_training"])
    TokenizerConfig(**dp_training["tokenizer"])
    SemanticQueryParams.from_dict(dp_training["semantic_query"])
    for role in ("summary_lm", "caption_lm"):
        assert set(dp_training[role]) == {"model", "pretrain", "dp"}, role
        LanguageModelConfig(**dp_training[role]["model"])
        PretrainConfig(**dp_training[role]["pretrain"])
        dp = DPSGDParams.from_dict(dp_training[role]["dp"], f"dp_training.{role}.dp")
        inspect.signature(make_lora).bind(None, **dp.lora)  # LoRA keys make_lora takes
    mechanism_catalogue(privacy, dp_training, rendering)


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_loads_and_every_group_validates(project, profile):
    from dpalbum.pipelines.rendering.nodes import RenderingParams

    context = context_of(project, profile)
    raw = context.config_loader["parameters"]
    params = context.params  # Kedro validates every typed group of every pipeline here
    assert type(params["rendering"]) is RenderingParams
    assert type(params["sampling"]).__name__ == "SamplingConfig"
    assert type(params["evaluation"]["image_fidelity"]).__name__ == "ImageFidelityConfig"
    assert type(params["captioning"]["captioner"]).__name__ == "CaptionerConfig"
    assert type(params["captioning"]["summariser"]).__name__ == "SummariserConfig"
    validate_dp_training(raw["dp_training"], raw["privacy"], raw["rendering"])
    # the profile's keys took effect, over base's (soft merge: the rest of each group stays)
    for key, value in flatten(profile_file(profile)).items():
        got = raw
        for part in key.split("."):
            got = got[part]
        if not (isinstance(value, str) and value.startswith("${")):
            assert got == value, key
    assert raw["privacy"]["shares"]["summary_lm"] > 0 and raw["sampling"]["seed"] is not None
    # what the data card and report say wrote the album texts is the profile's captioner
    assert params["album_source"].provenance(params["captioning"]["captioner"])["backend"] == (
        "embedded" if profile == "smollm2" else "pretrained")


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_sets_only_keys_base_documents(profile):
    """Every key a profile sets exists in conf/base (a typo would silently add a new key)."""
    base: dict = {}
    for path in sorted((ROOT / "conf/base").glob("parameters*.yml")):
        base.update(yaml.safe_load(path.read_text()))
    known = flatten(base)
    prefixes = {k.rsplit(".", i)[0] for k in known for i in range(k.count(".") + 1)}
    unknown = [k for k in flatten(profile_file(profile)) if k not in known and k not in prefixes]
    assert not unknown, f"conf/{profile} sets keys conf/base does not have: {unknown}"


def test_tiny_hf_has_the_shape_of_hf():
    hf, tiny = flatten(profile_file("hf")), flatten(profile_file("tiny_hf"))
    missing = sorted(set(hf) - set(tiny))
    assert not missing, f"conf/tiny_hf lacks keys conf/hf sets: {missing}"
    for key in hf:
        if key.rsplit(".", 1)[-1] in SAME_PATH:
            assert tiny[key] == hf[key], key
    paths = [v for k, v in tiny.items() if k.endswith("model_name_or_path")]
    assert paths and all(str(v).startswith("data/tiny_hf_models/") for v in paths)


def test_hf_names_hub_models_each_documented_in_readme():
    ids = sorted({v for k, v in flatten(profile_file("hf")).items()
                  if k.endswith("model_name_or_path")})
    assert len(ids) == 5  # captioner, summariser, the DP LMs' base, renderer, CLIP
    readme = (ROOT / "README.md").read_text()
    for model_id in ids:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", model_id), model_id
        assert model_id in readme, f"README does not document {model_id}"


def test_a_captioner_set_in_conf_local_is_the_one_the_data_card_and_metrics_name(
        tmp_path_factory):
    """Issue 13: a captioner chosen in conf/local used to reach the captioning nodes but not the
    data card or metrics.json, which named the embedded captioner (base's interpolation resolved
    before conf/local was merged). The nodes that name it now read params:captioning.captioner."""
    from dpalbum.albums.model import AlbumSet
    from dpalbum.pipeline_registry import register_pipelines
    from dpalbum.pipelines.rendering.nodes import write_data_card_node
    from tests.pipelines.test_honest_captioning import rendering_report

    project = make_project(tmp_path_factory.mktemp("local_captioner"))
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump({"captioning": {
        "captioner": {"backend": "pretrained", "model_name_or_path": "some/captioner"}}}))
    params = context_of(project, "local").params
    pipeline = register_pipelines()["__default__"]
    namers = [n for n in pipeline.nodes if "params:album_source" in n.inputs
              and n.func.__name__ in ("write_data_card_node", "collect_metrics_node",
                                      "text_fidelity_node")]
    assert len(namers) == 3
    for node in namers:
        assert "params:captioning.captioner" in node.inputs, node.name
    card = write_data_card_node(AlbumSet([]), rendering_report(), params["album_source"],
                                params["captioning"]["captioner"])
    assert "pretrained image-to-text captioner some/captioner" in card, card
