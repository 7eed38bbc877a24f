from __future__ import annotations

import numpy as np
import pytest

from pimmi.verify import binomial_cdf, one_to_one, overlap_share, rests_on_patterns, verify


def test_one_to_one_keeps_nearest_and_each_keypoint_once():
    q = np.array([0, 0, 1, 2, 2])
    r = np.array([5, 6, 5, 7, 7])
    d = np.array([0.3, 0.1, 0.2, 0.5, 0.4])
    kept = one_to_one(q, r, d)
    assert len(set(q[kept])) == len(kept) and len(set(r[kept])) == len(kept)
    assert set(kept) == {1, 2, 4}


def test_recovers_a_similarity_among_outliers():
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 500, (60, 2)).astype(np.float32)
    angle, scale = np.deg2rad(20), 0.6
    R = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    r = q @ R.T + [40, 10]
    r[30:] = rng.uniform(0, 500, (30, 2))  # half are wrong
    v = verify(q, r.astype(np.float32), 4.0, 8)
    assert v is not None
    assert v.inliers[:30].all() and v.inliers[30:].sum() <= 2
    assert np.allclose(v.transform[:, :2], R, atol=0.01)


def test_random_correspondences_are_rejected():
    rng = np.random.default_rng(1)
    q = rng.uniform(0, 500, (80, 2)).astype(np.float32)
    r = rng.uniform(0, 500, (80, 2)).astype(np.float32)
    assert verify(q, r, 4.0, 8) is None


def test_binomial_cdf():
    assert binomial_cdf(0, 3, 0.5) == pytest.approx(0.125)
    assert binomial_cdf(1, 3, 0.5) == pytest.approx(0.5)
    assert binomial_cdf(3, 3, 0.5) == pytest.approx(1.0)
    assert binomial_cdf(2, 10, 0.0) == 1.0


def test_pattern_only_match_needs_enrichment():
    on_text = np.ones(10, bool)
    # 10 inliers all on repeated patterns, in an image where only 20 % of keypoints are: text
    assert rests_on_patterns(on_text, on_text, 0.2, 0.2, 8, 0.1)
    # the same inliers in images made of repeated spots everywhere: no evidence against them
    assert not rests_on_patterns(on_text, on_text, 1.0, 1.0, 8, 0.1)
    # enough inliers off patterns: a copy, whatever the rest
    mixed = np.r_[np.zeros(8, bool), np.ones(10, bool)]
    assert not rests_on_patterns(mixed, mixed, 0.2, 0.2, 8, 0.1)
    assert not rests_on_patterns(on_text, on_text, 0.2, 0.2, 8, 0.0)  # test off


def test_overlap_share_tells_a_shared_band_from_a_copied_region():
    rng = np.random.default_rng(0)
    points = rng.uniform((0, 0), (400, 300), (200, 2))  # keypoints spread over a 400x300 image
    same_place = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    band = points[points[:, 1] < 30]  # a caption band at the top, same place in both images
    assert overlap_share(points, band, same_place, (400, 300)) < 0.15
    # a crop: the other image is the left half, blown up 2x; the inliers spread over that half
    crop = np.array([[2.0, 0, 0], [0, 2.0, 0]])
    half = points[(points[:, 0] < 200) & (points[:, 1] < 150)]
    assert overlap_share(points, half[rng.permutation(len(half))[:12]], crop, (400, 300)) > 0.6
    # outside the other image, keypoints do not count: a tile of a montage holds all of its overlap
    assert overlap_share(points, half, crop, (400, 300)) == 1.0
