"""The provenance cues read from pixels, on copies of real photos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from skimage import data

from pimmi.edits import grey
from pimmi.provenance import AGREE_DOUBT, outside_agreement
from pimmi.workspace import ImageRecord

SMALL = 128  # the side the cue compares images at


def _record(im: Image.Image, i: int) -> ImageRecord:
    return ImageRecord(i, f"{i}.jpg", "/", "ok", im.width, im.height, 1.0, 200, None, None)


def _small(im: Image.Image) -> np.ndarray:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    small = Image.open(buf).convert("RGB")
    small.thumbnail((SMALL, SMALL))
    return grey(np.asarray(small, np.float32))


def _scaled(a: Image.Image, b: Image.Image, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """The transform from a pixel of ``a`` to the pixel of ``b`` showing the same point (``b`` a rescaled
    copy of ``a``'s picture, its origin at (dx, dy) of ``a``)."""
    s = b.width / (a.width - 2 * dx)
    return np.array([[s, 0, -s * dx], [0, s, -s * dy]])


def test_a_crops_lost_picture_is_seen_in_the_other_copies():
    # The original: a dark photo whose rim holds few keypoints; its crop takes the centre. Two other copies
    # of the original (brighter, smaller) show the same rim: it is picture the crop lost.
    photo = Image.fromarray(data.coffee()).convert("RGB").resize((480, 320))
    crop_box = (96, 64, 384, 256)
    copies = [ImageEnhance.Brightness(photo).enhance(1.3), photo.resize((360, 240))]
    rec = _record(photo, 1)
    others = [(_record(c, 2 + k), _small(c), _scaled(photo, c)) for k, c in enumerate(copies)]
    assert outside_agreement(crop_box, rec, _small(photo), others) > 0.8


def test_an_added_border_is_not_seen_in_the_other_copies():
    # A copy with a border and a band added: the other copies of the photo stop at its picture, or (one
    # padded in another colour) show something else where the band lies.
    photo = Image.fromarray(data.astronaut()).convert("RGB").resize((400, 400))
    bordered = ImageOps.expand(photo, border=(40, 40, 40, 120), fill=(250, 250, 250))
    padded = ImageOps.expand(photo, border=60, fill=(20, 60, 120))
    rec = _record(bordered, 1)
    picture = (40, 40, 440, 440)  # the photo inside the bordered copy
    whole = photo.resize((300, 300))
    others = [
        (_record(whole, 2), _small(whole), _scaled(bordered, whole, 40, 40)),
        (_record(padded, 3), _small(padded), np.array([[1.0, 0, 20], [0, 1.0, 20]])),
    ]
    shown = outside_agreement(picture, rec, _small(bordered), others)
    assert shown is not None and shown < AGREE_DOUBT / 2
