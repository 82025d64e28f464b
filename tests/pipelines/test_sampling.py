"""The sampling pipeline: wiring, a SequentialRunner run on MemoryDatasets, the parquet output,
and the refusal of LMs that were not trained under the text path's privacy ledger."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import ParquetDataset

from dpalbum import privacy
from dpalbum.pipelines.sampling import create_pipeline
from dpalbum.pipelines.sampling.nodes import sample_albums
from tests.models.tiny_sampling_lms import single_thread, trained_toy_lms

PARAMS = {"n_albums": 5, "seed": 7, "photos_per_album": {"min": 2, "max": 4},
          "temperature": 1.0, "top_p": 0.95, "max_new_tokens": {"summary": 12, "caption": 12},
          "batch_size": 8, "show_progress": False}
ROLES = ("summary_lm", "caption_lm")
TEXT_PLAN = "5a3d1e0f00000000000000000000c0de"  # the plan the LMs were trained under (by hand)
OTHER_PLAN = "0bd1e55c0ffee0000000000000000001"  # another run's plan (e.g. one killed part-way)


def text_ledger(plan_id: str = TEXT_PLAN) -> dict:
    """A text-path ledger made by hand (no account: sampling spends nothing), both LM fine-tunes
    spent as planned, as finalise_ledger_node leaves it."""
    specs = [{"name": role, "kind": "dpsgd", "expected_batch_albums": 4, "epochs": 1,
              "noise_multiplier": 1.0} for role in ROLES]
    ledger = privacy.plan_privacy({"epsilon": 10.0, "delta": 1e-5, "album_count": "public",
                                   "shares": {"summary_lm": 0.5, "caption_lm": 0.5}}, 8, specs)
    ledger["plan_id"] = plan_id
    for planned in list(ledger["mechanisms"]):
        ledger = privacy.charge(ledger, {k: planned[k] for k in
                                         ("name", "kind", "noise_multiplier", "sample_rate",
                                          "steps")})
    return ledger


@contextlib.contextmanager
def trained_under(ledger: dict, *models) -> Iterator[None]:
    """The (cached, shared) toy LMs carry ``ledger``'s records, as privacy.finetune leaves a
    DP-trained LM (``config.dpalbum_privacy``), for the duration of the block only."""
    with pytest.MonkeyPatch.context() as patch:
        for role, model in zip(ROLES, models):
            patch.setattr(model.config, "dpalbum_privacy", privacy.model_record(ledger, role),
                          raising=False)
        yield


@pytest.fixture(scope="module")
def synthetic_texts() -> pd.DataFrame:
    summary_lm, caption_lm, tokenizer = trained_toy_lms()
    ledger = text_ledger()
    catalog = DataCatalog({
        "summary_lm": MemoryDataset(summary_lm, copy_mode="assign"),
        "caption_lm": MemoryDataset(caption_lm, copy_mode="assign"),
        "lm_tokenizer": MemoryDataset(tokenizer, copy_mode="assign"),
        "text_privacy_ledger": MemoryDataset(ledger),
        "params:sampling": MemoryDataset(PARAMS),
    })
    with single_thread(), trained_under(ledger, summary_lm, caption_lm):
        outputs = SequentialRunner().run(create_pipeline(), catalog)
    return outputs["synthetic_texts"].load()


def test_pipeline_reads_only_the_dp_models_their_ledger_and_its_parameters():
    pipeline = create_pipeline()
    assert pipeline.inputs() == {"summary_lm", "caption_lm", "lm_tokenizer",
                                 "text_privacy_ledger", "params:sampling"}
    assert pipeline.outputs() == {"synthetic_texts"}


def test_pipeline_run_gives_one_row_per_album_with_the_documented_columns(synthetic_texts):
    frame = synthetic_texts
    assert list(frame.columns) == ["album_id", "summary", "captions", "seed"]
    assert frame["album_id"].tolist() == [f"synthetic_{i:05d}" for i in range(1, 6)]
    assert all(2 <= len(c) <= 4 and all(isinstance(t, str) and t for t in c)
               for c in frame["captions"])
    assert frame["seed"].dtype == np.int64 and frame["seed"].is_unique
    assert frame.attrs["sampling"]["sampling_params"]["seed"] == 7
    assert "public prior" in frame.attrs["sampling"]["album_size_source"]
    # the plan the texts were sampled under travels with them (rendering checks it)
    assert frame.attrs["sampling"]["privacy_plan_id"] == TEXT_PLAN


def test_synthetic_texts_round_trip_through_the_catalog_parquet(synthetic_texts, tmp_path):
    dataset = ParquetDataset(filepath=str(tmp_path / "synthetic_texts.parquet"))
    dataset.save(synthetic_texts)
    loaded = dataset.load()
    assert loaded["captions"].map(list).tolist() == synthetic_texts["captions"].tolist()
    assert loaded.drop(columns="captions").equals(synthetic_texts.drop(columns="captions"))
    assert loaded.attrs["sampling"] == synthetic_texts.attrs["sampling"]
    assert loaded.attrs["sampling"]["privacy_plan_id"] == TEXT_PLAN


def test_sampling_refuses_lms_without_a_record_or_trained_under_another_plan(monkeypatch):
    """Stale models (e.g. left by a run killed between the two fine-tunes) are refused before a
    single token is sampled, naming the stale LM and both plans."""
    summary_lm, caption_lm, tokenizer = trained_toy_lms()
    ledger = text_ledger()

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled with a stale model")

    monkeypatch.setattr("dpalbum.pipelines.sampling.nodes.sample_album_texts", no_sampling)
    # no record at all: an LM trained before records existed, or not by privacy.finetune
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(summary_lm.config, "dpalbum_privacy", raising=False)
        patch.setattr(caption_lm.config, "dpalbum_privacy",
                      privacy.model_record(ledger, "caption_lm"), raising=False)
        with pytest.raises(privacy.StaleReleaseError,
                           match="summary_lm carries no privacy record"):
            sample_albums(summary_lm, caption_lm, tokenizer, ledger, PARAMS)
    # the caption LM comes from another run's plan
    with trained_under(ledger, summary_lm), pytest.MonkeyPatch.context() as patch:
        patch.setattr(caption_lm.config, "dpalbum_privacy",
                      privacy.model_record(text_ledger(OTHER_PLAN), "caption_lm"), raising=False)
        with pytest.raises(privacy.StaleReleaseError,
                           match=f"caption_lm was trained under privacy plan {OTHER_PLAN[:8]} but "
                                 f"the ledger is plan {TEXT_PLAN[:8]}"):
            sample_albums(summary_lm, caption_lm, tokenizer, ledger, PARAMS)
    # the right plan, but not the fine-tune the ledger charged (a different σ)
    with trained_under(ledger, summary_lm), pytest.MonkeyPatch.context() as patch:
        record = privacy.model_record(ledger, "caption_lm")
        patch.setattr(caption_lm.config, "dpalbum_privacy",
                      {**record, "noise_multiplier": record["noise_multiplier"] / 2},
                      raising=False)
        with pytest.raises(privacy.StaleReleaseError,
                           match="caption_lm's record .* does not match the ledger's"):
            sample_albums(summary_lm, caption_lm, tokenizer, ledger, PARAMS)
    assert not hasattr(summary_lm.config, "dpalbum_privacy")  # the shared LMs are left as found
    assert not hasattr(caption_lm.config, "dpalbum_privacy")
