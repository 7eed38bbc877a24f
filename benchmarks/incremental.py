#!/usr/bin/env python3
"""A living corpus: what adding images to a workspace costs, and whether its clusters are a fresh build's.

    python benchmarks/incremental.py [--images 10000] [--added 100] [--growth] [--threads 2]
                                     [--work /tmp/pimmi-incremental]

A social-media benchmark of real photos (../shared/bench: 150 originals x 8 copies, distractors,
montages, caption decoys) topped up with procedural distractors to ``--images``. ``--added`` of its
images, drawn at random (copies of indexed photos, new photos, distractors alike), are held back: the
workspace is filled and queried without them, then they are added and fill + query run again. A
workspace built from scratch on all the images is the reference for the time; for the matches, both it
and the grown workspace queried again in full (``--requery``: the same index, every image searched).

``--growth`` measures the index instead: a workspace of a tenth of the images grows tenfold in one
step, its index kept as trained on the tenth (IVF lists and quantizer), against a fresh build.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import shutil
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_bench, print_table, score, timed  # noqa: E402


def link_tree(src: Path, dst: Path, paths: list[str]) -> None:
    """``dst`` holding ``paths`` of ``src`` as hard links (no copy of the bytes)."""
    for p in paths:
        (dst / p).parent.mkdir(parents=True, exist_ok=True)
        if not (dst / p).exists():
            os.link(src / p, dst / p)


def co_clustered(clusters: Path) -> set[tuple[str, str]]:
    """The pairs of images in one cluster: two partitions compared pair by pair."""
    groups: dict[str, list[str]] = {}
    with open(clusters, newline="") as f:
        for r in csv.DictReader(f):
            groups.setdefault(r["cluster_id"], []).append(r["path"])
    return {pair for g in groups.values() for pair in itertools.combinations(sorted(g), 2)}


def pairs(query: Path) -> set[frozenset[str]]:
    with open(query, newline="") as f:
        return {frozenset((r["query_path"], r["result_path"])) for r in csv.DictReader(f)}


def searched(ws: Path) -> int:
    """Images the workspace's last query searched."""
    db = sqlite3.connect(ws / "pimmi.sqlite")
    stats = db.execute("SELECT stats FROM runs WHERE command = 'query' ORDER BY id DESC LIMIT 1").fetchone()[0]
    db.close()
    return json.loads(stats)["queried"]


def differences(a: Path, b: Path) -> str:
    """Matched pairs and co-clustered pairs only in ``a`` / only in ``b``."""
    pa, pb = pairs(a / "q.csv"), pairs(b / "q.csv")
    ca, cb = co_clustered(a / "c.csv"), co_clustered(b / "c.csv")
    return f"+{len(pa - pb)}/-{len(pb - pa)} of {len(pb)}; +{len(ca - cb)}/-{len(cb - ca)} of {len(cb)}"


def run_pimmi(opts: list[str], images: Path, ws: Path, out: Path, log: Path, fill_opts: list[str]) -> dict:
    fill = timed([*opts, "fill", str(images), str(ws), *fill_opts], log)
    query = timed([*opts, "query", str(images), str(ws), "-o", str(out / "q.csv")], log)
    timed([*opts, "clusters", str(ws), "-o", str(out / "c.csv")], log)
    return {"fill_s": fill["wall"], "query_s": query["wall"], "total_s": fill["wall"] + query["wall"]}


def scored(row: dict, truth: Path, out: Path) -> dict:
    s = score(truth, out / "c.csv")
    return row | {"F1": s.get("copydays_f1"), "pair_P": s.get("pair_p"), "copy_R": s.get("copy_recall")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--added", type=int, default=100)
    ap.add_argument("--growth", action="store_true", help="grow a tenth tenfold, index not retrained")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=331)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pimmi-incremental"))
    a = ap.parse_args()
    exe = str(Path(sys.executable).parent / "pimmi")
    opts = [exe, "--nb-threads", str(a.threads), "--silent"]
    real = 150 * 9 + 150 + 40 + 30
    bench = make_bench(
        a.work / f"bench-{a.images}",
        a.seed,
        *("--originals", "150", "--copies", "8", "--distractors", "150", "--montages", "40", "--decoys", "30"),
        *("--synthetic", str(max(0, a.images - real))),
    )
    src = bench / "images"
    every = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    rng = random.Random(a.seed)
    log = a.work / "log.txt"
    rows = []
    if a.growth:
        base = sorted(rng.sample(every, len(every) // 10))
        names = ("tenth", "grown x10, index of the tenth", "fresh build")
    else:
        held = set(rng.sample(every, a.added))
        base = [p for p in every if p not in held]
        names = ("without the new images", f"+{a.added} new images", "fresh build")
    for name in ("grow", "fresh"):
        shutil.rmtree(a.work / name, ignore_errors=True)
    grow, fresh = a.work / "grow", a.work / "fresh"
    for d in (grow, fresh):
        (d / "out-1").mkdir(parents=True)
        (d / "out-2").mkdir()
    link_tree(src, grow / "images", base)
    first = run_pimmi(opts, grow / "images", grow / "ws", grow / "out-1", log, [])
    fixed = []
    if a.growth:  # keep the tenth's index: the type it chose, never trained again
        db = sqlite3.connect(grow / "ws" / "pimmi.sqlite")
        fixed = ["--index-type", db.execute("SELECT value FROM meta WHERE key = 'index_type'").fetchone()[0]]
        db.close()
    rows.append(scored({"run": names[0], "images": len(base)} | first, bench / "truth.csv", grow / "out-1"))
    link_tree(src, grow / "images", every)
    second = run_pimmi(opts, grow / "images", grow / "ws", grow / "out-2", log, fixed)
    link_tree(src, fresh / "images", every)
    full = run_pimmi(opts, fresh / "images", fresh / "ws", fresh / "out-2", log, [])
    # the same grown workspace, every image searched again: the incremental query's own effect
    shutil.copytree(grow / "ws", grow / "ws-requery")
    (grow / "out-re").mkdir()
    timed([*opts, "query", str(grow / "images"), str(grow / "ws-requery"), "-o", str(grow / "out-re" / "q.csv"),
           "--requery"], log)  # fmt: skip
    timed([*opts, "clusters", str(grow / "ws-requery"), "-o", str(grow / "out-re" / "c.csv")], log)
    rows[0]["searched"] = len(base)
    inc = scored({"run": names[1], "images": len(every)} | second, bench / "truth.csv", grow / "out-2")
    ref = scored({"run": names[2], "images": len(every)} | full, bench / "truth.csv", fresh / "out-2")
    inc["searched"], ref["searched"] = searched(grow / "ws"), searched(fresh / "ws")
    inc["share_of_fresh"] = second["total_s"] / full["total_s"]
    inc["vs_requery"] = differences(grow / "out-2", grow / "out-re")
    inc["vs_fresh"] = differences(grow / "out-2", fresh / "out-2")
    ref["vs_requery"] = differences(fresh / "out-2", grow / "out-re")
    rows += [inc, ref]
    print_table(
        rows,
        ["run", "images", "searched", "fill_s", "query_s", "total_s", "share_of_fresh", "F1", "pair_P", "copy_R",
         "vs_requery", "vs_fresh"],
    )  # fmt: skip
    print("\nvs_requery, vs_fresh: matched pairs only here / only there, then co-clustered pairs the same way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
