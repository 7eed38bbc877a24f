"""Shared helpers of the benchmark scripts: run a command while sampling its process tree's memory."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_KIT = ROOT.parent / "shared" / "bench"


def tree_usage(pid: int) -> tuple[int, dict[int, float]]:
    """Memory (bytes) of a process and all its descendants, and each one's CPU seconds so far, from /proc.

    Memory is the proportional set size (PSS): pages shared by several processes of the tree (a memory-mapped
    index read by each worker) count once in all, where summed RSS counted them once per process."""
    total, cpu, todo = 0, {}, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            total += _memory(p)
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu[p] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total, cpu


def _memory(pid: int) -> int:
    """PSS of one process in bytes (its RSS where the kernel gives no smaps_rollup)."""
    try:
        return _kib(f"/proc/{pid}/smaps_rollup", "Pss:") * 1024
    except FileNotFoundError:
        return _kib(f"/proc/{pid}/status", "VmRSS:") * 1024


def _kib(name: str, field: str) -> int:
    with open(name) as f:
        return next((int(line.split()[1]) for line in f if line.startswith(field)), 0)


def timed(cmd: list[str], log: Path | None = None) -> dict[str, float]:
    """Run ``cmd``; wall seconds, CPU seconds and peak memory (PSS, MB) of its whole process tree.

    CPU is sampled per process from /proc as well: worker processes started by a forkserver
    are not this process's children, so their time never reaches ``os.times()``.
    """
    before = os.times()
    t0 = time.perf_counter()
    out = open(log, "a") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    peak = 0
    cpu_seen: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            t = time.perf_counter()
            rss, cpu = tree_usage(proc.pid)
            peak = max(peak, rss)
            cpu_seen.update(cpu)
            # reading PSS walks the page tables (~25 ms for a process mapping a large index): sampling
            # waits ten times as long as that took, so that it costs the command under a tenth of a core
            stop.wait(max(0.05, 10 * (time.perf_counter() - t)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    stop.set()
    sampler.join()
    if log:
        out.close()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with {rc}" + (f" (see {log})" if log else ""))
    after = os.times()
    reaped = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    # The larger of the two: reaped children are exact, sampling sees the whole tree (to within 50 ms).
    cpu = max(reaped, sum(cpu_seen.values()))
    return {"wall": time.perf_counter() - t0, "cpu": cpu, "rss_mb": peak / 2**20}


def make_bench(out: Path, seed: int, *extra: str) -> Path:
    if not (out / "truth.csv").exists():
        subprocess.run(
            [
                sys.executable,
                str(BENCH_KIT / "make_copybench.py"),
                "--pool",
                str(BENCH_KIT / "pool"),
                "--out",
                str(out),
                "--seed",
                str(seed),
                *extra,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def score(truth: Path, clusters: Path) -> dict:
    js = clusters.with_suffix(".score.json")
    subprocess.run(
        [sys.executable, str(BENCH_KIT / "score.py"), str(truth), str(clusters), "--json", str(js)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return json.loads(js.read_text())


def score_provenance(truth: Path, clusters: Path, provenance: Path) -> dict:
    js = provenance.with_suffix(".score.json")
    subprocess.run(
        [sys.executable, str(BENCH_KIT / "score.py"), str(truth), str(clusters), "--provenance", str(provenance),
         "--json", str(js)],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    out = json.loads(js.read_text())
    js.unlink()
    return out


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-|-".join("-" * widths[c] for c in columns))
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def write_csv(path: Path, rows: list[dict]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
