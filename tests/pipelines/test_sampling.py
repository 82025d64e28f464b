"""The sampling pipeline: wiring, a SequentialRunner run on MemoryDatasets, the parquet output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import ParquetDataset

from dpalbum.pipelines.sampling import create_pipeline
from tests.models.tiny_sampling_lms import single_thread, trained_toy_lms

PARAMS = {"n_albums": 5, "seed": 7, "photos_per_album": {"min": 2, "max": 4},
          "temperature": 1.0, "top_p": 0.95, "max_new_tokens": {"summary": 12, "caption": 12},
          "batch_size": 8, "show_progress": False}


@pytest.fixture(scope="module")
def synthetic_texts() -> pd.DataFrame:
    summary_lm, caption_lm, tokenizer = trained_toy_lms()
    catalog = DataCatalog({
        "summary_lm": MemoryDataset(summary_lm, copy_mode="assign"),
        "caption_lm": MemoryDataset(caption_lm, copy_mode="assign"),
        "lm_tokenizer": MemoryDataset(tokenizer, copy_mode="assign"),
        "params:sampling": MemoryDataset(PARAMS),
    })
    with single_thread():
        outputs = SequentialRunner().run(create_pipeline(), catalog)
    return outputs["synthetic_texts"].load()


def test_pipeline_reads_only_the_dp_models_and_its_parameters():
    pipeline = create_pipeline()
    assert pipeline.inputs() == {"summary_lm", "caption_lm", "lm_tokenizer", "params:sampling"}
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


def test_synthetic_texts_round_trip_through_the_catalog_parquet(synthetic_texts, tmp_path):
    dataset = ParquetDataset(filepath=str(tmp_path / "synthetic_texts.parquet"))
    dataset.save(synthetic_texts)
    loaded = dataset.load()
    assert loaded["captions"].map(list).tolist() == synthetic_texts["captions"].tolist()
    assert loaded.drop(columns="captions").equals(synthetic_texts.drop(columns="captions"))
    assert loaded.attrs["sampling"] == synthetic_texts.attrs["sampling"]
