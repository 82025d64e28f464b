"""AlbumFolderDataset / AlbumIndexDataset: round trip, safe writing, ordering, logging, index."""

from __future__ import annotations

import builtins
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError
from PIL import Image

from dpalbum.albums.dataset import (
    MARKER_NAME,
    AlbumFolderDataset,
    AlbumIndexDataset,
    AlbumInputError,
)
from dpalbum.albums.model import Album, AlbumSet, Photo

SIZE = 16


def make_albums(seed: int = 0) -> AlbumSet:
    rng = np.random.default_rng(seed)

    def photo(i: int, caption: str | None) -> Photo:
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        return Photo(name=f"{i:03d}.png", image=image, caption=caption)

    return AlbumSet(
        albums=[
            Album(
                "album_01",
                [photo(0, "a red kite over the beach"), photo(1, None), photo(2, "ünïcode ✓")],
                {"event": "trip", "n_people": 3, "tags": ["sea", "sun"], "nested": {"b": 1}},
            ),
            Album("Été à Paris", [photo(0, None)], {}),
        ]
    )


def save_png(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ---- writing ----


def test_load_of_save_round_trips_exactly(tmp_path: Path) -> None:
    original = make_albums()
    dataset = AlbumFolderDataset(path=str(tmp_path / "out"), image_size=SIZE)
    dataset.save(original)
    loaded = dataset.load()

    assert [a.album_id for a in loaded] == sorted(a.album_id for a in original)
    by_id = {a.album_id: a for a in loaded}
    for album in original:
        back = by_id[album.album_id]
        assert back.metadata == album.metadata
        assert [(p.name, p.caption) for p in back.photos] == [
            (p.name, p.caption) for p in album.photos
        ]
        for before, after in zip(album.photos, back.photos):
            np.testing.assert_array_equal(after.image, before.image)
    assert loaded.report["photos_skipped"] == {} and loaded.report["albums_skipped"] == {}


def test_save_writes_documented_layout(tmp_path: Path) -> None:
    root = tmp_path / "out"
    AlbumFolderDataset(path=str(root)).save(make_albums().albums)  # a plain list works too

    assert (root / MARKER_NAME).is_file()
    assert sorted(p.name for p in (root / "album_01").iterdir()) == [
        "000.png",
        "001.png",
        "002.png",
        "album.json",
    ]
    text = (root / "album_01" / "album.json").read_text(encoding="utf-8")
    document = json.loads(text)
    assert list(document) == sorted(document)  # sorted keys
    assert text.startswith('{\n  "album_id": "album_01",\n')  # indent 2
    assert document["photos"] == ["000.png", "001.png", "002.png"]
    assert document["captions"] == ["a red kite over the beach", None, "ünïcode ✓"]
    assert document["event"] == "trip"
    # No photo has a caption: no captions key.
    assert "captions" not in json.loads((root / "Été à Paris" / "album.json").read_text())


def test_save_pads_photo_numbers_to_keep_file_order(tmp_path: Path) -> None:
    pixel = np.zeros((1, 1, 3), np.uint8)
    album = Album("big", [Photo(f"p{i}", pixel) for i in range(1001)])
    root = tmp_path / "out"
    AlbumFolderDataset(path=str(root)).save([album])
    assert json.loads((root / "big" / "album.json").read_text())["photos"][-2:] == [
        "0999.png",
        "1000.png",
    ]


def test_save_is_byte_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    AlbumFolderDataset(path=str(first)).save(make_albums())
    AlbumFolderDataset(path=str(second)).save(make_albums())
    assert tree(first) == tree(second)
    before = tree(first)
    AlbumFolderDataset(path=str(first), overwrite_generated=True).save(make_albums())
    assert tree(first) == before


def test_save_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    save_png(root / "holiday" / "IMG_0001.png", Image.new("RGB", (4, 4), (1, 2, 3)))
    before = tree(root)
    dataset = AlbumFolderDataset(path=str(root), overwrite_generated=True)
    with pytest.raises(AlbumInputError, match=r"photos': the folder is not empty and has no"):
        dataset.save(make_albums())
    assert tree(root) == before  # the user's photos are untouched


def test_save_needs_overwrite_generated_to_replace_its_own_output(tmp_path: Path) -> None:
    root = tmp_path / "out"
    AlbumFolderDataset(path=str(root)).save(make_albums())
    with pytest.raises(AlbumInputError, match="overwrite_generated: true"):
        AlbumFolderDataset(path=str(root)).save(make_albums(seed=1))


def test_save_replaces_its_own_output_completely(tmp_path: Path) -> None:
    root = tmp_path / "out"
    AlbumFolderDataset(path=str(root)).save(make_albums())
    (root / "DATA_CARD.md").write_text("side file written next to the albums")
    smaller = AlbumSet([Album("only", [Photo("x", np.zeros((SIZE, SIZE, 3), np.uint8))])])
    dataset = AlbumFolderDataset(path=str(root), image_size=SIZE, overwrite_generated=True)
    dataset.save(smaller)
    assert sorted(p.name for p in root.iterdir()) == [MARKER_NAME, "only"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left
    assert [a.album_id for a in dataset.load()] == ["only"]


@pytest.mark.parametrize("foreign", ["album_01/IMG_0001.jpg", "IMG_0002.jpg", "album_01/sub/x"])
def test_save_never_deletes_files_it_did_not_write(tmp_path: Path, foreign: str) -> None:
    root = tmp_path / "out"
    AlbumFolderDataset(path=str(root)).save(make_albums())
    (root / foreign).parent.mkdir(parents=True, exist_ok=True)
    (root / foreign).write_bytes(b"a real photo")
    before = tree(root)
    with pytest.raises(AlbumInputError, match=r"dpalbum did not write. Move those files"):
        AlbumFolderDataset(path=str(root), overwrite_generated=True).save(make_albums(seed=1))
    assert tree(root) == before


def test_save_into_an_existing_empty_folder(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    AlbumFolderDataset(path=str(root)).save(make_albums())
    assert (root / MARKER_NAME).is_file()


def _album(**changes: Any) -> Album:
    fields: dict[str, Any] = {
        "album_id": "a",
        "photos": [Photo("p", np.zeros((4, 4, 3), np.uint8))],
        "metadata": {},
    }
    fields.update(changes)
    return Album(**fields)


@pytest.mark.parametrize(
    ("albums", "message"),
    [
        ([_album(), _album(album_id="A")], r"'a' and 'A' would be written to the same folder"),
        ([_album(album_id="../escape")], r"cannot be a folder name"),
        ([_album(album_id=".hidden")], r"cannot be a folder name"),
        ([_album(photos=[])], r"Album 'a' has no photos"),
        ([_album(photos=[Photo("p", np.zeros((4, 4), np.uint8))])], r"photo 0 \('p'\)"),
        ([_album(photos=[Photo("p", np.zeros((4, 4, 3), np.float32))])], r"uint8 RGB"),
        ([_album(metadata={"captions": []})], r"reserved in album.json"),
        ([_album(metadata={"when": {1, 2}})], r"not JSON-serialisable"),
        ([_album(metadata={"score": float("nan")})], r"not JSON-serialisable"),
    ],
)
def test_save_rejects_unwritable_albums_before_writing(
    tmp_path: Path, albums: list[Album], message: str
) -> None:
    root = tmp_path / "out"
    with pytest.raises(AlbumInputError, match=message):
        AlbumFolderDataset(path=str(root)).save(albums)
    assert not root.exists()


# ---- reading ----


def test_photos_are_read_in_natural_order(tmp_path: Path) -> None:
    for name in ["img10.png", "img2.png", "IMG1.png", "img1.png"]:
        save_png(tmp_path / "a" / name, Image.new("RGB", (4, 4)))
    (album,) = AlbumFolderDataset(path=str(tmp_path), image_size=4).load()
    assert [p.name for p in album.photos] == ["IMG1.png", "img1.png", "img2.png", "img10.png"]


def test_load_center_crops_then_resizes(tmp_path: Path) -> None:
    image = Image.new("RGB", (48, 16), (255, 0, 0))
    image.paste((0, 255, 0), (16, 0, 32, 16))  # the centre square is green
    image.paste((0, 0, 255), (32, 0, 48, 16))
    save_png(tmp_path / "a" / "wide.png", image)
    (album,) = AlbumFolderDataset(path=str(tmp_path), image_size=8).load()
    pixels = album.photos[0].image
    assert pixels.shape == (8, 8, 3)
    assert (pixels == [0, 255, 0]).all()  # a whole-image resize would show red and blue edges


def test_large_jpeg_decodes_at_reduced_scale_correctly(tmp_path: Path) -> None:
    image = Image.new("RGB", (1024, 512), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 512, 512))
    save_png(tmp_path / "a" / "big.jpg", image)  # decoded at 1/8 scale by libjpeg (draft)
    (album,) = AlbumFolderDataset(path=str(tmp_path), image_size=16).load()
    pixels = album.photos[0].image.astype(int)
    assert np.abs(pixels[8, 2] - [255, 0, 0]).max() < 20  # centre crop: left half red
    assert np.abs(pixels[8, 13] - [0, 0, 255]).max() < 20  # right half blue


def test_saved_albums_can_be_read_at_another_size(tmp_path: Path) -> None:
    AlbumFolderDataset(path=str(tmp_path / "out")).save(make_albums())
    loaded = AlbumFolderDataset(path=str(tmp_path / "out"), image_size=8).load()
    assert {p.image.shape for a in loaded for p in a.photos} == {(8, 8, 3)}


def test_load_opens_files_read_only_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_png(tmp_path / "a" / "p.png", Image.new("RGBA", (20, 10), (1, 2, 3, 4)))
    (tmp_path / "a" / "album.json").write_text('{"captions": ["c"]}')
    (tmp_path / "a" / "p.png").touch()
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    real_open = builtins.open
    modes: list[str] = []

    def recording_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        modes.append(mode)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    AlbumFolderDataset(path=str(tmp_path)).load()
    monkeypatch.undo()
    assert modes and set(modes) == {"rb"}
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == stamps


def test_load_logs_a_summary_and_warns_about_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_png(tmp_path / "a" / "p.png", Image.new("RGB", (4, 4)))
    with caplog.at_level(logging.INFO, logger="dpalbum.albums"):
        AlbumFolderDataset(path=str(tmp_path)).load()
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "Read 1 albums (1 photos)" in caplog.records[0].getMessage()

    caplog.clear()
    (tmp_path / "a" / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="dpalbum.albums"):
        AlbumFolderDataset(path=str(tmp_path)).load()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "empty_file=1" in warnings[0]


def test_report_counts_every_skip_but_keeps_five_examples(tmp_path: Path) -> None:
    save_png(tmp_path / "a" / "p.png", Image.new("RGB", (4, 4)))
    for i in range(7):
        (tmp_path / "a" / f"empty{i}.jpg").write_bytes(b"")
    report = AlbumFolderDataset(path=str(tmp_path)).load().report
    assert report["photos_skipped"] == {"empty_file": 7}
    assert report["examples"]["empty_file"] == [f"a/empty{i}.jpg" for i in range(5)]
    assert report["path"] == str(tmp_path)
    assert set(report) == {
        "path",
        "albums_read",
        "photos_read",
        "albums_skipped",
        "photos_skipped",
        "examples",
        "warnings",
    }


def test_describe_and_exists(tmp_path: Path) -> None:
    dataset = AlbumFolderDataset(path=str(tmp_path / "x"), image_size=8, extensions=["JPG"])
    assert dataset._describe() == {
        "path": str(tmp_path / "x"),
        "image_size": 8,
        "overwrite_generated": False,
        "writable": True,
        "max_image_pixels": 50_000_000,
        "extensions": [".jpg"],
        "min_photos": 1,
    }
    assert not dataset.exists()
    (tmp_path / "x").mkdir()
    assert dataset.exists()
    assert AlbumIndexDataset(path="p")._describe() == {"path": "p", "writable": True}


@pytest.mark.parametrize("kwargs", [{"image_size": 0}, {"min_photos": 0}])
def test_invalid_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(AlbumInputError):
        AlbumFolderDataset(path="x", **kwargs)


# ---- the index ----


def test_index_lists_sorted_ids_without_opening_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for album_id in ["b", "a", "c 3"]:
        save_png(tmp_path / album_id / "p.png", Image.new("RGB", (4, 4)))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / MARKER_NAME).write_text("x")

    def no_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the index must not open files")

    monkeypatch.setattr(builtins, "open", no_open)
    monkeypatch.setattr(os, "open", no_open)
    monkeypatch.setattr(Image, "open", no_open)
    assert AlbumIndexDataset(path=str(tmp_path)).load() == ["a", "b", "c 3"]


def test_index_agrees_with_the_folder_dataset(tmp_path: Path) -> None:
    AlbumFolderDataset(path=str(tmp_path / "out")).save(make_albums())
    ids = AlbumIndexDataset(path=str(tmp_path / "out")).load()
    assert ids == [a.album_id for a in AlbumFolderDataset(path=str(tmp_path / "out")).load()]


def test_index_errors(tmp_path: Path) -> None:
    with pytest.raises(AlbumInputError, match=r"missing' does not exist.*demo_world"):
        AlbumIndexDataset(path=str(tmp_path / "missing")).load()
    (tmp_path / "Trip").mkdir()
    (tmp_path / "trip").mkdir()
    with pytest.raises(AlbumInputError, match=r"'Trip' and 'trip'"):
        AlbumIndexDataset(path=str(tmp_path)).load()
    with pytest.raises(AlbumInputError):  # saving checks the listing, so it errors the same
        AlbumIndexDataset(path=str(tmp_path)).save(["a"])


def test_index_save_checks_the_written_albums(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    AlbumIndexDataset(path=str(tmp_path)).save(["b", "a"])  # writes nothing, checks
    with pytest.raises(DatasetError, match=r"missing \['c'\], unexpected \['b'\]"):
        AlbumIndexDataset(path=str(tmp_path)).save(["a", "c"])


def test_datasets_work_from_catalog_config(tmp_path: Path) -> None:
    path = str(tmp_path / "albums")
    catalog = DataCatalog.from_config(
        {
            "albums": {
                "type": "dpalbum.albums.dataset.AlbumFolderDataset",
                "path": path,
                "image_size": SIZE,
                "overwrite_generated": True,
            },
            "album_index": {"type": "dpalbum.albums.dataset.AlbumIndexDataset", "path": path},
        }
    )
    catalog.save("albums", make_albums())
    catalog.save("albums", make_albums())  # overwrite_generated from the catalog entry
    assert len(catalog.load("albums")) == 2
    assert catalog.load("album_index") == ["album_01", "Été à Paris"]


def test_data_card_at_the_root_is_not_an_album_or_a_skip(tmp_path: Path) -> None:
    import numpy as np

    from dpalbum.albums.model import Album, AlbumSet, Photo

    dataset = AlbumFolderDataset(path=str(tmp_path / "syn"), image_size=8,
                                 overwrite_generated=True)
    dataset.save(AlbumSet([Album("a1", [Photo("p.png", np.zeros((8, 8, 3), np.uint8))], {})]))
    (tmp_path / "syn" / "DATA_CARD.md").write_text("# card")
    loaded = dataset.load()
    assert [a.album_id for a in loaded.albums] == ["a1"]
    assert loaded.report["albums_skipped"] == {}
