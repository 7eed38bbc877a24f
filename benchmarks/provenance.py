#!/usr/bin/env python3
"""How well `pimmi provenance` finds each image's parent, and what each cue brings (all, all but one, one alone).

    python benchmarks/provenance.py [--seeds 5,6,8] [--work /tmp/pimmi-provenance] [--threads 2] [--leave-out CUE]

Each benchmark: ``make_copybench.py --originals 150 --copies 6 --distractors 100 --montages 20
--decoys 20 --chains 0.4 --posts`` (1190 images, copies of copies, the posts that published them),
filled, queried, clustered and its posts imported once (reused when run again); then provenance
with each set of cues, scored by ``score.py --provenance``. ``--leave-out CUE`` runs four sets only: all
cues, content alone (no dates), and each without CUE.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_bench, print_table, score_provenance  # noqa: E402
from pimmi.provenance import CUES, provenance  # noqa: E402
from pimmi.settings import Settings  # noqa: E402
from pimmi.workspace import Workspace  # noqa: E402

METRICS = ("root_accuracy", "parent_accuracy", "lineage_accuracy", "montage_parent_recall")


def prepare(work: Path, seed: int, threads: int) -> tuple[Path, Path, Path]:
    bench = make_bench(
        work / f"bench-{seed}", seed, "--originals", "150", "--copies", "6", "--distractors", "100", "--montages",
        "20", "--decoys", "20", "--chains", "0.4", "--posts",
    )  # fmt: skip
    ws, clusters = work / f"ws-{seed}", work / f"clusters-{seed}.csv"
    if not clusters.exists():
        exe = [str(Path(sys.executable).parent / "pimmi"), "--silent", "--nb-threads", str(threads)]
        images = str(bench / "images")
        subprocess.run([*exe, "fill", images, str(ws)], check=True)
        subprocess.run([*exe, "query", images, str(ws), "-o", str(work / f"query-{seed}.csv")], check=True)
        subprocess.run([*exe, "posts", str(ws), str(bench / "posts.csv")], check=True)
        subprocess.run([*exe, "clusters", str(ws), "-o", str(clusters)], check=True)
    return bench, ws, clusters


def run(bench: Path, ws: Path, clusters: Path, cues: tuple[str, ...], threads: int) -> dict:
    t0 = time.perf_counter()
    with Workspace(ws, create=False) as w:
        rows = provenance(w, Settings(nb_threads=threads), cues)
    seconds = time.perf_counter() - t0
    with tempfile.NamedTemporaryFile("w", suffix=".csv", newline="", delete=False) as f:
        out = csv.writer(f)
        out.writerow(["path", "parent"])
        out.writerows([r.path, r.parent] for r in rows)
    s = score_provenance(bench / "truth.csv", clusters, Path(f.name))
    Path(f.name).unlink()
    return {**{m: s[m] for m in METRICS}, "seconds": seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="5,6,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pimmi-provenance"))
    ap.add_argument("--leave-out", choices=[c for c in CUES if c != "dates"])
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    content = tuple(c for c in CUES if c != "dates")
    variants = [("all", CUES), ("content alone (no dates)", content)]
    if a.leave_out:
        variants += [(f"without {a.leave_out}", tuple(c for c in CUES if c != a.leave_out))]
        variants += [(f"content alone without {a.leave_out}", tuple(c for c in content if c != a.leave_out))]
    else:
        variants += [(f"without {c}", tuple(x for x in CUES if x != c)) for c in content]
        variants += [("dates alone", ("dates",))]
    seeds = [int(s) for s in a.seeds.split(",")]
    prepared = {s: prepare(a.work, s, a.threads) for s in seeds}
    rows = []
    for name, cues in variants:
        results = [run(*prepared[s], cues, a.threads) for s in seeds]
        row = {"cues": name}
        for m in METRICS:
            row[m] = " / ".join(f"{r[m]:.3f}" for r in results)
        row["seconds"] = " / ".join(f"{r['seconds']:.1f}" for r in results)
        rows.append(row)
        print(f"{name}: done", file=sys.stderr)
    print(f"seeds {' / '.join(map(str, seeds))}, 1190 images each")
    print_table(rows, list(rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
