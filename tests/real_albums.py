"""A small folder of albums of REAL photographs, for tests that need photos the demo world never
drew: crops of the two photos scikit-learn ships (china.jpg, flower.jpg), some portrait, some with
an sRGB ICC profile or an EXIF orientation, written as JPEG like a phone would."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms


def real_photos() -> list[Image.Image]:
    """The real photographs scikit-learn ships (427x640 RGB)."""
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(image) for image in load_sample_images().images]


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def make_real_albums(root: Path, n_albums: int = 12, seed: int = 0) -> list[str]:
    """``root/<event>-<i>/IMG_<k>.jpg``: 3-6 real-photo crops per album (about 300-500 px, a
    third portrait, every other album with an ICC profile, some rotated by EXIF). Returns the
    album ids."""
    rng = np.random.default_rng(seed)
    photos, profile = real_photos(), _srgb_profile()
    events = ("Birthday", "Trip", "Wedding", "Hike")
    ids = []
    for a in range(n_albums):
        album_id = f"{events[a % len(events)]}-{a}_55737440@N02"
        folder = root / album_id
        folder.mkdir(parents=True)
        for k in range(int(rng.integers(3, 7))):
            photo = photos[int(rng.integers(len(photos)))]
            portrait = rng.random() < 0.33
            w, h = (int(rng.integers(180, 260)), int(rng.integers(300, 420))) if portrait else (
                int(rng.integers(300, 500)), int(rng.integers(200, 330)))
            x = int(rng.integers(0, photo.width - w))
            y = int(rng.integers(0, photo.height - h))
            crop = photo.crop((x, y, x + w, y + h))
            extra = {"icc_profile": profile} if a % 2 == 0 else {}
            if k == 1:  # stored sideways, upright by its EXIF orientation (6: rotate 90 CW)
                crop = crop.transpose(Image.Transpose.ROTATE_90)
                exif = Image.Exif()
                exif[0x0112] = 6
                extra["exif"] = exif.tobytes()
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=88, **extra)
            (folder / f"IMG_{k:04d}.jpg").write_bytes(buffer.getvalue())
        ids.append(album_id)
    return ids
