"""`pimmi provenance`: the most likely parent of every clustered image, orienting each verified match.

Each match between two images of a cluster is oriented (which one was made from the other)
by cues pimmi already has or reads cheaply, each a log-odds vote:

- containment: when one image holds all of the other's picture and more, the extra is either
  picture the other lost (a crop: the larger one is the parent) or content added around it (a
  caption, a border, a pad, fill around a rotation: the smaller one is the parent); what lies
  outside tells them apart: photo keypoints, or few keypoints and those on text; and where few
  keypoints say "added", the other copies' pixels there (alike: a crop's lost sky or shadow, in doubt);
- composites: an image whose matches fall on distinct regions (a montage, a screenshot of
  several pictures) is their child;
- resolution: a down-scaled copy cannot be scaled back up, so the larger rendering of the same
  picture is the parent;
- re-compression: 8x8 blocking left by a JPEG re-encoding, and the quality of the JPEG tables;
- colour: a grey image cannot be coloured back;
- edits, between renderings on one pixel grid (edits.py): text drawn over the picture, noise added,
  detail lost to blur or compression, highlights clipped;
- dates, when posts are imported: the image first posted earlier. Strong, but a resurfaced old
  copy exists, so dates weigh less than a clear content cue.

Then, in each cluster, the maximum spanning arborescence (Edmonds) of the oriented matches,
weighted by the orientation's probability and the pair's similarity (a copy of a copy is closer
to its parent than to its grandparent), gives every image one parent; a composite gets one per
cluster it belongs to.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import networkx as nx
import numpy as np
from PIL import Image

from pimmi.clusters import ClusterRow, box_quad, workspace_clusters
from pimmi.edits import aligned, edit_evidence, grey, same_grid, tone_fit
from pimmi.images import ImageError, decode_rgb
from pimmi.paths import shown_path
from pimmi.posts import first_posts
from pimmi.progress import bar
from pimmi.settings import Settings
from pimmi.workspace import ImageRecord, Workspace, seen_from

RELATIONS = ("crop", "scale", "recompress", "caption/border", "mirror", "colour", "part-of", "copy")
WHOLE_FRAME = 0.9  # a frame covering this share of the other image counts as all of it
DATE_WEIGHT = 2.5  # log-odds of an earlier first post: below a clear content cue (2 to 4)
CUES = ("containment", "composite", "resolution", "recompression", "colour", "edits", "dates", "photometry")
EDIT_SIDE = 768  # images compared pixel for pixel (edits.py) are decoded at most this large
SMALL_CACHE = 512  # images kept at 128 px, grey, while the matches are oriented (~48 kB each)
EDIT_CACHE = 96  # decoded images kept while a cluster's pairs are compared (~2.4 MB each, grey)


@dataclass(frozen=True)
class ProvenanceRow:
    path: str
    parent: str  # empty for a root; ';'-separated for a composite (one parent per cluster it is in)
    cluster_id: str  # ';'-separated for an image in several clusters
    relation: str
    confidence: float
    image_id: int
    parent_ids: str


@dataclass(frozen=True)
class ImageCues:
    """What one image says of its history, read from its file."""

    grey: bool
    blocking: float  # 8x8 JPEG blocking of the picture (0: none)
    jpeg_quality: float | None  # from the quantisation tables, for a JPEG file


@dataclass
class Pair:
    a: int
    b: int
    inliers: int
    transform: np.ndarray  # a pixel -> b pixel (original pixels)
    box_a: tuple[float, ...]
    box_b: tuple[float, ...]
    evidence: dict[str, float] = field(default_factory=dict)  # cue -> log-odds that a is b's ancestor
    relations: dict[tuple[int, int], str] = field(default_factory=dict)  # (parent, child) -> what the child is
    distance: float | None = None  # photometric, where they overlap (see photometric_distance)


def frame_share(T: np.ndarray, src: ImageRecord, dst: ImageRecord) -> float:
    """The share of ``dst``'s frame covered by ``src``'s frame carried by ``T`` (``src`` pixel -> ``dst`` pixel)."""
    w, h = float(src.width or 1), float(src.height or 1)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) @ T[:, :2].T + T[:, 2]
    (ax, ay), (bx, by) = corners[1] - corners[0], corners[2] - corners[1]
    if ax * by - ay * bx < 0:
        corners = corners[::-1]  # mirrored: the polygon turns the other way
    W, H = float(dst.width or 1), float(dst.height or 1)
    frame = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float32)
    area, _ = cv2.intersectConvexConvex(corners.astype(np.float32), frame)
    return float(min(1.0, max(0.0, area) / (W * H)))


def frame_box(T: np.ndarray, src: ImageRecord, dst: ImageRecord) -> tuple[float, float, float, float]:
    """The bounding box, clipped to ``dst``, of ``src``'s frame carried into ``dst`` by ``T``."""
    w, h = float(src.width or 1), float(src.height or 1)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) @ T[:, :2].T + T[:, 2]
    W, H = float(dst.width or 1), float(dst.height or 1)
    x0, y0 = np.clip(corners.min(axis=0), 0, [W, H])
    x1, y1 = np.clip(corners.max(axis=0), 0, [W, H])
    return float(x0), float(y0), float(x1), float(y1)


def overlay(ra: ImageRecord, rb: ImageRecord, T: np.ndarray, image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
    """``b`` warped into ``a``'s frame by the match's transform (``a`` pixel -> ``b`` pixel, original pixels),
    at the size of ``image_a`` (arrays of both images at any size): laid over ``a``, a copy lines up with it."""
    ha, wa = image_a.shape[:2]
    sa = (ra.width or wa) / wa  # original pixels per array pixel
    sb = (rb.width or image_b.shape[1]) / image_b.shape[1]
    to_b = np.diag([1 / sb, 1 / sb, 1.0]) @ np.vstack([T, [0, 0, 1]]) @ np.diag([sa, sa, 1.0])
    return cv2.warpAffine(image_b, to_b[:2], (wa, ha), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def photometric_distance(pair: Pair, ra: ImageRecord, rb: ImageRecord, small: dict[int, np.ndarray]) -> float | None:
    """Mean absolute difference (0-255) between ``a`` and ``b`` warped onto it, where they overlap: ~2 for a
    re-encoded copy, more for each edit between them (colour, blur, noise, a caption over the picture). The
    parent of a copy is the version it differs from least."""
    ia, ib = small.get(pair.a), small.get(pair.b)
    if ia is None or ib is None:
        return None
    laid = overlap(ra, rb, pair.transform, ia, ib)
    if laid is None:
        return None
    warped, valid = laid
    return float(np.abs(warped - ia)[valid].mean())


def overlap(
    ra: ImageRecord, rb: ImageRecord, T: np.ndarray, image_a: np.ndarray, image_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """``b`` laid over ``a`` (``overlay``) and where it covers ``a``; None when it covers under 5 % of it."""
    warped = overlay(ra, rb, T, image_a, image_b)
    valid = overlay(ra, rb, T, image_a, np.ones(image_b.shape[:2], np.float32)) > 0.99
    return (warped, valid) if valid.sum() >= 0.05 * valid.size else None


def _angle(T: np.ndarray) -> float:
    """The rotation of a transform, in degrees (mirroring taken out)."""
    L = T[:, :2]
    if np.linalg.det(L) < 0:
        L = L @ np.diag([-1.0, 1.0])
    return math.degrees(math.atan2(L[1, 0], L[0, 0]))


def linear_scale(T: np.ndarray) -> float:
    return math.sqrt(abs(float(np.linalg.det(T[:, :2]))))


def _small(rec: ImageRecord, max_pixels: int, side: int = 128) -> np.ndarray | None:
    try:
        return np.asarray(decode_rgb(rec.full_path, side, max_pixels), np.float32)
    except (ImageError, OSError, ValueError):
        return None


def image_cues(rec: ImageRecord, max_pixels: int) -> ImageCues:
    """Greyness, JPEG blocking and JPEG table quality of an image file (neutral values when unreadable)."""
    path = rec.full_path
    quality = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if im.format == "JPEG" and getattr(im, "quantization", None):
                    quality = jpeg_quality(im.quantization)
        rgb = np.asarray(decode_rgb(path, 1024, max_pixels), np.float32)
    except (ImageError, OSError, ValueError):
        return ImageCues(False, 0.0, quality)
    chroma = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
    gray = rgb.mean(axis=2)
    return ImageCues(bool(chroma < 3.0), blocking(gray) if max(gray.shape) < 1024 else 0.0, quality)


# The IJG luminance table at quality 50: a file's table divided by it gives its quality scale.
IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64
)  # fmt: skip


def jpeg_quality(tables: dict) -> float | None:
    """The IJG quality (1-100) whose luminance table is nearest to the file's."""
    luma = tables.get(0)
    if luma is None or len(luma) != 64:
        return None
    scale = float(np.mean(np.asarray(luma, np.float64) / IJG_LUMA)) * 100  # percent of the q50 table
    return float(np.clip((200 - scale) / 2 if scale <= 100 else 5000 / scale, 1, 100))


def blocking(gray: np.ndarray) -> float:
    """How much more the picture steps across the 8-pixel JPEG grid than beside it: near 0 for a picture
    never JPEG-compressed at this size (or scaled since), large after a heavy JPEG re-encoding."""
    if min(gray.shape) < 32:
        return 0.0
    dx = np.abs(np.diff(gray, axis=1))
    dy = np.abs(np.diff(gray, axis=0))
    cols, rows = np.arange(dx.shape[1]), np.arange(dy.shape[0])
    at = dx[:, cols % 8 == 7].mean() + dy[rows % 8 == 7, :].mean()
    off = dx[:, cols % 8 != 7].mean() + dy[rows % 8 != 7, :].mean()
    return float(max(0.0, at / max(off, 1e-6) - 1.0))


# -- orienting one match
def orient(
    pair: Pair,
    ra: ImageRecord,
    rb: ImageRecord,
    cues: dict[int, ImageCues],
    composite: set[int],
    keypoints: dict[int, tuple[np.ndarray, np.ndarray]],
    dates: dict[int, float],
    use: frozenset[str],
    regions: dict[int, list[tuple[int, np.ndarray]]],
    agreement: Callable[[int, int, tuple[float, float, float, float]], float | None] | None = None,
) -> None:
    """Fill ``pair.evidence`` (positive: a is b's ancestor) and the relation each direction would be."""
    T = pair.transform
    shown_a = frame_share(cv2.invertAffineTransform(T), rb, ra)  # share of a inside b's frame
    shown_b = frame_share(T, ra, rb)  # share of b that is a's picture
    e = pair.evidence
    mirrored = float(np.linalg.det(T[:, :2])) < 0
    base = "mirror" if mirrored else "copy"
    rel = {(pair.a, pair.b): base, (pair.b, pair.a): base}  # (parent, child) -> what the child is
    if (pair.a in composite) != (pair.b in composite):
        whole, comp = (pair.b, pair.a) if pair.a in composite else (pair.a, pair.b)
        rel[(whole, comp)] = "part-of"
        if "composite" in use:
            e["composite"] = 3.0 if whole == pair.a else -3.0
    elif shown_a < WHOLE_FRAME <= shown_b or shown_b < WHOLE_FRAME <= shown_a:
        # one holds all of the other's picture and more: is the more lost picture, or added content?
        if shown_b >= WHOLE_FRAME:  # b's frame carried into a: where a's picture is shared
            big, small, big_rec, shown, into_big = pair.a, pair.b, ra, shown_a, cv2.invertAffineTransform(T)
        else:
            big, small, big_rec, shown, into_big = pair.b, pair.a, rb, shown_b, T
        small_rec = rb if big_rec is ra else ra
        footprint = frame_box(into_big, small_rec, big_rec)
        # Is the rest of the larger image picture, that other copies show too and that holds photo keypoints
        # (not text nor interface)? Both, or a clear share shown elsewhere.
        others = [quad for other, quad in regions.get(big, []) if other != small]
        shown_elsewhere = outside_coverage(footprint, others, big_rec) if others else None
        density = outside_photo_share(keypoints.get(big), footprint, big_rec)
        if shown_elsewhere is None:
            crop = density >= CROP_DENSITY
            photo = density / CROP_DENSITY * CROP_PICTURE
        else:
            # keypoints alone are not enough: large caption letters are photo-like keypoints
            crop = (shown_elsewhere >= CROP_PICTURE and density >= CROP_DENSITY) or shown_elsewhere >= 0.4
            photo = shown_elsewhere
        # Few keypoints beyond the footprint, yet the other images show the same pixels there: picture a crop
        # lost (a sky, a shadow), or a sliver of frame; the keypoints' verdict of added content is doubtful.
        # (Taken as a crop instead: roots with posts 0.907 / 0.873 / 0.873 -> 0.880 / 0.833 / 0.847, seeds
        # 5 / 6 / 8: a padded or captioned copy's own children show its additions too.)
        agree = agreement(big, small, footprint) if agreement is not None and not crop else None
        doubt = agree is not None and agree >= AGREE_DOUBT
        parent, child = (big, small) if crop else (small, big)
        rel[(parent, child)] = "crop" if crop else "caption/border"
        if "resolution" in use and not crop:
            # an added border or caption keeps the picture's pixels: a child that shows the picture larger
            # than its would-be parent was not made from it (a sibling made from a larger version was)
            up = linear_scale(T) if small == pair.a else 1 / linear_scale(T)  # small -> big
            if up > 1.1:
                e["resolution"] = float(np.clip(3.0 * math.log2(up), 0.0, 3.0)) * (-1 if small == pair.a else 1)
        if "containment" in use:
            margin = abs(photo - CROP_PICTURE) / 0.1 if crop == (photo >= CROP_PICTURE) else 0.5
            sure = min(1.0, margin) * (0.5 + min(0.5, (WHOLE_FRAME - shown) * 2))
            e["containment"] = (2.0 + 2.0 * sure) * (1 if parent == pair.a else -1) * (DOUBTED if doubt else 1.0)
    s = linear_scale(T)
    if abs(math.log2(s)) > 0.1 and "containment" not in e and "composite" not in e and "resolution" not in e:
        smaller = (pair.a, pair.b) if s < 1 else (pair.b, pair.a)
        if rel[smaller] in ("copy", "mirror"):
            rel[smaller] = "scale"
        if "resolution" in use:
            e["resolution"] = float(np.clip(3.0 * math.log2(1 / s), -3.0, 3.0))
    ca, cb = cues.get(pair.a), cues.get(pair.b)
    if ca and cb:
        # Blocking compares only two renderings on the same pixel grid (same frame, same scale): a file's own
        # encoding leaves some, and scaling or cropping moves the grid; then only a heavy re-encoding counts
        # (seed 5: other edits within ±0.2 for 80 % of the pairs, JPEG at quality 30 or less above 0.29).
        same_grid = abs(math.log2(s)) < 0.1 and min(shown_a, shown_b) >= WHOLE_FRAME
        d = cb.blocking - ca.blocking if same_grid else 0.0
        r = float(np.clip(RECOMPRESSION * (abs(d) - 0.2), 0.0, 4.0)) * (1 if d > 0 else -1)
        if ca.jpeg_quality is not None and cb.jpeg_quality is not None:
            r += float(np.clip((ca.jpeg_quality - cb.jpeg_quality) / 40, -0.3, 0.3))
        if abs(r) > 0.5:
            key = (pair.a, pair.b) if r > 0 else (pair.b, pair.a)
            rel[key] = "recompress" if rel[key] == "copy" else rel[key]
        if "recompression" in use and abs(r) > 0.2:
            e["recompression"] = r
        if ca.grey != cb.grey:
            key = (pair.a, pair.b) if cb.grey else (pair.b, pair.a)
            rel[key] = "colour" if rel[key] in ("copy", "recompress") else rel[key]
            if "colour" in use:
                e["colour"] = 2.5 if cb.grey else -2.5
    if "dates" in use and pair.a in dates and pair.b in dates and dates[pair.a] != dates[pair.b]:
        e["dates"] = DATE_WEIGHT if dates[pair.a] < dates[pair.b] else -DATE_WEIGHT
    pair.relations = rel


def compare_edits(pair: Pair, ra: ImageRecord, rb: ImageRecord, pixels) -> None:
    """Add the ``edits`` cue to a pair whose images share a pixel grid (``pixels``: id -> grey array)."""
    if "edits" in pair.evidence or not same_grid(pair.transform):
        return
    ia, ib = pixels(pair.a), pixels(pair.b)
    if ia is None or ib is None:
        return
    both = aligned(ia, ib, pair.transform, ra.width or ia.shape[1], rb.width or ib.shape[1])
    edit = edit_evidence(*both) if both is not None else None
    if edit is None:
        return
    pair.evidence["edits"] = edit.evidence
    key = (pair.a, pair.b) if edit.evidence > 0 else (pair.b, pair.a)
    if pair.relations.get(key, "copy") in ("copy", "recompress"):
        pair.relations[key] = edit.relation


def outside_coverage(footprint, quads: list[np.ndarray], rec: ImageRecord, cells: int = 32) -> float:
    """The share of ``rec`` outside ``footprint`` (a box) that its other matches' regions cover (each the
    other image's matched region carried into ``rec``, a quadrilateral): ~1 when the rest of the image is
    picture that other copies show too (a crop was taken from it), ~0 for added content (caption, border,
    the fill around a rotation)."""
    W, H = float(rec.width or 1), float(rec.height or 1)
    xs, ys = (np.arange(cells) + 0.5) * W / cells, (np.arange(cells) + 0.5) * H / cells
    gx, gy = np.meshgrid(xs, ys)
    x0, y0, x1, y1 = footprint
    outside = ~((gx >= x0) & (gx <= x1) & (gy >= y0) & (gy <= y1))
    if outside.sum() < 0.02 * cells * cells:
        return 0.0
    # each cell weighs the share of the image's other matches that show it: a crop's parent has its whole
    # picture shown by most of its copies; a screenshot's interface is shown by the other screenshots only
    shown = np.zeros(outside.shape, np.float64)
    for quad in quads:
        shown += _in_convex(gx, gy, quad)
    shown /= len(quads)
    lost = shown[outside].sum()
    # picture beyond the footprint, as a share of what lies outside it, or (a crop of a captioned copy:
    # the rest is picture and caption) as a share of the footprint
    return float(max(lost / outside.sum(), min(1.0, LOST_FACTOR * lost / max(1, (~outside).sum()))))


def outside_agreement(
    footprint, rec: ImageRecord, image: np.ndarray, others: list[tuple[ImageRecord, np.ndarray, np.ndarray]]
) -> float | None:
    """The share of ``rec`` outside ``footprint`` (a box, original pixels) that the other images show with the
    same pixels: each other image (record, small grey array, transform ``rec`` pixel -> its pixel) warped onto
    ``image`` (``rec``'s small grey array), its tone fitted, and a pixel agreeing within AGREE levels; the mean
    over the others. Unlike the matched regions, it sees a crop's lost sky or shadow, where no keypoint lies."""
    h, w = image.shape[:2]
    f = w / float(rec.width or w)
    x0, y0, x1, y1 = (v * f for v in footprint)
    gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    outside = ~((gx >= x0) & (gx <= x1) & (gy >= y0) & (gy <= y1))
    if outside.sum() < 0.02 * outside.size or not others:
        return None
    shares = []
    for other, small, T in others:
        laid = overlap(rec, other, T, image, small)
        if laid is None:
            continue
        warped, valid = laid
        gain, offset = tone_fit(warped[valid], image[valid])
        agree = valid & (np.abs(warped * gain + offset - image) <= AGREE)
        shares.append(float(agree[outside].mean()))
    return float(np.mean(shares)) if shares else None


def _in_convex(gx: np.ndarray, gy: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Grid points inside a convex polygon (either orientation)."""
    signs = []
    for (ax, ay), (bx, by) in zip(quad, np.roll(quad, -1, axis=0)):
        signs.append((bx - ax) * (gy - ay) - (by - ay) * (gx - ax) >= 0)
    inside_ccw = np.logical_and.reduce(signs)
    inside_cw = np.logical_and.reduce([~sg for sg in signs])
    return inside_ccw | inside_cw


def match_regions(pairs: Iterable[Pair]) -> dict[int, list[tuple[int, np.ndarray]]]:
    """image -> (other image, the other's matched region carried into the image) for every pair."""
    regions: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for p in pairs:
        regions[p.a].append((p.b, box_quad(p.box_b, cv2.invertAffineTransform(p.transform))))
        regions[p.b].append((p.a, box_quad(p.box_a, p.transform)))
    return regions


def outside_photo_share(kp: tuple[np.ndarray, np.ndarray] | None, box, rec: ImageRecord) -> float:
    """Density of photo keypoints (not on repeated patterns: text, UI) outside the shared region of
    ``rec``, relative to inside it: ~1 when the rest of the image is picture, ~0 for a border or a caption."""
    if kp is None:
        return 0.5
    xy, repeated = kp
    pts = xy[~repeated] * (rec.scale or 1.0)
    x0, y0, x1, y1 = box
    inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
    area_in = max(1.0, (x1 - x0) * (y1 - y0))
    area_out = max(1.0, float(rec.width or 1) * float(rec.height or 1) - area_in)
    if area_out < 0.05 * area_in:
        return 0.0
    return float((np.sum(~inside) / area_out) / max(np.sum(inside) / area_in, 1e-9))


# -- the trees
def provenance(
    ws: Workspace,
    settings: Settings,
    cues_used: Iterable[str] = CUES,
    progress: bool = False,
    rows: list[ClusterRow] | None = None,
    cluster: int | None = None,
) -> list[ProvenanceRow]:
    """Every clustered image with its most likely parent(s), cluster ids as ``pimmi clusters`` numbers them;
    with ``cluster``, the images of that cluster only, their parents in it (the viewer's derivation tree)."""
    use = frozenset(cues_used)
    rows = rows if rows is not None else workspace_clusters(ws, settings)
    records = {r.id: r for r in ws.images()}
    members: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        members[r.cluster_id].append(r.image_id)
    clusters_of: dict[int, list[int]] = defaultdict(list)
    for cid, ids in members.items():
        for i in ids:
            clusters_of[i].append(cid)
    # distinct regions of several sources: each hangs from the root of each of its clusters
    composite = {i for i, cs in clusters_of.items() if len(cs) > 1} if "composite" in use else set()
    if cluster is not None:
        members = {cluster: members.get(cluster, [])}
        clusters_of = {i: [cluster] for i in members[cluster]}
    dates = first_posts(ws) if "dates" in use else {}
    pairs = _pairs(ws, clusters_of)
    keypoints = ws.keypoints(sorted(clusters_of))
    cues: dict[int, ImageCues] = {}
    with bar(len(clusters_of), "provenance", progress) as pbar:
        for i in sorted(clusters_of):
            cues[i] = image_cues(records[i], settings.max_image_pixels)
            pbar.update(1)
    regions = match_regions(pairs.values())
    neighbours: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)  # image -> (other, transform to it)
    for p in pairs.values():
        neighbours[p.a].append((p.b, p.transform))
        neighbours[p.b].append((p.a, cv2.invertAffineTransform(p.transform)))

    @functools.lru_cache(maxsize=SMALL_CACHE)  # the pairs are read cluster by cluster
    def small_grey(i: int) -> np.ndarray | None:
        image = _small(records[i], settings.max_image_pixels)
        return None if image is None else grey(image)

    def agreement(big: int, small: int, footprint) -> float | None:
        image = small_grey(big)
        if image is None:
            return None
        others = [(records[j], g, T) for j, T in neighbours[big] if j != small and (g := small_grey(j)) is not None]
        return outside_agreement(footprint, records[big], image, others)

    for p in sorted(pairs.values(), key=lambda p: (clusters_of[p.a][0], p.a, p.b)):
        orient(p, records[p.a], records[p.b], cues, composite, keypoints, dates, use, regions, agreement)
    parents: dict[int, list[tuple[int, int, float, str]]] = defaultdict(list)  # child -> (cluster, parent, conf, rel)
    by_image: dict[int, list[Pair]] = defaultdict(list)
    for p in pairs.values():
        by_image[p.a].append(p)

    @functools.lru_cache(maxsize=EDIT_CACHE)
    def pixels(i: int) -> np.ndarray | None:  # grey, for the edits of a cluster's pairs on one grid
        try:
            return grey(np.asarray(decode_rgb(records[i].full_path, EDIT_SIDE, settings.max_image_pixels)))
        except (ImageError, OSError, ValueError):
            return None

    for cid, ids in members.items():
        inside = set(ids)
        inner = [p for i in ids for p in by_image.get(i, []) if p.b in inside]
        if "edits" in use:
            for p in sorted(inner, key=lambda p: (p.a, p.b)):
                compare_edits(p, records[p.a], records[p.b], pixels)
        if "photometry" in use:
            small = {i: _small(records[i], settings.max_image_pixels) for i in ids}
            for p in inner:
                p.distance = photometric_distance(p, records[p.a], records[p.b], small)
        for child, parent, conf, rel in arborescence(ids, inner, records, composite):
            parents[child].append((cid, parent, conf, rel))
    out = []
    for i in sorted(clusters_of):
        found = sorted(parents.get(i, []))
        chosen = [(c, p, conf, rel) for c, p, conf, rel in found if p is not None]
        cids = ";".join(str(c) for c in sorted(clusters_of[i]))
        if not chosen:
            conf = min((conf for _, _, conf, _ in found), default=1.0)
            out.append(ProvenanceRow(records[i].path, "", cids, "", round(conf, 3), i, ""))
            continue
        rel = "part-of" if len(chosen) > 1 else chosen[0][3]
        out.append(
            ProvenanceRow(
                records[i].path,
                ";".join(records[p].path for _, p, _, _ in chosen),
                cids,
                rel,
                round(min(conf for _, _, conf, _ in chosen), 3),
                i,
                ";".join(str(p) for _, p, _, _ in chosen),
            )
        )
    return out


def _pairs(ws: Workspace, clusters_of: dict[int, list[int]]) -> dict[tuple[int, int], Pair]:
    """One pair per matched (unordered) couple of clustered images, a < b, with its transform from a to b:
    the match stored as a's when there is one, else b's, inverted."""
    stored = {(m["query_id"], m["result_id"]): m for m in ws.matches_among(sorted(clusters_of))}
    pairs: dict[tuple[int, int], Pair] = {}
    for q, r in stored:
        a, b = min(q, r), max(q, r)
        if (a, b) in pairs:
            continue
        m = stored.get((a, b)) or stored[(b, a)]
        T, box_a, box_b = seen_from(m, a)
        pairs[(a, b)] = Pair(a, b, m["nb_match_ransac"], T, tuple(box_a), tuple(box_b))
    return pairs


def arborescence(
    ids: list[int], pairs: list[Pair], records: dict[int, ImageRecord], composite: set[int] = frozenset()
) -> list[tuple[int, int | None, float, str]]:
    """(child, parent or None for the root, confidence, relation) for each image of one cluster.

    An edge parent -> child weighs the log-probability of that orientation and the pair's similarity (a
    copy of a copy is closer to its parent than to its grandparent). Composites (in several clusters) hang
    from the cluster's root.
    """
    if len(ids) == 1:
        return [(ids[0], None, 1.0, "")]
    prob: dict[tuple[int, int], float] = {}
    sim: dict[tuple[int, int], float] = {}
    rel: dict[tuple[int, int], str] = {}
    mirrored: set[tuple[int, int]] = set()
    distance: dict[tuple[int, int], float | None] = {}
    for p in pairs:
        distance[(p.a, p.b)] = distance[(p.b, p.a)] = p.distance
        if float(np.linalg.det(p.transform[:, :2])) < 0:
            mirrored |= {(p.a, p.b), (p.b, p.a)}
        e = sum(p.evidence.values())
        points = max(1, min(records[p.a].nb_points or 1, records[p.b].nb_points or 1))
        for parent, child, ev in ((p.a, p.b, e), (p.b, p.a, -e)):
            prob[(parent, child)] = 1 / (1 + math.exp(-ev))
            sim[(parent, child)] = min(1.0, p.inliers / points)
            rel[(parent, child)] = p.relations.get((parent, child), "copy")
    core = [n for n in ids if n not in composite] or list(ids)
    # An original is drawn the way most of its copies are: one mirrored or turned against most of them (a
    # flip, a quarter turn) is unlikely a root, though nothing in the pair itself says which came first.
    # (Tried and not kept: the mean photometric distance to the cluster, a medoid: root 0.893 / 0.873 ->
    # 0.893 / 0.867, montage parents 0.833 -> 0.792, seeds 5 / 6.)
    odd: dict[int, list[float]] = defaultdict(list)
    for p in pairs:
        turned = float((p.a, p.b) in mirrored or abs(_angle(p.transform)) > 45)
        odd[p.a].append(turned)
        odd[p.b].append(turned)
    oddness = {n: float(np.mean(v)) for n, v in odd.items()}

    def bias(parent: int, child: int) -> float:
        return ODD_WEIGHT * (oddness.get(child, 0.0) - oddness.get(parent, 0.0))

    def best_tree(photometry: bool, root: int | None) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(core)
        for (parent, child), pr in prob.items():
            if parent not in g or child not in g or child == root:
                continue
            w = math.log(max(pr, 1e-6)) + SIMILARITY * math.log(max(sim[(parent, child)], 1e-3))
            if (parent, child) in mirrored:  # one operation more than an unmirrored sibling's
                w -= MIRROR_PENALTY
            if photometry and distance.get((parent, child)) is not None:
                w -= PHOTOMETRY * distance[(parent, child)] / 10
            if not photometry:
                w += bias(parent, child)
            g.add_edge(parent, child, weight=w)
        try:
            return nx.maximum_spanning_arborescence(g, attr="weight", preserve_attrs=False)
        except nx.NetworkXException:  # not connected through matches: a forest, each tree from its best root
            return nx.maximum_branching(g, attr="weight")

    # The root from the orientations alone; then, below it, each image's parent with photometry, which tells
    # a parent from a sibling but, symmetric, says nothing of which of two versions came first (measured: root
    # 0.893 / 0.873 / 0.847 without it, 0.873 / 0.873 / 0.833 with it in one tree, seeds 5 / 6 / 8).
    tree = best_tree(False, None)
    if any(d is not None for d in distance.values()):
        roots = [n for n in core if not list(tree.predecessors(n))]
        tree = best_tree(True, roots[0] if len(roots) == 1 else None)
    out = []
    roots = [n for n in core if not list(tree.predecessors(n))]
    for n in core:
        pred = list(tree.predecessors(n))
        if pred:
            out.append((n, pred[0], prob[(pred[0], n)], rel[(pred[0], n)]))
        else:  # how sure that nothing it matches is its parent
            probs = [pr for (u, v), pr in prob.items() if v == n and u in tree]
            out.append((n, None, 1 - max(probs, default=0.0), ""))
    for n in ids:
        if n in composite and n not in core:
            linked = [r for r in roots if (r, n) in prob] or [u for (u, v) in prob if v == n and u in tree]
            best = max(linked, key=lambda u: (u in roots, prob[(u, n)]), default=None)
            out.append((n, best, prob[(best, n)] if best is not None else 1.0, "part-of" if best is not None else ""))
    return out


# Beyond the smaller image's footprint in the larger one: the share of it that the larger image's other
# matches show (each cell weighed by how many), from which the extra is picture a crop lost. Measured on
# seeds 5 (1190 images): captions, pads, rotations' fill at 0.00-0.03 (90th percentile), screenshots' chrome
# 0.19, crops from 0.08 (10th percentile), 0.23 (25th), 0.44 (median).
CROP_PICTURE = 0.12
AGREE = 12.0  # grey levels within which a warped pixel agrees
# Beyond the footprint, the share of pixels the larger image's other matches show alike (outside_agreement),
# measured on seed 5's contained pairs: crops 0.36 / 0.62 / 0.87 (10th percentile, median, 90th), added
# captions, borders and fill 0.00 / 0.14 / 0.38. From this share up, a verdict of added content is doubted:
# the containment cue keeps DOUBTED of its weight, and dates decide.
AGREE_DOUBT = 0.5
DOUBTED = 0.25
# Photo keypoints (not on repeated patterns) per area beyond the footprint, relative to inside: captions 0.22,
# screenshots 0.28 (90th percentiles), crops from 0.20 (10th percentile).
CROP_DENSITY = 0.15
LOST_FACTOR = 1.0  # or the lost picture as a share of the footprint (a crop of a captioned copy), times this
RECOMPRESSION = 6.0  # log-odds per unit of blocking difference beyond 0.2 (same grid only)
ODD_WEIGHT = 1.0  # log-weight for a parent turned or mirrored against fewer of the cluster than its child
PHOTOMETRY = 1.0  # log-weight taken per 10 levels of photometric distance between parent and child
MIRROR_PENALTY = 0.4  # log-weight taken from a mirrored parent -> child edge
SIMILARITY = 0.6  # weight of the pair's similarity (log inliers share) in the tree


def write_gexf(rows: list[ProvenanceRow], path: str | Path) -> None:
    """The derivation forest for Gephi: nodes = images, edges = parent -> child with relation and confidence."""
    g = nx.DiGraph()
    for r in rows:
        g.add_node(str(r.image_id), label=shown_path(r.path), cluster=r.cluster_id)
    for r in rows:
        for p in filter(None, r.parent_ids.split(";")):
            g.add_edge(p, str(r.image_id), relation=r.relation, confidence=r.confidence)
    tmp = f"{path}.tmp"
    if str(path).endswith(".graphml"):
        nx.write_graphml(g, tmp)
    else:
        nx.write_gexf(g, tmp)
    os.replace(tmp, path)
