"""Geometric verification of a candidate pair: one-to-one correspondences, RANSAC, then the rules a copy must
meet (the region, overlap and pattern rules); `check_pair` applies them all (query runs it, in its workers
beyond 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pimmi.settings import Settings
from pimmi.workspace import ImageRecord


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


CELLS = 16  # the matched region's inliers are recorded on a CELLS x CELLS grid of its box
FULL_CELLS = b"\xff" * (CELLS * CELLS // 8)  # every cell: a match of every point (an exact duplicate)


def inlier_cells(points: np.ndarray, box: tuple[float, float, float, float]) -> bytes:
    """Which cells of a CELLS x CELLS grid over ``box`` hold an inlier (row-major bits, numpy ``packbits``):
    where in its region a match lies, so that clustering can tell the tiles of a grid that it joins
    from those its bounding box only spans."""
    x0, y0, x1, y1 = box
    col = np.clip(((points[:, 0] - x0) * CELLS / max(x1 - x0, 1e-9)).astype(int), 0, CELLS - 1)
    row = np.clip(((points[:, 1] - y0) * CELLS / max(y1 - y0, 1e-9)).astype(int), 0, CELLS - 1)
    grid = np.zeros(CELLS * CELLS, bool)
    grid[row * CELLS + col] = True
    return np.packbits(grid).tobytes()


def cells_inside(cells: bytes, box: tuple[float, float, float, float], part: tuple[float, float, float, float]) -> int:
    """How many of ``box``'s cells holding an inlier lie wholly inside ``part`` (same pixels as ``box``)."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) / CELLS, (y1 - y0) / CELLS
    occupied = np.flatnonzero(np.unpackbits(np.frombuffer(cells, np.uint8))[: CELLS * CELLS])
    cx = x0 + (occupied % CELLS + 0.5) * w
    cy = y0 + (occupied // CELLS + 0.5) * h
    px0, py0, px1, py1 = part
    inside = (cx - w / 2 >= px0) & (cx + w / 2 <= px1) & (cy - h / 2 >= py0) & (cy + h / 2 <= py1)
    return int(inside.sum())


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


# -- a candidate pair, checked by every rule: what query's workers run
@dataclass(frozen=True)
class PairJob:
    """A candidate pair to verify, with what verification needs: picklable, for the workers."""

    query: ImageRecord
    result: ImageRecord
    mirrored: bool
    q_xy: np.ndarray  # every keypoint of the query, scaled pixels, unmirrored
    q_repeated: np.ndarray
    r_xy: np.ndarray  # every keypoint of the result
    r_repeated: np.ndarray
    q_kp: np.ndarray  # the correspondences: query keypoint, result keypoint, squared distance
    r_kp: np.ndarray
    dist: np.ndarray


def check_pairs(work: tuple[Settings, list[PairJob]]) -> list[tuple[PairResult | None, str]]:
    s, jobs = work
    return [check_pair(j, s) for j in jobs]


def check_pair(job: PairJob, s: Settings) -> tuple[PairResult | None, str]:
    """Verify one candidate pair: its transform and regions when it is a copy, and the outcome's name
    ("verified", "no_model", or the ``query.QueryStats`` counter of the rule that refused it)."""
    rec, r = job.query, job.result
    sel = one_to_one(job.q_kp, job.r_kp, job.dist)
    q_kp, r_kp = job.q_kp[sel], job.r_kp[sel]  # the one-to-one correspondences from here on
    q_all = job.q_xy
    if job.mirrored:  # the query's points as the mirrored descriptors see them
        q_all = np.column_stack([_scaled_width(rec) - q_all[:, 0], q_all[:, 1]])
    q_pts, r_pts = q_all[q_kp], job.r_xy[r_kp]
    v = verify(q_pts, r_pts, s.query_ransac_reproj_threshold, s.query_match_nb_ransac_threshold)
    if v is None:
        return None, "no_model"
    q_in = job.q_xy[q_kp[v.inliers]]  # unmirrored: the region as it lies in the query image
    q_side, q_area = _region(q_in, rec)
    r_side, r_area = _region(r_pts[v.inliers], r)
    if max(q_side, r_side) < s.query_min_region_side or max(q_area, r_area) < s.query_min_region_area:
        return None, "small_region"
    if _detail_only(q_all, q_pts[v.inliers], job.r_xy, r_pts[v.inliers], v.transform, rec, r, s):
        return None, "detail_only"
    q_rep, r_rep = job.q_repeated[q_kp[v.inliers]], job.r_repeated[r_kp[v.inliers]]
    q_share, r_share = float(job.q_repeated.mean()), float(job.r_repeated.mean())
    if rests_on_patterns(q_rep, r_rep, q_share, r_share, s.query_match_nb_ransac_threshold, s.query_pattern_alpha):
        return None, "pattern_only"
    q_orig, r_orig = q_in * (rec.scale or 1.0), r_pts[v.inliers] * (r.scale or 1.0)
    q_box, r_box = bounding_box(q_orig), bounding_box(r_orig)
    pair = PairResult(
        rec.id,
        v.nb_correspondences,
        v.nb_inliers,
        _to_original(v.transform, rec, r, job.mirrored),
        q_box,
        r_box,
        q_kp[v.inliers],
        r_kp[v.inliers],
        inlier_cells(q_orig, q_box),
        inlier_cells(r_orig, r_box),
    )
    return pair, "verified"


def _detail_only(q_all, q_in, r_all, r_in, transform: np.ndarray, q: ImageRecord, r: ImageRecord, s: Settings) -> bool:
    """Whether, in both images, the matched region holds few of the keypoints where the images overlap.

    Points are in scaled pixels, the query's mirrored when the match is (as ``transform`` expects).
    """
    share = s.query_min_overlap_share
    if share <= 0 or overlap_share(q_all, q_in, transform, _scaled_size(r)) >= share:
        return False
    back = cv2.invertAffineTransform(transform)
    return overlap_share(r_all, r_in, back, _scaled_size(q)) < share


@dataclass(frozen=True)
class PairResult:
    """A verified pair as seen from ``query_id``: transform (3x3, original pixels) and matched regions."""

    query_id: int
    nb_total: int
    nb_inliers: int
    transform: np.ndarray
    query_box: tuple[float, float, float, float]
    result_box: tuple[float, float, float, float]
    query_inliers: np.ndarray  # the inliers' keypoint indices in each image
    result_inliers: np.ndarray
    query_cells: bytes  # where in each region the inliers lie (inlier_cells)
    result_cells: bytes

    def towards(self, query_id: int) -> PairResult:
        if query_id == self.query_id:
            return self
        return PairResult(
            query_id,
            self.nb_total,
            self.nb_inliers,
            np.linalg.inv(self.transform),
            self.result_box,
            self.query_box,
            self.result_inliers,
            self.query_inliers,
            self.result_cells,
            self.query_cells,
        )


def _region(points: np.ndarray, rec: ImageRecord) -> tuple[float, float]:
    """The matched region's smaller side and its area, as fractions of the image's (scaled pixels)."""
    w, h = (rec.width or 1) / (rec.scale or 1.0), (rec.height or 1) / (rec.scale or 1.0)
    span = np.ptp(points, axis=0)
    return float(min(span[0] / w, span[1] / h)), float(span[0] * span[1] / (w * h))


def _scaled_size(rec: ImageRecord) -> tuple[float, float]:
    return _scaled_width(rec), (rec.height or 0) / (rec.scale or 1.0)


def _scaled_width(rec: ImageRecord) -> float:
    return (rec.width or 0) / (rec.scale or 1.0)


def _to_original(M: np.ndarray, q: ImageRecord, r: ImageRecord, mirrored: bool) -> np.ndarray:
    """The transform in original pixels: query pixel -> result pixel, mirroring included."""
    qs, rs = q.scale or 1.0, r.scale or 1.0
    to_scaled = np.diag([1 / qs, 1 / qs, 1.0])
    if mirrored:
        to_scaled = np.array([[-1.0, 0, _scaled_width(q)], [0, 1, 0], [0, 0, 1]]) @ to_scaled
    full = np.diag([rs, rs, 1.0]) @ np.vstack([M, [0, 0, 1]]) @ to_scaled
    return full
