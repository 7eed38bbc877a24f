"""Shared overlays and grids: pimmi on benchmarks of TV frames, watermarks, app chrome, posters, stickers and
grids (``make_overlaybench.py``), and on the shared kit's Copydays-style and social benchmarks, under one or
more settings, in one table.

    python benchmarks/overlays.py --seeds 1,2,3 --shared \\
        --config defaults= --config "no-cover=--query-min-cover 0"

Each ``--config NAME=OPTIONS`` runs pimmi with those global options (a query-stage option reuses the
benchmark's filled workspace; an option of the ``sift`` group fills again). Columns: time per image of fill
and query; pair precision; copy recall (all copies, and those under an overlay); grid part recall (a grid's
(grid, source) links found); decoys linked (unrelated photos under a shared overlay, or the shared kit's
text decoys, put with any other image); false merges between originals' groups; Copydays F1.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import subprocess
import sys
from pathlib import Path

from common import make_bench, print_table, score, timed, write_csv

HERE = Path(__file__).resolve().parent
SHARED = {  # the shared kit's benchmarks the defaults were measured on (docs/benchmarks.md)
    "copydays-101": (101, ["--originals", "150", "--copies", "8", "--distractors", "150", "--montages", "0",
                           "--no-text"]),
    "social-41": (41, ["--originals", "150", "--copies", "8", "--distractors", "80", "--montages", "40",
                       "--decoys", "30", "--formats", "jpg,png"]),
    "social-113": (113, ["--originals", "150", "--copies", "8", "--distractors", "80", "--montages", "40",
                         "--decoys", "30", "--formats", "jpg,png"]),
    "viral-7": (7, ["--originals", "100", "--copies", "6", "--viral", "5:120", "--distractors", "100",
                    "--montages", "20", "--decoys", "20"]),
}  # fmt: skip


def make_overlay_bench(out: Path, seed: int) -> Path:
    if not (out / "truth.csv").exists():
        subprocess.run(
            [sys.executable, str(HERE / "make_overlaybench.py"), "--out", str(out), "--seed", str(seed)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def overlay_recall(truth: Path, clusters: Path) -> float | None:
    """Share of copies shown under an overlay clustered with their original."""
    rows = list(csv.DictReader(open(truth, newline="")))
    if not any(r.get("overlay") for r in rows):
        return None
    member: dict[str, set[str]] = {}
    for r in csv.DictReader(open(clusters, newline="")):
        member.setdefault(r["path"].split("/images/", 1)[-1], set()).add(r["cluster_id"])
    orig = {r["group"]: r["path"] for r in rows if r["kind"] == "original"}
    copies = [r for r in rows if r["kind"] == "copy" and r.get("overlay")]
    found = sum(bool(member.get(r["path"], set()) & member.get(orig[r["group"]], set())) for r in copies)
    return found / len(copies)


def run(bench: Path, ws: Path, opts: list[str], fill_again: bool, threads: int, log: Path) -> dict:
    exe = [str(Path(sys.executable).parent / "pimmi"), "--nb-threads", str(threads), "--silent", *opts]
    fill = None
    if fill_again or not (ws / "pimmi.sqlite").exists():
        fill = timed([*exe, "fill", str(bench / "images"), str(ws), "--erase"], log)
    query = timed([*exe, "query", str(bench / "images"), str(ws), "--requery", "-o", str(ws / "query.csv")], log)
    clusters = ws / "clusters.csv"
    timed([*exe, "clusters", str(ws), "-o", str(clusters)], log)
    s = score(bench / "truth.csv", clusters)
    n = s["images"]
    return {
        "fill_ms": 1000 * fill["wall"] / n if fill else None,
        "query_ms": 1000 * query["wall"] / n,
        "pair_p": s["pair_p"],
        "copy_recall": s["copy_recall"],
        "overlay_copies": overlay_recall(bench / "truth.csv", clusters),
        "grid_recall": s.get("montage_part_recall"),
        "decoys_linked": s.get("text_decoy_fp"),
        "false_merges": s["false_merge_groups"],
        "copydays_f1": s["copydays_f1"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3", help="seeds of make_overlaybench.py")
    ap.add_argument("--shared", action="store_true", help="also the shared kit's Copydays-style and social seeds")
    ap.add_argument("--config", action="append", help="NAME=GLOBAL OPTIONS (default: defaults=)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pimmi-overlays"))
    a = ap.parse_args()
    configs = [c.split("=", 1) for c in (a.config or ["defaults="])]
    benches = [(f"overlay-{s}", make_overlay_bench(a.work / f"overlay-{s}", int(s))) for s in a.seeds.split(",") if s]
    if a.shared:
        benches += [(name, make_bench(a.work / name, seed, *extra)) for name, (seed, extra) in SHARED.items()]
    rows = []
    for name, bench in benches:
        for cname, options in configs:
            opts = shlex.split(options)
            sift = any(o.startswith("--sift") or o == "--preset" for o in opts)
            ws = a.work / f"ws-{name}" / (cname if sift else "shared")
            r = run(bench, ws, opts, fill_again=sift, threads=a.threads, log=a.work / "log.txt")
            rows.append({"benchmark": name, "config": cname, **r})
            print(f"{name} {cname}: done", file=sys.stderr)
    print_table(rows, list(rows[0]))
    write_csv(a.work / "overlays.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
