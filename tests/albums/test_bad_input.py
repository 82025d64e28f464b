"""The bad-input table of ``dpalbum.albums.dataset``: one case per kind of bad (or odd) input.

Each case builds a tiny album folder in ``tmp_path`` next to a good photo or a good album, loads
it, and checks the documented outcome: a counted skip (reason, count, example) with the good data
still read, a read with the right pixels, or a clear error naming the album/file.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import struct
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from dpalbum.albums import images
from dpalbum.albums.dataset import AlbumFolderDataset, AlbumInputError
from dpalbum.albums.model import AlbumSet

# A leaked DecompressionBombWarning means Pillow, not our guard, decided about a huge image.
pytestmark = pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")

SIZE = 16
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 255, 255)
Build = Callable[[Path, pytest.MonkeyPatch], None]


# ---- builders of (bad) files ----


def save_image(image: Image.Image, path: Path, **kwargs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def good_photo(root: Path, album: str = "a", name: str = "good.png") -> None:
    save_image(Image.new("RGB", (8, 8), GREEN), root / album / name)


def noise(width: int = 32, height: int = 32) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that only declares its size: what a decompression bomb looks like to open()."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def write_bytes(relative: str, data: bytes) -> Build:
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return build


def with_good(*builds: Build, album: str = "a") -> Build:
    """A good photo in album ``album`` plus the given builders."""

    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        good_photo(root, album)
        for extra in builds:
            extra(root, monkeypatch)

    return build


def image_file(relative: str, image: Image.Image, **kwargs: Any) -> Build:
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        save_image(image, root / relative, **kwargs)

    return build


def symlink(relative: str, target: str) -> Build:
    """``root/relative`` -> ``target`` (relative to ``root``; may leave it with '..')."""

    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(root / target, root / relative)

    return build


def outside_photo(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_image(Image.new("RGB", (8, 8), RED), root.parent / "elsewhere" / "secret.png")


def album_json(album: str, document: Any) -> Build:
    return write_bytes(f"{album}/album.json", json.dumps(document).encode())


def corrupt_png() -> bytes:
    data = bytearray(encoded(noise(), "PNG"))
    data[len(data) // 2] ^= 0xFF  # inside the IDAT stream
    return bytes(data)


def fifo(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(root / "a" / "pipe.jpg")


def deny_open(name: str) -> Build:
    """Simulate a chmod-000 file (tests run as root, where chmod does not block reads)."""

    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        real_open = builtins.open

        def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file).endswith(name):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        write_bytes(f"a/{name}", encoded(noise(), "PNG"))(root, monkeypatch)
        monkeypatch.setattr(builtins, "open", fake_open)

    return build


def deny_listing(folder: str) -> Build:
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        good_photo(root, folder)
        real_scandir = os.scandir

        def fake_scandir(path: Any = ".") -> Any:
            if os.fspath(path).endswith(folder):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", fake_scandir)

    return build


def unconvertible_mode(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No allowed format stores a mode Pillow cannot convert, so simulate one (the 7x7 photo)."""
    save_image(Image.new("RGB", (7, 7), RED), root / "a" / "odd.tif")
    real_to_rgb = images.to_rgb

    def to_rgb(image: Image.Image) -> Image.Image:
        if image.size == (7, 7):
            raise ValueError("conversion from La to RGB not supported")
        return real_to_rgb(image)

    monkeypatch.setattr(images, "to_rgb", to_rgb)


def broken_exif(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate EXIF that Pillow cannot parse (real cases: vendor maker notes, bad offsets)."""
    save_image(Image.new("RGB", (7, 7), RED), root / "a" / "exif.jpg", exif=exif_6())
    real_transpose = ImageOps.exif_transpose

    def exif_transpose(image: Image.Image) -> Image.Image:
        if image.size == (7, 7):
            raise SyntaxError("not a TIFF file (header b'\\x00\\x00' not valid)")
        return real_transpose(image)

    monkeypatch.setattr(ImageOps, "exif_transpose", exif_transpose)


def non_utf8(relative: bytes, folder: bool = False) -> Build:
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = os.path.join(os.fsencode(root), relative)
        if folder:
            os.makedirs(path)
            save_image(Image.new("RGB", (8, 8), RED), Path(os.fsdecode(path)) / "x.png")
        else:
            with open(path, "wb") as fh:
                fh.write(encoded(Image.new("RGB", (8, 8), BLUE), "PNG"))

    return build


def captions_in_file_order(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_image(noise(8, 8), root / "a" / "10.png")
    save_image(noise(8, 8), root / "a" / "2.png")
    album_json("a", {"captions": ["two", "ten"]})(root, monkeypatch)


def mkdir(relative: str) -> Build:
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (root / relative).mkdir(parents=True)

    return build


def remove_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root.rmdir()


def root_is_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root.rmdir()
    root.write_text("not a folder")


def exif_rotated() -> Image.Image:
    """32x16, left half red, right half blue; EXIF orientation 6 = rotate 90 degrees clockwise."""
    image = Image.new("RGB", (32, 16), BLUE)
    image.paste(RED, (0, 0, 16, 16))
    return image


def exif_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def palette_with_transparency() -> Image.Image:
    image = Image.new("P", (SIZE, SIZE), 0)
    image.putpalette([*RED, 0, 0, 0] + [0] * (254 * 3))
    image.paste(1, (SIZE // 2, 0, SIZE, SIZE))  # right half: index 1, transparent black
    return image


def rgba() -> Image.Image:
    image = Image.new("RGBA", (SIZE, SIZE), (*RED, 255))
    image.paste((0, 0, 0, 0), (SIZE // 2, 0, SIZE, SIZE))  # fully transparent black
    image.paste((0, 0, 0, 128), (0, SIZE // 2, SIZE // 2, SIZE))  # half-transparent black
    return image


def la() -> Image.Image:
    image = Image.new("LA", (SIZE, SIZE), (0, 255))
    image.paste((0, 0), (SIZE // 2, 0, SIZE, SIZE))
    return image


def animated() -> tuple[Image.Image, dict[str, Any]]:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    return frames[0], {"save_all": True, "append_images": frames[1:], "duration": 50, "loop": 0}


# ---- checks on what was read ----


def photo(albums: AlbumSet, album: str, name: str) -> np.ndarray:
    (found,) = [p for a in albums for p in a.photos if a.album_id == album and p.name == name]
    return found.image.astype(int)


def close(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.all(np.abs(pixel - np.array(colour)) <= tol))


def names(albums: AlbumSet, album: str) -> list[str]:
    return [p.name for a in albums if a.album_id == album for p in a.photos]


def has_warning(text: str) -> Callable[[AlbumSet], None]:
    def check(albums: AlbumSet) -> None:
        assert any(text in w for w in albums.report["warnings"]), albums.report["warnings"]

    return check


def all_checks(*checks: Callable[[AlbumSet], None]) -> Callable[[AlbumSet], None]:
    def check(albums: AlbumSet) -> None:
        for one in checks:
            one(albums)

    return check


def check_cmyk(albums: AlbumSet) -> None:
    assert close(photo(albums, "a", "cmyk.jpg")[4, 4], (0, 255, 255))  # pure cyan


def check_gray16(albums: AlbumSet) -> None:
    pixels = photo(albums, "a", "gray16.png")
    assert pixels.min() == pixels.max() == 128  # 32768 >> 8, not clipped to 255


def check_int32_tiff(albums: AlbumSet) -> None:
    assert photo(albums, "a", "deep.tif").max() == 200  # 51200 >> 8


def check_float_tiff(albums: AlbumSet) -> None:
    assert photo(albums, "a", "float.tif").max() == 128  # 0.5 in [0, 1] -> 128


def check_left_red_right_white(name: str) -> Callable[[AlbumSet], None]:
    def check(albums: AlbumSet) -> None:
        pixels = photo(albums, "a", name)
        assert close(pixels[2, 2], RED) and close(pixels[2, SIZE - 3], WHITE), pixels[2]

    return check


def check_rgba(albums: AlbumSet) -> None:
    check_left_red_right_white("rgba.png")(albums)
    assert close(photo(albums, "a", "rgba.png")[SIZE - 3, 2], (127, 127, 127), tol=2)


def check_la(albums: AlbumSet) -> None:
    pixels = photo(albums, "a", "la.png")
    assert close(pixels[2, 2], (0, 0, 0)) and close(pixels[2, SIZE - 3], WHITE)


def check_grey(albums: AlbumSet) -> None:
    assert (photo(albums, "a", "grey.png") == 77).all()


def check_rotated(albums: AlbumSet) -> None:
    pixels = photo(albums, "a", "rotated.jpg")
    # Rotated upright: the red left half becomes the top half. Unrotated, top-right is blue.
    assert close(pixels[1, SIZE - 2], RED, tol=40), pixels[1, SIZE - 2]
    assert close(pixels[SIZE - 2, 1], BLUE, tol=40), pixels[SIZE - 2, 1]


def check_tiny(albums: AlbumSet) -> None:
    pixels = photo(albums, "a", "tiny.png")
    assert pixels.shape == (SIZE, SIZE, 3) and close(pixels.min(axis=(0, 1)), RED, tol=0)


def check_first_frame(albums: AlbumSet) -> None:
    assert close(photo(albums, "a", "anim.gif")[4, 4], RED, tol=2)
    has_warning("a/anim.gif: animated image")(albums)


def check_names(album: str, expected: list[str]) -> Callable[[AlbumSet], None]:
    def check(albums: AlbumSet) -> None:
        assert names(albums, album) == expected

    return check


def check_captions(albums: AlbumSet) -> None:
    (album,) = list(albums)
    assert [(p.name, p.caption) for p in album.photos] == [
        ("good.png", "a green square"),
        ("other.png", None),
    ]
    assert album.metadata == {"event": "picnic", "year": 2024}


def check_captions_in_file_order(albums: AlbumSet) -> None:
    (album,) = list(albums)
    assert [(p.name, p.caption) for p in album.photos] == [("2.png", "two"), ("10.png", "ten")]


# ---- the table ----


@dataclass(frozen=True)
class Case:
    build: Build
    outcome: str  # "photo_skip" | "album_skip" | "read" | "error"
    reason: str = ""  # the skip reason, or a regex the error message must match
    example: str = ""  # the report example of a skip
    check: Callable[[AlbumSet], None] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    photos_skipped: dict[str, int] | None = None  # album skips: photo skips that come with them


_rotated_jpeg = image_file("a/rotated.jpg", exif_rotated(), quality=95, exif=exif_6())
_anim, _anim_kwargs = animated()
_nfd = unicodedata.normalize("NFD", "café")

CASES: dict[str, Case] = {
    # -- photo files that are skipped, counted; the good photo next to them is read --
    "zero_byte_file": Case(
        with_good(write_bytes("a/empty.jpg", b"")), "photo_skip", "empty_file", "a/empty.jpg"
    ),
    "random_bytes": Case(
        with_good(write_bytes("a/noise.jpg", bytes(range(256)) * 8)),
        "photo_skip",
        "not_an_image",
        "a/noise.jpg",
    ),
    "text_named_jpg": Case(
        with_good(write_bytes("a/notes.jpg", b"this is a shopping list, not a photo\n")),
        "photo_skip",
        "not_an_image",
        "a/notes.jpg",
    ),
    "eps_named_jpg": Case(  # would run Ghostscript if every Pillow plugin were allowed
        with_good(write_bytes("a/doc.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")),
        "photo_skip",
        "not_an_image",
        "a/doc.jpg",
    ),
    "corrupt_png_stream": Case(
        with_good(write_bytes("a/broken.png", corrupt_png())),
        "photo_skip",
        "corrupt_image",
        "a/broken.png",
    ),
    "truncated_jpeg": Case(
        with_good(write_bytes("a/cut.jpg", encoded(noise(), "JPEG")[:-300])),
        "photo_skip",
        "truncated_image",
        "a/cut.jpg",
    ),
    "truncated_png": Case(
        with_good(write_bytes("a/cut.png", encoded(noise(), "PNG")[:1500])),
        "photo_skip",
        "truncated_image",
        "a/cut.png",
    ),
    "decompression_bomb_100k_x_100k": Case(
        with_good(write_bytes("a/bomb.png", png_header_only(100_000, 100_000))),
        "photo_skip",
        "decompression_bomb",
        "a/bomb.png",
    ),
    "decompression_bomb_pillow_warning_range": Case(  # 100 MP: Pillow only warns, we skip
        with_good(write_bytes("a/bomb.png", png_header_only(10_000, 10_000))),
        "photo_skip",
        "decompression_bomb",
        "a/bomb.png",
    ),
    "over_max_image_pixels": Case(
        with_good(image_file("a/big.png", noise(40, 40))),
        "photo_skip",
        "decompression_bomb",
        "a/big.png",
        kwargs={"max_image_pixels": 1000},
    ),
    "permission_denied": Case(
        with_good(deny_open("locked.png")), "photo_skip", "unreadable", "a/locked.png"
    ),
    "unsupported_extension_txt": Case(
        with_good(write_bytes("a/notes.txt", b"hello")),
        "photo_skip",
        "unsupported_extension",
        "a/notes.txt",
    ),
    "unsupported_extension_heic": Case(
        with_good(write_bytes("a/IMG_0001.HEIC", encoded(noise(), "JPEG"))),
        "photo_skip",
        "unsupported_extension",
        "a/IMG_0001.HEIC",
    ),
    "hidden_file": Case(
        with_good(write_bytes("a/.DS_Store", b"\x00\x00\x00\x01Bud1")),
        "photo_skip",
        "hidden_file",
        "a/.DS_Store",
    ),
    "nested_folder": Case(
        with_good(image_file("a/edits/x.png", noise(8, 8))),
        "photo_skip",
        "nested_folder",
        "a/edits",
    ),
    "fifo": Case(with_good(fifo), "photo_skip", "not_a_regular_file", "a/pipe.jpg"),
    "symlink_leaving_root": Case(
        with_good(outside_photo, symlink("a/link.png", "../elsewhere/secret.png")),
        "photo_skip",
        "symlink_outside",
        "a/link.png",
    ),
    "symlink_into_other_album": Case(
        with_good(image_file("b/p.png", noise(8, 8)), symlink("a/link.png", "b/p.png")),
        "photo_skip",
        "symlink_outside",
        "a/link.png",
    ),
    "broken_symlink": Case(
        with_good(symlink("a/gone.png", "a/nowhere.png")),
        "photo_skip",
        "broken_symlink",
        "a/gone.png",
    ),
    "unconvertible_mode_simulated": Case(
        with_good(unconvertible_mode), "photo_skip", "unsupported_mode", "a/odd.tif"
    ),
    # -- photo files that are read, converted correctly --
    "cmyk_jpeg": Case(
        with_good(image_file("a/cmyk.jpg", Image.new("CMYK", (8, 8), (255, 0, 0, 0)))),
        "read",
        check=check_cmyk,
    ),
    "gray16_png": Case(
        with_good(image_file("a/gray16.png", Image.fromarray(np.full((8, 8), 32768, np.uint16)))),
        "read",
        check=check_gray16,
    ),
    "int32_grey_tiff": Case(
        with_good(image_file("a/deep.tif", Image.fromarray(np.full((8, 8), 51200, np.int32)))),
        "read",
        check=check_int32_tiff,
    ),
    "float_grey_tiff": Case(
        with_good(image_file("a/float.tif", Image.fromarray(np.full((8, 8), 0.5, np.float32)))),
        "read",
        check=check_float_tiff,
    ),
    "palette_png_with_transparency": Case(
        with_good(image_file("a/pal.png", palette_with_transparency(), transparency=1)),
        "read",
        check=check_left_red_right_white("pal.png"),
    ),
    "rgba_png": Case(with_good(image_file("a/rgba.png", rgba())), "read", check=check_rgba),
    "la_png": Case(with_good(image_file("a/la.png", la())), "read", check=check_la),
    "grayscale_l": Case(
        with_good(image_file("a/grey.png", Image.new("L", (8, 8), 77))), "read", check=check_grey
    ),
    "exif_rotated_jpeg": Case(with_good(_rotated_jpeg), "read", check=check_rotated),
    "exif_unreadable_simulated": Case(
        with_good(broken_exif),
        "read",
        check=all_checks(
            check_names("a", ["exif.jpg", "good.png"]), has_warning("a/exif.jpg: EXIF orientation")
        ),
    ),
    "one_by_one_pixel": Case(
        with_good(image_file("a/tiny.png", Image.new("RGB", (1, 1), RED))),
        "read",
        check=check_tiny,
    ),
    "animated_gif": Case(
        with_good(image_file("a/anim.gif", _anim, **_anim_kwargs)),
        "read",
        check=check_first_frame,
    ),
    "png_named_jpg": Case(
        with_good(write_bytes("a/really_a_png.jpg", encoded(noise(8, 8), "PNG"))),
        "read",
        check=check_names("a", ["good.png", "really_a_png.jpg"]),
    ),
    "uppercase_extension": Case(
        with_good(image_file("a/IMG_1.JPG", noise(8, 8), format="JPEG")),
        "read",
        check=check_names("a", ["good.png", "IMG_1.JPG"]),
    ),
    "symlink_inside_album": Case(
        with_good(symlink("a/alias.png", "a/good.png")),
        "read",
        check=check_names("a", ["alias.png", "good.png"]),
    ),
    "non_utf8_photo_name": Case(
        with_good(non_utf8(b"a/caf\xe9.png")),
        "read",
        check=all_checks(
            check_names("a", ["caf\\xe9.png", "good.png"]), has_warning("not valid UTF-8")
        ),
    ),
    "photo_names_differ_only_by_case": Case(
        with_good(image_file("a/Beach.png", noise(8, 8)), image_file("a/beach.png", noise(8, 8))),
        "read",
        check=all_checks(
            check_names("a", ["Beach.png", "beach.png", "good.png"]),
            has_warning("differ only by letter case"),
        ),
    ),
    "single_photo_album": Case(with_good(), "read", check=check_names("a", ["good.png"])),
    "album_name_with_spaces_and_unicode": Case(
        with_good(album="Été à Paris 2024"),
        "read",
        check=check_names("Été à Paris 2024", ["good.png"]),
    ),
    "generated_marker_at_root": Case(
        with_good(write_bytes(".dpalbum-generated", b"marker")), "read"
    ),
    "album_json_with_captions": Case(
        with_good(
            image_file("a/other.png", noise(8, 8)),
            album_json(
                "a",
                {
                    "photos": ["good.png"],
                    "captions": ["a green square"],
                    "event": "picnic",
                    "year": 2024,
                    "album_id": "a",
                },
            ),
        ),
        "read",
        check=check_captions,
    ),
    "album_json_captions_without_photos_list": Case(
        captions_in_file_order, "read", check=check_captions_in_file_order
    ),
    # -- album folders that are skipped, counted; the good album "ok" is read --
    "empty_album_folder": Case(
        with_good(mkdir("empty"), album="ok"), "album_skip", "empty_album", "empty"
    ),
    "album_with_only_bad_photos": Case(
        with_good(write_bytes("bad/x.jpg", b"not a photo"), album="ok"),
        "album_skip",
        "no_readable_photos",
        "bad",
        photos_skipped={"not_an_image": 1},
    ),
    "fewer_photos_than_min_photos": Case(
        with_good(
            image_file("ok/second.png", noise(8, 8)),
            image_file("one/p.png", noise(8, 8)),
            album="ok",
        ),
        "album_skip",
        "too_few_photos",
        "one",
        kwargs={"min_photos": 2},
    ),
    "plain_file_at_root": Case(
        with_good(write_bytes("README.txt", b"my albums"), album="ok"),
        "album_skip",
        "not_an_album_folder",
        "README.txt",
    ),
    "hidden_folder_at_root": Case(
        with_good(image_file(".thumbnails/x.png", noise(8, 8)), album="ok"),
        "album_skip",
        "hidden_folder",
        ".thumbnails",
    ),
    "hidden_file_at_root": Case(
        with_good(write_bytes(".DS_Store", b"Bud1"), album="ok"),
        "album_skip",
        "hidden_file",
        ".DS_Store",
    ),
    "album_symlink_leaving_root": Case(
        with_good(outside_photo, symlink("linked", "../elsewhere"), album="ok"),
        "album_skip",
        "symlink_outside",
        "linked",
    ),
    "album_symlink_inside_root": Case(
        with_good(symlink("alias", "ok"), album="ok"),
        "album_skip",
        "symlink_duplicate",
        "alias",
    ),
    "non_utf8_album_name": Case(
        with_good(non_utf8(b"caf\xe9", folder=True), album="ok"),
        "album_skip",
        "non_utf8_name",
        "caf\\xe9",
    ),
    "album_folder_unreadable": Case(
        with_good(deny_listing("locked"), album="ok"), "album_skip", "unreadable", "locked"
    ),
    # -- clear errors naming the folder/file and the fix --
    "missing_root_folder": Case(
        remove_root, "error", r"albums' does not exist.*kedro run --pipelines demo_world"
    ),
    "root_is_a_file": Case(root_is_file, "error", r"albums' is a file, not a folder"),
    "duplicate_album_ids_by_case": Case(
        with_good(image_file("Trip/p.png", noise(8, 8)), album="trip"),
        "error",
        r"'Trip' and 'trip' .* same album id",
    ),
    "duplicate_album_ids_by_unicode_normalisation": Case(
        with_good(image_file(f"{_nfd}/p.png", noise(8, 8)), album="café"),
        "error",
        r"Unicode normalisation",
    ),
    "album_json_claims_another_albums_id": Case(
        with_good(image_file("b/p.png", noise(8, 8)), album_json("b", {"album_id": "a"})),
        "error",
        r"b/album.json' declares album_id 'a' but its folder is 'b'.*duplicate album id",
    ),
    "album_json_album_id_differs_from_folder": Case(
        with_good(album_json("a", {"album_id": "holiday"})),
        "error",
        r"a/album.json' declares album_id 'holiday'.*make album_id match the folder",
    ),
    "album_json_invalid_json": Case(
        with_good(write_bytes("a/album.json", b'{"event": "picnic",')),
        "error",
        r"a/album.json' \(album 'a'\) is not valid JSON.*Fix the file, or delete it",
    ),
    "album_json_not_utf8": Case(
        with_good(write_bytes("a/album.json", b'{"event": "caf\xe9"}')),
        "error",
        r"a/album.json' \(album 'a'\) is not UTF-8",
    ),
    "album_json_not_an_object": Case(
        with_good(album_json("a", ["good.png"])), "error", r"a/album.json'.*JSON object"
    ),
    "album_json_captions_not_a_list": Case(
        with_good(album_json("a", {"captions": "a green square"})),
        "error",
        r"a/album.json' \(album 'a'\): 'captions' must be a list",
    ),
    "album_json_photos_not_a_list": Case(
        with_good(album_json("a", {"photos": "good.png", "captions": ["x"]})),
        "error",
        r"a/album.json' \(album 'a'\): 'photos' must be a list",
    ),
    "album_json_captions_misaligned_with_photos": Case(
        with_good(album_json("a", {"photos": ["good.png"], "captions": ["x", "y"]})),
        "error",
        r"'captions' has 2 entries but 'photos' has 1",
    ),
    "album_json_captions_count_differs_from_files": Case(
        with_good(album_json("a", {"captions": ["x", "y"]})),
        "error",
        r"'a/album.json' has 2 captions but the album has 1 photo files; add a 'photos' list",
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "albums"
    root.mkdir()
    case.build(root, monkeypatch)
    dataset = AlbumFolderDataset(path=str(root), image_size=SIZE, **case.kwargs)

    if case.outcome == "error":
        with pytest.raises(AlbumInputError, match=case.reason):
            dataset.load()
        return

    albums = dataset.load()
    report = albums.report
    json.dumps(report)  # the ingestion report is written as JSON
    album_ids = {album.album_id for album in albums}
    if case.outcome == "photo_skip":
        assert report["photos_skipped"] == {case.reason: 1}
        assert report["albums_skipped"] == {}
        assert "good.png" in names(albums, "a")  # the good photo next to the bad one is read
    elif case.outcome == "album_skip":
        assert report["albums_skipped"] == {case.reason: 1}
        assert report["photos_skipped"] == (case.photos_skipped or {})
        assert "ok" in album_ids  # the good album next to the bad one is read
    else:
        assert report["photos_skipped"] == {} and report["albums_skipped"] == {}
    if case.example:
        assert report["examples"][case.reason] == [case.example]
    assert report["albums_read"] == len(albums)
    assert report["photos_read"] == albums.n_photos
    for album in albums:
        for one in album.photos:
            assert one.image.shape == (SIZE, SIZE, 3) and one.image.dtype == np.uint8
    if case.check is not None:
        case.check(albums)


def test_table_covers_at_least_twenty_kinds() -> None:
    assert len(CASES) >= 20


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod-000 files; simulated in the table")
def test_chmod_000_photo_is_skipped_as_unreadable(tmp_path: Path) -> None:
    good_photo(tmp_path)
    locked = tmp_path / "a" / "locked.png"
    save_image(noise(8, 8), locked)
    locked.chmod(0)
    try:
        report = AlbumFolderDataset(path=str(tmp_path), image_size=SIZE).load().report
    finally:
        locked.chmod(0o644)
    assert report["photos_skipped"] == {"unreadable": 1}
