"""Generate a benchmark of shared overlays and grids, with ground truth in ``../shared/bench``'s format.

Overlays shared by many unrelated images are not copies: a TV channel's banner and corner logo, a stock
agency's watermark, a social app's interface around a photo, a poster template, a sticker. Each overlay style
is drawn the same on every image that carries it (its headline, clock or user name vary, as on real frames).
The benchmark holds, for each original: copies made by ``make_copybench.py``'s families, copies shown under an
overlay (a frame showing the photo must link to it, and to other frames showing it), and copies of families
the shared kit does not make (thumbnails of 110–160 px, a photo of a screen, a sticker over a third of the
picture, a square crop). Decoys are unrelated photos under the same overlays (kind ``text_decoy``: they must
stay alone); grids tile 6–12 originals (kind ``montage``, transform ``gridN``).

    python benchmarks/make_overlaybench.py --out /tmp/overlay-1 --seed 1

Writes ``images/`` and ``truth.csv`` (``path,group,kind,transform,sources,parent,overlay``): ``overlay`` names
the overlay style an image carries. Score with ``../shared/bench/score.py``; ``benchmarks/overlays.py`` runs
and scores several seeds.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "bench"))
import make_copybench as kit  # noqa: E402  (the shared kit: pool, copy families, writer)

WORDS = (
    "storm flood minister election strike market record summit protest fire border vaccine court match final "
    "river police budget crisis rescue heat wave talks energy rail port harvest coast alert museum festival"
).split()


def headline(rng: random.Random, n: int = 5) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).upper()


@dataclass(frozen=True)
class Style:
    """One overlay as a channel, agency or app draws it: fixed colours, marks and layout."""

    family: str  # tv | watermark | app | poster | sticker
    name: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    mark: str  # the logo's letters, the agency's or app's name
    corner: int  # 0..3: where the logo sits
    variant: int


def make_styles(rng: random.Random) -> list[Style]:
    """Overlay styles drawn at random: their colours, marks and corners change with the seed."""

    def colour() -> tuple[int, int, int]:
        return tuple(rng.randint(0, 255) for _ in range(3))  # type: ignore[return-value]

    marks = ["N24", "TV5X", "INFO+", "CH9", "RTN", "LCX", "EURO7", "M6N", "BFX", "TF9"]
    rng.shuffle(marks)
    agencies = ["PHOTOSTOCKR", "IMAGEBANK", "DEPOSITPIX", "AGENCE NORD", "PRESSWIRE", "ALAMOX"]
    rng.shuffle(agencies)
    apps = ["Instagrim", "Facepage", "Tiktak", "Snapgram"]
    rng.shuffle(apps)
    styles = [Style("tv", marks[i], colour(), colour(), marks[i], rng.randrange(4), rng.randrange(3)) for i in range(5)]
    styles += [Style("watermark", agencies[i], colour(), colour(), agencies[i], 3, i % 2) for i in range(3)]
    styles += [Style("app", apps[i], colour(), colour(), apps[i], 0, i % 2) for i in range(2)]
    styles += [Style("poster", "poster", (0, 0, 0), (255, 255, 255), "", 0, 0)]
    styles += [Style("sticker", "sticker", colour(), (255, 255, 255), rng.choice(["BREAKING", "ALERTE", "VIRAL"]),
                     rng.randrange(4), 0)]  # fmt: skip
    return styles


def fit(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return ImageOps.fit(im, size, Image.LANCZOS)


def corner_xy(corner: int, W: int, H: int, w: int, h: int, margin: int) -> tuple[int, int]:
    x = margin if corner in (0, 3) else W - w - margin
    y = margin if corner in (0, 1) else H - h - margin
    return x, y


def draw_logo(canvas: Image.Image, s: Style, box: tuple[int, int, int, int]) -> None:
    """The channel's logo: a shape in its colour with its letters, a little transparent, as broadcasters do."""
    x0, y0, x1, y1 = box
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    if s.variant == 0:
        d.ellipse(box, fill=s.colour + (220,), outline=(255, 255, 255, 230), width=3)
    elif s.variant == 1:
        d.rounded_rectangle(box, radius=(y1 - y0) // 4, fill=s.colour + (220,))
    else:
        d.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=s.colour + (220,))
        d.rectangle((x0, (y0 + 2 * y1) // 3, x1, y1), fill=s.accent + (220,))
    f = kit.font((y1 - y0) * 0.42)
    tw = d.textlength(s.mark, font=f)
    d.text(((x0 + x1 - tw) / 2, (y0 + y1) / 2 - f.size * 0.55), s.mark, font=f, fill=(255, 255, 255, 240))
    canvas.alpha_composite(layer)


def tv_frame(photo: Image.Image, s: Style, rng: random.Random) -> Image.Image:
    """A TV frame: the photo filling a 16:9 frame under the channel's lower-third banner, ticker and logo."""
    W = rng.choice([854, 960, 1280])
    H = W * 9 // 16
    canvas = fit(photo, (W, H)).convert("RGBA")
    d = ImageDraw.Draw(canvas)
    band = int(H * (0.13 + 0.03 * s.variant))
    top = H - band - int(H * 0.06)
    d.rectangle((0, top, W, top + band), fill=s.colour)
    d.rectangle((0, top, int(W * 0.22), top + band), fill=s.accent)
    fb = kit.font(band * 0.34)
    d.text((int(W * 0.02), top + band * 0.3), s.mark, font=fb, fill="white")
    d.text((int(W * 0.25), top + band * 0.12), headline(rng), font=fb, fill="white")
    d.text((int(W * 0.25), top + band * 0.56), headline(rng, 7).lower(), font=kit.font(band * 0.26), fill="white")
    d.rectangle((0, top + band, W, H), fill=(20, 20, 20))
    d.text((int(W * 0.12), top + band + 2), headline(rng, 12).lower(), font=kit.font(H * 0.04), fill="white")
    d.rectangle((0, top + band, int(W * 0.1), H), fill=s.accent)
    d.text((int(W * 0.015), top + band + 2), f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
           font=kit.font(H * 0.04), fill="white")  # fmt: skip
    side = int(H * 0.14)
    x, y = corner_xy(s.corner if s.corner < 2 else s.corner - 2, W, H, int(side * 1.6), side, int(H * 0.04))
    draw_logo(canvas, s, (x, y, x + int(side * 1.6), y + side))
    if s.variant != 1:
        d.rectangle((W - int(W * 0.12), int(H * 0.2), W - int(W * 0.03), int(H * 0.26)), fill=(200, 0, 0))
        d.text((W - int(W * 0.115), int(H * 0.205)), "LIVE", font=kit.font(H * 0.045), fill="white")
    return canvas.convert("RGB")


def watermark(photo: Image.Image, s: Style, rng: random.Random) -> Image.Image:
    """A stock agency's watermark: its name tiled across the photo at an angle, faint, and a credit line."""
    im = photo.convert("RGBA")
    W, H = im.size
    layer = Image.new("RGBA", (W * 2, H * 2), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    f = kit.font(max(W, H) / (9 if s.variant else 12))
    step_x, step_y = int(d.textlength(s.mark, font=f) * 1.3), int(f.size * 2.6)
    for row, y in enumerate(range(0, H * 2, step_y)):
        for x in range(-(row % 2) * step_x // 2, W * 2, step_x):
            d.text((x, y), s.mark, font=f, fill=(255, 255, 255, 90), stroke_width=2, stroke_fill=(0, 0, 0, 60))
    layer = layer.rotate(25 + 10 * s.variant, resample=Image.BICUBIC).crop((W // 2, H // 2, W // 2 + W, H // 2 + H))
    im.alpha_composite(layer)
    d = ImageDraw.Draw(im)
    fc = kit.font(max(14, H / 28))
    credit = f"© {s.mark} / photo {rng.randint(100000, 999999)}"
    tw = d.textlength(credit, font=fc)
    d.rectangle((W - tw - 16, H - fc.size * 1.6, W, H), fill=(0, 0, 0))
    d.text((W - tw - 8, H - fc.size * 1.4), credit, font=fc, fill="white")
    return im.convert("RGB")


def app_chrome(photo: Image.Image, s: Style, rng: random.Random) -> Image.Image:
    """A phone screenshot of a social app: status bar, header, the photo, the button row and counters."""
    W = rng.choice([720, 828, 1080])
    ph = photo.copy()
    ph = ph.resize((W, max(1, int(photo.size[1] * W / photo.size[0]))), Image.LANCZOS)
    ph = ph.crop((0, 0, W, min(ph.size[1], int(W * 1.25))))
    bar, head, foot = int(W * 0.07), int(W * 0.14), int(W * 0.42)
    H = bar + head + ph.size[1] + foot
    dark = s.variant == 1
    bg, ink = ((0, 0, 0), (245, 245, 245)) if dark else ((255, 255, 255), (15, 15, 15))
    canvas = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(canvas)
    fs = kit.font(bar * 0.55)
    d.text((W * 0.05, bar * 0.2), f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}", font=fs, fill=ink)
    for i in range(4):  # signal bars and the battery, drawn as the app's phone shows them
        d.rectangle((W * 0.72 + i * bar * 0.3, bar * (0.7 - 0.12 * i), W * 0.72 + i * bar * 0.3 + bar * 0.2, bar * 0.8),
                    fill=ink)  # fmt: skip
    d.rounded_rectangle((W * 0.86, bar * 0.25, W * 0.95, bar * 0.75), radius=4, outline=ink, width=3)
    d.rectangle((W * 0.87, bar * 0.33, W * 0.92, bar * 0.67), fill=ink)
    d.rectangle((0, bar, W, bar + head), fill=s.colour)
    d.ellipse((W * 0.03, bar + head * 0.15, W * 0.03 + head * 0.7, bar + head * 0.85), fill=s.accent)
    fh = kit.font(head * 0.32)
    d.text((W * 0.05 + head * 0.7, bar + head * 0.1), s.mark, font=fh, fill="white")
    d.text((W * 0.05 + head * 0.7, bar + head * 0.52), f"@user{rng.randint(0, 9999):04d}", font=kit.font(head * 0.24),
           fill="white")  # fmt: skip
    for i in range(3):
        d.ellipse((W * 0.85 + i * W * 0.035, bar + head * 0.45, W * 0.865 + i * W * 0.035, bar + head * 0.55),
                  fill="white")  # fmt: skip
    y = bar + head
    canvas.paste(ph, (0, y))
    y += ph.size[1]
    icon = int(foot * 0.18)
    for i, shape in enumerate(("heart", "bubble", "plane", "flag")):
        x0 = int(W * 0.04 + i * icon * 1.6) if shape != "flag" else int(W * 0.92 - icon)
        box = (x0, y + foot * 0.06, x0 + icon, y + foot * 0.06 + icon)
        if shape == "heart":
            d.ellipse((box[0], box[1], box[0] + icon * 0.55, box[1] + icon * 0.55), outline=ink, width=4)
            d.ellipse((box[0] + icon * 0.45, box[1], box[2], box[1] + icon * 0.55), outline=ink, width=4)
            d.polygon([(box[0], box[1] + icon * 0.35), (box[2], box[1] + icon * 0.35), ((box[0] + box[2]) / 2, box[3])],
                      outline=ink)  # fmt: skip
        elif shape == "bubble":
            d.ellipse(box, outline=ink, width=4)
        elif shape == "plane":
            d.polygon([(box[0], box[1]), (box[2], (box[1] + box[3]) / 2), (box[0], box[3])], outline=ink)
        else:
            d.rectangle(box, outline=ink, width=4)
    ft = kit.font(foot * 0.1)
    d.text((W * 0.04, y + foot * 0.32), f"{rng.randint(10, 99999):,} likes", font=ft, fill=ink)
    d.text((W * 0.04, y + foot * 0.47), f"@user{rng.randint(0, 9999):04d} " + headline(rng, 4).lower(), font=ft,
           fill=ink)  # fmt: skip
    d.text((W * 0.04, y + foot * 0.62), f"View all {rng.randint(2, 900)} comments", font=ft, fill=(128, 128, 128))
    d.rectangle((0, H - int(foot * 0.2), W, H), fill=s.colour)
    return canvas


def poster(photo: Image.Image, s: Style, rng: random.Random) -> Image.Image:
    """A 'demotivational' poster: the photo framed in white on black, a big title and a line under it."""
    ph = photo.copy()
    ph.thumbnail((720, 540), Image.LANCZOS)
    w, h = ph.size
    m = int(w * 0.1)
    W, H = w + 2 * m, h + int(m * 1.2) + int(w * 0.3)
    canvas = Image.new("RGB", (W, H), (0, 0, 0))
    d = ImageDraw.Draw(canvas)
    d.rectangle((m - 6, m - 6, m + w + 5, m + h + 5), outline="white", width=3)
    canvas.paste(ph, (m, m))
    ft = kit.font(w * 0.1)
    title = rng.choice(WORDS).upper()
    tw = d.textlength(title, font=ft)
    d.text(((W - tw) / 2, m + h + m * 0.4), title, font=ft, fill="white")
    fl = kit.font(w * 0.035)
    line = headline(rng, 6).capitalize()
    d.text(((W - d.textlength(line, font=fl)) / 2, m + h + m * 0.5 + ft.size * 1.3), line, font=fl, fill="white")
    return canvas


def sticker(photo: Image.Image, s: Style, rng: random.Random) -> Image.Image:
    """The same sticker pasted on the photo: a starburst with a word, as news pages and memes use."""
    im = photo.copy().convert("RGBA")
    W, H = im.size
    r = int(min(W, H) * 0.2)
    cx, cy = corner_xy(s.corner, W, H, 2 * r, 2 * r, int(r * 0.15))
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    pts = [(cx + r + (r if i % 2 == 0 else r * 0.7) * math.cos(i * math.pi / 9),
            cy + r + (r if i % 2 == 0 else r * 0.7) * math.sin(i * math.pi / 9)) for i in range(18)]  # fmt: skip
    d.polygon(pts, fill=s.colour + (255,), outline=(255, 255, 255, 255))
    f = kit.font(r * 0.36)
    tw = d.textlength(s.mark, font=f)
    d.text((cx + r - tw / 2, cy + r - f.size * 0.6), s.mark, font=f, fill=(255, 255, 255, 255),
           stroke_width=2, stroke_fill=(0, 0, 0, 255))  # fmt: skip
    im.alpha_composite(layer)
    return im.convert("RGB")


OVERLAYS = {"tv": tv_frame, "watermark": watermark, "app": app_chrome, "poster": poster, "sticker": sticker}


# -- copy families the shared kit does not make
def thumbnail(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    out = im.copy()
    side = rng.randint(110, 160)
    out.thumbnail((side, side), Image.LANCZOS)
    return kit.reencode(out, rng.choice([60, 75])), "thumb"


def screen_photo(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    """A phone photo of the picture on a screen: perspective, a colour cast, moiré from the screen's pixels."""
    out, _ = kit.t_perspective(im, rng)
    a = np.asarray(out, dtype=np.float32)
    h, w = a.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    period, angle = rng.uniform(3.0, 6.0), rng.uniform(0, math.pi)
    wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    a = a * (0.88 + 0.08 * wave[..., None]) * np.array([rng.uniform(0.85, 1.1) for _ in range(3)]) + 12
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    return kit.reencode(out, 70), "screen"


def big_sticker(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    """An emoji-like disc over a third of the picture."""
    out = im.copy()
    W, H = out.size
    r = int(math.sqrt(W * H / 3 / math.pi))
    cx, cy = rng.randint(r // 2, W - r // 2), rng.randint(r // 2, H - r // 2)
    d = ImageDraw.Draw(out)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 204, 0), outline=(0, 0, 0), width=4)
    d.ellipse((cx - r * 0.4, cy - r * 0.35, cx - r * 0.15, cy - r * 0.05), fill=(0, 0, 0))
    d.ellipse((cx + r * 0.15, cy - r * 0.35, cx + r * 0.4, cy - r * 0.05), fill=(0, 0, 0))
    d.arc((cx - r * 0.55, cy - r * 0.3, cx + r * 0.55, cy + r * 0.6), 20, 160, fill=(0, 0, 0), width=max(3, r // 12))
    return out, "bigsticker"


def square_crop(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    W, H = im.size
    side = min(W, H)
    x, y = rng.randint(0, W - side), rng.randint(0, H - side)
    return im.crop((x, y, x + side, y + side)).resize((rng.choice([320, 480, 640]),) * 2, Image.LANCZOS), "square"


NEW_FAMILIES = [thumbnail, screen_photo, big_sticker, square_crop]


def grid(photos: list[Image.Image], rng: random.Random) -> Image.Image:
    """Photos tiled in a grid (3x2 to 4x3), each cropped to its cell, as collage posts do."""
    n = len(photos)
    cols = {6: 3, 8: 4, 9: 3, 12: 4}[n]
    rows = n // cols
    cell = rng.choice([240, 300, 360])
    gap = rng.choice([0, 4, 10])
    W, H = cols * cell + (cols + 1) * gap, rows * cell + (rows + 1) * gap
    canvas = Image.new("RGB", (W, H), "white" if rng.random() < 0.5 else (30, 30, 30))
    for i, ph in enumerate(photos):
        tile = fit(ph, (cell, cell))
        canvas.paste(tile, (gap + (i % cols) * (cell + gap), gap + (i // cols) * (cell + gap)))
    return canvas


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default=str(Path(kit.__file__).parent / "pool"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--originals", type=int, default=120)
    ap.add_argument("--copies", type=int, default=3, help="copies per original by the shared kit's families")
    ap.add_argument("--overlay-copies", type=int, default=3, help="copies per original under an overlay")
    ap.add_argument("--new-copies", type=int, default=1, help="copies per original by this script's new families")
    ap.add_argument("--decoys", type=int, default=24, help="unrelated photos under each overlay style")
    ap.add_argument("--grids", type=int, default=30)
    ap.add_argument("--distractors", type=int, default=60)
    a = ap.parse_args(argv)

    rng = random.Random(a.seed)
    pool = kit.load_pool([a.pool], 200, rng)
    styles = make_styles(rng)
    n_decoys = a.decoys * len(styles)
    if len(pool) < a.originals + a.distractors + n_decoys:
        sys.exit(f"pool has {len(pool)} usable images, {a.originals + a.distractors + n_decoys} needed")
    originals = pool[: a.originals]
    distractors = pool[a.originals : a.originals + a.distractors]
    decoys = pool[a.originals + a.distractors : a.originals + a.distractors + n_decoys]
    writer = kit.Writer(a.out, rng, ["jpg"])
    ordinary = [*kit.SIMPLE, kit.t_strong]
    loaded, orig_paths = [], []
    for gi, p in enumerate(originals):
        g = f"g{gi:05d}"
        im = kit.open_rgb(p, 1024)
        loaded.append(im)
        path = writer.save(im, g, "original", "none")
        orig_paths.append(path)
        for _ in range(a.copies):
            cp, name = rng.choice(ordinary)(im, rng)
            writer.save(cp, g, "copy", name, parent=path)
        for _ in range(a.overlay_copies):
            s = rng.choice(styles)
            writer.save(OVERLAYS[s.family](im, s, rng), g, "copy", s.family, parent=path)
            writer.rows[-1]["overlay"] = s.name
        for _ in range(a.new_copies):
            cp, name = rng.choice(NEW_FAMILIES)(im, rng)
            writer.save(cp, g, "copy", name, parent=path)
    for di, p in enumerate(decoys):
        s = styles[di % len(styles)]
        writer.save(OVERLAYS[s.family](kit.open_rgb(p, 1024), s, rng), f"o{di:05d}", "text_decoy", s.family)
        writer.rows[-1]["overlay"] = s.name
    for _ in range(a.grids):
        gs = rng.sample(range(len(loaded)), rng.choice([6, 8, 9, 12]))
        writer.save(grid([loaded[g] for g in gs], rng), f"g{gs[0]:05d}", "montage", f"grid{len(gs)}",
                    sources=";".join(f"g{g:05d}" for g in gs), parent=";".join(orig_paths[g] for g in gs))  # fmt: skip
    for di, p in enumerate(distractors):
        writer.save(kit.open_rgb(p, 1024), f"d{di:05d}", "distractor", "none")
    write_truth(writer.rows, Path(a.out) / "truth.csv")
    kinds: dict[str, int] = {}
    for r in writer.rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print(
        f"wrote {len(writer.rows)} images to {a.out}/images: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    )


def write_truth(rows: list[dict], path: Path) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "group", "kind", "transform", "sources", "parent", "overlay"])
        w.writeheader()
        for r in sorted(rows, key=lambda r: r["path"]):
            w.writerow({"overlay": "", **r})


if __name__ == "__main__":
    main()
