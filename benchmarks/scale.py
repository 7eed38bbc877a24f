#!/usr/bin/env python3
"""How pimmi's cost grows with the corpus: per-stage time per image, peak memory, index size.

    python benchmarks/scale.py [--sizes 1000,10000] [--threads 2] [--work /tmp/pimmi-scale] [--preset fast]

Each corpus is a Copydays-style benchmark (150 originals x 8 copies, ../shared/bench) topped
up with procedural distractors (``--synthetic``) to the size asked. 100000 images take about
an hour on 2 cores: run it by hand (``--sizes 1000,10000,100000``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_bench, print_table, score, timed, write_csv  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=202)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pimmi-scale"))
    ap.add_argument("--preset", help="run pimmi with this preset (pimmi --preset NAME)")
    a = ap.parse_args()
    exe = str(Path(sys.executable).parent / "pimmi")
    rows = []
    for n in (int(x) for x in a.sizes.split(",")):
        originals = min(150, max(10, n // 10))
        base = originals * 9 + min(150, n // 10)
        extra = [
            "--originals",
            str(originals),
            "--copies",
            "8",
            "--distractors",
            str(min(150, n // 10)),
            "--montages",
            "0",
            "--no-text",
            "--synthetic",
            str(max(0, n - base)),
        ]
        bench = make_bench(a.work / f"bench-{n}", a.seed, *extra)
        ws = a.work / f"ws-{n}"
        opts = [exe, "--nb-threads", str(a.threads), "--silent", *(["--preset", a.preset] if a.preset else [])]
        log = a.work / "log.txt"
        fill = timed([*opts, "fill", str(bench / "images"), str(ws), "--erase"], log)
        query = timed([*opts, "query", str(bench / "images"), str(ws), "-o", str(a.work / f"q-{n}.csv")], log)
        clusters = a.work / f"c-{n}.csv"
        clus = timed([*opts, "clusters", str(ws), "-o", str(clusters)], log)
        s = score(bench / "truth.csv", clusters)
        size = sum(p.stat().st_size for p in ws.glob("index-*.faiss"))
        images = s["images"]
        rows.append(
            {
                "images": images,
                "fill_ms_per_img": 1000 * fill["wall"] / images,
                "query_ms_per_img": 1000 * query["wall"] / images,
                "clusters_s": clus["wall"],
                "peak_rss_mb": max(fill["rss_mb"], query["rss_mb"], clus["rss_mb"]),
                "index_mb": size / 2**20,
                "catalogue_mb": (ws / "pimmi.sqlite").stat().st_size / 2**20,
                "copydays_f1": s["copydays_f1"],
                "pair_p": s["pair_p"],
            }
        )
        print(f"{n}: done", file=sys.stderr)
    print(f"{a.threads} workers" + (f", --preset {a.preset}" if a.preset else ""))
    print_table(rows, list(rows[0]))
    write_csv(a.work / "scale.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
