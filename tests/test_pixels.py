"""The pixel check of weak matches: copies agree where a match lays them over each other, however edited;
two photos under one overlay agree on the overlay only."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps
from skimage import data

from pimmi.pixels import ELEMENT, Pictures, agreement, in_region, unlike
from pimmi.settings import Settings
from pimmi.workspace import ImageRecord

MAX_PIXELS = 10**8
LIMIT = Settings().query_min_pixel_agreement


def record(i: int, path: Path) -> ImageRecord:
    w, h = Image.open(path).size
    return ImageRecord(i, path.name, str(path.parent), "ok", w, h, 1.0, 0, None, None)


def save(im: Image.Image, path: Path, quality: int = 90) -> Path:
    im.convert("RGB").save(path, quality=quality)
    return path


def photo(name: str, size=(640, 480)) -> Image.Image:
    return ImageOps.fit(Image.fromarray(getattr(data, name)()).convert("RGB"), size)


def app_post(im: Image.Image, user: str) -> Image.Image:
    """A photo inside a phone app's bars: status bar, a header with the account, buttons and likes below."""
    W, H = 720, 1100
    out = Image.new("RGB", (W, H), "white")
    out.paste(ImageOps.fit(im, (W, 780)), (0, 130))
    d = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=28)
    d.text((20, 5), "12:41", font=font, fill="black")
    d.rectangle((0, 40, W, 130), fill=(220, 80, 200))
    d.ellipse((20, 48, 94, 122), fill=(30, 120, 200))
    d.text((120, 50), "Facepage", font=font, fill="white")
    d.text((120, 88), user, font=font, fill="white")
    for x in (30, 120, 210):
        d.ellipse((x, 920, x + 50, 970), outline="black", width=4)
    d.rectangle((640, 920, 690, 970), outline="black", width=4)
    d.text((30, 985), "12,048 likes", font=font, fill="black")
    d.text((30, 1025), f"{user} election strike flood", font=font, fill="black")
    d.rectangle((0, 1070, W, H), fill=(220, 80, 200))
    return out


IDENTITY = np.eye(3)


def test_copies_agree_however_edited(tmp_path):
    original = photo("astronaut")
    a = save(original, tmp_path / "a.jpg")
    pictures = Pictures(MAX_PIXELS)
    box = (0.0, 0.0, 640.0, 480.0)
    edits = {
        "recompressed": lambda im: Image.open(io.BytesIO(_jpeg(im, 10))),
        "darker": lambda im: ImageEnhance.Brightness(im).enhance(0.55),
        "blurred": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
        "grey": lambda im: ImageOps.grayscale(im),
    }
    for i, (name, edit) in enumerate(edits.items()):
        b = save(edit(original), tmp_path / f"{name}.jpg")
        agreed = agreement(pictures, record(1, a), record(2 + i, b), IDENTITY, box, box)
        assert agreed is not None and agreed.share > 0.8, name
        assert not unlike(agreed, LIMIT)
    # Half size, the transform saying so: the same.
    half = save(original.resize((320, 240)), tmp_path / "half.jpg")
    scale = np.diag([0.5, 0.5, 1.0])
    agreed = agreement(pictures, record(1, a), record(9, half), scale, box, (0.0, 0.0, 320.0, 240.0))
    assert agreed.share > 0.8


def test_a_copy_under_a_sticker_still_agrees(tmp_path):
    original = photo("coffee")
    covered = original.copy()
    ImageDraw.Draw(covered).ellipse((40, 40, 300, 300), fill=(250, 210, 0), outline="black", width=6)
    a, b = save(original, tmp_path / "a.jpg"), save(covered, tmp_path / "b.jpg")
    box = (0.0, 0.0, 640.0, 480.0)
    agreed = agreement(Pictures(MAX_PIXELS), record(1, a), record(2, b), IDENTITY, box, box)
    assert 0.5 < agreed.share < 0.95
    assert not unlike(agreed, LIMIT)


def test_two_photos_in_the_same_app_bars_do_not_agree(tmp_path):
    a = save(app_post(photo("astronaut"), "@user2512"), tmp_path / "a.jpg")
    b = save(app_post(photo("coffee"), "@user1759"), tmp_path / "b.jpg")
    box = (20.0, 10.0, 700.0, 1090.0)  # what keypoints on the bars make of it: the whole frame
    agreed = agreement(Pictures(MAX_PIXELS), record(1, a), record(2, b), IDENTITY, box, box)
    assert agreed.share < LIMIT and unlike(agreed, LIMIT)
    # The same photo in the same bars, another account: a copy.
    c = save(app_post(photo("astronaut"), "@user0629"), tmp_path / "c.jpg")
    assert not unlike(agreement(Pictures(MAX_PIXELS), record(1, a), record(3, c), IDENTITY, box, box), LIMIT)


def test_a_wrong_alignment_decides_nothing(tmp_path):
    # A deep field and its copy laid over each other at the wrong place (alike stars matched there): nothing
    # agrees, not even an overlay, so the pixels leave the match to the keypoint rules.
    field = Image.fromarray(data.hubble_deep_field()).convert("RGB")
    w, h = field.size
    shifted = Image.new("RGB", field.size)
    shifted.paste(field.crop((60, 40, w, h)), (0, 0))
    a, b = save(field, tmp_path / "a.jpg"), save(shifted, tmp_path / "b.jpg")
    box = (0.0, 0.0, float(w), float(h))
    pictures = Pictures(MAX_PIXELS)
    wrong = agreement(pictures, record(1, a), record(2, b), IDENTITY, box, box)
    assert wrong.share < ELEMENT and not unlike(wrong, LIMIT)
    right = np.array([[1.0, 0, -60], [0, 1, -40], [0, 0, 1]])  # the copy's true transform
    assert agreement(pictures, record(1, a), record(2, b), right, box, box).share > 0.8


def test_an_unreadable_image_decides_nothing(tmp_path):
    a = save(photo("astronaut"), tmp_path / "a.jpg")
    gone = record(2, a)
    a.unlink()
    box = (0.0, 0.0, 640.0, 480.0)
    assert (
        agreement(Pictures(MAX_PIXELS), record(1, save(photo("coffee"), tmp_path / "b.jpg")), gone, IDENTITY, box, box)
        is None
    )
    assert not unlike(None, LIMIT)


def test_the_region_measures_density_and_spread():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 300, (300, 2))  # scaled pixels, 2 original pixels each
    box = (0.0, 0.0, 600.0, 600.0)  # original pixels: all of it
    everywhere = np.arange(0, 300, 6)  # fifty all over: a copy
    density, spread = in_region(xy, 2.0, box, everywhere)
    assert density == 50 / 300 and spread > 0.8
    # Two far corners (two tiles that two grids share): as dense, but in clumps.
    corners = np.flatnonzero(((xy[:, 0] < 75) & (xy[:, 1] < 75)) | ((xy[:, 0] > 225) & (xy[:, 1] > 225)))
    assert in_region(xy, 2.0, box, corners)[1] < 0.6
    # Measured within the region: one corner is all of a region drawn around it.
    corner = np.flatnonzero((xy[:, 0] < 75) & (xy[:, 1] < 75))
    (x0, y0), (x1, y1) = xy[corner].min(axis=0) * 2, xy[corner].max(axis=0) * 2
    density, spread = in_region(xy, 2.0, (x0, y0, x1, y1), corner)
    assert density == 1.0 and spread > 0.8


def test_decoded_images_are_kept_within_their_budget(tmp_path):
    paths = [save(photo(name), tmp_path / f"{name}.jpg") for name in ("astronaut", "coffee", "chelsea")]
    pictures = Pictures(MAX_PIXELS, budget=500_000)  # two 640x480 grey images do not fit
    for i, p in enumerate(paths):
        grey, per_pixel = pictures.get(record(i, p), 1.0)
        assert grey.shape == (480, 640) and per_pixel == 1.0
    assert pictures.held <= 500_000 and len(pictures.cache) == 1
    small, per_pixel = pictures.get(record(0, paths[0]), 0.2)  # a fifth of the pixels asked: decoded smaller
    assert max(small.shape) == 128 and per_pixel == 5.0


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
