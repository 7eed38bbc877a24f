"""Shared overlays: what many unrelated images carry (a TV channel's banner and logo, an app's bars, an
agency's watermark) is not a copy of anything.

Learned from the corpus as it is queried, so that it works for overlays nobody listed: a query image's
keypoints vote for the indexed images their descriptors match. A verified match's inliers that also match
many other images are a shared element; when that element is a small part of the query image (its
keypoints among those that match the same other images) and the match has too few inliers off it, the match
stands on the shared element alone, as far as this image can tell. A viral photo's copies share all of it,
and a photo pasted in a grid is all of itself: the match is refused only when both images see it so (an
image whose inliers spread over it as its keypoints do is whole in the match, whatever its votes say).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Votes:
    """A batch's accepted neighbours by query group: (query group, query keypoint, indexed image), grouped.

    A group is a query image in one orientation (``2 * position in batch + mirrored``).
    """

    group: np.ndarray
    kp: np.ndarray
    image: np.ndarray
    groups: dict[int, GroupVotes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, group: np.ndarray, kp: np.ndarray, image: np.ndarray) -> Votes:
        # Grouped only: a batch holds millions of votes (a viral image's keypoints each match hundreds of
        # copies), and a stable sort of small integers is a radix sort; each group is deduplicated apart.
        order = np.argsort(group.astype(np.int32), kind="stable")
        return cls(group[order], kp[order], image[order])

    def of_group(self, g: int) -> GroupVotes:
        """One query image's votes (in one orientation), each (keypoint, image) once, worked out once for
        all its matches."""
        if g not in self.groups:
            lo, hi = np.searchsorted(self.group, [g, g + 1])
            key = np.sort((self.kp[lo:hi].astype(np.int64) << 32) | self.image[lo:hi])
            key = key[np.diff(key, prepend=-1) != 0]
            images, slot = np.unique(key & 0xFFFFFFFF, return_inverse=True)
            self.groups[g] = GroupVotes(key >> 32, slot, images)
        return self.groups[g]


@dataclass(frozen=True)
class GroupVotes:
    kp: np.ndarray  # each vote's keypoint
    slot: np.ndarray  # each vote's image, as an index into ``images``
    images: np.ndarray  # the images voted for, sorted


WHOLE_COVER = 0.8  # cells with inliers against those expected: spread over the image (measured 0.5-0.9)


def on_shared_overlay(
    votes: Votes,
    group: int,
    query_id: int,
    result_id: int,
    inliers: np.ndarray,
    cells: Cells,
    min_images: int,
    max_share: float,
    min_inliers: int,
) -> bool:
    """Whether, seen from the query image, a verified match stands only on an element shared by at least
    ``min_images`` other images that covers less than ``max_share`` of the query's keypoints.

    The other images are those that a third of the match's inliers also match; the element is the query's
    keypoints that match a quarter of those images or more: it must hold less than ``max_share`` of them
    and lie on part of the image (copies of one photo share keypoints all over it, however few each
    copy keeps; an overlay's lie on its banner and logo). Fewer than ``min_inliers`` of the match's
    inliers may match none of the other images (a frame showing a photo under a channel's banner keeps the
    photo's, which match no other frame), and the inliers must not spread over the image as its keypoints
    do (``spread``).
    """
    if min_images <= 0 or not len(inliers) or spread(cells, inliers) >= WHOLE_COVER:
        return False
    nb_keypoints = len(cells.ids)
    votes_of = votes.of_group(group)
    on = np.zeros(nb_keypoints, bool)
    on[inliers] = True
    # Masks and counts over the group's few hundred images: np.isin on the votes cost a third of a
    # viral corpus's query.
    count = np.bincount(votes_of.slot[on[votes_of.kp]], minlength=len(votes_of.images))
    others = count * 3 >= len(inliers)
    at = np.searchsorted(votes_of.images, [result_id, query_id])
    for i, image in zip(at, (result_id, query_id)):
        if i < len(others) and votes_of.images[i] == image:
            others[i] = False
    nb_others = int(others.sum())
    if nb_others < min_images:
        return False
    per_kp = np.bincount(votes_of.kp[others[votes_of.slot]], minlength=nb_keypoints)
    element = per_kp * 4 >= nb_others
    if element.sum() >= max_share * nb_keypoints or spread(cells, np.flatnonzero(element)) >= WHOLE_COVER:
        return False  # the element is most of the image, or spread over it: the photo's own copies
    return int((per_kp[inliers] == 0).sum()) < min_inliers


GRID = 6  # cells per side of the grid spread is measured on


@dataclass(frozen=True)
class Cells:
    """An image's keypoints placed in a GRID x GRID division of their extent, and each cell's share."""

    ids: np.ndarray
    share: np.ndarray

    @classmethod
    def of(cls, xy: np.ndarray) -> Cells:
        if not len(xy):
            return cls(np.zeros(0, np.int64), np.zeros(GRID * GRID))
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        cell = np.clip(((xy - lo) / np.maximum(hi - lo, 1e-9) * GRID).astype(np.int64), 0, GRID - 1)
        ids = cell[:, 1] * GRID + cell[:, 0]
        return cls(ids, np.bincount(ids, minlength=GRID * GRID) / len(xy))


def spread(cells: Cells, inliers: np.ndarray) -> float:
    """The cells holding inliers against the number expected were the inliers drawn as the image's
    keypoints lie: ~1 for a copy of the whole image, low for a match confined to a part of it, however far
    apart its pieces (a logo and a banner)."""
    if not len(inliers) or not len(cells.ids):
        return 0.0
    expected = float((1.0 - (1.0 - cells.share) ** len(inliers)).sum())
    occupied = int(np.count_nonzero(np.bincount(cells.ids[inliers], minlength=GRID * GRID)))
    return min(1.0, occupied / expected)
