from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pimmi.demo import sample_photo
from pimmi.images import ImageError, decode_gray, list_images

MAX = 512
PIXELS = 150_000_000


def decode(path):
    return decode_gray(path, MAX, PIXELS, 32)


@pytest.fixture
def photo():
    return sample_photo("astronaut")


def test_lists_images_recursively_case_insensitively(tmp_path, photo):
    for rel in [
        "a.JPG",
        "b.jpeg",
        "sub/c.webp",
        "sub/deeper/d.png",
        "sub/e f é.Png",
        "notes.txt",
        ".hidden.jpg",
        ".cache/x.jpg",
    ]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            p.write_text("hi")
        else:
            photo.save(p, {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".png": "PNG"}[p.suffix.lower()])
    assert list_images(tmp_path) == ["a.JPG", "b.jpeg", "sub/c.webp", "sub/deeper/d.png", "sub/e f é.Png"]


def test_scaled_to_max_side_keeping_original_size(tmp_path, photo):
    big = photo.resize((1600, 1200))
    big.save(tmp_path / "big.jpg")
    img = decode(tmp_path / "big.jpg")
    assert (img.width, img.height) == (1600, 1200)
    assert img.gray.shape == (384, 512)
    assert img.scale == pytest.approx(1600 / 512)


def test_huge_jpeg_decoded_at_reduced_size(tmp_path):
    Image.new("L", (12000, 9000), 128).save(tmp_path / "huge.jpg", quality=50)
    img = decode(tmp_path / "huge.jpg")
    assert (img.width, img.height) == (12000, 9000)
    assert max(img.gray.shape) == 512


def test_jpeg_luma_from_the_codec_matches_the_rgb_path(tmp_path, photo):
    # JPEGs are decoded to luma by the codec, whatever their size; on a photo that is the grey of Pillow's
    # RGB -> L conversion up to rounding (they differ only where a saturated colour clips in RGB).
    photo.resize((600, 600)).save(tmp_path / "p.jpg", quality=92)
    got = decode(tmp_path / "p.jpg").gray.astype(np.float32)
    with Image.open(tmp_path / "p.jpg") as im:
        want = np.asarray(im.convert("L").resize((512, 512), Image.Resampling.BILINEAR, reducing_gap=2.0), np.float32)
    diff = np.abs(got - want)
    assert got.shape == want.shape and diff.mean() < 0.5 and np.percentile(diff, 99) <= 2


def test_exif_orientation_applied(tmp_path, photo):
    im = photo.resize((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    im.save(tmp_path / "rot.jpg", exif=exif)
    img = decode(tmp_path / "rot.jpg")
    assert (img.width, img.height) == (200, 400)
    upright = np.asarray(im.convert("L").transpose(Image.Transpose.ROTATE_270), dtype=np.float32)
    assert np.abs(img.gray.astype(np.float32) - upright).mean() < 8


def test_modes_converted(tmp_path, photo):
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    a16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "deep.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(0)
    rgba.save(tmp_path / "clear.png")
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)

    ref = np.asarray(photo.convert("L"), dtype=np.float32)
    assert np.abs(decode(tmp_path / "cmyk.jpg").gray - ref).mean() < 12
    deep = decode(tmp_path / "deep.png").gray
    assert np.abs(deep - ref).mean() < 2  # 16-bit scaled down, not clipped
    assert decode(tmp_path / "clear.png").gray.min() == 255  # fully transparent: white
    gif = decode(tmp_path / "anim.gif").gray.astype(np.float32)
    assert np.abs(gif - ref).mean() < np.abs(gif - ref[:, ::-1]).mean()  # the first frame


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("empty.jpg", lambda p, im: p.write_bytes(b""), "empty file"),
        ("text.jpg", lambda p, im: p.write_text("not an image at all"), "not an image"),
        ("tiny.png", lambda p, im: im.resize((8, 8)).save(p), "too small"),
        ("cut.jpg", lambda p, im: _truncated(p, im), "truncated"),
    ],
)
def test_bad_files_give_a_reason(tmp_path, photo, name, make, reason):
    path = tmp_path / name
    make(path, photo)
    with pytest.raises(ImageError, match=reason):
        decode(path)


def test_pixel_limit(tmp_path, photo):
    photo.save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="too large"):
        decode_gray(tmp_path / "a.png", MAX, 1000, 32)


def _truncated(path, im):
    im.save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
