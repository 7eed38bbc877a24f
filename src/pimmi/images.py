"""Listing and decoding images: every format Pillow reads, robust to what real corpora hold."""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

BASE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class ImageError(Exception):
    """An image that cannot be used; the message is the reason, in a few words."""


@dataclass(frozen=True)
class DecodedImage:
    gray: np.ndarray  # uint8, scaled so that its larger side is at most the requested size
    width: int  # original size, after EXIF orientation
    height: int

    @property
    def scale(self) -> float:
        """Original pixels per pixel of ``gray``."""
        return self.width / self.gray.shape[1]


def image_extensions() -> set[str]:
    """Lower-case extensions listed: the usual ones plus whatever the installed Pillow plugins read."""
    registered = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return BASE_EXTENSIONS | registered - {".pdf", ".eps", ".ps", ".xpm", ".xbm", ".ico", ".icns"}


def list_images(root: str | Path) -> list[str]:
    """Paths of image files under ``root``, relative to it (POSIX separators), sorted.

    Extensions are matched case-insensitively; hidden files and folders are skipped; links to files are
    followed, and each real folder is walked once (a link loop is not walked round).
    """
    root = str(root)
    exts = image_extensions()
    found = []
    real_root = os.path.realpath(root)
    seen: set[str] = set()  # real folders walked: each once, whatever the links to it
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _walk_into(os.path.join(folder, d), real_root))
        rel = os.path.relpath(folder, root)
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in exts:
                continue
            path = name if rel == "." else os.path.join(rel, name)
            found.append(path.replace(os.sep, "/"))
    found.sort()
    return found


def _walk_into(path: str, real_root: str) -> bool:
    """A folder is walked by its own name; a link to a folder only when it leads out of the root (a link
    within it, a loop among them, reaches folders walked anyway)."""
    if not os.path.islink(path):
        return True
    return os.path.commonpath([real_root, os.path.realpath(path)]) != real_root


def file_digest(path: str | Path) -> str:
    """SHA-1 of the file's bytes: exact duplicates are recognised without decoding them."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def decode_gray(path: str | Path, max_side: int, max_pixels: int, min_side: int = 1) -> DecodedImage:
    """Decode an image to 8-bit grayscale with its larger side at most ``max_side``.

    Applies EXIF orientation, flattens alpha onto white, converts palette, CMYK and
    16-bit images, keeps the first frame of animations, and lets the JPEG codec decode
    at reduced size when the image is much larger than needed. Raises ``ImageError``.
    """
    gray, w, h = _decode(path, max_side, max_pixels, min_side, _to_gray, luma=True)
    return DecodedImage(np.asarray(gray, dtype=np.uint8), w, h)


def decode_rgb(path: str | Path, max_side: int, max_pixels: int) -> Image.Image:
    """Decode an image to RGB with its larger side at most ``max_side``, as ``decode_gray`` does
    (orientation, alpha, palette, CMYK, 16-bit, first frame): what thumbnails are made from."""
    rgb, _, _ = _decode(path, max_side, max_pixels, 1, _to_rgb, luma=False)
    return rgb


def _decode(path, max_side: int, max_pixels: int, min_side: int, convert, luma: bool) -> tuple[Image.Image, int, int]:
    """The image converted by ``convert``, oriented, scaled to ``max_side``; its original size (oriented)."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageError("empty file")
        with warnings.catch_warnings():
            # Our own limit (max_pixels) is checked below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"too large ({w}x{h} pixels, limit --max-image-pixels {max_pixels})")
                if min(w, h) < min_side:
                    raise ImageError(f"too small ({w}x{h} pixels)")
                if im.format == "JPEG":
                    # The codec decodes (luma only, for grey) at 1/2, 1/4 or 1/8 scale when the image stays this
                    # large.
                    im.draft("L" if luma and im.mode in ("L", "RGB", "YCbCr") else None, (max_side, max_side))
                im.seek(0)
                orientation = _orientation(im)
                im.load()
                out = convert(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageError(_reason(e)) from None
    if orientation in TRANSPOSE:
        out = out.transpose(TRANSPOSE[orientation])
        if orientation >= 5:
            w, h = h, w
    gw, gh = out.size
    shrink = max_side / max(gw, gh)
    if shrink < 1:
        size = (max(1, round(gw * shrink)), max(1, round(gh * shrink)))
        out = out.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return out, w, h


def _reason(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    if "truncated" in text:
        return "truncated file (image data incomplete)"
    return text.splitlines()[0][:200]


def _to_gray(im: Image.Image) -> Image.Image:
    """8-bit grayscale from any mode; transparency is composited onto white."""
    return _flatten(im).convert("L")


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any mode; transparency is composited onto white."""
    return _flatten(im).convert("RGB")


def _flatten(im: Image.Image) -> Image.Image:
    """8 bits per channel, no transparency (composited onto white), no CMYK."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        hi = float(a.max()) if a.size else 0.0
        top = 65535.0 if mode.startswith("I;16") or hi > 255 else 255.0
        return Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    if mode == "CMYK":
        im = im.convert("RGB")
    return im


# EXIF orientation tag values and the transposition that undoes them.
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        return 1
