"""Thumbnails of catalogued images, made from the originals and cached in the workspace.

The viewer and the static report show thumbnails only, never the originals: a grid of
hundreds of 20-megapixel photos would not load. Only files inside their catalogued root
are read (a symbolic link that leads out of it is refused), so no URL can reach a file
the catalogue does not hold.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from pimmi.images import ImageError, decode_rgb
from pimmi.workspace import ImageRecord

SIZES = (256, 1024)  # grid cards and graph tooltips; pair, overlay and image pages
THUMBS = "thumbs"
QUALITY = 85


def safe_path(rec: ImageRecord) -> Path | None:
    """The image's file, when it lies inside its root once symbolic links are resolved; None otherwise."""
    root = os.path.realpath(rec.root)
    real = os.path.realpath(os.path.join(root, rec.path))
    if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
        return None
    return Path(real)


def thumbnail(workspace_dir: str | Path, rec: ImageRecord, size: int, max_pixels: int) -> bytes:
    """A JPEG of the image, its larger side ``size`` at most; a grey placeholder saying why when the
    image cannot be shown. Cached as ``INDEX_DIR/thumbs/SIZE/ID.jpg``, made again when the file is newer."""
    if size not in SIZES:
        raise ValueError(f"thumbnail size must be one of {', '.join(map(str, SIZES))}")
    path = safe_path(rec)
    if path is None:
        return placeholder(size, "outside the image folder" if os.path.lexists(rec.full_path) else "file missing")
    cached = Path(workspace_dir) / THUMBS / str(size) / f"{rec.id}.jpg"
    try:
        if cached.stat().st_mtime >= path.stat().st_mtime:
            return cached.read_bytes()
    except OSError:
        pass
    try:
        data = encode_jpeg(decode_rgb(path, size, max_pixels))
    except ImageError as e:
        return placeholder(size, str(e))
    _write_atomic(cached, data)
    return data


def encode_jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=QUALITY, optimize=True)
    return buf.getvalue()


def placeholder(size: int, reason: str) -> bytes:
    """A grey square with the reason written on it (never cached: the file may be fixed)."""
    side = min(size, 256)
    im = Image.new("RGB", (side, side), (200, 200, 200))
    draw = ImageDraw.Draw(im)
    draw.text((8, side // 2 - 16), "cannot show this image:", fill=(60, 60, 60))
    draw.text((8, side // 2), reason[:40], fill=(60, 60, 60))
    return encode_jpeg(im)


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:  # a read-only workspace still shows its images, uncached
        pass
