"""Text filtering: each filter drops what it should and counts it; no private input, ever."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from dpalbum.pipelines.text_filtering import create_pipeline
from dpalbum.pipelines.text_filtering.filters import (
    FILTER_ORDER,
    TextFilteringConfig,
    curate_texts,
    first_of_near_duplicates,
    repeated_ngram_ratio,
)

ROOT = Path(__file__).resolve().parents[2]
PRIVATE_DATASETS = {"private_albums", "heldout_albums", "canary_albums", "ground_truth",
                    "album_texts", "private_album_index"}

RED_BIRTHDAY = "a birthday with a red circle in the city"
RED_CAPTIONS = ["a red circle in the city with a cake", "a red circle in the night",
                "a red circle in the city with a balloon"]


def bag_of_words(texts: list[str]) -> np.ndarray:
    """Stand-in encoder: texts sharing words are similar, texts sharing none nearly orthogonal."""
    def word(w: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(w.encode())).standard_normal(256)

    vectors = np.stack([sum((word(w) for w in t.lower().split()), np.zeros(256)) for t in texts])
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def frame(*albums: tuple[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame({
        "album_id": [f"synthetic_{i:05d}" for i in range(1, len(albums) + 1)],
        "summary": [s for s, _ in albums],
        "captions": [list(c) for _, c in albums],
        "seed": np.arange(len(albums), dtype=np.int64),
    })


def only(name: str | None, **params) -> TextFilteringConfig:
    """A config with one filter enabled (with ``params``) and every other filter off."""
    config = {f: {"enabled": f == name} for f in FILTER_ORDER}
    if name:
        config[name] |= params
    return TextFilteringConfig(**config)


def curate(texts: pd.DataFrame, config: TextFilteringConfig):
    curated, report = curate_texts(texts, config, encode=bag_of_words)
    totals = report["totals"]
    dropped = report["filters"].values()
    assert totals["albums_in"] - sum(f["albums_dropped"] for f in dropped) == totals["albums_out"]
    assert (totals["captions_in"] - sum(f["captions_dropped"] for f in dropped)
            == totals["captions_out"])
    assert totals["albums_out"] == len(curated)
    assert totals["captions_out"] == sum(len(c) for c in curated["captions"])
    json.dumps(report)  # the report is written by json.JSONDataset
    return curated, report


def test_well_formed_drops_empty_malformed_and_out_of_bounds_texts():
    bounds = {"min_words": 2, "max_words": 12, "min_chars": 5, "max_chars": 80}
    texts = frame(
        (RED_BIRTHDAY, RED_CAPTIONS + ["", "a red <|eos|> circle", "a red\x00 circle",
                                       "red", "a b",  # too few words, too few characters
                                       "a red circle " * 5, "balloons " * 10]),  # and too many
        ("   ", RED_CAPTIONS),  # empty summary: the album goes with its 3 captions
    )
    curated, report = curate(texts, only("well_formed", summary=bounds, caption=bounds))
    counts = report["filters"]["well_formed"]
    assert counts["reasons"] == {"album_summary_empty": 1, "caption_empty": 1,
                                 "caption_malformed": 2, "caption_too_short": 2,
                                 "caption_too_long": 2}
    assert (counts["albums_dropped"], counts["captions_dropped"]) == (1, 7 + 3)
    assert curated["captions"].tolist() == [RED_CAPTIONS]


def test_repetition_drops_degenerate_summaries_and_captions():
    assert repeated_ngram_ratio("a red circle in the city", 2) == 0.0
    assert repeated_ngram_ratio("a red a red a red a red", 2) > 0.7
    texts = frame((RED_BIRTHDAY, RED_CAPTIONS + ["a red a red a red a red"]),
                  ("the the the the the", RED_CAPTIONS))
    curated, report = curate(texts, only("repetition", ngram=2, max_repeated_ratio=0.3))
    assert report["filters"]["repetition"]["reasons"] == {"album_summary_repetitive": 1,
                                                          "caption_repetitive": 1}
    assert curated["captions"].tolist() == [RED_CAPTIONS]


def test_caption_similarity_drops_captions_unlike_their_summary():
    texts = frame((RED_BIRTHDAY, RED_CAPTIONS + ["purple diamond desert flag kite"]))
    curated, report = curate(texts, only("caption_similarity", min_similarity=0.3))
    assert report["filters"]["caption_similarity"]["reasons"] == {"caption_unlike_summary": 1}
    assert curated["captions"].tolist() == [RED_CAPTIONS]


def test_caption_vocabulary_keeps_the_summarys_protagonist():
    texts = frame(
        (RED_BIRTHDAY, RED_CAPTIONS + ["a blue circle in the city", "a red square in the city",
                                       "a circle in the city", "a red circle in the snow"]),
        ("a birthday in the city", ["a blue circle in the city"]),  # no protagonist: unchecked
    )
    curated, report = curate(texts, only("caption_vocabulary"))
    assert report["filters"]["caption_vocabulary"]["reasons"] == {
        "caption_colour_mismatch": 2, "caption_shape_mismatch": 1}
    assert curated["captions"].tolist() == [RED_CAPTIONS + ["a red circle in the snow"],
                                            ["a blue circle in the city"]]
    _, with_scene = curate(texts, only("caption_vocabulary", fields=["colour", "shape", "scene"]))
    scene_drops = with_scene["filters"]["caption_vocabulary"]["reasons"]["caption_scene_mismatch"]
    assert scene_drops == 2  # the night and the snow captions: the summary names the city only


def test_min_captions_drops_albums_left_too_small_and_counts_their_captions():
    texts = frame((RED_BIRTHDAY, RED_CAPTIONS), (RED_BIRTHDAY, RED_CAPTIONS[:2]))
    curated, report = curate(texts, only("min_captions", min_captions=3))
    counts = report["filters"]["min_captions"]
    assert (counts["albums_dropped"], counts["captions_dropped"]) == (1, 2)
    assert curated["album_id"].tolist() == ["synthetic_00001"]


def test_exact_duplicates_keep_the_first_copy_only():
    shouting = [c.upper() + "  " for c in RED_CAPTIONS]
    texts = frame((RED_BIRTHDAY, RED_CAPTIONS), (RED_BIRTHDAY.upper(), shouting),
                  (RED_BIRTHDAY, RED_CAPTIONS[::-1]))  # other order: not an exact copy
    curated, report = curate(texts, only("exact_duplicates"))
    assert report["filters"]["exact_duplicates"]["reasons"] == {"album_exact_duplicate": 1}
    assert curated["album_id"].tolist() == ["synthetic_00001", "synthetic_00003"]


def test_near_duplicates_drop_reordered_copies_and_keep_distinct_albums():
    blue = ("a holiday with a blue square at the beach",
            ["a blue square in the beach with a kite", "a blue square in the city"])
    texts = frame((RED_BIRTHDAY, RED_CAPTIONS), (RED_BIRTHDAY, RED_CAPTIONS[::-1]), blue)
    curated, report = curate(texts, only("near_duplicates", max_similarity=0.99))
    assert report["filters"]["near_duplicates"]["reasons"] == {"album_near_duplicate": 1}
    assert curated["album_id"].tolist() == ["synthetic_00001", "synthetic_00003"]


def test_near_duplicates_compare_with_kept_albums_only():
    # b is near a, c is near b but not a: greedy keep-first drops b and keeps c
    a, b, c = np.array([1.0, 0.0]), np.array([0.8, 0.6]), np.array([0.28, 0.96])
    vectors = np.stack([a, b, c])
    assert first_of_near_duplicates(vectors, 0.75).tolist() == [True, False, True]
    assert first_of_near_duplicates(vectors, 0.75, chunk=1).tolist() == [True, False, True]
    assert first_of_near_duplicates(vectors, 0.99).tolist() == [True, True, True]


def test_disabled_filters_drop_nothing_but_unreadable_rows_always_go():
    texts = frame((RED_BIRTHDAY, RED_CAPTIONS), ("", ["", "a a a a"]), (RED_BIRTHDAY, []))
    curated, report = curate(texts, only(None))
    assert curated["captions"].tolist() == texts["captions"].tolist()
    broken = pd.concat([texts, pd.DataFrame({"album_id": ["x", "y"], "summary": [None, "s"],
                                             "captions": [["a red circle"], None], "seed": 0})])
    curated, report = curate(broken.reset_index(drop=True), only(None))
    assert report["filters"]["well_formed"]["reasons"] == {
        "album_summary_not_text": 1, "album_captions_not_a_list": 1}
    assert len(curated) == 3


def test_shipped_parameters_parse_and_every_filter_reports(tmp_path):
    params = yaml.safe_load((ROOT / "conf/base/parameters_text_filtering.yml").read_text())
    config = TextFilteringConfig(**params["text_filtering"])
    _, report = curate(frame((RED_BIRTHDAY, RED_CAPTIONS)), config)
    assert list(report["filters"]) == list(FILTER_ORDER) == report["order"]
    assert all(f["enabled"] for f in report["filters"].values())
    with pytest.raises(ValueError, match="fields"):
        TextFilteringConfig(caption_vocabulary={"fields": ["mood"]})


def test_no_private_dataset_is_an_input_of_text_filtering():
    inputs = create_pipeline().inputs()
    assert not inputs & PRIVATE_DATASETS
    assert all(name == "synthetic_texts" or name.startswith("params:") for name in inputs), inputs


def test_pipeline_runs_with_the_public_minilm_and_writes_a_json_report():
    params = yaml.safe_load((ROOT / "conf/base/parameters_text_filtering.yml").read_text())
    # these hand-written albums name scenes their summaries do not: check protagonists only
    params["text_filtering"]["caption_vocabulary"]["fields"] = ["colour", "shape"]
    texts = frame(
        (RED_BIRTHDAY, RED_CAPTIONS + ["a blue square in the snow with a kite"]),
        (RED_BIRTHDAY, RED_CAPTIONS + ["a blue square in the snow with a kite"]),
        ("a holiday with a blue square at the beach and in the city",
         ["a blue square in the beach with a kite", "a blue square in the city with a flag",
          "a blue square in the beach"]),
    )
    catalog = DataCatalog({"synthetic_texts": MemoryDataset(texts),
                           "params:text_filtering": MemoryDataset(params["text_filtering"])})
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    curated, report = outputs["curated_texts"].load(), outputs["text_filtering_report"].load()
    assert curated["album_id"].tolist() == ["synthetic_00001", "synthetic_00003"]
    assert curated["captions"].tolist()[0] == RED_CAPTIONS
    assert report["totals"] == {"albums_in": 3, "albums_out": 2, "albums_dropped": 1,
                                "captions_in": 11, "captions_out": 6, "captions_dropped": 5}
    json.dumps(report)
