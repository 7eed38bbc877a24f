"""Parts-aware clustering of links whose regions span several parts of an image."""

from __future__ import annotations

import numpy as np

from pimmi.clusters import Link, part_clusters
from pimmi.verify import inlier_cells
from pimmi.workspace import ImageRecord


def record(i: int, w: int, h: int) -> ImageRecord:
    return ImageRecord(i, f"{i}.jpg", "/", "ok", w, h, 1.0, 200, None, None)


def link(q: int, r: int, q_box, r_box, q_points: np.ndarray, shift=(0.0, 0.0), n: int = 30) -> Link:
    """A link whose inliers are ``q_points`` in the query, carried into the result by a translation."""
    T = (1.0, 0.0, shift[0], 0.0, 1.0, shift[1])
    r_points = q_points + np.array(shift)
    return Link(q, r, n, q_box, r_box, T, inlier_cells(q_points, q_box), inlier_cells(r_points, r_box))


def spread(box, n: int = 40, seed: int = 0) -> np.ndarray:
    x0, y0, x1, y1 = box
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])


def together(rows) -> list[set[int]]:
    members: dict[int, set[int]] = {}
    for r in rows:
        members.setdefault(r.cluster_id, set()).add(r.image_id)
    return list(members.values())


def test_grids_sharing_two_diagonal_tiles_carry_only_those():
    # Two 3x3 grids of 100-px tiles; tiles (0, 0) and (1, 1) show photos 10 and 11 in both, tiles (1, 0) and
    # (0, 1) show photos 12, 13 in grid 1 and 14, 15 in grid 2.
    images = {i: record(i, 300, 300) for i in (1, 2)} | {i: record(i, 100, 100) for i in range(10, 16)}
    tile = {(c, r): (c * 100 + 5.0, r * 100 + 5.0, c * 100 + 95.0, r * 100 + 95.0) for c in range(3) for r in range(3)}
    links = []
    for grid, sources in ((1, {(0, 0): 10, (1, 1): 11, (1, 0): 12, (0, 1): 13}),
                          (2, {(0, 0): 10, (1, 1): 11, (1, 0): 14, (0, 1): 15})):  # fmt: skip
        for (c, r), photo in sources.items():
            points = spread(tile[(c, r)], seed=photo)
            links.append(link(grid, photo, tile[(c, r)], (5.0, 5.0, 95.0, 95.0), points, (-c * 100.0, -r * 100.0)))
    shared = np.vstack([spread(tile[(0, 0)], seed=1), spread(tile[(1, 1)], seed=2)])
    box = (5.0, 5.0, 195.0, 195.0)
    links.append(link(1, 2, box, box, shared, n=80))
    groups = together(part_clusters(links, images))
    assert all(len(g & set(range(10, 16))) == 1 for g in groups)  # no two photos together
    assert {1, 2, 10} in groups and {1, 2, 11} in groups
    # The same link without the cells carries the tiles beside them too: 12 with 14, 13 with 15.
    blind = [*links[:-1], Link(1, 2, 80, box, box, links[-1].transform)]
    assert {1, 2, 12, 14} in together(part_clusters(blind, images))


def test_a_photo_whose_parts_are_two_crops_joins_both_to_its_whole_copy():
    # A 300x400 photo (1): a crop of its top (2), a frame showing its middle band (3), and a whole copy (4)
    # whose inliers all lie in the top (the band has no keypoint the copy kept).
    images = {1: record(1, 300, 400), 2: record(2, 280, 150), 3: record(3, 600, 90), 4: record(4, 300, 400)}
    top, band, whole = (10.0, 10.0, 290.0, 110.0), (10.0, 160.0, 290.0, 240.0), (10.0, 10.0, 290.0, 390.0)
    links = [
        link(1, 2, top, (0.0, 0.0, 280.0, 100.0), spread(top, seed=1), (-10.0, -10.0)),
        link(1, 3, band, (160.0, 0.0, 440.0, 80.0), spread(band, seed=2), (150.0, -160.0), n=9),
        Link(1, 4, 30, whole, whole, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), *(inlier_cells(spread(top, seed=3), whole),) * 2),
    ]
    groups = together(part_clusters(links, images))
    # The copy's link spans the photo's two parts, each carried into the copy: both crops join it.
    assert any({1, 3, 4} <= g for g in groups) and any({1, 2, 4} <= g for g in groups)
