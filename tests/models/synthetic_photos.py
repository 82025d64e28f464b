"""A tiny, independent stand-in for the demo world: flat-coloured scenes with one protagonist.

Each 32x32 image has a background colour per scene, a protagonist (a filled square or triangle of
one colour) at a jittered position and optional object marks in fixed corners. It uses words of the
real vocabulary so captions parse, but none of the demo world's drawing code.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from dpalbum.albums.model import Album, AlbumSet, Photo
from dpalbum.albums.vocabulary import Protagonist, caption_for

SIZE = 32
SCENE_RGB = {"beach": (235, 215, 150), "city": (120, 120, 130), "night": (20, 20, 60),
             "forest": (30, 110, 40)}
COLOUR_RGB = {"red": (220, 30, 30), "blue": (40, 80, 240), "yellow": (250, 240, 40)}
SHAPES = ("square", "triangle")
OBJECT_MARK = {"ball": ((2, 2), (255, 255, 255)), "kite": ((2, 25), (0, 230, 230))}  # corner, RGB


def draw(scene: str, colour: str, shape: str, objects: list[str],
         rng: np.random.Generator) -> np.ndarray:
    """One (32, 32, 3) uint8 image."""
    image = np.empty((SIZE, SIZE, 3), dtype=np.int16)
    image[:] = SCENE_RGB[scene]
    cy, cx = rng.integers(12, 20, size=2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if shape == "square":
        mask = (abs(yy - cy) <= 6) & (abs(xx - cx) <= 6)
    else:  # apex up, base 15 px wide
        mask = (yy >= cy - 7) & (yy <= cy + 7) & (2 * abs(xx - cx) <= yy - cy + 8)
    image[mask] = COLOUR_RGB[colour]
    for name in objects:
        (y, x), rgb = OBJECT_MARK[name]
        image[y:y + 5, x:x + 5] = rgb
    image += rng.integers(-4, 5, size=image.shape).astype(np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _random_labels(rng: np.random.Generator) -> tuple[str, str, str, list[str]]:
    scene = list(SCENE_RGB)[rng.integers(len(SCENE_RGB))]
    colour = list(COLOUR_RGB)[rng.integers(len(COLOUR_RGB))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    objects = sorted(o for o in OBJECT_MARK if rng.random() < 0.4)
    return scene, colour, shape, objects


def public_corpus(n: int, seed: int = 0) -> pd.DataFrame:
    """Columns image_id, image (PNG bytes), caption, scene, colour, shape, objects."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        scene, colour, shape, objects = _random_labels(rng)
        rows.append({"image_id": f"public_{i:05d}",
                     "image": _png(draw(scene, colour, shape, objects, rng)),
                     "caption": caption_for(Protagonist(colour, shape), scene, objects),
                     "scene": scene, "colour": colour, "shape": shape,
                     "objects": " ".join(objects)})
    return pd.DataFrame(rows)


def private_albums(n_albums: int, seed: int = 1,
                   photos: tuple[int, int] = (3, 5)) -> tuple[AlbumSet, pd.DataFrame]:
    """Albums with one protagonist each, and their ground truth (catalog.yml columns)."""
    rng = np.random.default_rng(seed)
    albums, truth = [], []
    for a in range(n_albums):
        album_id = f"album_{a:04d}"
        colour = list(COLOUR_RGB)[rng.integers(len(COLOUR_RGB))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        album_photos = []
        for p in range(int(rng.integers(photos[0], photos[1] + 1))):
            scene, _, _, objects = _random_labels(rng)
            name = f"{p:03d}.png"
            album_photos.append(Photo(name, draw(scene, colour, shape, objects, rng)))
            truth.append({"album_id": album_id, "split": "train", "photo_index": p,
                          "photo_name": name, "event": "holiday", "colour": colour,
                          "shape": shape, "scene": scene, "objects": " ".join(objects)})
        albums.append(Album(album_id, album_photos))
    report = {"n_albums": n_albums, "n_photos": len(truth), "skipped": {}}
    return AlbumSet(albums, report), pd.DataFrame(truth)
