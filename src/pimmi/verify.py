"""Geometric verification of a candidate pair: one-to-one correspondences, then RANSAC."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Verification:
    nb_correspondences: int  # one-to-one correspondences given to RANSAC
    inliers: np.ndarray  # bool mask over them
    transform: np.ndarray  # 2x3, query points -> result points

    @property
    def nb_inliers(self) -> int:
        return int(self.inliers.sum())


def one_to_one(q_kp: np.ndarray, r_kp: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Indices of correspondences that use each keypoint at most once on each side, nearest first.

    Many-to-many pairs let one repeated structure vote many times; counting distinct
    keypoints is what makes an inlier count mean something.
    """
    order = np.argsort(dist, kind="stable")
    _, first_q = np.unique(q_kp[order], return_index=True)
    kept = order[np.sort(first_q)]
    _, first_r = np.unique(r_kp[kept], return_index=True)
    return kept[np.sort(first_r)]


def verify(q_xy: np.ndarray, r_xy: np.ndarray, reproj_threshold: float, min_inliers: int) -> Verification | None:
    """Fit a similarity (rotation, uniform scale, translation) with RANSAC; None below ``min_inliers``.

    Points are in pixels of the scaled images; correspondences must already be one-to-one.
    """
    n = len(q_xy)
    if n < max(min_inliers, 3):
        return None
    model, mask = cv2.estimateAffinePartial2D(
        q_xy.astype(np.float32),
        r_xy.astype(np.float32),
        method=cv2.RANSAC,
        ransacReprojThreshold=reproj_threshold,
        maxIters=2000,
        confidence=0.995,
        refineIters=10,
    )
    if model is None or mask is None:
        return None
    inliers = mask.ravel().astype(bool)
    if inliers.sum() < min_inliers or not _plausible(model, q_xy[inliers], r_xy[inliers]):
        return None
    return Verification(n, inliers, model)


def _plausible(model: np.ndarray, q: np.ndarray, r: np.ndarray) -> bool:
    # A copy is not shrunk or blown up more than 20x, and its inliers are not all on one spot.
    scale = float(np.sqrt(abs(np.linalg.det(model[:, :2]))))
    if not 0.05 < scale < 20:
        return False
    return bool(np.ptp(q, axis=0).min() > 4 and np.ptp(r, axis=0).min() > 4)


def bounding_box(points: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return round(float(x0), 1), round(float(y0), 1), round(float(x1), 1), round(float(y1), 1)


def overlap_share(
    points: np.ndarray, inliers: np.ndarray, transform: np.ndarray, other_size: tuple[float, float]
) -> float:
    """Of an image's keypoints that the transform puts inside the other image (the overlap), the share
    inside the bounding box of the match's inliers.

    A copy shares everything where the two images overlap, so its matched region holds most of the
    overlap's keypoints; a shared caption or logo on two different photos holds a small share of them.
    """
    mapped = points @ transform[:, :2].T + transform[:, 2]
    w, h = other_size
    overlap = (mapped[:, 0] >= 0) & (mapped[:, 0] <= w) & (mapped[:, 1] >= 0) & (mapped[:, 1] <= h)
    (x0, y0), (x1, y1) = inliers.min(axis=0), inliers.max(axis=0)
    inside = (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)
    return float((inside & overlap).sum() / max(1, overlap.sum()))


def rests_on_patterns(
    q_repeated: np.ndarray,
    r_repeated: np.ndarray,
    q_rate: float,
    r_rate: float,
    min_inliers: int,
    alpha: float,
) -> bool:
    """Whether a verified match stands only on repeated patterns (shared text, UI chrome).

    ``q_repeated``/``r_repeated`` flag the inliers lying on a repeated pattern of their image;
    ``q_rate``/``r_rate`` are the share of such keypoints in each whole image. A match with
    enough inliers off patterns stands. Otherwise it is pattern-only when, in one image, its
    inliers are on patterns far more often than that image's keypoints in general: a caption
    pasted on a photo, not a photo made of repeated spots, whose every match is on spots.
    """
    if alpha <= 0 or int((~(q_repeated | r_repeated)).sum()) >= min_inliers:
        return False
    for flags, rate in ((q_repeated, q_rate), (r_repeated, r_rate)):
        if binomial_cdf(int((~flags).sum()), len(flags), 1.0 - rate) < alpha:
            return True
    return False


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1.0 - p) ** (n - i) for i in range(k + 1)))
