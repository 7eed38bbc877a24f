"""Shared overlays (a channel's banner and logo on unrelated frames) are not copies; a frame showing a photo
under that overlay still is one."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from conftest import SHARED, read_csv, run
from pimmi.overlays import Cells, Votes, on_shared_overlay, spread

POOL = SHARED / "pool"


def grid_points(n: int, w: float = 600, h: float = 400, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform([0, 0], [w, h], (n, 2))


def test_spread_tells_a_whole_match_from_one_confined_to_bands():
    xy = grid_points(200)
    anywhere = np.arange(0, 200, 10)  # 20 inliers drawn among all keypoints
    bands = np.flatnonzero((xy[:, 1] > 340) | ((xy[:, 0] < 80) & (xy[:, 1] < 60)))[:20]  # banner and a logo
    assert spread(Cells.of(xy), anywhere) > 0.8
    assert spread(Cells.of(xy), bands) < 0.5


def votes_for(hits: dict[int, list[int]]) -> Votes:
    """Votes of query group 0: keypoint -> the images its descriptor matched."""
    kp = [k for k, images in hits.items() for _ in images]
    image = [i for images in hits.values() for i in images]
    return Votes.of(np.zeros(len(kp), np.int64), np.array(kp), np.array(image))


def test_a_match_on_an_element_many_other_images_share_is_an_overlay():
    xy = grid_points(200)
    overlay = np.flatnonzero(xy[:, 1] > 340)[:30]  # the banner's keypoints match frames 100..109
    hits = {int(k): list(range(100, 110)) for k in overlay}
    for k in range(200):
        hits.setdefault(k, [])
    inliers = overlay[:12]
    assert on_shared_overlay(votes_for(hits), 0, 1, 100, inliers, Cells.of(xy), 3, 0.3, 8)
    # Fewer other images than asked: no overlay.
    assert not on_shared_overlay(votes_for(hits), 0, 1, 100, inliers, Cells.of(xy), 11, 0.3, 8)
    # Eight inliers off the shared element (the photo under the banner): the match stands.
    photo = np.flatnonzero(xy[:, 1] < 300)[:8]
    assert not on_shared_overlay(votes_for(hits), 0, 1, 100, np.r_[inliers, photo], Cells.of(xy), 3, 0.3, 8)


def test_a_viral_photo_shared_by_many_copies_is_not_an_overlay():
    xy = grid_points(200)
    hits = {k: list(range(100, 130)) for k in range(0, 200, 2)}  # half the keypoints match 30 copies
    band = np.flatnonzero(xy[:, 1] > 340)
    inliers = band[band % 2 == 0][:10]  # a match confined to one band of the photo (a crop)
    assert len(inliers) == 10
    assert not on_shared_overlay(votes_for(hits), 0, 1, 100, inliers, Cells.of(xy), 3, 0.3, 8)


# -- end to end: TV frames of one channel
def photos(n: int) -> list[Image.Image]:
    out = []
    for p in sorted(POOL.iterdir()):
        im = Image.open(p).convert("RGB")
        if min(im.size) >= 300:
            out.append(im)
        if len(out) == n:
            return out
    pytest.skip(f"{POOL} has fewer than {n} photos")


def channel_frame(photo: Image.Image, rng: random.Random) -> Image.Image:
    """The photo in a 16:9 frame under one channel's banner, ticker, clock and corner logo."""
    W, H = 960, 540
    im = ImageOps.fit(photo, (W, H))
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=30)
    small = ImageFont.load_default(size=20)
    d.rectangle((0, 400, W, 480), fill=(180, 20, 40))
    d.rectangle((0, 400, 200, 480), fill=(250, 200, 0))
    d.text((20, 420), "NEWS 9", font=font, fill="black")
    words = "storm vote market fire summit court river strike alert rescue".split()
    d.text((220, 412), " ".join(rng.choice(words) for _ in range(4)).upper(), font=font, fill="white")
    d.rectangle((0, 480, W, H), fill=(15, 15, 15))
    d.text((110, 495), " ".join(rng.choice(words) for _ in range(9)), font=small, fill="white")
    d.text((10, 495), f"{rng.randint(10, 23)}:{rng.randint(10, 59)}", font=small, fill="white")
    d.rounded_rectangle((30, 30, 190, 110), radius=18, fill=(180, 20, 40), outline="white", width=4)
    d.text((52, 50), "N9", font=ImageFont.load_default(size=44), fill="white")
    return im


@pytest.fixture(scope="module")
def channel(tmp_path_factory) -> Path:
    """One photo, a frame showing it, and seven frames of other photos, all under one channel's overlay."""
    out = tmp_path_factory.mktemp("channel")
    rng = random.Random(3)
    ims = photos(9)
    ims[0].save(out / "photo.jpg", quality=90)
    channel_frame(ims[0], rng).save(out / "frame-photo.jpg", quality=85)
    for i, im in enumerate(ims[1:]):
        channel_frame(im, rng).save(out / f"frame-other-{i}.jpg", quality=85)
    return out


def linked(images: Path, ws: Path, *options: str) -> set[frozenset[str]]:
    assert run(["--nb-threads", "2", *options, "fill", str(images), str(ws), "--erase"]) == 0
    q = ws.parent / f"{ws.name}.csv"
    assert run(["--nb-threads", "2", *options, "query", str(images), str(ws), "-o", str(q)]) == 0
    return {frozenset((r["query_path"], r["result_path"])) for r in read_csv(q)}


def test_frames_of_one_channel_are_not_copies_of_each_other(channel, tmp_path):
    pairs = linked(channel, tmp_path / "ws")
    assert frozenset(("frame-photo.jpg", "photo.jpg")) in pairs
    frames = [p for p in pairs if all(n.startswith("frame-") for n in p)]
    assert frames == []
    # Without the rule (and the pixel check) the banner and logo link unrelated frames: what the rule is for.
    unruled = linked(
        channel, tmp_path / "ws-off", "--query-overlay-min-images", "0", "--query-min-pixel-agreement", "0"
    )
    assert [p for p in unruled if all(n.startswith("frame-other") for n in p)]


def test_the_pixels_alone_keep_frames_of_one_channel_apart(channel, tmp_path):
    # The vote rule off: the pixel check of weak matches sees two photos under one banner.
    pairs = linked(channel, tmp_path / "ws", "--query-overlay-min-images", "0")
    assert frozenset(("frame-photo.jpg", "photo.jpg")) in pairs
    assert [p for p in pairs if all(n.startswith("frame-other") for n in p)] == []
