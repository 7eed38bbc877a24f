"""SIFT keypoints and descriptors (OpenCV), and the descriptor arithmetic matching needs."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pimmi.grids import grid_tiles
from pimmi.settings import Settings


@dataclass(frozen=True)
class Features:
    xy: np.ndarray  # float32 (n, 2): keypoint positions in pixels of the scaled image
    descriptors: np.ndarray  # uint8 (n, 128): OpenCV SIFT descriptors
    repeated: np.ndarray  # bool (n,): on a repeated pattern of the image (text, UI chrome, tiles); see below

    def __len__(self) -> int:
        return len(self.xy)


class Extractor:
    """SIFT with the workspace's settings."""

    def __init__(self, settings: Settings):
        self.halve = settings.sift_halve
        self.max_side = settings.sift_max_image_dimension
        self.budget = settings.sift_nfeatures
        self.asked = round(settings.sift_nfeatures * settings.sift_oversample)
        self.tiles = settings.sift_grid_tiles
        self.sift = cv2.SIFT_create(
            nfeatures=self.asked,
            nOctaveLayers=settings.sift_nOctaveLayers,
            contrastThreshold=settings.sift_contrastThreshold,
            edgeThreshold=settings.sift_edgeThreshold,
            sigma=settings.sift_sigma,
        )

    def __call__(self, gray: np.ndarray) -> Features:
        """Keypoints of a grayscale image, positions in pixels of ``gray``; a grid's tiles one by one."""
        tiles = grid_tiles(gray) if self.tiles else []
        if not tiles:
            return self.extract(gray)
        parts = []
        for x0, y0, x1, y1 in tiles:
            f = self.extract(gray[y0:y1, x0:x1])
            parts.append(Features(f.xy + np.float32([x0, y0]), f.descriptors, f.repeated))
        return Features(
            np.concatenate([f.xy for f in parts]),
            np.concatenate([f.descriptors for f in parts]),
            np.concatenate([f.repeated for f in parts]),
        )

    def extract(self, gray: np.ndarray) -> Features:
        """Keypoints of a grayscale image, positions in pixels of ``gray``.

        With ``halve``, SIFT runs on the image at half the working size: OpenCV doubles its
        input before building the pyramid, so the finest scale stays that of a full-size
        image at a quarter of the cost. Images already smaller than that go in as they are.
        """
        src = gray
        if self.halve:
            target = self.max_side // 2
            longest = max(gray.shape)
            if longest > target:
                f = target / longest
                size = (max(1, round(gray.shape[1] * f)), max(1, round(gray.shape[0] * f)))
                src = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        keypoints, desc = self.sift.detectAndCompute(src, None)
        if desc is None or not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), np.zeros(0, bool))
        xy = np.array([kp.pt for kp in keypoints], dtype=np.float32)
        if src is not gray:
            xy *= np.float32(gray.shape[1] / src.shape[1]), np.float32(gray.shape[0] / src.shape[0])
        # OpenCV's SIFT descriptors are integers in [0, 255] stored as float.
        desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
        response = np.array([kp.response for kp in keypoints], np.float32)
        if len(xy) > self.asked:
            # OpenCV keeps every keypoint tied with the last one asked for: the count is made exact,
            # so that flags are computed over the keypoints asked for (and, without oversampling, kept).
            keep = np.sort(np.argsort(-response, kind="stable")[: self.asked])
            xy, desc, response = xy[keep], desc[keep], response[keep]
        repeated = repeated_keypoints(xy, desc)
        if len(xy) > self.budget:
            # Keypoints off repeated patterns first, strongest first: high-contrast text would
            # otherwise take most of a smooth photo's budget and leave it matchable by its caption.
            keep = np.sort(np.lexsort((-response, repeated))[: self.budget])
            xy, desc, repeated = xy[keep], desc[keep], repeated[keep]
        return Features(xy, desc, repeated)


# Squared RootSIFT distance under which two keypoints of one image look alike: a bit looser than
# the distance at which a query accepts a match (0.4² = 0.16), so what could match twice is caught.
TWIN_DIST2 = 0.2
# A keypoint also belongs to a repeated pattern when this many of its nearest neighbours in the
# image do: a glyph that occurs once sits among repeated glyphs of the same line of text.
PATTERN_NEIGHBOURS, PATTERN_MIN_REPEATED = 6, 3


def repeated_keypoints(xy: np.ndarray, descriptors: np.ndarray) -> np.ndarray:
    """Keypoints on a repeated pattern of their own image: text, UI chrome, tiles, spots.

    Letters recur within a caption, so the keypoints of a text have near-twins in the same
    image, and so do its few unique glyphs' neighbours. Such keypoints can match another
    image that carries the same text without the two images being copies; the query uses
    these flags to refuse matches that rest on them alone (see ``query``).
    """
    n = len(xy)
    if n < 2:
        return np.zeros(n, bool)
    r = rootsift(descriptors)
    similarity = r @ r.T  # unit vectors: squared distance = 2 - 2 * similarity
    np.fill_diagonal(similarity, -np.inf)
    twin = similarity.max(axis=1) > 1.0 - TWIN_DIST2 / 2
    k = min(PATTERN_NEIGHBOURS, n - 1)
    enough = min(PATTERN_MIN_REPEATED, k)
    if twin.sum() < enough:  # no keypoint can have enough repeated neighbours (most photos)
        return twin
    rows = np.flatnonzero(~twin)  # the twins are flagged already
    x, y = xy[:, 0], xy[:, 1]
    space = (x[rows, None] - x) ** 2 + (y[rows, None] - y) ** 2  # squared: same order, cheaper
    space[np.arange(len(rows)), rows] = np.inf
    near = np.argpartition(space, k - 1, axis=1)[:, :k]
    flags = twin.copy()
    flags[rows] = twin[near].sum(axis=1) >= enough
    return flags


def _mirror_permutation() -> np.ndarray:
    # A descriptor is a 4x4 grid of 8-bin orientation histograms in the keypoint's frame.
    # Mirroring the image flips the grid's rows and reverses the orientation bins
    # (checked against SIFT run on the mirrored image: identical descriptors).
    grid = np.arange(128).reshape(4, 4, 8)
    return grid[::-1][:, :, (-np.arange(8)) % 8].reshape(-1)


MIRROR = _mirror_permutation()


def mirror(descriptors: np.ndarray) -> np.ndarray:
    """Descriptors of the same keypoints in the horizontally mirrored image."""
    return descriptors[:, MIRROR]


def rootsift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root; unit L2 norm, float32."""
    d = descriptors.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-6)
    return np.sqrt(d, out=d)
