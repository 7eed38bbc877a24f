#!/usr/bin/env python3
"""Copydays among N distractor images: index, search cost, memory and quality as the corpus grows.

    python benchmarks/million.py --distractors 10000,100000 [--real] [--json OUT] [--work /tmp/pimmi-million]

One workspace per N holds N distractors plus a 1500-image Copydays-style benchmark of ../shared/bench
(150 originals x 8 copies, 150 distractor photos, no text); ``pimmi fill`` extracts the benchmark and builds
the index with the ``auto`` settings for that size, ``pimmi query`` searches the 1500 benchmark images
against everything, ``pimmi clusters`` and the kit's ``score.py`` score them. A workspace built for the same
N (and kind) is reused: run again, only fill, query and clusters are timed again; with ``--keep-index``, the
index too (query and clusters only: a new search on a million images' index without its 1.5 hours' build).

Distractors are synthesised by default: extracting a million images takes hours on 2 cores. Their features
are real ones, recombined: each synthetic image takes 10 keypoints from each of 20 procedural images that
pimmi extracted (``--sources``), laid at random positions, each descriptor mirrored half of the time and
blended with another (``synthesise``), so that no two distractors are copies and no descriptor occurs twice.
``--real`` makes N procedural images instead and extracts them: the two side by side at one N (``--both``)
show whether synthetic distractors cost and mislead the search as real ones do (query cost, quality, the
distance from the benchmark's keypoints to their nearest distractor keypoint).

Columns: distractors and their kind; index type and size; catalogue size; index build seconds (training,
all of it); query ms per image; peak memory of each command's process tree (the largest); Copydays F1,
pair precision, copy recall; benchmark images linked to a distractor; the median and 10th percentile of the
nearest distractor keypoint's distance (RootSIFT, squared L2) from 2000 of the originals' keypoints.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_bench, print_table, score, timed  # noqa: E402
from pimmi import index as idx  # noqa: E402
from pimmi.executor import executor_for  # noqa: E402
from pimmi.fill import add_images  # noqa: E402
from pimmi.settings import Settings  # noqa: E402
from pimmi.sift import Features, mirror, rootsift  # noqa: E402
from pimmi.workspace import Workspace  # noqa: E402

POINTS = 200  # keypoints per synthetic image, pimmi's default budget
FROM_EACH = 10  # keypoints taken from each source image
SIZE = (640, 480, 1.25)  # a synthetic image's width, height and scale (original pixels per extracted pixel)
MIX = 0.3  # a descriptor is blended with another with a weight of at most this
BATCH = 2000  # synthetic images written per transaction


def copydays(work: Path) -> Path:
    return make_bench(work / "copydays", 303, "--originals", "150", "--copies", "8", "--distractors", "150",
                      "--montages", "0", "--no-text")  # fmt: skip


def procedural(out: Path, n: int, seed: int) -> Path:
    """``n`` procedural images of the shared kit (its ``--synthetic``), in ``out/images``."""
    none = ["--originals", "0", "--copies", "0", "--distractors", "0", "--montages", "0", "--no-text"]
    return make_bench(out, seed, *none, "--synthetic", str(n)) / "images"


def extract(images: Path, ws_dir: Path, threads: int) -> float:
    """Extract ``images`` into the workspace without indexing them; seconds per image."""
    settings = Settings(nb_threads=threads)
    executor = executor_for(settings.scheduler, threads)
    try:
        with Workspace(ws_dir) as ws:
            ws.bind_feature_settings(settings.feature_settings())
            added = add_images(ws, images, settings, executor, None, True)
    finally:
        executor.close()
    return added.seconds.get("extract", 0.0) / max(1, added.extracted)


def source_pool(ws_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every descriptor of the source images (uint8, n x 128), and where each image's start."""
    with Workspace(ws_dir, create=False) as ws:
        feats = [f.descriptors for _, f in ws.iter_features("i.status = 'ok'") if len(f) >= FROM_EACH]
    starts = np.cumsum([0] + [len(d) for d in feats])
    return np.concatenate(feats), starts


def synthesise(ws_dir: Path, root: Path, n: int, pool: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    """``n`` synthetic images' features in the workspace, under the (empty) folder ``root``.

    Each keypoint's descriptor is a real one (mirrored half of the time: the descriptor of the mirrored
    patch), blended with another drawn from any source image: ``w d + (1 - w) d'``, ``w`` uniform in
    [1 - MIX, 1]. Resampling alone repeats descriptors (at 2000 distractors drawn from 300 sources, the
    nearest distractor keypoint lay 11 % farther than among real ones), noise on the bins moves them off
    the manifold of SIFT descriptors (farther still); blends stay on it (within 4 %)."""
    descriptors, starts = pool
    sizes = np.diff(starts)
    rng = np.random.default_rng(seed)
    w, h, scale = SIZE
    per = POINTS // FROM_EACH
    with Workspace(ws_dir) as ws:
        ws.bind_feature_settings(Settings().feature_settings())
        root_id = ws.root_id(root)
        for start in range(0, n, BATCH):
            names = [f"s{i:07d}.jpg" for i in range(start, min(n, start + BATCH))]
            ws.register(root_id, names)
            ids = dict(ws.db.execute(f"SELECT path, id FROM images WHERE root_id = {root_id} AND path >= ?",
                                     (names[0],)).fetchall())  # fmt: skip
            b = len(names)
            sources = np.argsort(rng.random((b, len(sizes))), axis=1)[:, :per]  # distinct source images
            picks = starts[sources][..., None] + (rng.random((b, per, FROM_EACH)) * sizes[sources][..., None]).astype(
                np.int64
            )
            d = descriptors[picks.reshape(-1)]
            flip = rng.random(len(d)) < 0.5
            d[flip] = mirror(d[flip])
            weight = rng.uniform(1 - MIX, 1, (len(d), 1)).astype(np.float32)
            d = weight * d + (1 - weight) * descriptors[rng.integers(0, len(descriptors), len(d))]
            d *= 512.0 / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)  # SIFT's own scale
            d = np.clip(np.round(d), 0, 255).astype(np.uint8).reshape(b, POINTS, 128)
            xy = rng.uniform([0, 0], [w / scale, h / scale], (b, POINTS, 2)).astype(np.float32)
            no = np.zeros(POINTS, bool)
            ws.save_features((ids[name], Features(xy[k], d[k], no), (w, h, scale)) for k, name in enumerate(names))
            print(f"  synthetic distractors: {start + b}/{n}", file=sys.stderr, end="\r")
    print(file=sys.stderr)


def nearest_distractor(ws_dir: Path, truth: Path, sample: int = 2000) -> tuple[float, float]:
    """Median and 10th percentile of the squared RootSIFT distance from ``sample`` keypoints of the benchmark's
    originals to the nearest distractor keypoint the index returns (2 lists probed, as pimmi searches)."""
    originals = {r["path"] for r in csv.DictReader(open(truth, newline="")) if r["kind"] == "original"}
    with Workspace(ws_dir, create=False) as ws:
        images = ws.images()
        bench = {r.id for r in images if "/copydays/" in r.full_path}
        chosen = [r.id for r in images if r.path in originals and r.id in bench]
        feats = ws.features(chosen)
        index = idx.load(ws.index_path())
    d = np.concatenate([f.descriptors for f in feats.values()])
    d = d[np.random.default_rng(0).choice(len(d), min(sample, len(d)), replace=False)]
    idx.set_nprobe(index, 0)
    dist, ids = idx.search(index, rootsift(d), 64)
    image_of, _ = idx.unpack_ids(ids)
    far = np.where((ids >= 0) & ~np.isin(image_of, list(bench)), dist, np.inf).min(axis=1)
    far = far[np.isfinite(far)]
    if not len(far):
        return float("nan"), float("nan")
    return float(np.median(far)), float(np.percentile(far, 10))


def run_one(work: Path, n: int, real: bool, threads: int, sources: int, index_type: str, keep_index: bool) -> dict:
    kind = "real" if real else "synthetic"
    bench = copydays(work)
    ws = work / f"ws-{kind}-{n}"
    log = work / "log.txt"
    ready = ws / "distractors.done"
    extract_ms = None
    if not ready.exists():
        shutil.rmtree(ws, ignore_errors=True)  # an interrupted build starts again
        if real:
            extract_ms = 1000 * extract(procedural(work / f"real-{n}", n, 11), ws, threads)
        else:
            src_ws = work / f"ws-sources-{sources}"
            if not (src_ws / "sources.done").exists():
                extract(procedural(work / f"sources-{sources}", sources, 7), src_ws, threads)
                (src_ws / "sources.done").write_text("")
            pool = source_pool(src_ws)
            root = work / f"synthetic-{n}"
            root.mkdir(exist_ok=True)
            synthesise(ws, root, n, pool, seed=n)
        ready.write_text(json.dumps({"extract_ms": extract_ms}))
    extract_ms = json.loads(ready.read_text()).get("extract_ms")
    exe = [str(Path(sys.executable).parent / "pimmi"), "--nb-threads", str(threads), "--silent"]
    built = ws / "index.done"  # the fill's peak memory, once an index was built to the end
    if keep_index and built.exists():
        fill = json.loads(built.read_text())
    else:
        built.unlink(missing_ok=True)
        with Workspace(ws) as w, w.transaction() as db:  # the index is built anew with the benchmark
            db.execute("DELETE FROM meta WHERE key IN ('index_file', 'index_type', 'index_built_points')")
            db.execute("UPDATE images SET indexed = 0")
            db.execute("DELETE FROM matches")
        for f in ws.glob("index-*.faiss"):
            f.unlink()
        fill = timed([*exe, "fill", str(bench / "images"), str(ws), "--index-type", index_type], log)
        built.write_text(json.dumps(fill))
    query = timed([*exe, "query", str(bench / "images"), str(ws), "--requery", "-o", str(ws / "query.csv")], log)
    clusters = ws / "clusters.csv"
    clus = timed([*exe, "clusters", str(ws), "-o", str(clusters)], log)
    s = score(bench / "truth.csv", clusters)
    with Workspace(ws, create=False) as w:
        stats = json.loads(w.db.execute("SELECT stats FROM runs WHERE command = 'fill' ORDER BY id DESC").fetchone()[0])
        index_type = w.get_meta("index_type")
        index_bytes = w.index_path().stat().st_size
    truth_paths = {r["path"] for r in csv.DictReader(open(bench / "truth.csv", newline=""))}
    linked = set()
    for r in csv.DictReader(open(ws / "query.csv", newline="")):
        if r["result_path"] not in truth_paths:
            linked.add(r["query_path"])
    median, p10 = nearest_distractor(ws, bench / "truth.csv")
    return {
        "distractors": n,
        "kind": kind,
        "index_type": index_type,
        "index_bytes": index_bytes,
        "catalogue_bytes": (ws / "pimmi.sqlite").stat().st_size,
        "train_seconds": round(stats["seconds"].get("train", 0.0), 1),
        "build_seconds": round(stats["seconds"]["index"], 1),
        "extract_ms_per_image": round(extract_ms, 2) if extract_ms else None,
        "query_ms_per_image": round(1000 * query["wall"] / 1500, 2),
        "peak_rss_mb": round(max(fill["rss_mb"], query["rss_mb"], clus["rss_mb"])),
        "copydays_f1": s["copydays_f1"],
        "pair_p": s["pair_p"],
        "copy_recall": s["copy_recall"],
        "linked_to_distractors": len(linked),
        "nn_distance_median": round(median, 4),
        "nn_distance_p10": round(p10, 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--distractors", default="10000", help="comma list of N")
    ap.add_argument("--real", action="store_true", help="procedural images extracted, instead of synthetic ones")
    ap.add_argument("--both", action="store_true", help="synthetic and real, side by side")
    ap.add_argument("--sources", type=int, default=2000, help="extracted images whose features are recombined")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--index-type", default="auto", help="a FAISS factory string for every row (like for like)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pimmi-million"))
    ap.add_argument("--json", type=Path, help="write the rows here (one object when one row)")
    ap.add_argument(
        "--keep-index", action="store_true", help="query the index an earlier run built for this N (its build figures)"
    )
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    kinds = [False, True] if a.both else [a.real]
    rows = []
    for n in (int(x) for x in a.distractors.split(",")):
        for real in kinds:
            rows.append(run_one(a.work, n, real, a.threads, a.sources, a.index_type, a.keep_index))
            print(json.dumps(rows[-1]), file=sys.stderr)  # each row as it comes: a long run may be stopped
    print_table(rows, list(rows[0]))
    if a.json:
        a.json.write_text(json.dumps(rows[0] if len(rows) == 1 else rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
