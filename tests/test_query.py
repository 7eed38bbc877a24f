"""The neighbour search: a viral image keeps all its copies, and unrelated look-alikes stay out."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from pimmi.demo import jpeg_copy, sample_photo
from pimmi.fill import fill
from pimmi.query import QueryStats, query
from pimmi.settings import Settings

COPIES = 30


def shapes(seed: int) -> Image.Image:
    """Flat shapes on a flat background: their corners look alike in every such image."""
    r = random.Random(seed)
    im = Image.new("RGB", (480, 360), tuple(r.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(im)
    for _ in range(30):
        x, y = r.randrange(440), r.randrange(320)
        box = (x, y, x + r.randrange(10, 120), y + r.randrange(10, 120))
        colour = tuple(r.randrange(256) for _ in range(3))
        (d.rectangle if r.random() < 0.5 else d.ellipse)(box, fill=colour)
    return im


def build(root: Path) -> Path:
    images = root / "images"
    (images / "viral").mkdir(parents=True)
    (images / "shapes").mkdir()
    photo = sample_photo("chelsea")
    photo.save(images / "viral" / "original.png")
    rng = random.Random(1)
    for i in range(COPIES):  # more copies than the first neighbours asked for
        copy = jpeg_copy(photo, rng).resize((photo.width * (90 - i) // 100, photo.height * (90 - i) // 100))
        copy.save(images / "viral" / f"copy{i:02d}.jpg", quality=85)
    for i in range(60):
        shapes(i).save(images / "shapes" / f"{i:02d}.png")
    return images


def test_viral_copies_are_all_found_and_look_alike_shapes_stay_out(tmp_path):
    images = build(tmp_path)
    settings = Settings(nb_threads=1, query_sift_knn=8)
    fill(images, tmp_path / "ws", settings, progress=False)
    stats = QueryStats()
    matches = list(query(images, tmp_path / "ws", settings, progress=False, stats=stats))

    found = {m.result_path for m in matches if m.query_path.endswith("viral/original.png")}
    assert len([p for p in found if "/copy" in p]) == COPIES  # needs more than 8 neighbours per keypoint
    assert stats.requeried_descriptors > 0
    assert not any(("shapes/" in m.query_path) != ("shapes/" in m.result_path) for m in matches)


def test_records_read_as_met_are_the_catalogues(demo_run):
    from pimmi.workspace import Workspace

    with Workspace(demo_run["viewed"], create=False) as ws:
        every = {r.id: r for r in ws.images()}
        records = ws.records()
        some = sorted(every)[::3]
        records.load(some)
        assert [records[i] for i in some] == [every[i] for i in some]
        assert records[max(every)] == every[max(every)] and len(records) == len(every)
        assert max(every) + 1 not in records and records.get(max(every) + 1) is None
        assert list(records) == sorted(every)
