"""Kedro datasets for album folders: ``<root>/<album_id>/<photo files>`` (+ optional album.json).

``AlbumFolderDataset`` reads a folder of albums into an :class:`AlbumSet` (with an ingestion
report) and writes albums in the same layout; ``AlbumIndexDataset`` lists the album ids without
opening a single file, so the privacy budget can be planned before private data is read.

Layout and naming
    One sub-folder per album; the folder name is the album id. Photos are read in natural order
    of their file names ("2.jpg" before "10.jpg"); album ids are returned in plain sorted order.
    ``album.json`` (optional) is a JSON object: ``album_id`` (must equal the folder name),
    ``photos`` (file names) and ``captions`` (aligned with ``photos``, or with the photo files in
    natural order when ``photos`` is absent); every other key is album metadata.

Bad input policy (each kind has a case in ``tests/albums/test_bad_input.py``). A *skip* is
counted by reason in ``AlbumSet.report`` (with up to 5 examples) and logged as a WARNING; the
rest of the album/folder is still read. An *error* stops the load with a message naming the
file/album and the fix.

==========================================  ================================================
Input                                       Outcome
==========================================  ================================================
root folder missing / not a folder          error (suggests ``kedro run --pipelines demo_world``)
two album folders equal up to case/Unicode  error (duplicate album id; rename or merge)
album.json ``album_id`` != folder name      error (also covers ids used by another folder)
album.json invalid JSON / not UTF-8         error (fix or delete the file; it is optional)
album.json not an object                    error
album.json ``photos``/``captions`` wrong    error (not lists of strings, lengths differ)
plain file at the root                      skip album ``not_an_album_folder``
hidden entry (``.DS_Store``, ``.git``)      skip ``hidden_file`` / ``hidden_folder``
``.dpalbum-generated`` marker at the root   ignored (written by ``save``)
album folder name not valid UTF-8           skip album ``non_utf8_name`` (ids travel everywhere)
album folder is a symlink out of the root   skip album ``symlink_outside``
album folder is a symlink inside the root   skip album ``symlink_duplicate`` (same album twice)
dangling symlink                            skip ``broken_symlink``
album folder cannot be listed               skip album ``unreadable``
album without photo files                   skip album ``empty_album``
album whose photos all failed               skip album ``no_readable_photos``
fewer readable photos than ``min_photos``   skip album ``too_few_photos`` (default 1: kept)
photo symlink leaving its album folder      skip ``symlink_outside`` (another album's photo
                                            would cross the privacy unit)
photo symlink inside its album folder       read
sub-folder inside an album                  skip ``nested_folder``
FIFO, socket, device file                   skip ``not_a_regular_file`` (never opened: a FIFO
                                            would block forever)
extension not in ``extensions`` (.txt,      skip ``unsupported_extension``
.heic, .json other than album.json)
zero-byte file                              skip ``empty_file``
permission denied / I/O error               skip ``unreadable``
not an image (text named .jpg, random       skip ``not_an_image``
bytes, unsupported format such as EPS)
corrupt image data (bad PNG stream)         skip ``corrupt_image``
truncated JPEG/PNG                          skip ``truncated_image`` (never padded)
more than ``max_image_pixels`` declared     skip ``decompression_bomb`` (pixels never decoded)
mode Pillow cannot convert to RGB           skip ``unsupported_mode``
photo file name not valid UTF-8             read; name shown with ``\\xNN`` escapes + warning
photo names equal up to case                read both + warning
animated GIF/WebP, multi-frame TIFF         read the first frame + warning
CMYK, palette (+transparency), RGBA, LA,    read: converted to RGB, alpha on white, 16-bit
L, 16-bit grey, 1x1, PNG named .jpg         rescaled (not clipped), resized to image_size
EXIF orientation                            applied before cropping
unreadable EXIF                             read as stored + warning
==========================================  ================================================

``photos_read`` counts the photos of the albums kept; photos of a skipped album are only counted
when they were themselves skipped.

Writing (``save``) puts photos at ``<album_id>/NNN.png`` in album order (``Photo.name`` becomes
that file name) and ``album.json``; pixels, captions, metadata and order round-trip exactly when
read back at the same ``image_size``, and the same input gives byte-identical files. It never
deletes what dpalbum did not write: a non-empty target folder is only replaced when it carries
the ``.dpalbum-generated`` marker, ``overwrite_generated`` is true, and every album sub-folder
holds only ``NNN.png`` files and ``album.json`` (side files such as a data card may sit at the
root; they are replaced too). The new folder is written next to the target and swapped in.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError

from dpalbum.albums.images import ImageDecodeError, decode_image, encode_png
from dpalbum.albums.model import Album, AlbumSet, Photo

logger = logging.getLogger("dpalbum.albums")

MARKER_NAME = ".dpalbum-generated"
# Documents a pipeline may write at the root of an album folder next to the albums (the data
# card of the released synthetic albums); listing ignores them, like the marker.
ROOT_DOCUMENTS = frozenset({"DATA_CARD.md"})
MARKER_TEXT = "Written by dpalbum's AlbumFolderDataset; this folder may be replaced on save.\n"
ALBUM_JSON = "album.json"
RESERVED_KEYS = ("album_id", "photos", "captions")
DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_EXAMPLES = 5
MAX_WARNINGS = 50
_GENERATED_PHOTO = re.compile(r"[0-9]+\.png")
_DIGITS = re.compile(r"([0-9]+)")


class AlbumInputError(DatasetError, ValueError):
    """Album input (or output target) that cannot be used as is; the message says how to fix it."""


@dataclass
class _Report:
    """Counts what was read and skipped, by reason, for ``AlbumSet.report``."""

    path: str
    albums_read: int = 0
    photos_read: int = 0
    albums_skipped: Counter = field(default_factory=Counter)
    photos_skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def skip_album(self, reason: str, where: str) -> None:
        self.albums_skipped[reason] += 1
        self._example(reason, where)

    def skip_photo(self, reason: str, where: str) -> None:
        self.photos_skipped[reason] += 1
        self._example(reason, where)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def _example(self, reason: str, where: str) -> None:
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(where)

    def to_dict(self) -> dict[str, Any]:
        warnings = self.warnings[:MAX_WARNINGS]
        if len(self.warnings) > MAX_WARNINGS:
            warnings.append(f"... and {len(self.warnings) - MAX_WARNINGS} more warnings")
        return {
            "path": self.path,
            "albums_read": self.albums_read,
            "photos_read": self.photos_read,
            "albums_skipped": dict(sorted(self.albums_skipped.items())),
            "photos_skipped": dict(sorted(self.photos_skipped.items())),
            "examples": dict(sorted(self.examples.items())),
            "warnings": warnings,
        }


def _shown(name: str) -> str:
    """A file name fit for reports and JSON: undecodable bytes become ``\\xNN`` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir keeps undecodable bytes as lone surrogates
        return False
    return True


def _same_name_key(name: str) -> str:
    """Names that collide on macOS/Windows file systems (case, Unicode normalisation)."""
    return unicodedata.normalize("NFC", name).casefold()


def _natural_key(name: str) -> tuple:
    """Sort key putting "img2" before "img10"; ties fall back to the exact name (stable)."""
    parts = tuple(
        (0, int(part), part) if part.isdigit() else (1, 0, part.casefold())
        for part in _DIGITS.split(name)
    )
    return parts, name


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _list_album_folders(root: Path, report: _Report) -> list[tuple[str, Path]]:
    """The album folders under ``root`` (name-level checks only: no file is opened)."""
    if not root.exists():
        raise AlbumInputError(
            f"Album folder '{root}' does not exist. Put one sub-folder per album there "
            f"(<album_id>/<photo files>), name your albums folder with `kedro run --params "
            f"albums_dir=PATH` (README: Run on your albums), or generate the "
            f"embedded demo data with `kedro run --pipelines demo_world`."
        )
    if not root.is_dir():
        raise AlbumInputError(
            f"Album folder '{root}' is a file, not a folder. Point albums_dir (`kedro run "
            f"--params albums_dir=PATH`) at the folder that holds one sub-folder per album."
        )
    real_root = root.resolve()
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as exc:
        raise AlbumInputError(
            f"Cannot list album folder '{root}' ({exc.strerror or exc}); check its permissions."
        ) from exc

    folders: list[tuple[str, Path]] = []
    for entry in entries:
        name, shown = entry.name, _shown(entry.name)
        if name == MARKER_NAME or (name in ROOT_DOCUMENTS and entry.is_file()):
            continue
        if name.startswith("."):
            report.skip_album("hidden_folder" if entry.is_dir() else "hidden_file", shown)
        elif not _is_utf8(name):
            report.skip_album("non_utf8_name", shown)
        elif entry.is_symlink():
            target = Path(entry.path).resolve()
            if not target.exists():
                report.skip_album("broken_symlink", shown)
            elif not _is_inside(target, real_root):
                report.skip_album("symlink_outside", shown)
            elif target.is_dir():
                report.skip_album("symlink_duplicate", shown)
            else:
                report.skip_album("not_an_album_folder", shown)
        elif not entry.is_dir(follow_symlinks=False):
            report.skip_album("not_an_album_folder", shown)
        else:
            folders.append((name, Path(entry.path)))

    seen: dict[str, str] = {}
    for name, _ in folders:
        other = seen.setdefault(_same_name_key(name), name)
        if other != name:
            raise AlbumInputError(
                f"Album folders '{other}' and '{name}' in '{root}' are the same album id up to "
                f"letter case or Unicode normalisation (they collide on macOS/Windows file "
                f"systems, and one person's album must be one privacy unit). Merge them or "
                f"rename one."
            )
    return sorted(folders)


@dataclass
class _AlbumJson:
    photos: list[str] | None
    captions: list[str | None] | None
    metadata: dict[str, Any]


def _read_album_json(path: Path, album_id: str, all_ids: set[str]) -> _AlbumJson:
    """Parse and validate ``album.json``; any problem is an error naming the file."""
    fix = "Fix the file, or delete it (album.json is optional)."
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AlbumInputError(f"'{path}' (album '{album_id}') is not UTF-8 text. {fix}") from exc
    except OSError as exc:
        raise AlbumInputError(
            f"Cannot read '{path}' (album '{album_id}'): {exc.strerror or exc}. Check its "
            f"permissions, or delete it (album.json is optional)."
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AlbumInputError(
            f"'{path}' (album '{album_id}') is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}. {fix}"
        ) from exc
    if not isinstance(data, dict):
        raise AlbumInputError(
            f"'{path}' (album '{album_id}') must hold a JSON object ({{...}}), not a "
            f"{type(data).__name__}. {fix}"
        )
    declared = data.get("album_id", album_id)
    if declared != album_id:
        clash = declared in all_ids if isinstance(declared, str) else False
        raise AlbumInputError(
            f"'{path}' declares album_id {declared!r} but its folder is '{album_id}'"
            + (
                " and another album folder already has that id (duplicate album id)"
                if clash
                else ""
            )
            + ". The album id is the folder name (the privacy budget is planned from folder "
            "names): make album_id match the folder, or remove it from album.json."
        )
    photos = data.get("photos")
    if photos is not None and not (
        isinstance(photos, list) and all(isinstance(p, str) for p in photos)
    ):
        raise AlbumInputError(
            f"'{path}' (album '{album_id}'): 'photos' must be a list of file names. {fix}"
        )
    captions = data.get("captions")
    if captions is not None:
        if not (
            isinstance(captions, list) and all(c is None or isinstance(c, str) for c in captions)
        ):
            raise AlbumInputError(
                f"'{path}' (album '{album_id}'): 'captions' must be a list of strings (or null), "
                f"one per photo, got {type(captions).__name__}. {fix}"
            )
        if photos is not None and len(photos) != len(captions):
            raise AlbumInputError(
                f"'{path}' (album '{album_id}'): 'captions' has {len(captions)} entries but "
                f"'photos' has {len(photos)}; they must be aligned, one caption per photo. {fix}"
            )
    metadata = {k: v for k, v in data.items() if k not in RESERVED_KEYS}
    return _AlbumJson(photos=photos, captions=captions, metadata=metadata)


class AlbumFolderDataset(AbstractDataset[AlbumSet | list[Album], AlbumSet]):
    """Reads and writes ``<path>/<album_id>/<photos>`` (+ ``album.json``) as an ``AlbumSet``.

    Photos are decoded by :func:`dpalbum.albums.images.decode_image` (EXIF orientation, RGB,
    center-crop + LANCZOS resize to ``image_size``). See the module docstring for the bad-input
    policy. Local file systems only.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        image_size: int = 32,
        overwrite_generated: bool = False,
        max_image_pixels: int = 50_000_000,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        min_photos: int = 1,
        writable: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if int(image_size) < 1:
            raise AlbumInputError(f"image_size must be a positive integer, got {image_size!r}.")
        if int(min_photos) < 1:
            raise AlbumInputError(f"min_photos must be at least 1, got {min_photos!r}.")
        # path None: this run has no such albums (e.g. the demo world's held-out albums in a run
        # on the user's albums): loading gives no album, saving writes nothing
        self._path = None if path is None else Path(path)
        # writable false: a folder dpalbum must never write (the user's albums_dir); a save is
        # skipped with a warning (the demo world then writes only public data)
        self._writable = bool(writable)
        self._image_size = int(image_size)
        self._overwrite_generated = bool(overwrite_generated)
        self._max_image_pixels = int(max_image_pixels)
        self._extensions = tuple(
            sorted({e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions})
        )
        self._min_photos = int(min_photos)
        self.metadata = metadata

    # ---- reading ----

    def load(self) -> AlbumSet:
        if self._path is None:
            logger.info("No album folder configured for this entry: loading no album")
            return AlbumSet(albums=[], report={**_Report(path="").to_dict(), "path": None,
                                               "absent": "no album folder for this run"})
        report = _Report(path=str(self._path))
        folders = _list_album_folders(self._path, report)
        all_ids = {name for name, _ in folders}
        albums = []
        for album_id, folder in folders:
            album = self._read_album(album_id, folder, all_ids, report)
            if album is not None:
                albums.append(album)
                report.albums_read += 1
                report.photos_read += len(album)
        result = AlbumSet(albums=albums, report=report.to_dict())
        self._log_summary(result.report)
        return result

    def _read_album(
        self, album_id: str, folder: Path, all_ids: set[str], report: _Report
    ) -> Album | None:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            report.skip_album("unreadable", album_id)
            return None
        album_json = _AlbumJson(photos=None, captions=None, metadata={})
        names: list[str] = []
        real_folder = folder.resolve()
        for entry in entries:
            if entry.name == ALBUM_JSON and entry.is_file(follow_symlinks=False):
                album_json = _read_album_json(Path(entry.path), album_id, all_ids)
                continue
            reason = self._photo_skip_reason(entry, real_folder)
            if reason is not None:
                report.skip_photo(reason, f"{album_id}/{_shown(entry.name)}")
            else:
                names.append(entry.name)
        names.sort(key=_natural_key)
        if not names:
            report.skip_album("empty_album", album_id)
            return None
        captions = self._captions(album_id, album_json, names, {e.name for e in entries}, report)
        self._warn_same_names(album_id, names, report)

        photos = []
        for name in names:
            where = f"{album_id}/{_shown(name)}"
            try:
                image, notes = decode_image(folder / name, self._image_size, self._max_image_pixels)
            except ImageDecodeError as exc:
                report.skip_photo(exc.reason, where)
                logger.debug("Skipped %s: %s", where, exc)
                continue
            for note in notes:
                report.warn(f"{where}: {note}")
            if not _is_utf8(name):
                report.warn(f"{where}: file name is not valid UTF-8; read under this escaped name")
            photos.append(Photo(name=_shown(name), image=image, caption=captions.get(name)))

        if len(photos) < self._min_photos:
            report.skip_album("no_readable_photos" if not photos else "too_few_photos", album_id)
            return None
        return Album(album_id=album_id, photos=photos, metadata=album_json.metadata)

    def _photo_skip_reason(self, entry: os.DirEntry, real_folder: Path) -> str | None:
        """Why a folder entry is not a photo to decode (``None`` when it is); opens nothing."""
        name = entry.name
        if name.startswith("."):
            return "hidden_folder" if entry.is_dir() else "hidden_file"
        if entry.is_symlink():
            target = Path(entry.path).resolve()
            if not target.exists():
                return "broken_symlink"
            if not _is_inside(target, real_folder):
                return "symlink_outside"
        try:
            mode = entry.stat().st_mode  # follows an in-album symlink to its target
        except OSError:
            return "unreadable"
        if stat.S_ISDIR(mode):
            return "nested_folder"
        if not stat.S_ISREG(mode):
            return "not_a_regular_file"
        if os.path.splitext(name)[1].lower() not in self._extensions:
            return "unsupported_extension"
        if entry.stat().st_size == 0:
            return "empty_file"
        return None

    @staticmethod
    def _captions(
        album_id: str,
        album_json: _AlbumJson,
        names: list[str],
        present: set[str],
        report: _Report,
    ) -> dict[str, str | None]:
        """Map photo file name -> caption from album.json (empty when it has no captions)."""
        if album_json.captions is None:
            return {}
        listed = album_json.photos
        if listed is None:
            if len(album_json.captions) != len(names):
                raise AlbumInputError(
                    f"'{album_id}/{ALBUM_JSON}' has {len(album_json.captions)} captions but the "
                    f"album has {len(names)} photo files; add a 'photos' list naming the file "
                    f"of each caption."
                )
            listed = names
        for name in listed:
            if name not in present:
                report.warn(f"{album_id}/{ALBUM_JSON}: lists '{name}', which is not in the folder")
        return dict(zip(listed, album_json.captions))

    @staticmethod
    def _warn_same_names(album_id: str, names: list[str], report: _Report) -> None:
        seen: dict[str, str] = {}
        for name in names:
            other = seen.setdefault(_same_name_key(name), name)
            if other != name:
                report.warn(
                    f"{album_id}: photos '{_shown(other)}' and '{_shown(name)}' differ only by "
                    f"letter case; both were read (they would collide on macOS/Windows)"
                )

    @staticmethod
    def _log_summary(report: dict[str, Any]) -> None:
        logger.info(
            "Read %d albums (%d photos) from %s",
            report["albums_read"],
            report["photos_read"],
            report["path"],
        )
        skipped = Counter(report["albums_skipped"]) + Counter(report["photos_skipped"])
        if skipped or report["warnings"]:
            logger.warning(
                "Album input %s: skipped %d album(s) and %d photo(s) (%s), %d warning(s); "
                "see the ingestion report for examples",
                report["path"],
                sum(report["albums_skipped"].values()),
                sum(report["photos_skipped"].values()),
                ", ".join(f"{reason}={n}" for reason, n in sorted(skipped.items())) or "none",
                len(report["warnings"]),
            )

    # ---- writing ----

    def save(self, data: AlbumSet | list[Album]) -> None:
        albums = list(data.albums if isinstance(data, AlbumSet) else data)
        if self._path is None or not self._writable:
            logger.warning(
                "Not writing %d albums to %s: %s", len(albums), self._path or "(no folder)",
                "no folder is configured for them in this run" if self._path is None else
                "it holds albums dpalbum must not write (albums_dir names your albums)")
            return
        documents = [_album_json_text(album) for album in albums]
        _check_unique_ids(album.album_id for album in albums)

        root = self._path.resolve()
        self._check_replaceable(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        # Write next to the target, then swap: a crash never leaves a half-written album folder.
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.dpalbum-", dir=root.parent))
        try:
            (staging / MARKER_NAME).write_text(MARKER_TEXT, encoding="utf-8")
            for album, (file_names, text) in zip(albums, documents):
                folder = staging / album.album_id
                folder.mkdir()
                for file_name, photo in zip(file_names, album.photos):
                    (folder / file_name).write_bytes(encode_png(photo.image))
                (folder / ALBUM_JSON).write_bytes(text.encode("utf-8"))
            staging.chmod(root.parent.stat().st_mode & 0o777)  # mkdtemp makes it 0700
            if root.exists():
                retired = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                root.rename(retired / root.name)
                try:
                    staging.rename(root)
                except OSError:
                    (retired / root.name).rename(root)  # put the previous albums back
                    raise
                shutil.rmtree(retired)
            else:
                staging.rename(root)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        logger.info(
            "Wrote %d albums (%d photos) to %s",
            len(albums),
            sum(len(album) for album in albums),
            root,
        )

    def _check_replaceable(self, root: Path) -> None:
        """Refuse to write over anything dpalbum did not write itself."""
        if not root.exists():
            return
        if not root.is_dir():
            raise AlbumInputError(f"Cannot write albums to '{root}': it is a file, not a folder.")
        entries = list(os.scandir(root))
        if not entries:
            return
        if not (root / MARKER_NAME).is_file():
            raise AlbumInputError(
                f"Refusing to write albums into '{root}': the folder is not empty and has no "
                f"{MARKER_NAME} marker, so it may hold real photos, and dpalbum never deletes "
                f"what it did not write. Choose a new or empty path, or move that folder away."
            )
        if not self._overwrite_generated:
            raise AlbumInputError(
                f"'{root}' holds albums written by dpalbum earlier. Set overwrite_generated: true "
                f"on its catalog entry to replace them, or choose another path."
            )
        foreign = _foreign_files(root, entries, self._extensions)
        if foreign:
            raise AlbumInputError(
                f"Refusing to replace '{root}': besides dpalbum's albums it holds "
                f"{', '.join(repr(f) for f in foreign[:MAX_EXAMPLES])}, which dpalbum did not "
                f"write. Move those files out of the folder, then run again."
            )

    def _exists(self) -> bool:
        return self._path is not None and self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": None if self._path is None else str(self._path),
            "image_size": self._image_size,
            "overwrite_generated": self._overwrite_generated,
            "writable": self._writable,
            "max_image_pixels": self._max_image_pixels,
            "extensions": list(self._extensions),
            "min_photos": self._min_photos,
        }


def _album_json_text(album: Album) -> tuple[list[str], str]:
    """Photo file names and album.json text of an album to save; checks it can be written."""
    if not isinstance(album, Album):
        raise AlbumInputError(f"Can only save Album objects, got {type(album).__name__}.")
    album_id = album.album_id
    if (
        not isinstance(album_id, str)
        or not album_id
        or album_id.startswith(".")
        or any(c in album_id for c in "/\\\0")
        or not _is_utf8(album_id)
    ):
        raise AlbumInputError(
            f"Album id {album_id!r} cannot be a folder name: use a non-empty UTF-8 string "
            f"without '/', '\\', NUL or a leading '.'."
        )
    if not album.photos:
        raise AlbumInputError(f"Album '{album_id}' has no photos; drop it before saving.")
    for i, photo in enumerate(album.photos):
        image = photo.image
        if not (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.shape[0] > 0
            and image.shape[1] > 0
        ):
            raise AlbumInputError(
                f"Album '{album_id}', photo {i} ('{photo.name}'): image must be an (H, W, 3) "
                f"uint8 RGB array, got {getattr(image, 'dtype', type(image).__name__)} "
                f"{getattr(image, 'shape', '')}."
            )
        if photo.caption is not None and not isinstance(photo.caption, str):
            raise AlbumInputError(
                f"Album '{album_id}', photo {i}: caption must be a string or None."
            )
    clash = sorted(set(album.metadata) & set(RESERVED_KEYS))
    if clash:
        raise AlbumInputError(
            f"Album '{album_id}': metadata keys {clash} are reserved in album.json; rename them."
        )
    width = max(3, len(str(len(album.photos) - 1)))
    document: dict[str, Any] = {
        **album.metadata,
        "album_id": album_id,
        "photos": [f"{i:0{width}d}.png" for i in range(len(album.photos))],
    }
    if any(photo.caption is not None for photo in album.photos):
        document["captions"] = [photo.caption for photo in album.photos]
    try:
        text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AlbumInputError(
            f"Album '{album_id}': metadata is not JSON-serialisable ({exc}); use plain "
            f"str/int/float/bool/list/dict values."
        ) from exc
    return document["photos"], text + "\n"


def _check_unique_ids(album_ids: Iterable[str]) -> None:
    seen: dict[str, str] = {}
    for album_id in album_ids:
        key = _same_name_key(album_id)
        if key in seen:
            other = seen[key]
            raise AlbumInputError(
                f"Albums '{other}' and '{album_id}' would be written to the same folder (album "
                f"ids must be unique, ignoring letter case); rename one."
            )
        seen[key] = album_id


def _foreign_files(root: Path, entries: list[os.DirEntry], extensions: tuple[str, ...]) -> list:
    """Files under a marked folder that ``save`` would not have written (e.g. real photos)."""
    foreign = []
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if not (
                    inner.is_file(follow_symlinks=False)
                    and (inner.name == ALBUM_JSON or _GENERATED_PHOTO.fullmatch(inner.name))
                ):
                    foreign.append(f"{_shown(entry.name)}/{_shown(inner.name)}")
        elif os.path.splitext(entry.name)[1].lower() in extensions or entry.is_symlink():
            # Side files such as a data card may sit next to the albums; photos may not.
            foreign.append(_shown(entry.name))
    return foreign


class AlbumIndexDataset(AbstractDataset[None, list[str]]):
    """The sorted album ids under ``path``: folder names only, no file is opened.

    Used to plan the privacy budget before private data is read (the number of albums is
    treated as public). Applies the same folder-level rules as ``AlbumFolderDataset`` (hidden,
    non-UTF-8, symlinked and duplicate folders); albums that turn out empty or unreadable when
    their photos are opened are still listed here.
    """

    def __init__(self, path: str | os.PathLike, writable: bool = True,
                 metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self._writable = bool(writable)  # false: the user's albums (nothing to check: not written)
        self.metadata = metadata

    def load(self) -> list[str]:
        report = _Report(path=str(self._path))
        album_ids = [name for name, _ in _list_album_folders(self._path, report)]
        skipped = report.albums_skipped
        if skipped:
            logger.warning(
                "Album index %s: %d album ids, %d root entries skipped (%s)",
                self._path,
                len(album_ids),
                sum(skipped.values()),
                ", ".join(f"{reason}={n}" for reason, n in sorted(skipped.items())),
            )
        return album_ids

    def save(self, data: list[str]) -> None:
        """Check (write nothing) that the folder lists exactly ``data``'s album ids.

        Albums are written by ``AlbumFolderDataset``; a pipeline that writes them "saves" their
        ids here so that every node planning on the index runs after the albums exist. Not
        writable (the user's albums, which the demo world did not write): nothing is checked.
        """
        if not self._writable:
            logger.info("Album index %s: the demo world's %d album ids are not this run's "
                        "albums (albums_dir names yours)", self._path, len(data))
            return
        listed = self.load()
        if sorted(map(str, data)) != listed:
            missing = sorted(set(map(str, data)) - set(listed))[:5]
            extra = sorted(set(listed) - set(map(str, data)))[:5]
            raise DatasetError(
                f"AlbumIndexDataset('{self._path}'): the folder does not hold the albums just "
                f"written (missing {missing}, unexpected {extra}); write them with "
                "AlbumFolderDataset before indexing."
            )

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "writable": self._writable}


class AlbumReader:
    """An album folder not read yet: ``read(image_size)`` decodes it at the size the caller's
    model needs (the captioner at its own input size, not the renderer's)."""

    def __init__(self, dataset_kwargs: dict[str, Any]) -> None:
        self._kwargs = dict(dataset_kwargs)

    @property
    def path(self) -> str | None:
        return None if self._kwargs.get("path") is None else str(self._kwargs["path"])

    def read(self, image_size: int) -> AlbumSet:
        """Every album, each photo decoded (crop + LANCZOS) at ``image_size`` pixels."""
        return AlbumFolderDataset(**{**self._kwargs, "image_size": int(image_size)}).load()

    def __repr__(self) -> str:
        return f"AlbumReader({self.path})"


class AlbumReaderDataset(AbstractDataset[None, AlbumReader]):
    """Hands a node an :class:`AlbumReader` of an album folder (same keys as
    ``AlbumFolderDataset`` but ``image_size``): each consumer decodes at its own resolution.
    Read-only."""

    def __init__(self, path: str | os.PathLike | None, metadata: dict[str, Any] | None = None,
                 **album_folder_kwargs: Any) -> None:
        if "image_size" in album_folder_kwargs:
            raise AlbumInputError("AlbumReaderDataset takes no image_size: the node that reads "
                                  "the albums chooses it (AlbumReader.read(image_size)).")
        self._kwargs = {"path": path, **album_folder_kwargs}
        AlbumFolderDataset(**self._kwargs)  # the same validation as the folder dataset
        self.metadata = metadata

    def load(self) -> AlbumReader:
        return AlbumReader(self._kwargs)

    def save(self, data: Any) -> None:
        raise DatasetError("AlbumReaderDataset is read-only: write albums with "
                           "AlbumFolderDataset.")

    def _describe(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self._kwargs.items()}
