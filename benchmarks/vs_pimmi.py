#!/usr/bin/env python3
"""Side by side with the original PIMMI 0.4.0 on one generated benchmark: time per stage, CPU, peak memory, quality.

    python benchmarks/vs_pimmi.py [--runs 3] [--threads 2] [--work /tmp/pimmi-bench] [--presets fast]

Installs PIMMI 0.4.0 from PyPI in its own virtual environment (plus `requests`, which 0.4.0
forgets to declare), generates a 1500-image Copydays-style benchmark with ../shared/bench,
runs both tools alternately with the same number of workers, and prints the median of the
runs and the ratios. PIMMI runs twice in each round: with its defaults, and with its README's Copydays
settings (its best quality); ``--presets`` adds pimmi runs with those presets (``pimmi --preset NAME``)
to the rotation.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_bench, print_table, score, timed, write_csv  # noqa: E402

PIMMI_TUNED = ["--query-sift-knn", "1000", "--query-dist-ratio-threshold", "0.8"]


def ensure_reference(venv: Path) -> Path:
    exe = venv / "bin" / "pimmi"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "pimmi==0.4.0", "requests"], check=True)
    return exe


def run_tool(name: str, exe: str, extra: list[str], bench: Path, work: Path, threads: int, log: Path) -> dict:
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower())  # pimmi, pimmi-preset-fast, pimmi-0.4.0: a folder each
    ws = work / f"{slug}-index"
    images = str(bench / "images")
    opts = ["--nb-threads", str(threads), *extra]
    clusters = work / f"{slug}-clusters.csv"
    fill = timed([exe, *opts, "fill", images, str(ws), "--erase", "--force"], log)
    matches = str(work / f"{slug}-q.csv")
    query = timed([exe, *opts, "query", images, str(ws), "-o", matches], log)
    source = [matches] if name.startswith("PIMMI") else []  # PIMMI clusters its query CSV; pimmi, its workspace
    clus = timed([exe, *opts, "clusters", str(ws), *source, "-o", str(clusters)], log)
    s = score(bench / "truth.csv", clusters)
    return {
        "tool": name,
        "fill_s": fill["wall"],
        "query_s": query["wall"],
        "clusters_s": clus["wall"],
        "total_s": fill["wall"] + query["wall"] + clus["wall"],
        "cpu_s": fill["cpu"] + query["cpu"] + clus["cpu"],
        "peak_rss_mb": max(fill["rss_mb"], query["rss_mb"], clus["rss_mb"]),
        "copydays_f1": s["copydays_f1"],
        "pair_p": s["pair_p"],
        "pair_r": s["pair_r"],
        "copy_recall": s["copy_recall"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pimmi-bench"))
    ap.add_argument("--presets", default="", help="comma-separated pimmi presets to run as well, e.g. fast")
    ap.add_argument("--no-reference", action="store_true", help="pimmi only (while working on its speed)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    bench = make_bench(
        a.work / f"copydays-{a.seed}",
        a.seed,
        "--originals",
        "150",
        "--copies",
        "8",
        "--distractors",
        "150",
        "--montages",
        "0",
        "--no-text",
    )
    ours = str(Path(sys.executable).parent / "pimmi")
    tools = {"pimmi": (ours, ["--silent"])}
    for preset in filter(None, a.presets.split(",")):
        tools[f"pimmi --preset {preset}"] = (ours, ["--silent", "--preset", preset])
    references = {}
    if not a.no_reference:
        exe = str(ensure_reference(a.work / "pimmi-0.4.0-venv"))
        references = {"PIMMI 0.4.0 defaults": (exe, []), "PIMMI 0.4.0 Copydays settings": (exe, PIMMI_TUNED)}
    tools.update(references)
    results: dict[str, list[dict]] = {name: [] for name in tools}
    for i in range(a.runs):
        for name, (exe, extra) in tools.items() if i % 2 == 0 else reversed(tools.items()):
            r = run_tool(name, exe, extra, bench, a.work, a.threads, a.work / "log.txt")
            print(f"run {i + 1} {name}: {r['total_s']:.1f} s", file=sys.stderr)
            results[name].append(r)
    table = []
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "tool"}
        table.append({"tool": name, **med})
    ours_rows = [row for row in table if row["tool"] not in references]
    for ref in [row for row in table if row["tool"] in references]:
        for row in ours_rows:
            table.append(
                {
                    "tool": f"ratio {ref['tool']} / {row['tool']}",
                    **{k: ref[k] / row[k] for k in ("fill_s", "query_s", "total_s", "cpu_s", "peak_rss_mb")},
                }
            )
    cols = [
        "tool",
        "fill_s",
        "query_s",
        "clusters_s",
        "total_s",
        "cpu_s",
        "peak_rss_mb",
        "copydays_f1",
        "pair_p",
        "pair_r",
        "copy_recall",
    ]
    print(f"1500 images (seed {a.seed}), {a.threads} workers, median of {a.runs} alternating runs")
    print_table(table, cols)
    write_csv(a.work / "vs_pimmi.csv", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
