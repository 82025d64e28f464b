"""Contact sheet of released synthetic albums beside public-corpus images (docs/contact_sheet.png).

Reads the last run's outputs through the Kedro catalog: ``synthetic_albums`` (released) and
``public_corpus`` (public). Nothing private is read. One row per album (its photos in order), then a
row of public images for comparison; images are enlarged with nearest-neighbour so pixels stay
visible.

    .venv/bin/python scripts/contact_sheet.py [--albums 8] [--public 8] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("contact_sheet")


def build_sheet(album_rows: list[list[np.ndarray]], public: list[np.ndarray], cell: int = 64,
                gap: int = 4, label: str = "public corpus samples:") -> Image.Image:
    """A white sheet: each album a row of its photos, then a label and a row of public images."""
    columns = max([len(r) for r in album_rows] + [len(public), 1])
    label_height = 14
    rows = len(album_rows) + 1
    width = columns * (cell + gap) + gap
    height = rows * (cell + gap) + gap + label_height
    sheet = Image.new("RGB", (width, height), "white")

    def paste(image: np.ndarray, row_y: int, col: int) -> None:
        tile = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((cell, cell),
                                                                          Image.NEAREST)
        sheet.paste(tile, (gap + col * (cell + gap), row_y))

    for r, photos in enumerate(album_rows):
        for c, image in enumerate(photos):
            paste(image, gap + r * (cell + gap), c)
    public_y = gap + len(album_rows) * (cell + gap) + label_height
    ImageDraw.Draw(sheet).text((gap, public_y - label_height), label, fill="black")
    for c, image in enumerate(public):
        paste(image, public_y, c)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--albums", type=int, default=8)
    parser.add_argument("--public", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="which albums/public images to show")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "contact_sheet.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        catalog = session.load_context().catalog
        albums = list(catalog.load("synthetic_albums"))
        corpus = catalog.load("public_corpus")
    if not albums:
        raise SystemExit("no synthetic albums: run `kedro run` first")
    rng = np.random.default_rng(args.seed)
    shown = sorted(rng.choice(len(albums), size=min(args.albums, len(albums)), replace=False))
    rows = [[p.image for p in albums[i].photos] for i in shown]
    picked = rng.choice(len(corpus), size=min(args.public, len(corpus)), replace=False)
    public = [np.asarray(Image.open(io.BytesIO(corpus["image"].iloc[int(i)])).convert("RGB"))
              for i in picked]
    size = rows[0][0].shape[0]
    public = [np.asarray(Image.fromarray(p).resize((size, size), Image.LANCZOS)) for p in public]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build_sheet(rows, public).save(args.out)
    logger.info("wrote %s: albums %s and %d public images", args.out,
                [albums[i].album_id for i in shown], len(public))


if __name__ == "__main__":
    main()
