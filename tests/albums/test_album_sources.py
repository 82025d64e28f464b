"""A run on the user's albums: the demo world's entries neither write into them nor read stale
demo data for them (``dpalbum.albums.sources`` and the datasets' ``writable`` / null paths)."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io.core import DatasetError

from dpalbum.albums.dataset import AlbumFolderDataset, AlbumIndexDataset
from dpalbum.albums.sources import same_folder, when
from dpalbum.pipelines.evaluation.datasets import OptionalParquetDataset
from tests.albums.test_album_dataset import make_albums, tree

TRUTH_COLUMNS = ["album_id", "split", "photo_index", "photo_name", "event", "colour", "shape",
                 "scene", "objects"]


def test_same_folder_and_when(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert same_folder("data/01_raw/albums", str(tmp_path / "data/01_raw/albums/"))
    assert same_folder("data/./01_raw/albums", "data/01_raw/albums")
    assert not same_folder("data/01_raw/albums", "/elsewhere/albums")
    assert not same_folder(None, "data/01_raw/albums")
    assert when(True, "a", None) == "a" and when("false", "a", None) is None


def test_a_not_writable_album_folder_is_never_written(tmp_path):
    mine = tmp_path / "mine"
    (mine / "birthday").mkdir(parents=True)
    (mine / "birthday" / "IMG_1.jpg").write_bytes(b"my photo")
    before = tree(mine)
    AlbumFolderDataset(mine, writable=False).save(make_albums())
    AlbumIndexDataset(mine, writable=False).save(["album_01", "Été à Paris"])  # no check either
    assert tree(mine) == before
    empty = tmp_path / "new"
    AlbumFolderDataset(empty, writable=False).save(make_albums())
    assert not empty.exists()


def test_no_album_folder_loads_no_album_and_writes_nothing(tmp_path):
    dataset = AlbumFolderDataset(None)
    loaded = dataset.load()
    assert len(loaded) == 0 and loaded.report["absent"]
    dataset.save(make_albums())  # nothing to write to: skipped with a warning
    assert not dataset.exists()


def test_ground_truth_never_overwrites_a_file_dpalbum_did_not_write(tmp_path):
    truth = pd.DataFrame([["a", "train", 0, "000.png", "birthday", "red", "circle", "beach",
                           ""]], columns=TRUTH_COLUMNS)
    theirs = tmp_path / "labels.parquet"
    pd.DataFrame({"album_id": ["Birthday-0"], "label": ["party"]}).to_parquet(theirs)
    before = theirs.read_bytes()
    dataset = OptionalParquetDataset(filepath=str(theirs), legacy_columns=TRUTH_COLUMNS)
    with pytest.raises(DatasetError, match="not written by dpalbum"):
        dataset.save(truth)
    assert theirs.read_bytes() == before
    # a table dpalbum wrote (its mark) is replaced; so is a pre-mark demo ground truth
    ours = tmp_path / "ground_truth.parquet"
    dataset = OptionalParquetDataset(filepath=str(ours), legacy_columns=TRUTH_COLUMNS)
    dataset.save(truth)
    dataset.save(truth.assign(event="hike"))
    assert list(dataset.load()["event"]) == ["hike"]
    legacy = tmp_path / "legacy.parquet"
    truth.to_parquet(legacy)
    OptionalParquetDataset(filepath=str(legacy), legacy_columns=TRUTH_COLUMNS).save(truth)


def test_no_ground_truth_file_loads_none_and_writes_nothing(tmp_path):
    dataset = OptionalParquetDataset(filepath=None)
    assert dataset.load() is None and not dataset.exists()
    dataset.save(pd.DataFrame({"a": [1]}))
    assert list(tmp_path.iterdir()) == []
