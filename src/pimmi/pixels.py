"""Whether a verified match's two images look alike where the match lays one over the other.

Keypoints can agree on what unrelated pictures share — a channel's banner and logo, an app's bars, a poster's
frame — while the pictures themselves differ: the match's region then spans the frame, but most of it
shows two different photos. A copy, however re-encoded, blurred, recoloured or shrunk, keeps its pixels.

The smaller of the two matched regions is sampled on a grid of ``REGION_SIDE`` pixels and the other image
carried onto it by the match's transform; the blocks of ``BLOCK`` pixels that hold texture in either image
agree when their grey levels correlate (a gain and an offset cost nothing). Only weak matches are looked
at — their inliers a small share of the keypoints in their region, or in clumps far apart within it: a
strong match is a copy whatever its pixels say, and decoding images costs more than verifying keypoints.
On the overlay benchmarks (docs/benchmarks.md), 95 % of true pairs agree on at least 0.68 of their blocks
and wrong links standing on an overlay on 0.14-0.47; pairs of copies under large stickers fall as low, one
more reason to look at weak matches only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from pimmi.images import ImageError, decode_gray
from pimmi.overlays import GRID, Cells, spread
from pimmi.workspace import ImageRecord

REGION_SIDE = 128  # grid pixels along the smaller region's longer side
BLOCK = 8  # grid pixels per block side
TEXTURE = 3.0  # grey-level standard deviation below which a block is flat
LIKE = 0.5  # a textured block agrees above this correlation
CLUMPED = 0.6  # inliers spread over their region less than this: the box joins clumps, the pixels are checked
ELEMENT = 0.12  # a shared element agrees on at least this share (overlays: 0.14-0.47; a deep field's stars
# aligned at the wrong places 0.07-0.10; two unrelated photos 0.05-0.18, by chance: smooth ramps correlate)
MIN_BLOCKS = 8  # fewer textured blocks than this: the pixels decide nothing
SIDES = (64, 128, 256, 512, 1024, 2048, 4096)  # decoded sizes, so that a cached image serves several pairs


@dataclass(frozen=True)
class Agreement:
    share: float  # textured blocks that agree, of those compared
    blocks: int  # textured blocks compared


def in_region(
    xy: np.ndarray, scale: float, box: tuple[float, float, float, float], inliers: np.ndarray
) -> tuple[float, float]:
    """How a match's inliers hold the matched region of one image: their share of its keypoints inside the
    region, and how they spread over those keypoints (``overlays.spread`` within the region: ~1 when they
    lie all over it, low when the region joins clumps far apart — a banner and a logo, two tiles that two
    grids share with other pictures between them).

    ``xy``: the image's keypoints in scaled pixels (``scale`` original pixels each); ``box``, the inliers'
    bounding box, in original pixels. Run on every verified pair: a few array operations.
    """
    x0, y0, x1, y1 = (v / scale for v in box)
    # Cells over the region itself; its edges are rounded to 0.1 pixel, so a little slack.
    u = (xy[:, 0] - x0) * (GRID / max(x1 - x0, 1e-9))
    v = (xy[:, 1] - y0) * (GRID / max(y1 - y0, 1e-9))
    inside = (u > -0.01) & (u < GRID + 0.01) & (v > -0.01) & (v < GRID + 0.01)
    n = int(np.count_nonzero(inside))
    if not n or not len(inliers):
        return 0.0, 0.0
    ids = np.clip(v.astype(np.int64), 0, GRID - 1) * GRID + np.clip(u.astype(np.int64), 0, GRID - 1)
    cells = Cells(ids, np.bincount(ids[inside], minlength=GRID * GRID) / n)  # shares of the region's keypoints
    return len(inliers) / n, spread(cells, inliers)


class Pictures:
    """Grey images decoded at the sizes pixel checks ask for, the most recently used kept up to ``budget``
    bytes (a frame under an overlay meets many others: decoded once, it serves all their pairs)."""

    def __init__(self, max_pixels: int, budget: int = 64 << 20):
        self.max_pixels, self.budget, self.held = max_pixels, budget, 0
        self.cache: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()

    def get(self, rec: ImageRecord, grid_per_pixel: float) -> tuple[np.ndarray, float] | None:
        """``rec`` decoded with at least ``grid_per_pixel`` of its pixels per original pixel (as grid pixels
        need), and the original pixels per decoded pixel; None when it cannot be read now."""
        longest = max(rec.width or 1, rec.height or 1)
        need = longest * min(1.0, grid_per_pixel)
        side = next((s for s in SIDES if s >= need), SIDES[-1])
        key = (rec.id, side)
        if key in self.cache:
            self.cache.move_to_end(key)
        else:
            try:
                grey = decode_gray(rec.full_path, side, self.max_pixels).gray
            except ImageError:
                grey = None
            self.cache[key] = grey
            self.held += 0 if grey is None else grey.nbytes
            while self.held > self.budget and len(self.cache) > 1:
                _, old = self.cache.popitem(last=False)
                self.held -= 0 if old is None else old.nbytes
        grey = self.cache[key]
        return None if grey is None else (grey, longest / max(grey.shape))


def agreement(
    pictures: Pictures,
    query: ImageRecord,
    result: ImageRecord,
    transform: np.ndarray,
    query_box: tuple[float, float, float, float],
    result_box: tuple[float, float, float, float],
) -> Agreement | None:
    """How much the two images agree over the smaller matched region; None when an image cannot be read.

    ``transform``: 3x3, query original pixels -> result original pixels (mirroring included).
    """
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in (query_box, result_box)]
    if area[0] <= area[1]:
        small, large, box, to_large = query, result, query_box, transform
    else:
        small, large, box, to_large = result, query, result_box, np.linalg.inv(transform)
    x0, y0, x1, y1 = box
    k = REGION_SIDE / max(x1 - x0, y1 - y0, 1.0)  # grid pixels per original pixel of the small image
    w, h = int(np.ceil((x1 - x0) * k)), int(np.ceil((y1 - y0) * k))
    grid_to_small = np.array([[1 / k, 0, x0], [0, 1 / k, y0], [0, 0, 1]])
    linear = float(np.sqrt(abs(np.linalg.det(to_large[:2, :2]))))
    a = _sample(pictures.get(small, k), grid_to_small, (w, h))
    b = _sample(pictures.get(large, k / max(linear, 1e-6)), to_large @ grid_to_small, (w, h))
    if a is None or b is None:
        return None
    return _blocks_agree(*a, *b)


def _sample(decoded: tuple[np.ndarray, float] | None, grid_to_original: np.ndarray, size: tuple[int, int]):
    """The decoded image resampled on the grid, and where the grid falls inside it."""
    if decoded is None:
        return None
    grey, per_pixel = decoded
    m = (np.diag([1 / per_pixel, 1 / per_pixel, 1.0]) @ grid_to_original)[:2]
    flags = cv2.WARP_INVERSE_MAP  # m maps grid pixels to image pixels
    image = cv2.warpAffine(grey.astype(np.float32), m, size, flags=cv2.INTER_LINEAR | flags)
    inside = cv2.warpAffine(np.ones_like(grey), m, size, flags=cv2.INTER_NEAREST | flags) > 0
    return cv2.GaussianBlur(image, (0, 0), 1.0), inside  # a pixel's misalignment costs little


def _blocks_agree(a: np.ndarray, a_in: np.ndarray, b: np.ndarray, b_in: np.ndarray) -> Agreement:
    rows, cols = a.shape[0] // BLOCK, a.shape[1] // BLOCK
    if not rows or not cols:
        return Agreement(1.0, 0)

    def blocks(x: np.ndarray) -> np.ndarray:
        return x[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2).reshape(-1, BLOCK**2)

    pa, pb = blocks(a), blocks(b)
    inside = blocks((a_in & b_in).astype(np.uint8)).min(axis=1) > 0
    sa, sb = pa.std(axis=1), pb.std(axis=1)
    textured = inside & ((sa >= TEXTURE) | (sb >= TEXTURE))
    both = textured & (sa >= TEXTURE) & (sb >= TEXTURE)
    ca, cb = pa - pa.mean(axis=1, keepdims=True), pb - pb.mean(axis=1, keepdims=True)
    corr = (ca * cb).mean(axis=1) / np.maximum(sa * sb, 1e-6)
    n = int(textured.sum())
    return Agreement(float((both & (corr > LIKE)).sum()) / n if n else 1.0, n)


def unlike(agreed: Agreement | None, min_share: float) -> bool:
    """Whether the pixels say the two images share an element and nothing else: enough texture compared,
    too little of it agreeing, but at least ``ELEMENT`` of it. Below, nothing is shared, not even an
    overlay: the match aligns alike details at the wrong places (the stars of a deep field, whose copies
    may still be copies), and the pixels say nothing of it."""
    return agreed is not None and agreed.blocks >= MIN_BLOCKS and ELEMENT <= agreed.share < min_share
