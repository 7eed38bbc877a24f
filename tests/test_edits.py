"""Which of two renderings on one pixel grid was edited from the other, on copies of real photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont
from skimage import data

from pimmi.edits import aligned, edit_evidence, same_grid


def _jpeg(im: Image.Image, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB").resize((384, 288))


def _noisy(im: Image.Image) -> Image.Image:
    a = np.asarray(im, np.float32) + np.random.default_rng(3).normal(0, 15, (im.height, im.width, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _captioned(im: Image.Image) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    f = ImageFont.load_default(size=34)
    for y, text in ((10, "WHEN THE CODE"), (235, "FINALLY WORKS")):
        draw.text((24, y), text, font=f, fill="white", stroke_width=3, stroke_fill="black")
    return out


# edit -> (how, what it is found to be, on how many of the three photos at least); a finding never says the
# copy is the parent. The cat's photo, dark, has too little to clip: brightened, it says nothing.
EDITS = {
    "noise": (_noisy, "noise", 3),
    "blur": (lambda im: im.filter(ImageFilter.GaussianBlur(2)), "detail", 3),
    "text drawn over": (_captioned, "drawn", 3),
    "brightened": (lambda im: ImageEnhance.Brightness(im).enhance(1.7), "clipped", 1),
}


PHOTOS = ("astronaut", "coffee", "chelsea")


@pytest.mark.parametrize("edit", list(EDITS))
def test_the_edited_copy_is_the_child(edit):
    make, kind, at_least = EDITS[edit]
    named = 0
    for photo in PHOTOS:
        parent = _photo(photo)
        original, copy = _jpeg(parent), _jpeg(make(parent))
        found = edit_evidence(original, copy)
        back = edit_evidence(copy, original)
        assert (found is None) == (back is None), photo
        if found is None:
            continue
        assert found.evidence > 0 and back.evidence == pytest.approx(-found.evidence), (photo, found)
        named += found.kind == kind
    assert named >= at_least


def test_a_plain_reencoding_says_little():
    photo = _photo("astronaut")
    found = edit_evidence(_jpeg(photo, 92), _jpeg(photo, 88))
    assert found is None or abs(found.evidence) < 1.5


def test_a_padded_copy_lines_up_without_resampling():
    photo = _photo("coffee")
    canvas = Image.new("RGB", (480, 400), (30, 160, 90))
    canvas.paste(photo, (37, 21))
    original, padded = np.asarray(photo), np.asarray(canvas)
    T = np.array([[1.0, 0.0, 37.2], [0.0, 1.0, 20.8]])  # a match's transform: original pixel -> padded pixel
    assert same_grid(T)
    a, b = aligned(original, padded, T, 384, 480)
    assert a.shape == b.shape == (288, 384, 3) and np.array_equal(a, b)
    # decoded at half size, the same overlap at half the pixels
    half_a, half_b = original[::2, ::2], padded[::2, ::2]
    a, b = aligned(half_a, half_b, T, 384, 480)
    assert a.shape == b.shape == (144, 192, 3)
    assert aligned(original, padded[::2, ::2], T, 384, 480) is None  # not at one scale


def test_only_matches_on_one_grid_are_compared():
    assert not same_grid(np.array([[0.9, 0.0, 0.0], [0.0, 0.9, 0.0]]))  # scaled
    assert not same_grid(np.array([[-1.0, 0.0, 383.0], [0.0, 1.0, 0.0]]))  # mirrored
    c, s = np.cos(np.radians(5)), np.sin(np.radians(5))
    assert not same_grid(np.array([[c, -s, 0.0], [s, c, 0.0]]))  # turned
