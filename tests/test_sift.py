from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from pimmi.demo import sample_photo
from pimmi.settings import Settings
from pimmi.sift import Extractor, mirror, rootsift


def gray(name="chelsea"):
    return np.asarray(sample_photo(name).convert("L"))


def test_mirrored_descriptors_equal_sift_on_the_mirrored_image():
    sift = cv2.SIFT_create()
    g = cv2.resize(gray(), (225, 150), interpolation=cv2.INTER_AREA)
    kp1, d1 = sift.detectAndCompute(g, None)
    kp2, d2 = sift.detectAndCompute(np.ascontiguousarray(g[:, ::-1]), None)
    xy1 = np.array([k.pt for k in kp1])
    xy2 = np.array([k.pt for k in kp2])
    xy2[:, 0] = g.shape[1] - 0.5 - xy2[:, 0]  # OpenCV's keypoint coordinates: mirrored about W/2 - 1/4
    mirrored_err, plain_err = [], []
    for i in range(len(kp1)):
        j = np.argmin(np.linalg.norm(xy2 - xy1[i], axis=1))
        if np.linalg.norm(xy2[j] - xy1[i]) < 0.05 and abs(kp1[i].size - kp2[j].size) < 0.05:
            norm = np.linalg.norm(d2[j])
            mirrored_err.append(np.linalg.norm(mirror(d1[i : i + 1])[0] - d2[j]) / norm)
            plain_err.append(np.linalg.norm(d1[i] - d2[j]) / norm)
    assert len(mirrored_err) >= 10
    # the same descriptor (a few keypoints have two orientations, and pair up with the other one)
    assert np.median(mirrored_err) < 0.01
    assert np.median(plain_err) > 0.3


def test_rootsift_unit_norm():
    d = np.random.default_rng(0).integers(0, 255, (50, 128)).astype(np.uint8)
    assert np.allclose(np.linalg.norm(rootsift(d), axis=1), 1, atol=1e-5)


def test_keypoints_in_pixels_of_the_given_image():
    g = gray("coffee")  # 600x400
    f = Extractor(Settings())(g)
    assert len(f) > 150
    assert f.xy[:, 0].max() < 600 and f.xy[:, 1].max() < 400
    assert f.xy[:, 0].max() > 500 and f.xy[:, 1].max() > 300  # the whole image, not a quarter of it


def test_keypoint_budget():
    g = gray("astronaut")
    assert 190 <= len(Extractor(Settings())(g)) <= 200  # the strongest 200
    assert len(Extractor(Settings(sift_nfeatures=50))(g)) <= 50


def test_caption_keypoints_are_repeated_photo_keypoints_mostly_not():
    from PIL import ImageDraw, ImageFont

    im = sample_photo("chelsea").resize((512, 340))
    band = 120
    canvas = Image.new("RGB", (512, 340 + band), "white")
    canvas.paste(im, (0, band))
    ImageDraw.Draw(canvas).text(
        (20, 20), "WHEN THE MEETING COULD\\nHAVE BEEN AN EMAIL", font=ImageFont.load_default(size=34), fill="black"
    )
    image = np.asarray(canvas.convert("L"))
    feats = Extractor(Settings(sift_oversample=1))(image)  # the strongest keypoints, text included
    in_caption = feats.xy[:, 1] < band
    assert in_caption.sum() >= 20 and (~in_caption).sum() >= 20
    assert feats.repeated[in_caption].mean() > 0.8
    assert feats.repeated[~in_caption].mean() < 0.4
    # Oversampling puts the repeated keypoints last: the caption gives its place to the photo.
    kept = Extractor(Settings())(image)
    assert len(kept) == len(feats)
    assert (kept.xy[:, 1] < band).sum() < in_caption.sum() / 2
    assert (kept.xy[:, 1] >= band).sum() > (~in_caption).sum() + in_caption.sum() / 3
