#!/usr/bin/env python3
"""pimmi on a Dask cluster against the local pool: fill and query times, and the data moved per image.

    python benchmarks/dask.py [--workers 2] [--seed 101] [--work /tmp/pimmi-dask]

A loopback cluster on this machine (a scheduler and ``--workers`` single-thread workers, separate
processes) against the local pool of as many worker processes, on the 1500-image Copydays-style
benchmark (../shared/bench: 150 originals x 8 copies, 150 distractors). Data moved: the bytes the
loopback interface carried during the cluster's runs (the scheduler's messages included), per image.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# This file is named after the library it measures: its folder goes last, so that "dask" is the library.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
from common import make_bench, print_table, score, timed  # noqa: E402


def loopback_bytes() -> int:
    """Bytes received on the loopback interface so far (each byte sent there is received once)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, data = line.partition(":")
        if name.strip() == "lo":
            return int(data.split()[0])
    return 0


def _die_with_parent() -> None:
    """In the child: SIGTERM when this script dies, however it dies."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_cluster(work: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    dask = str(Path(sys.executable).parent / "dask")
    address = work / "scheduler.json"
    address.unlink(missing_ok=True)
    log = open(work / "cluster-log.txt", "w")
    procs = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                str(address),
                "--no-dashboard",
            ],
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    ]
    while not address.exists():
        time.sleep(0.2)
    procs += [
        subprocess.Popen(
            [
                dask,
                "worker",
                "--scheduler-file",
                str(address),
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--local-directory",
                str(work / f"worker-{i}"),
            ],
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        for i in range(workers)
    ]
    from distributed import Client

    with Client(scheduler_file=str(address)) as client:
        client.wait_for_workers(workers, timeout=120)
    return str(address), procs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pimmi-dask"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    bench = make_bench(
        a.work / f"copydays-{a.seed}",
        a.seed,
        *("--originals", "150", "--copies", "8", "--distractors", "150", "--montages", "0", "--no-text"),
    )
    images = bench / "images"
    n = sum(1 for p in images.rglob("*") if p.is_file())
    exe = str(Path(sys.executable).parent / "pimmi")
    log = a.work / "log.txt"
    rows = []
    address, procs = start_cluster(a.work, a.workers)
    try:
        for name, opts in (
            (f"local pool, {a.workers} processes", ["--nb-threads", str(a.workers)]),
            (f"Dask, {a.workers} workers x 1 thread", ["--nb-threads", str(a.workers), "--scheduler", address]),
        ):
            ws = a.work / f"ws-{len(rows)}"
            shutil.rmtree(ws, ignore_errors=True)
            before = loopback_bytes()
            fill = timed([exe, "--silent", *opts, "fill", str(images), str(ws)], log)
            query = timed([exe, "--silent", *opts, "query", str(images), str(ws), "-o", str(a.work / "q.csv")], log)
            moved = loopback_bytes() - before
            clusters = a.work / f"c-{len(rows)}.csv"
            timed([exe, "--silent", "clusters", str(ws), "-o", str(clusters)], log)
            s = score(bench / "truth.csv", clusters)
            rows.append(
                {
                    "run": name,
                    "images": n,
                    "fill_s": fill["wall"],
                    "query_s": query["wall"],
                    "total_s": fill["wall"] + query["wall"],
                    "kB_per_image": moved / n / 1024 if "--scheduler" in opts else None,
                    # the workers are no children of the command: on a cluster this is the client's own CPU
                    "client_cpu_ms_per_image": (fill["cpu"] + query["cpu"]) / n * 1000
                    if "--scheduler" in opts
                    else None,
                    "copydays_f1": s["copydays_f1"],
                    "pair_p": s["pair_p"],
                }
            )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    rows[1]["overhead"] = rows[1]["total_s"] / rows[0]["total_s"] - 1
    print_table(rows, ["run", "images", "fill_s", "query_s", "total_s", "overhead", "kB_per_image",
                       "client_cpu_ms_per_image", "copydays_f1", "pair_p"])  # fmt: skip
    (a.work / "result.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
