"""The demo world: a seeded procedural generator of small captioned images and photo albums.

It is the embedded default's raw data (DESIGN.md). Every image shows a scene (background), a
protagonist (a large filled shape of one colour) and 0-2 small objects, all words of
``vocabulary.py``. It produces:

- a public corpus of single captioned images spread uniformly over the whole vocabulary;
- private albums (one event and one protagonist per album) drawn from a *skewed* part of the
  vocabulary, so that selecting public data by semantics matters (PRIVIMAGE);
- held-out albums from the same distribution, canary albums with combinations that private
  albums never show, and the per-photo ground truth that only evaluation reads.

Albums are first *planned* (labels only), then *rendered* (pixels): ground truth and pixels come
from the same plan, so they cannot drift apart. Each split draws from its own random stream
derived from one seed, and each album carries its own render seed, so the same seed gives
byte-identical outputs and changing one split's size leaves the others unchanged.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from dpalbum.albums.images import encode_png
from dpalbum.albums.model import Album, AlbumSet, Photo
from dpalbum.albums.vocabulary import (
    COLOURS,
    EVENTS,
    OBJECTS,
    PROTAGONISTS,
    SCENES,
    SHAPES,
    Protagonist,
    caption_for,
)
from dpalbum.params import params

# Independent random streams derived from the one seed: one per output.
PUBLIC_STREAM, TRAIN_STREAM, HELDOUT_STREAM, CANARY_STREAM = 0, 1, 2, 3

SPLITS: dict[str, tuple[str, int]] = {  # split -> (album id prefix, random stream)
    "train": ("album", TRAIN_STREAM),
    "heldout": ("heldout", HELDOUT_STREAM),
    "canary": ("canary", CANARY_STREAM),
}

# Images are drawn on a canvas at least this large, then box-downsampled to the target size:
# anti-aliased edges keep small shapes recognisable at 32x32.
_MIN_CANVAS_SIDE = 128

RGB = tuple[int, int, int]


@params
class DemoWorldConfig:
    """Parameters of the demo world (``conf/base/parameters_demo_world.yml``)."""

    seed: int
    image_size: int = 32
    n_public_images: int = 12_000
    n_private_albums: int = 300
    n_heldout_albums: int = 60
    n_canary_albums: int = 0
    min_photos: int = 4
    max_photos: int = 8
    # P(0), P(1), P(2) objects in a private photo (capped by how many objects its event has).
    object_count_probs: list[float] = field(default_factory=lambda: [0.25, 0.45, 0.30])
    # The skew of private albums: events' relative weights (events left out never occur) and
    # the protagonists private albums use, most frequent first, with Zipf weights 1/rank^a.
    event_weights: dict[str, float] = field(
        default_factory=lambda: {"birthday": 4, "holiday": 3, "hike": 2, "winter break": 1}
    )
    protagonists: list[str] = field(
        default_factory=lambda: [
            "red circle",
            "blue square",
            "yellow triangle",
            "red diamond",
            "purple circle",
            "blue triangle",
        ]
    )
    zipf_exponent: float = 1.0
    noise_std: float = 3.0  # per-pixel Gaussian noise on 0..255, so no two images are identical

    def __post_init__(self) -> None:
        where = "parameters_demo_world.yml (demo_world)"
        if self.image_size < 8:
            raise ValueError(f"{where}: image_size must be at least 8, got {self.image_size}")
        if not 1 <= self.min_photos <= self.max_photos:
            raise ValueError(
                f"{where}: need 1 <= min_photos <= max_photos, "
                f"got {self.min_photos} and {self.max_photos}"
            )
        unknown = sorted(set(self.event_weights) - set(EVENTS))
        if unknown or not self.event_weights or min(self.event_weights.values()) <= 0:
            raise ValueError(
                f"{where}: event_weights must map events of {sorted(EVENTS)} to positive "
                f"weights; got {self.event_weights}"
            )
        self.protagonists = list(self.protagonists)
        self.private_protagonists  # noqa: B018  (parses the names: fails early on a typo)
        probs = np.asarray(self.object_count_probs, dtype=float)
        if probs.ndim != 1 or len(probs) == 0 or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(
                f"{where}: object_count_probs must be non-negative weights for 0, 1, 2... "
                f"objects, got {self.object_count_probs}"
            )

    @property
    def private_protagonists(self) -> list[Protagonist]:
        return [parse_protagonist(name) for name in self.protagonists]


def parse_protagonist(name: str) -> Protagonist:
    """``"red circle"`` -> ``Protagonist("red", "circle")``, with an error naming the vocabulary."""
    words = name.split()
    if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
        raise ValueError(
            f"Unknown protagonist {name!r}: write '<colour> <shape>' with a colour of "
            f"{list(COLOURS)} and a shape of {list(SHAPES)}"
        )
    return Protagonist(words[0], words[1])


# ---------------------------------------------------------------- plans (labels, no pixels)


@dataclass(frozen=True)
class PhotoPlan:
    """What one photo shows."""

    scene: str
    objects: tuple[str, ...]  # sorted


@dataclass(frozen=True)
class AlbumPlan:
    """What one album shows: its event, its protagonist and each photo's scene and objects."""

    album_id: str
    split: str
    event: str
    protagonist: Protagonist
    photos: tuple[PhotoPlan, ...]
    render_seed: int


def photo_name(index: int) -> str:
    """The file name of the photo at ``index`` (0-based) inside its album folder."""
    return f"{index:03d}.png"


def _album_ids(prefix: str, n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"{prefix}_{i:0{width}d}" for i in range(1, n + 1)]


def _plan_photos(
    event: str, config: DemoWorldConfig, rng: np.random.Generator
) -> tuple[PhotoPlan, ...]:
    scenes, objects = EVENTS[event]["scenes"], EVENTS[event]["objects"]
    count_probs = np.asarray(config.object_count_probs, dtype=float)
    count_probs /= count_probs.sum()
    n_photos = int(rng.integers(config.min_photos, config.max_photos + 1))
    photos = []
    for _ in range(n_photos):
        scene = scenes[int(rng.integers(len(scenes)))]
        n_objects = min(int(rng.choice(len(count_probs), p=count_probs)), len(objects))
        picked = rng.choice(len(objects), size=n_objects, replace=False)
        photos.append(PhotoPlan(scene, tuple(sorted(objects[int(i)] for i in picked))))
    return tuple(photos)


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Probabilities proportional to 1 / rank^exponent for ranks 1..n."""
    weights = 1.0 / np.arange(1, n + 1, dtype=float) ** exponent
    return weights / weights.sum()


def plan_private_albums(config: DemoWorldConfig, split: str, n_albums: int) -> list[AlbumPlan]:
    """Plan ``n_albums`` albums of the skewed private distribution (split "train"|"heldout")."""
    prefix, stream = SPLITS[split]
    rng = np.random.default_rng([config.seed, stream])
    events = list(config.event_weights)
    event_probs = np.asarray([config.event_weights[e] for e in events], dtype=float)
    event_probs /= event_probs.sum()
    protagonists = config.private_protagonists
    protagonist_probs = zipf_weights(len(protagonists), config.zipf_exponent)
    plans = []
    for album_id in _album_ids(prefix, n_albums):
        event = events[int(rng.choice(len(events), p=event_probs))]
        protagonist = protagonists[int(rng.choice(len(protagonists), p=protagonist_probs))]
        photos = _plan_photos(event, config, rng)
        plans.append(
            AlbumPlan(album_id, split, event, protagonist, photos, int(rng.integers(2**63)))
        )
    return plans


def plan_canary_albums(config: DemoWorldConfig) -> list[AlbumPlan]:
    """Plan canary albums: each a unique (protagonist, event) pair private albums never show.

    Canaries use protagonists absent from private albums and, where the private distribution
    leaves some events out, only those events (so their scenes are unusual too): a membership
    audit can then tell whether a canary left a trace in the synthetic output.
    """
    rng = np.random.default_rng([config.seed, CANARY_STREAM])
    used = set(config.private_protagonists)
    protagonists = [p for p in PROTAGONISTS if p not in used]
    events = [e for e in EVENTS if e not in config.event_weights] or list(EVENTS)
    combos = [(p, e) for p in protagonists for e in events]
    if config.n_canary_albums > len(combos):
        raise ValueError(
            f"n_canary_albums={config.n_canary_albums} but only {len(combos)} unique canary "
            "combinations exist (protagonists unused by private albums x events they leave "
            "out); lower n_canary_albums in parameters_demo_world.yml"
        )
    order = rng.permutation(len(combos))[: config.n_canary_albums]
    plans = []
    for album_id, index in zip(_album_ids("canary", config.n_canary_albums), order):
        protagonist, event = combos[int(index)]
        photos = _plan_photos(event, config, rng)
        plans.append(
            AlbumPlan(album_id, "canary", event, protagonist, photos, int(rng.integers(2**63)))
        )
    return plans


def ground_truth_table(plans: Iterable[AlbumPlan]) -> pd.DataFrame:
    """One row per planned photo: the attributes only evaluation may read."""
    rows = [
        {
            "album_id": plan.album_id,
            "split": plan.split,
            "photo_index": index,
            "photo_name": photo_name(index),
            "event": plan.event,
            "colour": plan.protagonist.colour,
            "shape": plan.protagonist.shape,
            "scene": photo.scene,
            "objects": " ".join(photo.objects),
        }
        for plan in plans
        for index, photo in enumerate(plan.photos)
    ]
    columns = ["album_id", "split", "photo_index", "photo_name", "event", "colour", "shape"]
    return pd.DataFrame(rows, columns=[*columns, "scene", "objects"])


# ---------------------------------------------------------------- rendering (pixels)


def render_albums(plans: Sequence[AlbumPlan], config: DemoWorldConfig) -> AlbumSet:
    """Render planned albums. Photos carry no caption and albums no metadata: labels stay in
    the ground truth, so the pipeline has to caption the private photos itself."""
    albums = []
    for plan in plans:
        rng = np.random.default_rng(plan.render_seed)
        photos = [
            Photo(
                photo_name(index),
                render_image(
                    plan.protagonist,
                    photo.scene,
                    photo.objects,
                    config.image_size,
                    rng,
                    config.noise_std,
                ),
            )
            for index, photo in enumerate(plan.photos)
        ]
        albums.append(Album(plan.album_id, photos))
    return AlbumSet(albums)


def public_corpus_rows(config: DemoWorldConfig) -> Iterator[dict[str, object]]:
    """Yield the public corpus one image at a time, uniform over the whole vocabulary.

    Image ``i`` depends only on (seed, i), so a larger corpus extends a smaller one.
    """
    width = max(6, len(str(config.n_public_images)))
    for i in range(config.n_public_images):
        rng = np.random.default_rng([config.seed, PUBLIC_STREAM, i])
        scene = SCENES[int(rng.integers(len(SCENES)))]
        protagonist = PROTAGONISTS[int(rng.integers(len(PROTAGONISTS)))]
        picked = rng.choice(len(OBJECTS), size=int(rng.integers(3)), replace=False)
        objects = tuple(sorted(OBJECTS[int(j)] for j in picked))
        image = render_image(protagonist, scene, objects, config.image_size, rng, config.noise_std)
        yield {
            "image_id": f"public_{i:0{width}d}",
            "image": encode_png(image),
            "caption": caption_for(protagonist, scene, list(objects)),
            "scene": scene,
            "colour": protagonist.colour,
            "shape": protagonist.shape,
            "objects": " ".join(objects),
        }


def decode_png(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a public corpus ``image`` (PNG bytes)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def render_image(
    protagonist: Protagonist,
    scene: str,
    objects: Sequence[str],
    image_size: int,
    rng: np.random.Generator,
    noise_std: float = 3.0,
) -> np.ndarray:
    """Draw one (image_size, image_size, 3) uint8 image: scene, then protagonist, then objects."""
    scale = max(1, math.ceil(_MIN_CANVAS_SIDE / image_size))
    canvas = Image.new("RGB", (image_size * scale, image_size * scale))
    pen = _Pen(ImageDraw.Draw(canvas), image_size * scale, rng)
    _SCENE_PAINTERS[scene](pen)
    (cx, cy, size), object_places = _layout(len(objects), rng)
    _draw_protagonist(pen, protagonist, cx, cy, size)
    for name, (ox, oy) in zip(objects, object_places):
        _OBJECT_PAINTERS[name](pen, ox, oy, _OBJECT_SIZE)
    if scale > 1:
        canvas = canvas.reduce(scale)
    pixels = np.asarray(canvas, dtype=np.int16)  # (H, W, 3)
    if noise_std > 0:
        pixels = pixels + np.rint(rng.normal(0.0, noise_std, pixels.shape)).astype(np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)


class _Pen:
    """Draws in unit coordinates ((0, 0) top left, (1, 1) bottom right) on a square canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, side: int, rng: np.random.Generator):
        self.draw, self.side, self.rng = draw, side, rng

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def colour(self, rgb: RGB, jitter: int = 10) -> RGB:
        """``rgb`` with seeded per-channel jitter, so no two backgrounds are identical."""
        delta = self.rng.integers(-jitter, jitter + 1, size=3) if jitter else np.zeros(3, int)
        return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(rgb, delta))  # type: ignore

    def _xy(self, points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x * self.side, y * self.side) for x, y in points]

    def _width(self, width: float) -> int:
        return max(1, round(width * self.side)) if width else 0

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB, **line) -> None:
        self.draw.rectangle(self._xy([(x0, y0), (x1, y1)]), fill=fill, **self._line(**line))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB, **line) -> None:
        box = self._xy([(cx - rx, cy - ry), (cx + rx, cy + ry)])
        self.draw.ellipse(box, fill=fill, **self._line(**line))

    def polygon(self, points: Sequence[tuple[float, float]], fill: RGB, **line) -> None:
        self.draw.polygon(self._xy(points), fill=fill, **self._line(**line))

    def line(self, points: Sequence[tuple[float, float]], fill: RGB, width: float) -> None:
        self.draw.line(self._xy(points), fill=fill, width=self._width(width))

    def _line(self, outline: RGB | None = None, width: float = 0.0) -> dict[str, object]:
        return {"outline": outline, "width": self._width(width)} if outline else {}


# ---- scenes: each fills the whole canvas; colours chosen so that each scene has its own
# ---- dominant hues (recognisable from pixel statistics alone).


def _paint_beach(pen: _Pen) -> None:
    horizon = pen.uniform(0.30, 0.40)
    shore = horizon + pen.uniform(0.14, 0.20)
    pen.rect(0, 0, 1, horizon, pen.colour((140, 205, 245)))
    pen.rect(0, horizon, 1, shore, pen.colour((20, 105, 185)))
    pen.rect(0, shore, 1, 1, pen.colour((240, 215, 150)))
    pen.rect(0, shore - 0.02, 1, shore + 0.01, (235, 245, 250))  # surf line


def _paint_forest(pen: _Pen) -> None:
    pen.rect(0, 0, 1, 1, pen.colour((25, 85, 40)))
    floor = pen.uniform(0.80, 0.88)
    for _ in range(int(pen.rng.integers(5, 8))):
        x, w = pen.uniform(-0.05, 1.0), pen.uniform(0.04, 0.07)
        pen.rect(x, 0, x + w, floor, pen.colour((85, 55, 30), 8))
    for _ in range(6):  # dark canopy along the top
        x, y = pen.uniform(0, 1), pen.uniform(-0.05, 0.08)
        pen.ellipse(x, y, 0.16, 0.1, pen.colour((15, 55, 25)))
    pen.rect(0, floor, 1, 1, pen.colour((60, 45, 25)))


def _paint_city(pen: _Pen) -> None:
    pen.rect(0, 0, 1, 1, pen.colour((175, 185, 200)))
    x = pen.uniform(-0.1, 0.0)
    while x < 1.0:
        w, top = pen.uniform(0.16, 0.26), pen.uniform(0.15, 0.45)
        pen.rect(x, top, x + w - 0.015, 1, pen.colour((95, 95, 105), 15))
        wy = top + 0.05
        while wy < 0.85:  # a grid of lit windows
            for wx in np.arange(x + 0.04, x + w - 0.06, 0.07):
                pen.rect(wx, wy, wx + 0.03, wy + 0.04, (235, 215, 110))
            wy += 0.09
        x += w
    pen.rect(0, 0.88, 1, 1, pen.colour((55, 55, 60)))


def _paint_snow(pen: _Pen) -> None:
    horizon = pen.uniform(0.42, 0.52)
    pen.rect(0, 0, 1, 1, pen.colour((200, 220, 240)))
    for _ in range(2):  # grey-blue mountains behind the snowfield
        peak, half = pen.uniform(0.1, 0.9), pen.uniform(0.25, 0.4)
        top = horizon - pen.uniform(0.15, 0.25)
        pen.polygon(
            [(peak - half, horizon), (peak, top), (peak + half, horizon)],
            pen.colour((150, 165, 190)),
        )
    pen.rect(0, horizon, 1, 1, pen.colour((248, 250, 255), 4))


def _paint_desert(pen: _Pen) -> None:
    horizon = pen.uniform(0.38, 0.48)
    pen.rect(0, 0, 1, 1, pen.colour((250, 215, 150)))
    sun_x = pen.uniform(0.08, 0.92)
    pen.ellipse(sun_x, 0.1, 0.07, 0.07, (255, 250, 225))
    pen.ellipse(pen.uniform(0, 0.5), horizon + 0.15, 0.6, 0.2, pen.colour((205, 120, 40)))
    pen.ellipse(pen.uniform(0.5, 1), horizon + 0.22, 0.6, 0.2, pen.colour((230, 150, 60)))
    pen.rect(0, horizon + 0.2, 1, 1, pen.colour((225, 145, 55)))


def _paint_night(pen: _Pen) -> None:
    pen.rect(0, 0, 1, 1, pen.colour((15, 20, 65)))
    for _ in range(int(pen.rng.integers(8, 14))):
        pen.ellipse(pen.uniform(0, 1), pen.uniform(0, 0.75), 0.01, 0.01, (255, 255, 235))
    moon_x, moon_y, sky = pen.uniform(0.1, 0.9), pen.uniform(0.08, 0.14), (15, 20, 65)
    pen.ellipse(moon_x, moon_y, 0.07, 0.07, (240, 235, 190))
    pen.ellipse(moon_x + 0.035, moon_y - 0.02, 0.06, 0.06, sky)  # bite out a crescent
    pen.rect(0, 0.9, 1, 1, pen.colour((8, 10, 30)))


_SCENE_PAINTERS: dict[str, Callable[[_Pen], None]] = {
    "beach": _paint_beach,
    "forest": _paint_forest,
    "city": _paint_city,
    "snow": _paint_snow,
    "desert": _paint_desert,
    "night": _paint_night,
}

# ---- protagonist: a large filled shape; a contrasting outline keeps it visible on every scene
# ---- (a white shape on snow, a black one at night).

PROTAGONIST_RGB: dict[str, RGB] = {
    "red": (225, 30, 30),
    "blue": (35, 70, 235),
    "yellow": (250, 225, 25),
    "purple": (145, 45, 185),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
_DARK, _LIGHT = (20, 20, 20), (245, 245, 245)
_OUTLINE: dict[str, RGB] = {
    "red": _LIGHT,
    "blue": _LIGHT,
    "purple": _LIGHT,
    "black": _LIGHT,
    "yellow": _DARK,
    "white": _DARK,
}


def _layout(
    n_objects: int, rng: np.random.Generator
) -> tuple[tuple[float, float, float], list[tuple[float, float]]]:
    """Protagonist (centre x, centre y, size) and object centres, objects on the other side."""
    size = float(rng.uniform(0.36, 0.44))
    if n_objects == 0:
        return (float(rng.uniform(0.38, 0.62)), float(rng.uniform(0.48, 0.60)), size), []
    left = bool(rng.random() < 0.5)
    cx = (0.30 if left else 0.70) + float(rng.uniform(-0.04, 0.04))
    cy = float(rng.uniform(0.48, 0.60))
    ox = (0.80 if left else 0.20) + float(rng.uniform(-0.02, 0.02))
    if n_objects == 1:
        ys = [float(rng.uniform(0.40, 0.66))]
    else:
        ys = [float(rng.uniform(0.22, 0.27)), float(rng.uniform(0.68, 0.73))]
        ys = [ys[int(i)] for i in rng.permutation(2)]
    return (cx, cy, size), [(ox, y) for y in ys[:n_objects]]


def _draw_protagonist(pen: _Pen, protagonist: Protagonist, cx: float, cy: float, size: float):
    r = size / 2
    line = {"outline": _OUTLINE[protagonist.colour], "width": 0.035}
    fill = pen.colour(PROTAGONIST_RGB[protagonist.colour], 8)
    if protagonist.shape == "circle":
        pen.ellipse(cx, cy, r, r, fill, **line)
    elif protagonist.shape == "square":
        h = r * 0.86  # same visual weight as the circle
        pen.rect(cx - h, cy - h, cx + h, cy + h, fill, **line)
    elif protagonist.shape == "triangle":
        t = 1.1 * r  # triangles and diamonds are drawn larger: same visual weight as the circle
        pen.polygon([(cx, cy - t), (cx + t, cy + 0.8 * t), (cx - t, cy + 0.8 * t)], fill, **line)
    elif protagonist.shape == "diamond":
        d = 1.15 * r
        pen.polygon(
            [(cx, cy - d), (cx + 0.85 * d, cy), (cx, cy + d), (cx - 0.85 * d, cy)], fill, **line
        )
    else:
        raise ValueError(f"Unknown shape {protagonist.shape!r}; shapes are {list(SHAPES)}")


# ---- objects: small (about a quarter of the side), each with its own colours and silhouette.

_OBJECT_SIZE = 0.32
_INK = {"outline": (25, 25, 25), "width": 0.02}


def _draw_ball(pen: _Pen, cx: float, cy: float, s: float) -> None:
    r = 0.36 * s
    cy += 0.1 * s  # balls rest low in their box
    pen.ellipse(cx, cy, r, r, (250, 250, 250), **_INK)
    pen.ellipse(cx, cy, 0.13 * s, 0.13 * s, (25, 25, 25))  # the football's black patch


def _draw_balloon(pen: _Pen, cx: float, cy: float, s: float) -> None:
    top = cy - 0.5 * s
    pen.line(
        [(cx, top + 0.62 * s), (cx - 0.06 * s, cy + 0.25 * s), (cx, cy + 0.5 * s)],
        (40, 40, 40),
        0.02,
    )
    pen.ellipse(cx, top + 0.32 * s, 0.27 * s, 0.32 * s, (255, 60, 170), **_INK)


def _draw_flag(pen: _Pen, cx: float, cy: float, s: float) -> None:
    pole = cx - 0.3 * s
    pen.rect(pole - 0.03 * s, cy - 0.5 * s, pole + 0.03 * s, cy + 0.5 * s, (50, 50, 50))
    pen.rect(pole, cy - 0.48 * s, pole + 0.62 * s, cy - 0.08 * s, (255, 135, 0), **_INK)


def _draw_cake(pen: _Pen, cx: float, cy: float, s: float) -> None:
    pen.rect(cx - 0.4 * s, cy - 0.05 * s, cx + 0.4 * s, cy + 0.4 * s, (150, 85, 40), **_INK)
    pen.rect(cx - 0.4 * s, cy - 0.05 * s, cx + 0.4 * s, cy + 0.1 * s, (255, 190, 215))  # icing
    pen.rect(cx - 0.05 * s, cy - 0.35 * s, cx + 0.05 * s, cy - 0.05 * s, (250, 250, 250))
    pen.ellipse(cx, cy - 0.42 * s, 0.07 * s, 0.09 * s, (255, 200, 0))  # candle flame


def _draw_kite(pen: _Pen, cx: float, cy: float, s: float) -> None:
    top, mid, bottom, half = cy - 0.5 * s, cy - 0.2 * s, cy + 0.18 * s, 0.34 * s
    tail = [
        (cx, bottom),
        (cx + 0.12 * s, cy + 0.3 * s),
        (cx - 0.08 * s, cy + 0.4 * s),
        (cx + 0.06 * s, cy + 0.5 * s),
    ]
    pen.line(tail, (40, 40, 40), 0.02)
    pen.polygon(
        [(cx, top), (cx + half, mid), (cx, bottom), (cx - half, mid)], (0, 210, 225), **_INK
    )
    pen.line([(cx, top), (cx, bottom)], (25, 25, 25), 0.012)
    pen.line([(cx - half, mid), (cx + half, mid)], (25, 25, 25), 0.012)


def _draw_tree(pen: _Pen, cx: float, cy: float, s: float) -> None:
    pen.rect(cx - 0.07 * s, cy + 0.2 * s, cx + 0.07 * s, cy + 0.5 * s, (115, 70, 30))
    green = (95, 205, 50)
    pen.polygon(
        [(cx, cy - 0.15 * s), (cx + 0.4 * s, cy + 0.25 * s), (cx - 0.4 * s, cy + 0.25 * s)],
        green,
        **_INK,
    )
    pen.polygon(
        [(cx, cy - 0.5 * s), (cx + 0.3 * s, cy - 0.05 * s), (cx - 0.3 * s, cy - 0.05 * s)],
        green,
        **_INK,
    )


_OBJECT_PAINTERS: dict[str, Callable[[_Pen, float, float, float], None]] = {
    "ball": _draw_ball,
    "balloon": _draw_balloon,
    "flag": _draw_flag,
    "cake": _draw_cake,
    "kite": _draw_kite,
    "tree": _draw_tree,
}

assert set(_SCENE_PAINTERS) == set(SCENES) and set(_OBJECT_PAINTERS) == set(OBJECTS)
assert set(PROTAGONIST_RGB) == set(COLOURS)
