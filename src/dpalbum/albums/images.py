"""Safe photo decoding and encoding for the album folder dataset.

Decoding turns one photo file into an ``(S, S, 3)`` uint8 RGB array:

1. open read-only, and only with the formats in ``ALLOWED_FORMATS`` (Pillow would otherwise try
   every plugin it has, e.g. EPS, which shells out to Ghostscript);
2. check the declared size against ``max_image_pixels`` *before* any pixel is decoded
   (decompression bombs: a 100-byte PNG header can claim 100k x 100k pixels);
3. decode strictly: a truncated file is an error, never padded with grey
   (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone);
4. apply the EXIF orientation, so the photo is upright as the camera meant it;
5. convert to 8-bit RGB: alpha is composited onto white, 16-bit/32-bit grey is rescaled (Pillow's
   own ``convert`` clips it, turning most 16-bit photos white), CMYK/palette/grey are converted;
6. **center-crop to a square, then resize with LANCZOS** to ``S x S``. Cropping keeps the aspect
   ratio of faces and objects (as CLIP/torchvision preprocessing does); the borders are lost.

Every failure raises :class:`ImageDecodeError` with a short ``reason`` that the dataset counts as
a skip; nothing here lets a raw Pillow traceback escape.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# "JPEG" also opens MPO files (JPEG plus a depth/preview frame), which many phones write as .jpg.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
WHITE = (255, 255, 255, 255)


class ImageDecodeError(Exception):
    """A photo file that cannot be read; ``reason`` is the skip reason the report counts."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(
    path: str | Path, image_size: int, max_image_pixels: int
) -> tuple[np.ndarray, list[str]]:
    """Read one photo file into an ``(image_size, image_size, 3)`` uint8 RGB array.

    Returns the array and notes worth a warning in the report (e.g. "animated: first frame").
    Raises ``ImageDecodeError`` for anything that cannot be read.
    """
    notes: list[str] = []
    try:
        fh = open(path, "rb")  # read-only: originals are never modified
    except OSError as exc:  # PermissionError, EIO, a file removed while we listed the folder
        detail = f"{type(exc).__name__}: {exc.strerror or exc}"
        raise ImageDecodeError("unreadable", detail) from exc
    with fh:
        image = _open_checked(fh, max_image_pixels)
        with image:
            if getattr(image, "is_animated", False):
                notes.append("animated image: its first frame was used")
            if image.format in ("JPEG", "MPO"):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (never below the target size):
                # an 8x faster decode of a 12 MP photo that ends up 32 px wide anyway.
                image.draft(None, (image_size, image_size))
            try:
                image.load()
            except Exception as exc:  # any decoder failure is a bad file
                reason = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
                raise ImageDecodeError(reason, f"{type(exc).__name__}: {exc}") from exc
            try:
                upright = ImageOps.exif_transpose(image)
            except Exception as exc:  # malformed EXIF must not lose the photo
                notes.append(f"EXIF orientation unreadable ({exc}); used as stored")
                upright = image
            try:
                rgb = to_rgb(upright)
            except (ValueError, OSError) as exc:
                raise ImageDecodeError(
                    "unsupported_mode", f"cannot convert mode {upright.mode} to RGB: {exc}"
                ) from exc
            square = center_crop_resize(rgb, image_size)
            return np.array(square, dtype=np.uint8), notes


def _open_checked(fh: io.BufferedReader, max_image_pixels: int) -> Image.Image:
    """Open the header only and refuse bombs before a single pixel is decoded."""
    with warnings.catch_warnings():
        # Pillow warns above Image.MAX_IMAGE_PIXELS; our own limit below decides instead.
        # It still raises DecompressionBombError above 2 x MAX_IMAGE_PIXELS, caught here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(fh, formats=ALLOWED_FORMATS)
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError("decompression_bomb", str(exc)) from exc
        except UnidentifiedImageError as exc:
            raise ImageDecodeError(
                "not_an_image", f"not a {'/'.join(ALLOWED_FORMATS)} image"
            ) from exc
        except Exception as exc:  # broken headers: SyntaxError, struct.error...
            reason = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
            raise ImageDecodeError(reason, f"{type(exc).__name__}: {exc}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise ImageDecodeError("corrupt_image", f"declared size {width}x{height}")
    if width * height > max_image_pixels:
        image.close()
        raise ImageDecodeError(
            "decompression_bomb",
            f"declares {width}x{height} = {width * height} pixels > max_image_pixels "
            f"{max_image_pixels}",
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        # High bit-depth grey: rescale to 8 bits (Pillow's convert("L") clips at 255 instead).
        grey = _high_depth_to_uint8(np.array(image), mode)
        return Image.fromarray(grey).convert("RGB")
    if image.has_transparency_data:
        # Transparent pixels have arbitrary colour underneath (often black); white is what a
        # viewer shows on a page and what captioners were trained on.
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit (I;16*), 32-bit int (I) or float (F) grey to uint8 without clipping to white."""
    if mode == "F":
        values = np.nan_to_num(values.astype(np.float64))
        if values.min() >= 0.0 and values.max() <= 1.0:  # float images are usually in [0, 1]
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    values = np.clip(values.astype(np.int64), 0, None)
    if mode == "I" and values.max(initial=0) <= 255:
        return values.astype(np.uint8)  # an 8-bit image stored in a 32-bit container
    if mode.startswith("I;16") or values.max(initial=0) <= 65535:
        return (values >> 8).astype(np.uint8)  # 16-bit: keep the 8 most significant bits
    return (values * 255 // values.max()).astype(np.uint8)


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Crop the largest centred square, then resize it to ``size x size`` with LANCZOS."""
    width, height = image.size
    if (width, height) == (size, size):
        return image  # exact round trip of images already at the target size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    # Crop first: resize(box=...) would let the filter read pixels from outside the crop.
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def encode_png(image: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG bytes, byte-identical for identical input."""
    buffer = io.BytesIO()
    # No metadata chunks and a fixed compression level: the same pixels give the same bytes.
    Image.fromarray(image).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
