"""Grids of photos are found by their layout, and each tile is linked to its source."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import read_csv, run
from pimmi.grids import grid_tiles
from test_overlays import channel_frame, photos


def grid(ims: list[Image.Image], cols: int, cell: int, gap: int, background=(255, 255, 255)) -> Image.Image:
    rows = -(-len(ims) // cols)
    W, H = cols * cell + (cols + 1) * gap, rows * cell + (rows + 1) * gap
    canvas = Image.new("RGB", (W, H), background)
    for i, im in enumerate(ims):
        canvas.paste(
            ImageOps.fit(im, (cell, cell)), (gap + (i % cols) * (cell + gap), gap + (i // cols) * (cell + gap))
        )
    return canvas


def gray(im: Image.Image, side: int = 512) -> np.ndarray:
    im = im.convert("L")
    im.thumbnail((side, side))
    return np.asarray(im)


@pytest.mark.parametrize(("cols", "n", "gap"), [(3, 9, 8), (3, 9, 0), (4, 12, 4), (3, 6, 0), (2, 4, 10)])
def test_grids_are_cut_into_their_tiles(cols, n, gap):
    im = grid(photos(n), cols, 300, gap)
    g = gray(im)
    tiles = grid_tiles(g)
    assert len(tiles) == n
    f = g.shape[1] / im.size[0]
    for i in range(n):  # each photo's centre lies in its own tile, and the tile within the photo
        cx, cy = (gap + (i % cols) * (300 + gap) + 150) * f, (gap + (i // cols) * (300 + gap) + 150) * f
        x0, y0, x1, y1 = tiles[i]
        assert x0 < cx < x1 and y0 < cy < y1
        assert x1 - x0 <= 300 * f + 2 and y1 - y0 <= 300 * f + 2


def test_photos_frames_and_padded_copies_are_not_grids():
    ims = photos(12)
    padded = ImageOps.expand(ims[1], border=80, fill=(20, 20, 20))
    side_by_side = grid(ims[2:4], 2, 300, 6)  # two photos: a montage, not a grid to cut
    others = [*ims, padded, channel_frame(ims[5], __import__("random").Random(1)), side_by_side]
    assert [grid_tiles(gray(im)) for im in others] == [[]] * len(others)


@pytest.fixture(scope="module")
def collage(tmp_path_factory) -> Path:
    """A 4x3 grid of twelve photos, and the twelve photos."""
    out = tmp_path_factory.mktemp("collage")
    ims = photos(12)
    for i, im in enumerate(ims):
        im.save(out / f"photo-{i:02d}.jpg", quality=90)
    collage = grid(ims, 4, 240, 0)
    collage.save(out / "grid.jpg", quality=85)
    collage.resize((collage.width * 3 // 4, collage.height * 3 // 4)).save(out / "grid-copy.jpg", quality=70)
    return out


def grid_links(images: Path, ws: Path, *options: str) -> set[str]:
    assert run(["--nb-threads", "2", *options, "fill", str(images), str(ws), "--erase"]) == 0
    q = ws.parent / f"{ws.name}.csv"
    assert run(["--nb-threads", "2", *options, "query", str(images), str(ws), "-o", str(q)]) == 0
    return {
        r["result_path"] for r in read_csv(q) if r["query_path"] == "grid.jpg" and r["result_path"] != "grid-copy.jpg"
    }


def test_each_tile_of_a_grid_links_to_its_source(collage, tmp_path):
    tiled = grid_links(collage, tmp_path / "ws")
    assert len(tiled) >= 10  # measured: 11 of 12 (5 without tiles)
    assert all(p.startswith("photo-") for p in tiled)
    # One keypoint budget for the whole grid finds fewer of them: what the tiles are for.
    whole = grid_links(collage, tmp_path / "ws-whole", "--sift-grid-tiles", "false")
    assert len(whole) < len(tiled)


def test_a_copy_of_a_grid_joins_each_tile_cluster_without_merging_them(collage, tmp_path):
    grid_links(collage, tmp_path / "ws")
    assert run(["clusters", str(tmp_path / "ws"), "-o", str(tmp_path / "c.csv")]) == 0
    clusters: dict[str, set[str]] = {}
    for r in read_csv(tmp_path / "c.csv"):
        clusters.setdefault(r["cluster_id"], set()).add(r["path"])
    photos_in = [sorted(p for p in members if p.startswith("photo-")) for members in clusters.values()]
    assert all(len(p) <= 1 for p in photos_in), photos_in  # the grids do not merge their photos' clusters
    with_photo = [m for m in clusters.values() if any(p.startswith("photo-") for p in m)]
    assert len(with_photo) >= 10
    # The copy of the grid matches the grid as a whole, yet sits in each photo's cluster, beside the grid.
    assert sum({"grid.jpg", "grid-copy.jpg"} <= m for m in with_photo) >= 10


@pytest.fixture(scope="module")
def twin_grids(tmp_path_factory) -> Path:
    """Two 3x3 grids sharing two photos on one diagonal, laid out alike (one transform matches both), with
    other photos beside them; and the photos."""
    out = tmp_path_factory.mktemp("twins")
    ims = photos(16)
    for i, im in enumerate(ims):
        im.save(out / f"photo-{i:02d}.jpg", quality=90)
    grid([ims[i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 8)], 3, 240, 0).save(out / "grid-a.jpg", quality=85)
    grid([ims[i] for i in (0, 9, 10, 11, 4, 12, 13, 14, 15)], 3, 240, 0).save(out / "grid-b.jpg", quality=85)
    return out


def test_grids_sharing_tiles_laid_out_alike_keep_their_other_tiles_apart(twin_grids, tmp_path):
    ws, q = tmp_path / "ws", tmp_path / "q.csv"
    assert run(["--nb-threads", "2", "fill", str(twin_grids), str(ws)]) == 0
    assert run(["--nb-threads", "2", "query", str(twin_grids), str(ws), "-o", str(q)]) == 0
    rows = read_csv(q)
    twins = [r for r in rows if (r["query_path"], r["result_path"]) == ("grid-a.jpg", "grid-b.jpg")]
    assert len(twins) == 1 and len(twins[0]["query_cells"]) == 64

    def clusters_of(matches: Path) -> list[set[str]]:
        c = tmp_path / f"{matches.stem}-clusters.csv"
        assert run(["clusters", str(ws), str(matches), "-o", str(c)]) == 0
        members: dict[str, set[str]] = {}
        for r in read_csv(c):
            members.setdefault(r["cluster_id"], set()).add(r["path"])
        return list(members.values())

    def photos_together(matches: Path) -> list[list[str]]:
        return [sorted(p for p in m if p.startswith("photo-")) for m in clusters_of(matches)]

    # Where the inliers lie: the grids' match holds the two shared tiles, not the two beside them that its
    # region spans, so each photo keeps its own cluster, and the shared ones hold both grids.
    assert all(len(p) <= 1 for p in photos_together(q))
    shared = [m for m in clusters_of(q) if m & {"photo-00.jpg", "photo-04.jpg"}]
    assert len(shared) == 2 and all({"grid-a.jpg", "grid-b.jpg"} <= m for m in shared)
    # Without it (a CSV without the columns), the region carries photo 1's tile onto photo 9's.
    blind = tmp_path / "blind.csv"
    with open(blind, "w", newline="") as f:
        w = csv.DictWriter(f, [k for k in rows[0] if not k.endswith("_cells")], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert any(len(p) > 1 for p in photos_together(blind))


def test_a_query_csv_with_damaged_cells_is_refused_with_its_line(twin_grids, tmp_path, capsys):
    ws, q = tmp_path / "ws", tmp_path / "q.csv"
    assert run(["fill", str(twin_grids), str(ws)]) == 0
    assert run(["query", str(twin_grids), str(ws), "-o", str(q)]) == 0
    rows = read_csv(q)
    rows[1]["result_cells"] = rows[1]["result_cells"][:-3] + "xyz"
    with open(q, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    capsys.readouterr()
    assert run(["clusters", str(ws), str(q), "-o", str(tmp_path / "c.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"pimmi: error: {q}: line 3: result_cells is not 64 hexadecimal digits"
