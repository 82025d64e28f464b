"""The rendering pipeline: selection of public pre-training data, rendering of curated texts, the
data card, the renderer's DP fine-tune on the run's privacy plan and account, the refusal of
stale releases, and a full run with Kedro's SequentialRunner (tiny renderer, tiny data)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import ParquetDataset
from kedro_datasets.text import TextDataset
from PIL import Image

from dpalbum import privacy
from dpalbum.albums.dataset import AlbumFolderDataset
from dpalbum.albums.model import Album, AlbumSet, Photo
from dpalbum.models.captioner import AlbumSource
from dpalbum.pipelines import privacy_plan
from dpalbum.pipelines.rendering import create_pipeline
from dpalbum.pipelines.rendering.data_card import build_data_card, privacy_summary
from dpalbum.pipelines.rendering.datasets import DeferredDataset
from dpalbum.pipelines.rendering.nodes import (
    RenderingParams,
    dp_finetune_renderer_node,
    pretrain_renderer_node,
    render_albums_node,
    select_renderer_pretraining_data_node,
)
from tests.privacy.conftest import run_verifiers

ROOT = Path(__file__).resolve().parents[2]
TEXT_PLAN = "7e47a11ed9e5400c8d2f6b1a3c5e7f90"  # the plan the text path ran under (made by hand)
OTHER_PLAN = "0bd1e55c0ffee0000000000000000001"  # another run's plan (e.g. one killed part-way)
DATASET = "test-albums"  # the account's key of the hand-made plans' albums
LEDGER = {
    "plan_id": TEXT_PLAN,
    "unit": "album", "delta": 1e-5, "epsilon": 7.25, "budget_epsilon": 10.0,
    "mechanisms": [
        {"name": "semantic_query", "kind": "gaussian", "noise_multiplier": 40.0},
        {"name": "summary_lm", "kind": "dpsgd", "noise_multiplier": 1.1, "sample_rate": 0.05,
         "steps": 300},
    ],
}


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _account(folder: Path, *plans: dict) -> privacy.PrivacyAccount:
    """A fresh privacy account with the hand-made ``plans`` registered (as plan_run does)."""
    account = privacy.PrivacyAccount(folder / "privacy_account.json")
    for plan in plans:
        account.open_plan(plan, DATASET)
    return account


def _sampled_under(texts: pd.DataFrame, plan_id: str | None) -> pd.DataFrame:
    """``texts`` as the sampling node writes them under ``plan_id`` (None: no record)."""
    out = texts.copy()
    out.attrs = {} if plan_id is None else {"sampling": {"privacy_plan_id": plan_id}}
    return out


def _png(rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def public_corpus() -> pd.DataFrame:
    colours = {"red": (220, 40, 40), "blue": (40, 40, 220), "yellow": (230, 220, 40)}
    rows = [{"image_id": f"public_{i:03d}", "image": _png(rgb),
             "caption": f"a {name} circle in the beach"}
            for i, (name, rgb) in enumerate(list(colours.items()) * 4)]
    return pd.DataFrame(rows)


@pytest.fixture
def account(tmp_path) -> privacy.PrivacyAccount:
    return _account(tmp_path, LEDGER)


@pytest.fixture
def curated_texts() -> pd.DataFrame:
    return _sampled_under(pd.DataFrame({
        "album_id": ["album_0001", "album_0002", "album_0003"],
        "summary": ["an album of a red circle: at the beach", "an album of a blue circle: hike",
                    "an album of a yellow circle: nothing"],
        "captions": [["a red circle in the beach", "a ball in the city"],
                     ["a blue circle in the snow"] * 3, []],
        "seed": [11, 12, 13],
    }), TEXT_PLAN)


def tiny_params(**overrides) -> RenderingParams:
    renderer = dict(image_size=16, block_out_channels=[8, 16], norm_num_groups=4,
                    attention_head_dim=4, num_inference_steps=3, train_steps=2,
                    train_batch_size=4, warmup_steps=1, device="cpu", seed=0)
    settings = {"seed": 5, "selection": "semantic", "renderer": renderer,
                "coherence": {"guidance_scale": 2.0}, **overrides}
    return RenderingParams(**settings)


# ---------------------------------------------------------------- nodes


def test_selection_switches_between_semantic_all_and_none(public_corpus):
    chosen = pd.DataFrame({"image_id": ["public_001", "public_004"]})
    semantic = select_renderer_pretraining_data_node(public_corpus, chosen, tiny_params())
    assert semantic["image_id"].tolist() == ["public_001", "public_004"]
    assert list(semantic.columns) == ["image_id", "image", "caption"]
    every = select_renderer_pretraining_data_node(public_corpus, chosen,
                                                  tiny_params(selection="all"))
    assert len(every) == len(public_corpus)
    assert select_renderer_pretraining_data_node(public_corpus, chosen,
                                                 tiny_params(selection="none")).empty
    with pytest.raises(ValueError, match="absent from the public corpus"):
        select_renderer_pretraining_data_node(
            public_corpus, pd.DataFrame({"image_id": ["someone_elses"]}), tiny_params())


def test_rendering_params_refuse_unknown_selection_and_dp_finetune_of_pretrained():
    with pytest.raises(ValueError, match="selection"):
        tiny_params(selection="random")
    with pytest.raises(ValueError, match="dp_finetune"):
        tiny_params(dp_finetune={"enabled": True},
                    renderer={"backend": "pretrained", "model_name_or_path": "some/pipeline"})


def test_renderer_threads_apply_to_its_nodes_only_and_are_restored(public_corpus, curated_texts,
                                                                   account):
    from dpalbum.models.devices import available_cpus, torch_threads

    with pytest.raises(ValueError, match="rendering.threads"):
        tiny_params(threads=-1)
    before = torch.get_num_threads()
    with torch_threads(0) as used:
        assert used == available_cpus() == torch.get_num_threads()
    with torch_threads(1) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match=">= 0"):
        with torch_threads(-2):
            pass
    wanted = 2 if before != 2 else 1  # a count different from the session's
    params = tiny_params(threads=wanted)
    chosen = select_renderer_pretraining_data_node(
        public_corpus, pd.DataFrame({"image_id": public_corpus["image_id"]}), params)
    renderer = pretrain_renderer_node(chosen, params)
    assert renderer.training_report["torch_threads"] == wanted
    assert torch.get_num_threads() == before
    again = pretrain_renderer_node(chosen, params)  # same seed, same threads: same weights
    assert all(torch.equal(a, b) for a, b in zip(renderer.unet.state_dict().values(),
                                                 again.unet.state_dict().values()))
    _, report = render_albums_node(renderer, curated_texts, LEDGER, account, params)
    assert report["torch_threads"] == wanted and report["nproc"] == 1
    assert torch.get_num_threads() == before


def test_default_parameters_validate_as_rendering_params():
    from dpalbum.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base",
                               config_patterns={"parameters": ["parameters*"]},
                               custom_resolvers=CONFIG_LOADER_ARGS["custom_resolvers"])
    params = RenderingParams(**loader["parameters"]["rendering"])
    assert params.selection == "semantic" and params.renderer.backend == "embedded"
    assert params.coherence.shared_initial_latents and params.renderer.sampler in ("dpm", "ddim")


def test_render_node_stamps_seed_prompts_and_privacy_on_every_album(curated_texts, account):
    from dpalbum.models.renderer import EmbeddedRenderer, album_seed

    params = tiny_params()
    renderer = EmbeddedRenderer.build(params.renderer)
    # Parquet hands captions back as numpy arrays (and the sampling plan id in its metadata):
    # the node must take those too.
    texts = pd.read_parquet(io.BytesIO(curated_texts.to_parquet()))
    assert texts.attrs["sampling"]["privacy_plan_id"] == TEXT_PLAN
    albums, report = render_albums_node(renderer, texts, LEDGER, account, params)
    assert [a.album_id for a in albums] == ["album_0001", "album_0002"]  # empty album dropped
    first = albums.albums[0]
    assert [p.caption for p in first.photos] == ["a red circle in the beach", "a ball in the city"]
    assert first.metadata["prompts"][1] == "a red circle, a ball in the city"
    assert first.metadata["seed"] == album_seed(5, "album_0001")
    assert first.metadata["text_seed"] == 11
    assert first.metadata["privacy"] == {"epsilon": 7.25, "delta": 1e-5, "unit": "album"}
    assert report["n_photos"] == 5 and report["privacy"]["mechanisms"][1]["name"] == "summary_lm"
    assert account.read()["plans"][TEXT_PLAN]["finished"]  # released: a new run re-plans
    again, _ = render_albums_node(renderer, texts, LEDGER, account, params)
    assert all(np.array_equal(p.image, q.image) for a, b in zip(albums, again)
               for p, q in zip(a.photos, b.photos))
    with pytest.raises(ValueError, match="captions"):
        render_albums_node(renderer, texts.drop(columns="captions"), LEDGER, account, params)
    with pytest.raises(ValueError, match="lacks"):  # a malformed ledger of the right plan
        render_albums_node(renderer, texts, {"epsilon": 1.0, "plan_id": TEXT_PLAN}, account,
                           params)


def test_data_card_carries_epsilon_delta_unit_mechanisms_and_provenance():
    closed = {**LEDGER, "updated_at": "2026-11-23T17:00:00+00:00"}  # the card's date: no clock
    report = {"privacy": privacy_summary(closed), "image_size": 16, "seed": 5,
              "coherence": {"shared_initial_latents": True, "latent_jitter": 0.3,
                            "character_in_every_prompt": True, "guidance_scale": 3.0},
              "renderer": {"backend": "embedded", "architecture": "UNet", "sampler": "dpm, 20",
                           "text_encoder": "MiniLM", "training": {"n_images": 9,
                                                                  "selection": "semantic"}}}
    card = build_data_card(report, n_albums=2, n_photos=5)
    for needle in ("ε = 7.25", "δ = 1e-05", "per album", "privacy unit | album", "semantic_query",
                   "summary_lm", "PUBLIC images", "Not for", "2026-11-23"):
        assert needle in card, needle
    report["privacy"] = privacy_summary({**LEDGER, "epsilon": None})
    assert "NOT PRIVATE" in build_data_card(report, n_albums=2, n_photos=5)


def _renderer_spec(rendering: RenderingParams) -> list[dict]:
    """The renderer's mechanism as the run's catalogue plans it ([] when the fine-tune is off)."""
    _, privacy_params, dp_training = _plan_inputs()
    return [s for s in privacy.mechanism_catalogue(privacy_params, dp_training, rendering)
            if s["name"] == "renderer"]


def _hand_made_plan(rendering: RenderingParams, n_albums: int, plan_id: str) -> dict:
    """A plan holding the renderer alone (N declared public, C fixed), on no account yet."""
    _, privacy_params, _ = _plan_inputs()
    plan = privacy.plan_privacy({**privacy_params, "album_count": "public", "max_grad_norm": 1.0},
                                n_albums, _renderer_spec(rendering))
    plan["plan_id"] = plan_id
    return plan


def test_dp_finetune_is_planned_charged_and_changes_the_renderer(tmp_path):
    from dpalbum.models.renderer import EmbeddedRenderer

    rng = np.random.default_rng(0)
    albums = AlbumSet([Album(f"album_{i}", [Photo(f"{j:03d}.png", rng.integers(
        0, 255, (32, 32, 3), dtype=np.uint8)) for j in range(2)]) for i in range(8)])
    texts = pd.DataFrame({"album_id": [a.album_id for a in albums],
                          "summary": ["an album of a red circle"] * 8,
                          "captions": [["a red circle in the beach"] * 2] * 8})
    _, privacy_params, _ = _plan_inputs()
    # C fixed (as in the plan): the node alone gets no public pseudo-albums to tune "auto" C on
    privacy_params["max_grad_norm"] = 1.0
    off = tiny_params()
    renderer = EmbeddedRenderer.build(off.renderer)
    assert _renderer_spec(off) == []  # off: the catalogue has no renderer mechanism
    account = _account(tmp_path, LEDGER)
    same, ledger, history = dp_finetune_renderer_node(renderer, albums, texts, LEDGER, account,
                                                      off, privacy_params)
    assert same is renderer and ledger is LEDGER
    assert history["internal"] is True and history["steps"] == []
    assert account.charges(DATASET) == []  # nothing ran, nothing charged

    on = tiny_params(dp_finetune={"enabled": True, "expected_batch_albums": 4, "epochs": 1,
                                  "noise_multiplier": 1.0, "lr": 1e-2})
    plan = _hand_made_plan(on, len(albums), "f1e7a2b3c4d5e6f708192a3b4c5d6e7f")
    account.open_plan(plan, DATASET)
    before = {k: v.clone() for k, v in renderer.unet.state_dict().items()}
    tuned, ledger, history = dp_finetune_renderer_node(renderer, albums, texts, plan, account, on,
                                                       privacy_params)
    mechanism = ledger["mechanisms"][0]
    assert mechanism["name"] == "renderer" and mechanism["status"] == "spent"
    assert mechanism["steps"] == 2 and mechanism["sample_rate"] == 0.5  # 1 epoch at q = 4/8
    assert 0 < float(ledger["epsilon"]) <= 10.0 and len(history["steps"]) == 2
    assert history["internal"] is True and ledger["plan_id"] == plan["plan_id"]
    assert any(not torch.equal(before[k], v) for k, v in tuned.unet.state_dict().items())
    record = tuned.training_report["dp_finetune"]["privacy"]  # what the render node checks
    assert record == privacy.model_record(ledger, "renderer")
    assert record["plan_id"] == plan["plan_id"] and record["steps"] == 2
    # charged to the albums' cumulative account too, settled to what ran
    (charge,) = account.charges(DATASET)
    assert charge["plan_id"] == plan["plan_id"] and charge["status"] == "ran"
    assert charge["mechanism"]["name"] == "renderer" and charge["mechanism"]["steps"] == 2
    # not on the plan: refused before any private photo is read
    albums_wire, texts_wire = TripwireDataset(), TripwireDataset()
    with pytest.raises(privacy.LedgerError, match="no 'renderer'"):
        dp_finetune_renderer_node(renderer, DeferredDataset(albums_wire).load(),
                                  DeferredDataset(texts_wire).load(), LEDGER, account, on,
                                  privacy_params)
    assert albums_wire.loads == 0 and texts_wire.loads == 0
    assert len(account.charges(DATASET)) == 1


def _spent_renderer_ledger(plan_id: str) -> dict:
    """A hand-made ledger whose renderer fine-tune ran (as the fine-tune node leaves it)."""
    on = tiny_params(dp_finetune={"enabled": True, "expected_batch_albums": 4, "epochs": 1,
                                  "noise_multiplier": 1.0})
    plan = _hand_made_plan(on, 8, plan_id)
    (planned,) = plan["mechanisms"]
    return privacy.charge(plan, {k: planned[k] for k in ("name", "kind", "noise_multiplier",
                                                         "sample_rate", "steps")})


def test_render_node_refuses_texts_or_a_renderer_made_under_another_plan(curated_texts,
                                                                         tmp_path):
    """The killed-run case: models or texts left by another run are never released with this
    run's ledger; the refusal names what is stale and the plan is not marked released."""
    from dpalbum.models.renderer import EmbeddedRenderer

    params = tiny_params()
    renderer = EmbeddedRenderer.build(params.renderer)
    account = _account(tmp_path, LEDGER)
    # texts sampled under another plan, or with no plan on record (sampled before records)
    for texts, shown in ((_sampled_under(curated_texts, OTHER_PLAN), OTHER_PLAN[:8]),
                         (_sampled_under(curated_texts, None), "None")):
        with pytest.raises(privacy.StaleReleaseError,
                           match=f"curated_texts were sampled under privacy plan {shown} but the "
                                 f"ledger is plan {TEXT_PLAN[:8]}"):
            render_albums_node(renderer, texts, LEDGER, account, params)

    ledger = _spent_renderer_ledger("5ca1ab1e00000000000000000000beef")
    account.open_plan(ledger, DATASET)
    texts = _sampled_under(curated_texts, ledger["plan_id"])
    public_report = dict(renderer.training_report)

    def fine_tuned_under(plan: dict, **changes) -> None:
        record = {**privacy.model_record(plan, "renderer"), **changes}
        renderer.training_report = {**public_report, "dp_finetune": {"privacy": record}}

    # the renderer on disk was fine-tuned by another (killed) run
    fine_tuned_under({**ledger, "plan_id": OTHER_PLAN})
    with pytest.raises(privacy.StaleReleaseError,
                       match=f"renderer was trained under privacy plan {OTHER_PLAN[:8]} but the "
                             f"ledger is plan {ledger['plan_id'][:8]}"):
        render_albums_node(renderer, texts, ledger, account, params)
    # the ledger says the renderer was fine-tuned, the renderer has no record of it
    renderer.training_report = dict(public_report)
    with pytest.raises(privacy.StaleReleaseError, match="renderer carries no privacy record"):
        render_albums_node(renderer, texts, ledger, account, params)
    # same plan, but not the fine-tune the ledger charged (more steps ran than were charged)
    fine_tuned_under(ledger, steps=ledger["mechanisms"][0]["steps"] + 1)
    with pytest.raises(privacy.StaleReleaseError, match="does not match the ledger's 'renderer'"):
        render_albums_node(renderer, texts, ledger, account, params)
    # a fine-tuned renderer with a ledger that only planned the fine-tune (killed before charge)
    planned = _hand_made_plan(tiny_params(dp_finetune={"enabled": True, "expected_batch_albums": 4,
                                                       "epochs": 1, "noise_multiplier": 1.0}),
                              8, ledger["plan_id"])
    fine_tuned_under(ledger)
    with pytest.raises(privacy.StaleReleaseError, match=r"\[planned\]"):
        render_albums_node(renderer, texts, planned, account, params)
    assert not any("finished" in p for p in account.read()["plans"].values())

    albums, report = render_albums_node(renderer, texts, ledger, account, params)  # all agree
    assert len(albums) == 2 and report["privacy"]["mechanisms"][0]["status"] == "spent"
    assert account.read()["plans"][ledger["plan_id"]]["finished"]


# ---------------------------------------------------------------- the pipeline


class KeptMemoryDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so the test can read intermediate outputs."""

    def _release(self) -> None:
        pass


class TripwireDataset(AbstractDataset):
    """Stands in for a private dataset: every load is counted, then refused."""

    def __init__(self) -> None:
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        raise AssertionError("private data was read")

    def save(self, data: Any) -> None:
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        return {"loads": self.loads}


def _catalog(public_corpus, curated_texts, account_path, rendering=None, text_ledger=None,
             private_albums=None, album_texts=None, privacy_params=None,
             **outputs) -> DataCatalog:
    account = privacy.PrivacyAccountDataset(str(account_path))
    if text_ledger is None:  # the hand-made text ledger, registered as plan_run would have
        account.load().open_plan(LEDGER, DATASET)
    datasets = {
        "public_corpus": MemoryDataset(public_corpus),
        "public_selection": MemoryDataset(pd.DataFrame({"image_id": ["public_000", "public_001",
                                                                     "public_002"]})),
        "curated_texts": MemoryDataset(curated_texts),
        "text_privacy_ledger": MemoryDataset(LEDGER if text_ledger is None else text_ledger),
        "private_albums_for_renderer": DeferredDataset(
            TripwireDataset() if private_albums is None else private_albums),
        "album_texts_for_renderer": DeferredDataset(
            TripwireDataset() if album_texts is None else album_texts),
        "params:rendering": MemoryDataset(rendering or tiny_params(), copy_mode="assign"),
        "params:privacy": MemoryDataset(privacy_params or {}),
        "params:album_source": MemoryDataset(AlbumSource()),
        "params:captioning.captioner": MemoryDataset({"backend": "embedded"}),
        "privacy_account": account,
        "public_renderer_model": MemoryDataset(copy_mode="assign"),
        "renderer_model": MemoryDataset(copy_mode="assign"),
        **outputs,
    }
    return DataCatalog(datasets=datasets)


def test_pipeline_runs_with_the_sequential_runner_and_reads_nothing_private_when_off(
        public_corpus, curated_texts, tmp_path):
    outputs = {name: KeptMemoryDataset() for name in
               ("synthetic_albums", "synthetic_data_card", "rendering_report", "privacy_ledger",
                "renderer_dp_history")}
    albums_wire, texts_wire = TripwireDataset(), TripwireDataset()
    catalog = _catalog(public_corpus, curated_texts, tmp_path / "account.json",
                       private_albums=albums_wire, album_texts=texts_wire, **outputs)
    SequentialRunner().run(create_pipeline(), catalog)
    assert albums_wire.loads == 0 and texts_wire.loads == 0  # fine-tune off: no private read
    assert outputs["privacy_ledger"].load() == LEDGER  # the text path's ledger, released as is
    assert outputs["renderer_dp_history"].load()["steps"] == []
    account = catalog.load("privacy_account")
    assert account.charges(DATASET) == []  # nothing private ran here, nothing charged
    assert account.read()["plans"][TEXT_PLAN]["finished"]  # the release closes the plan
    albums: AlbumSet = outputs["synthetic_albums"].load()
    assert len(albums) == 2 and albums.n_photos == 5
    assert albums.albums[0].photos[0].image.shape == (16, 16, 3)
    report = outputs["rendering_report"].load()
    assert report["renderer"]["training"]["n_images"] == 3  # the semantic selection only
    card = outputs["synthetic_data_card"].load()
    assert "ε = 7.25" in card and "δ = 1e-05" in card and "per album" in card


def test_data_card_survives_the_album_folder_save_on_every_run(public_corpus, curated_texts,
                                                               tmp_path):
    root = tmp_path / "synthetic_albums"
    for _run in range(2):  # the second run replaces the albums written by the first
        catalog = _catalog(
            public_corpus, curated_texts, tmp_path / "account.json",
            synthetic_albums=AlbumFolderDataset(str(root), image_size=16,
                                                overwrite_generated=True),
            synthetic_data_card=TextDataset(filepath=str(root / "DATA_CARD.md")),
            rendering_report=MemoryDataset(),
        )
        SequentialRunner().run(create_pipeline(), catalog)
        assert "ε = 7.25" in (root / "DATA_CARD.md").read_text()
        album_json = json.loads((root / "album_0001" / "album.json").read_text())
        assert album_json["privacy"]["unit"] == "album" and album_json["photos"][0] == "000.png"


# ---------------------------------------------------------------- the renderer on the privacy plan


def _shipped(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / f"conf/base/parameters_{name}.yml").read_text())[name]


def _plan_inputs(n_albums: int = 8) -> tuple[list[str], dict, dict]:
    """Album index, privacy and dp_training parameters as shipped, sized for a few albums (no
    checkpoints; the noise stays the shipped secure default)."""
    dp_training = _shipped("dp_training")
    for role in ("summary_lm", "caption_lm"):
        dp_training[role]["dp"]["expected_batch_albums"] = 4
    privacy_params = {**_shipped("privacy"), "checkpoint_dir": None, "physical_batch_rows": 8}
    return [f"album_{i}" for i in range(n_albums)], privacy_params, dp_training


FINETUNE_ON = {"enabled": True, "expected_batch_albums": 4, "epochs": 1, "lr": 1e-2,
               "noise_multiplier": "auto"}


def _names(mechanisms: list[dict]) -> list[str]:
    return [m["name"] for m in mechanisms]


def test_the_plan_holds_the_renderer_only_when_its_fine_tune_is_on(tmp_path):
    index, privacy_params, dp_training = _plan_inputs()
    off_params, on_params = {"seed": 0}, {"seed": 0, "dp_finetune": FINETUNE_ON}
    text_path = ["album_count", "semantic_query", "summary_lm", "caption_lm"]
    assert _names(privacy.mechanism_catalogue(privacy_params, dp_training, off_params)) \
        == text_path
    assert _names(privacy.mechanism_catalogue(privacy_params, dp_training, on_params)) \
        == [*text_path, "renderer"]
    # N declared public, so that both plans have the same N and their σ compare
    public = {**privacy_params, "album_count": "public"}
    off = privacy.plan_run(index, privacy.PrivacyAccount(tmp_path / "off.json"), public,
                           dp_training, off_params)
    assert _names(off["mechanisms"]) == text_path[1:]
    on = privacy.plan_run(index, privacy.PrivacyAccount(tmp_path / "on.json"), public,
                          dp_training, on_params)
    renderer = on["mechanisms"][-1]
    assert _names(on["mechanisms"]) == [*text_path[1:], "renderer"]
    assert renderer["status"] == "planned" and renderer["steps"] == 2  # 1 epoch at q = 4/8
    assert renderer["sample_rate"] == 0.5 and renderer["noise_multiplier"] > 0
    # the renderer's share comes out of the same budget: the text path gets more noise
    sigma = {m["name"]: m["noise_multiplier"] for m in off["mechanisms"]}
    assert all(m["noise_multiplier"] > sigma[m["name"]] for m in on["mechanisms"][:3])
    assert float(on["epsilon"]) <= privacy_params["epsilon"]
    # by default N is released by the DP album count, first, spent by the plan itself (200
    # albums: the noisy count stays far above the expected batches)
    many = [f"album_{i}" for i in range(200)]
    counted = privacy.plan_run(many, privacy.PrivacyAccount(tmp_path / "dp.json"),
                               privacy_params, dp_training, on_params)
    assert _names(counted["mechanisms"]) == [*text_path, "renderer"]
    assert counted["mechanisms"][0]["status"] == "spent" and counted["album_count"] == "dp"
    assert counted["mechanisms"][-1]["status"] == "planned"
    assert float(counted["epsilon"]) <= privacy_params["epsilon"]


def test_over_budget_renderer_plan_is_refused_before_any_private_read(tmp_path):
    from dpalbum.models.renderer import EmbeddedRenderer

    # 64 albums: the DP count (on by default) stays far above the expected batch of 4
    index, privacy_params, dp_training = _plan_inputs(64)
    greedy = tiny_params(dp_finetune={**FINETUNE_ON, "epochs": 40, "noise_multiplier": 0.3})
    albums_wire, texts_wire = TripwireDataset(), TripwireDataset()
    catalog = DataCatalog({
        "private_album_index": MemoryDataset(index),
        "privacy_account": privacy.PrivacyAccountDataset(str(tmp_path / "account.json")),
        "params:privacy": MemoryDataset(privacy_params),
        "params:dp_training": MemoryDataset(dp_training),
        "params:rendering": MemoryDataset(greedy, copy_mode="assign"),
        "public_renderer_model": MemoryDataset(EmbeddedRenderer.build(greedy.renderer),
                                               copy_mode="assign"),
        "private_albums_for_renderer": DeferredDataset(albums_wire),
        "album_texts_for_renderer": DeferredDataset(texts_wire),
    })
    run = privacy_plan.create_pipeline() + Pipeline([  # the run's plan, then the fine-tune
        Node(dp_finetune_renderer_node,
             ["public_renderer_model", "private_albums_for_renderer", "album_texts_for_renderer",
              "privacy_plan", "privacy_account", "params:rendering", "params:privacy"],
             ["renderer_model", "privacy_ledger", "renderer_dp_history"],
             name="dp_finetune_renderer_node"),
    ])
    with pytest.raises(privacy.PrivacyBudgetExceeded, match="before reading any private data"):
        SequentialRunner().run(run, catalog)
    assert albums_wire.loads == 0 and texts_wire.loads == 0
    # only the album count (released by the plan from the index) was charged, not the renderer
    charges = catalog.load("privacy_account").charges(privacy.dataset_key(index))
    assert [c["mechanism"]["name"] for c in charges] == ["album_count"]


def _private_world(folder: Path, n_albums: int = 8) -> tuple[AlbumFolderDataset, ParquetDataset]:
    """Tiny private albums on disk (folder dataset) and their captions (parquet)."""
    rng = np.random.default_rng(0)
    albums = AlbumSet([Album(f"album_{i}", [Photo(f"{j:03d}.png", rng.integers(
        0, 255, (16, 16, 3), dtype=np.uint8)) for j in range(2)]) for i in range(n_albums)])
    album_set = AlbumFolderDataset(str(folder / "albums"), image_size=16)
    album_set.save(albums)
    texts = ParquetDataset(filepath=str(folder / "album_texts.parquet"))
    texts.save(pd.DataFrame({"album_id": [a.album_id for a in albums],
                             "summary": ["an album of a red circle"] * n_albums,
                             "captions": [["a red circle in the beach"] * 2] * n_albums}))
    return album_set, texts


def test_enabled_fine_tune_is_charged_to_the_released_ledger_which_verifies(
        public_corpus, curated_texts, tmp_path):
    index, privacy_params, dp_training = _plan_inputs()
    privacy_params["album_count"] = "public"  # N = 8 exactly: q = 4/8 below
    rendering = tiny_params(dp_finetune=FINETUNE_ON)
    account_path = tmp_path / "privacy_account.json"
    text_ledger = privacy.plan_run(index, privacy.PrivacyAccount(account_path), privacy_params,
                                   dp_training, rendering)
    texts = _sampled_under(curated_texts, text_ledger["plan_id"])
    private_albums, album_texts = _private_world(tmp_path)
    outputs = {name: KeptMemoryDataset() for name in
               ("synthetic_albums", "synthetic_data_card", "rendering_report", "privacy_ledger",
                "renderer_dp_history")}
    catalog = _catalog(public_corpus, texts, account_path, rendering=rendering,
                       text_ledger=text_ledger, private_albums=private_albums,
                       album_texts=album_texts, privacy_params=privacy_params, **outputs)
    SequentialRunner().run(create_pipeline(), catalog)

    ledger = outputs["privacy_ledger"].load()
    renderer = ledger["mechanisms"][-1]
    assert renderer["name"] == "renderer" and renderer["status"] == "spent"
    assert renderer["steps"] == 2 and renderer["sample_rate"] == 0.5
    assert ledger["plan_id"] == text_ledger["plan_id"]
    assert 0 < float(ledger["epsilon"]) <= 10.0
    assert len(outputs["renderer_dp_history"].load()["steps"]) == 2
    path = tmp_path / "privacy_ledger.json"
    privacy.write_ledger(ledger, path)
    run_verifiers(path)
    account = privacy.PrivacyAccount(account_path)
    charged = [c for c in account.charges(privacy.dataset_key(index))
               if c["mechanism"]["name"] == "renderer"]
    assert len(charged) == 1 and charged[0]["status"] == "ran"
    assert charged[0]["mechanism"]["steps"] == 2
    assert account.read()["plans"][ledger["plan_id"]]["finished"]
    report = outputs["rendering_report"].load()
    assert report["privacy"]["mechanisms"][-1]["name"] == "renderer"
    tuned = report["renderer"]["training"]["dp_finetune"]["privacy"]
    assert tuned["plan_id"] == ledger["plan_id"] and tuned["steps"] == 2
    card = outputs["synthetic_data_card"].load()
    assert "then fine-tuned with DP-SGD on the PRIVATE photos" in card and "| renderer |" in card


def test_a_spent_ledger_cannot_pay_for_a_second_fine_tune_and_nothing_private_is_read(
        tmp_path):
    """The ledger released by a fine-tune cannot pay for another one: re-plan first. Refused
    before any private photo is read and before anything is charged."""
    from dpalbum.models.renderer import EmbeddedRenderer

    ledger = _spent_renderer_ledger("5ca1ab1e00000000000000000000beef")
    account = _account(tmp_path, ledger)
    _, privacy_params, _ = _plan_inputs()
    on = tiny_params(dp_finetune={"enabled": True, "expected_batch_albums": 4, "epochs": 1,
                                  "noise_multiplier": 1.0})
    albums_wire, texts_wire = TripwireDataset(), TripwireDataset()
    with pytest.raises(privacy.LedgerError, match="already"):
        dp_finetune_renderer_node(EmbeddedRenderer.build(on.renderer),
                                  DeferredDataset(albums_wire).load(),
                                  DeferredDataset(texts_wire).load(), ledger, account, on,
                                  privacy_params)
    assert albums_wire.loads == 0 and texts_wire.loads == 0
    assert account.charges(DATASET) == []


def test_the_catalog_defers_the_private_inputs_and_one_node_releases_the_ledger():
    from dpalbum.pipeline_registry import register_pipelines
    from dpalbum.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base",
                               custom_resolvers=CONFIG_LOADER_ARGS["custom_resolvers"])
    catalog = DataCatalog.from_config(loader["catalog"])
    for name in ("private_albums_for_renderer", "album_texts_for_renderer"):
        assert isinstance(catalog[name], DeferredDataset), name
    default = register_pipelines()["__default__"]
    (releaser,) = [n for n in default.nodes if "privacy_ledger" in n.outputs]
    assert releaser.name == "dp_finetune_renderer_node"
    assert "text_privacy_ledger" in releaser.inputs
    readers = [n.name for n in default.nodes if "privacy_ledger" in n.inputs]
    assert "render_albums_node" in readers and "collect_metrics_node" in readers


def test_the_default_pipeline_plans_privacy_before_any_node_reads_private_albums():
    """The privacy plan is an ancestor of every node that reads the private albums, so no
    ordering of the runner can read a private photo before the budget is planned. The demo world
    is left out: it stands for the data owner, who makes the albums (and their index)."""
    from dpalbum.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    default = pipelines["__default__"]
    order = [n.name for n in default.nodes]  # Kedro's topological order
    world = {n.name for n in pipelines["demo_world"].nodes}
    readers = [n.name for n in default.nodes if n.name not in world
               and any(i.startswith("private_albums") for i in n.inputs)]
    assert {"report_ingestion_node", "caption_albums_node",
            "dp_finetune_renderer_node"} <= set(readers)
    (planner,) = [n for n in default.nodes if "privacy_plan" in n.outputs]
    assert planner.name == "plan_privacy_node"
    for name in readers:
        upstream = {n.name for n in default.to_nodes(name).nodes}
        assert planner.name in upstream, f"{name} can run before the privacy plan"
        assert order.index(planner.name) < order.index(name), name
