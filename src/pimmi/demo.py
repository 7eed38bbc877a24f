"""A demo corpus: scikit-image's sample photos and generated copies of them, with the truth.

    python -m pimmi.demo build DIR    # writes DIR/images/ and DIR/truth.csv
    python -m pimmi.demo report DIR   # prints DIR/clusters.csv and scores it against the truth

The same builder makes the test suite's corpora.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

ORIGINALS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field", "coins", "immunohistochemistry"]
DISTRACTORS = ["moon", "retina", "cell", "clock", "text"]


def sample_photo(name: str) -> Image.Image:
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    return Image.fromarray(a).convert("RGB")


# -- copies: each takes an image and a seeded generator
def jpeg_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    import io

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=rng.choice([10, 15, 20]))
    return Image.open(buf).convert("RGB")


def crop_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    w, h = im.size
    keep = rng.uniform(0.45, 0.6)
    cw, ch = int(w * keep**0.5), int(h * keep**0.5)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch)).resize((int(cw * 1.3), int(ch * 1.3)), Image.Resampling.LANCZOS)


def scale_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    f = rng.choice([0.4, 0.5])
    return im.resize((int(im.width * f), int(im.height * f)), Image.Resampling.LANCZOS)


def rotate_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    angle = rng.choice([90, 270, 12, -15])
    return im.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC, fillcolor=(30, 30, 30))


def flip_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    return ImageOps.mirror(im)


def color_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    out = ImageOps.grayscale(im).convert("RGB") if rng.random() < 0.5 else ImageEnhance.Color(im).enhance(2.0)
    return ImageEnhance.Contrast(out).enhance(1.4)


def caption_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    band = max(40, im.height // 6)
    out = Image.new("RGB", (im.width, im.height + band), "white")
    out.paste(im, (0, band))
    font = ImageFont.load_default(size=band // 2)
    ImageDraw.Draw(out).text(
        (10, band // 5), rng.choice(["WHEN IT'S MONDAY", "THIS IS FINE", "SHARE THIS"]), font=font, fill="black"
    )
    return out


def pad_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    w, h = im.size
    W, H = int(w * 1.4), int(h * 1.6)
    out = Image.new("RGB", (W, H), tuple(rng.randint(0, 255) for _ in range(3)))
    out.paste(im, ((W - w) // 2, (H - h) // 2))
    return out


def perspective_copy(im: Image.Image, rng: random.Random) -> Image.Image:
    import cv2

    a = np.asarray(im)
    h, w = a.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    j = [rng.uniform(0, 0.1) for _ in range(8)]
    dst = np.float32(
        [[j[0] * w, j[1] * h], [w - j[2] * w, j[3] * h], [w - j[4] * w, h - j[5] * h], [j[6] * w, h - j[7] * h]]
    )
    M = cv2.getPerspectiveTransform(src, dst)
    return Image.fromarray(cv2.warpPerspective(a, M, (w, h), borderValue=(40, 40, 40)))


COPIES: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "jpeg": jpeg_copy,
    "crop": crop_copy,
    "scale": scale_copy,
    "rotate": rotate_copy,
    "flip": flip_copy,
    "color": color_copy,
    "caption": caption_copy,
    "pad": pad_copy,
    "perspective": perspective_copy,
}


@dataclass(frozen=True)
class TruthRow:
    path: str
    group: str
    kind: str  # original | copy | distractor
    transform: str


def build_corpus(
    out: str | Path,
    seed: int = 0,
    originals: list[str] | None = None,
    distractors: list[str] | None = None,
    copies: list[str] | None = None,
) -> list[TruthRow]:
    """Write originals, one copy per transform of each, and distractors under ``out``/images; return the truth."""
    rng = random.Random(seed)
    images = Path(out) / "images"
    rows = []
    for name in originals if originals is not None else ORIGINALS:
        im = sample_photo(name)
        rows.append(_save(im, images / name / f"{name}.jpg", name, "original", "none"))
        for kind in copies if copies is not None else list(COPIES):
            ext = rng.choice(["jpg", "png", "webp", "JPG"])
            rows.append(_save(COPIES[kind](im, rng), images / name / f"{name}_{kind}.{ext}", name, "copy", kind))
    for name in distractors if distractors is not None else DISTRACTORS:
        rows.append(_save(sample_photo(name), images / "other" / f"{name}.png", name, "distractor", "none"))
    with open(Path(out) / "truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "group", "kind", "transform"])
        w.writerows([r.path, r.group, r.kind, r.transform] for r in rows)
    return rows


def _save(im: Image.Image, path: Path, group: str, kind: str, transform: str) -> TruthRow:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix.lower()]
    im.save(path, fmt, **({"quality": 90} if fmt != "PNG" else {}))
    return TruthRow(path.relative_to(path.parents[1]).as_posix(), group, kind, transform)


def read_truth(path: str | Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {r["path"]: r["group"] for r in csv.DictReader(f)}


def read_clusters(path: str | Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            found[r["cluster_id"]].add(r["path"])
    return found


def report(demo_dir: str | Path) -> str:
    """The clusters, and how they compare with the truth (pairs of copies found, wrong pairs)."""
    from pimmi.evaluate import best_matching_macro_average

    truth = read_truth(Path(demo_dir) / "truth.csv")
    clusters = read_clusters(Path(demo_dir) / "clusters.csv")
    lines = []
    for cid, members in sorted(clusters.items(), key=lambda kv: int(kv[0])):
        lines.append(f"cluster {cid} ({len(members)} images): " + ", ".join(sorted(members)))
    cluster_of = {p: c for c, ms in clusters.items() for p in ms}
    paths = sorted(truth)
    together = [
        (a, b)
        for i, a in enumerate(paths)
        for b in paths[i + 1 :]
        if a in cluster_of and cluster_of[a] == cluster_of.get(b)
    ]
    true_pairs = {(a, b) for i, a in enumerate(paths) for b in paths[i + 1 :] if truth[a] == truth[b]}
    right = sum(1 for p in together if p in true_pairs)
    groups: dict[str, list[str]] = defaultdict(list)
    for p, g in truth.items():
        groups[g].append(p)
    predicted = [sorted(ms) for ms in clusters.values()] + [[p] for p in paths if p not in cluster_of]
    prec, rec, f1 = best_matching_macro_average(list(groups.values()), predicted)
    lines.append(
        f"pairs of copies found: {right} of {len(true_pairs)}; wrong pairs: {len(together) - right}; "
        f"cluster precision {prec:.3f}, recall {rec:.3f}, F1 {f1:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pimmi.demo", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["build", "report"])
    ap.add_argument("dir")
    a = ap.parse_args(argv)
    if a.action == "build":
        rows = build_corpus(a.dir)
        print(f"demo corpus: {len(rows)} images in {Path(a.dir) / 'images'}", file=sys.stderr)
    else:
        print(report(a.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
