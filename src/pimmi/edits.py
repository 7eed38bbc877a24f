"""Which of two renderings of the same picture, on the same pixel grid, was edited from the other.

A copy that keeps its parent's geometry (a re-encoding, a colour change, blur, noise, text drawn over
the picture, a border added around it) lines up with it pixel for pixel once the match's translation
is rounded: no resampling, which would itself blur one side. Laid over each other, after a robust tone
match (brightness and contrast edits are undone, text drawn over a part does not sway the fit), what
differs says which came first:

- **drawn over**: a part of the picture differs strongly while the rest is as sharp in both; the image
  whose differing part holds more detail (strokes of letters, a sticker, a logo) drew it, unless the
  other's differing part is clipped to black or white (a brightness or contrast edit flattened it);
- **noise**: one is sharper everywhere and the excess is as strong in flat areas as on edges (white
  noise): it was added to the sharper one;
- **lost detail**: one is sharper and the difference lies on edges (blur, heavy compression): detail
  cannot be made back, the sharper one is the parent.

Measured on the true parent -> child pairs on one grid of ``make_copybench.py --chains 0.4`` (seed 5,
1190 images; right / wrong orientations of all pairs): text drawn over 48 / 0 of 51, noise 18 / 0 of 23,
blur 23 / 0 of 27, JPEG at quality 50 or less 49 / 5 of 90, brightened 10 / 2 of 20; other colour edits
(contrast, darker, grey, sepia, saturated) 7 / 9 of 78 (saturated: 2 / 5), borders and captions in a
band, screenshots 17 / 4 of 203 (containment orients those).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CHANGED = 25.0  # mean absolute difference (0-255, tone matched) of an 8x8 block that differs
SAME_DETAIL = 1.15  # sharpness ratio below which two renderings count as equally sharp
DRAWN_DETAIL = 1.3  # sharpness ratio, in the differing blocks, of content drawn over a picture
NOISE_FLAT = 0.7  # difference in flat blocks over difference on edges above which the excess is noise
NOISE_DETAIL = 1.3  # and the sharpness ratio (noise at 10 levels: 1.38 at least, seed 5)
NOISE_LEVEL = 4.0  # and its level in flat blocks (a re-encoding smooths a photo's own grain: 3 levels)
DETAIL_FLAT = 0.5  # below which the difference lies on edges: detail lost by one side
CLIPPED = 0.5  # share of a differing part at black or white that makes it clipping, not drawing
# Log-odds of each finding, below the dates' 2.5 (provenance.DATE_WEIGHT). Measured with every cue on seeds
# 5 / 6 / 8 (before the tone fit was made the same in both directions), these weights x1 (drawn 3.0) gave
# root 0.900 / 0.867 / 0.847, x0.6 0.893 / 0.880 / 0.873, x0.4
# 0.893 / 0.887 / 0.873 (without the cue 0.893 / 0.867 / 0.860); content alone 0.72 / 0.65 / 0.67 at x1,
# 0.71 / 0.65 / 0.66 at x0.6. A wrong finding on a pair of siblings weighs less against a date.
DRAWN_WEIGHT = 1.8
CLIPPED_WEIGHT = 1.5
NOISE_WEIGHT = 1.8
DETAIL_WEIGHT = 0.9  # times 1 to 2.33 as the sharpness ratio grows (a blur: the most)


@dataclass(frozen=True)
class Edit:
    evidence: float  # log-odds that the first image is the second's parent
    relation: str  # what the child is, for the provenance CSV
    kind: str  # drawn, clipped, noise, detail


def grey(image: np.ndarray) -> np.ndarray:
    """The mean of an RGB array's channels (float32); a grey array as float32."""
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    r, g, b = (image[..., c].astype(np.float32) for c in range(3))
    return (r + g + b) / 3


def aligned(image_a: np.ndarray, image_b: np.ndarray, T: np.ndarray, width_a: int, width_b: int):
    """The overlapping parts of two arrays (of images ``width_a``/``width_b`` pixels wide, decoded at any
    size) under a match ``T`` (a pixel -> b pixel, original pixels) that keeps scale and orientation, its
    translation rounded; None when the arrays are not at one scale or overlap too little."""
    fa, fb = image_a.shape[1] / max(1, width_a), image_b.shape[1] / max(1, width_b)
    if abs(fa - fb) > 0.01 * fa:
        return None
    dx, dy = int(round(T[0, 2] * fa)), int(round(T[1, 2] * fa))
    x0, y0 = max(0, -dx), max(0, -dy)
    x1, y1 = min(image_a.shape[1], image_b.shape[1] - dx), min(image_a.shape[0], image_b.shape[0] - dy)
    if x1 - x0 < 48 or y1 - y0 < 48:
        return None
    return image_a[y0:y1, x0:x1], image_b[y0 + dy : y1 + dy, x0 + dx : x1 + dx]


def same_grid(T: np.ndarray) -> bool:
    """A match that neither scales, turns nor mirrors: the two images share a pixel grid."""
    L = T[:, :2]
    det = float(np.linalg.det(L))
    return det > 0 and abs(math.log2(math.sqrt(det))) < 0.03 and abs(math.degrees(math.atan2(L[1, 0], L[0, 0]))) < 1


def _block_mean(a: np.ndarray) -> np.ndarray:
    """The mean of each 8x8 block (an area resize by an integer factor averages exactly those pixels)."""
    h, w = (a.shape[0] // 8) * 8, (a.shape[1] // 8) * 8
    return cv2.resize(np.ascontiguousarray(a[:h, :w], np.float32), (w // 8, h // 8), interpolation=cv2.INTER_AREA)


def _block_std(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(_block_mean(a * a) - _block_mean(a) ** 2, 0.0))


def _detail(gray: np.ndarray) -> np.ndarray:
    """Mean absolute Laplacian per 8x8 block."""
    return _block_mean(np.abs(cv2.Laplacian(gray, cv2.CV_32F)))


def _extreme(gray: np.ndarray, blocks: np.ndarray) -> float:
    """The share of black or white pixels in the 8x8 blocks marked in ``blocks``."""
    return float(_block_mean(((gray >= 250) | (gray <= 5)).astype(np.float32))[blocks].mean())


def tone_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, float]:
    """The gain and offset that best map ``src`` onto ``dst`` (least squares), refitted on the best-fitting
    three quarters of the pixels (text drawn over a part must not sway the fit)."""
    u, v = src.ravel()[::3].astype(np.float64), dst.ravel()[::3].astype(np.float64)
    keep = np.ones(u.size, bool)
    gain, offset = 1.0, 0.0
    for _ in range(3):
        uk, vk = u[keep], v[keep]
        var = float(uk.var())
        gain = float(((uk - uk.mean()) * (vk - vk.mean())).mean() / var) if var > 1e-6 else 1.0
        offset = float(vk.mean() - gain * uk.mean())
        r = np.abs(v - (u * gain + offset))
        keep = r <= np.partition(r, int(0.75 * (r.size - 1)))[int(0.75 * (r.size - 1))]
    return gain, offset


def edit_evidence(x: np.ndarray, y: np.ndarray) -> Edit | None:
    """What two aligned renderings (RGB or grey arrays of one shape) say of which was made from the other."""
    gx, gy = grey(x)[2:-2, 2:-2], grey(y)[2:-2, 2:-2]
    if min(gx.shape) < 32:
        return None
    gain, offset = tone_fit(gy, gx)
    if gain > 1:  # the wider range is mapped onto the narrower one, whichever is given first: no value leaves 0-255
        found = _compare(gy, gx, *tone_fit(gx, gy))
        return Edit(-found.evidence, found.relation, found.kind) if found else None
    return _compare(gx, gy, gain, offset)


def _compare(gx: np.ndarray, gy: np.ndarray, gain: float, offset: float) -> Edit | None:
    matched = (gy * gain + offset).astype(np.float32)
    diff = gx - matched
    dx, dy = _detail(gx), _detail(matched)
    return _drawn_over(gx, gy, diff, dx, dy) or _detail_change(diff, dx, dy)


def _ratio(a: float, b: float) -> float:
    return max(float(a), 1e-3) / max(float(b), 1e-3)


def _drawn_over(gx: np.ndarray, gy: np.ndarray, diff: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> Edit | None:
    """A part that differs, and holds more detail on one side, while the rest is as sharp on both."""
    changed = _block_mean(np.abs(diff)) > CHANGED
    near = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # letters' soft edges
    if not 0.02 <= changed.mean() <= 0.6 or (~near).sum() <= 20:
        return None
    inside = _ratio(dx[changed].mean(), dy[changed].mean())
    rest = _ratio(dx[~near].mean(), dy[~near].mean())
    sign = 1.0 if inside > 1 else -1.0  # +: x holds the differing detail
    inside, rest = (inside, rest) if sign > 0 else (1 / inside, 1 / rest)
    # not sharper elsewhere too (that is the other blurred), though it may be softer (drawn, then re-encoded)
    if inside <= DRAWN_DETAIL or not (rest < SAME_DETAIL or (rest < 1.6 and inside > 10 * rest)):
        return None
    flat, detailed = (gy, gx) if sign > 0 else (gx, gy)
    clipped = _extreme(flat, changed)
    if clipped >= CLIPPED and _extreme(detailed, changed) < clipped / 2:
        return Edit(CLIPPED_WEIGHT * sign, "colour", "clipped")  # the flat side was clipped: it is the child
    return Edit(-DRAWN_WEIGHT * sign, "caption/border", "drawn")  # the detailed side drew it: the child


def _detail_change(diff: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> Edit | None:
    """One sharper than the other: noise added to it, or detail lost by the other."""
    ratio = _ratio(dx.mean(), dy.mean())
    gap = max(ratio, 1 / ratio)
    if gap <= SAME_DETAIL:
        return None
    smooth = (dy if ratio > 1 else dx).ravel()
    spread = _block_std(diff).ravel()
    order = np.argsort(smooth)
    k = max(3, order.size * 3 // 10)
    in_flat = float(np.median(spread[order[:k]]))  # the difference where the smoother side is flat
    flat_share = _ratio(in_flat, np.median(spread[order[-k:]]))
    sharper = 1.0 if ratio > 1 else -1.0
    if flat_share > NOISE_FLAT and gap > NOISE_DETAIL and in_flat > NOISE_LEVEL:
        return Edit(-NOISE_WEIGHT * sharper, "copy", "noise")
    if flat_share < DETAIL_FLAT:
        strength = DETAIL_WEIGHT * float(np.clip(1 + 1.33 * math.log2(gap), 1.0, 2.33))
        return Edit(strength * sharper, "recompress" if gap < 2 else "copy", "detail")
    return None
