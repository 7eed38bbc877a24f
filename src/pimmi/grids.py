"""Grids of photos (collages of 4 to 16 pictures in rows and columns), found by their layout.

A photo tiled in a 3x3 grid holds a ninth of the grid's pixels and, in a keypoint budget spent on the
whole image, about a ninth of its keypoints: too few to be matched to its source. Found here, each tile
is extracted on its own (``sift.Extractor``). A grid is told by lines that cross the whole image: a gap of
one flat colour, or a seam where every pixel of a row changes at once (tiles set edge to edge), cutting
the image into equal rows and equal columns. Photos, screenshots, TV frames and padded copies rarely
have such lines at equal spacing in both directions (one of ~9,000 ordinary images of the benchmarks).
"""

from __future__ import annotations

import numpy as np

FLAT_STD = 3.0  # grey levels: a gap row is one colour
SEAM_JUMP = 10  # grey levels: a pixel changes across a seam between two tiles
SEAM_SHARE = 0.5  # of a seam's pixels change so (photos: an edge crosses part of a row)
SEAM_CONTRAST = 2.0  # a seam's share against that of the rows around it
MARGIN = 0.08  # cuts this close to an edge are borders, not cuts
MIN_TILE = 0.1  # two cuts closer than this share of the side are one
EQUAL = 0.75  # the smallest row (column) against the largest
MIN_TILES, MAX_TILES = 4, 16
AROUND = np.r_[np.ones(5), np.zeros(3), np.ones(5)] / 10  # the mean over the rows 2 to 6 away
STEP = 4  # a line's statistics from every 4th pixel along it: a gap is flat and a seam changes everywhere
INSET = 0.04  # of a tile's side: its crop leaves out the gaps and seams, alike in every grid of a layout


def grid_tiles(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The tiles (x0, y0, x1, y1) of a grid image, in row order, without their edges; [] when the image is not
    a grid (keypoints on the gaps' corners would match every grid of the same layout)."""
    h, w = gray.shape
    rows, cols = cuts(gray[:, ::STEP]), cuts(gray[::STEP].T)
    if not (_equal(rows, h) and _equal(cols, w)):
        return []
    ys, xs = [0, *rows, h], [0, *cols, w]
    if not MIN_TILES <= (len(ys) - 1) * (len(xs) - 1) <= MAX_TILES:
        return []
    tiles = []
    for j in range(len(ys) - 1):
        for i in range(len(xs) - 1):
            dx = max(2, round(INSET * (xs[i + 1] - xs[i])))
            dy = max(2, round(INSET * (ys[j + 1] - ys[j])))
            tiles.append((xs[i] + dx, ys[j] + dy, xs[i + 1] - dx, ys[j + 1] - dy))
    return tiles


def cuts(gray: np.ndarray) -> list[int]:
    """Rows that cut the image across its whole width: middles of thin flat gaps, and seams."""
    n = len(gray)
    flat = gray.std(axis=1) < FLAT_STD
    change = (np.abs(np.diff(gray.astype(np.int16), axis=0)) > SEAM_JUMP).mean(axis=1)
    lo, hi = MARGIN * n, (1 - MARGIN) * n
    found = [(s + e) // 2 for s, e in _runs(flat) if s > lo and e < hi and e - s <= 0.05 * n]
    # A seam between rows y and y + 1: most pixels change, where between the rows around (2 to 6 away) few do.
    around = np.convolve(np.pad(change, 6, mode="edge"), AROUND, mode="valid")
    near_flat = np.convolve(flat.astype(np.int8), np.ones(3, np.int8), mode="same")[:-1] > 0
    seam = (change >= SEAM_SHARE) & (change >= SEAM_CONTRAST * around + 0.1) & ~near_flat
    y = np.flatnonzero(seam)
    found += (y[(y >= int(lo)) & (y < int(hi))] + 1).tolist()
    merged: list[int] = []
    for y in sorted(found):
        if not merged or y - merged[-1] >= MIN_TILE * n:
            merged.append(int(y))
    return merged


def _equal(cut: list[int], n: int) -> bool:
    sizes = np.diff([0, *cut, n])
    return bool(sizes.min() >= EQUAL * sizes.max())


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
