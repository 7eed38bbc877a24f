#!/usr/bin/env python3
"""How fast the viewer answers on a large workspace: time to first byte and full load of its pages.

    python benchmarks/viewer.py [--images 100000] [--clusters 20000] [--big 500] [--work /tmp/pimmi-viewer]

The workspace is the 1500-image Copydays-style benchmark (../shared/bench), filled and queried
by pimmi, topped up to ``--images`` catalogue entries with ``--clusters`` clusters in all, one of
them of ``--big`` images. The added entries are symbolic links (inside the image folder) to the
benchmark's photos, so every thumbnail is made from a real photo; their matches are written to
the catalogue directly (a chain and random extra links per cluster, as many clusters as asked,
sizes drawn from a heavy-tailed law as in social-media corpora). Extracting 100k images would
take half an hour and measure nothing about the viewer.

Each page is fetched as a browser would (the HTML, then everything it references, 6 requests at a
time) from a real ``pimmi serve``; "cold" is with the thumbnail cache emptied first, "warm" the
median of 3 loads after it. With Chromium and chromedriver present, the big cluster's graph is also
timed in a real browser (navigation start to the graph drawn).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_bench, print_table  # noqa: E402
from pimmi.workspace import Workspace  # noqa: E402


def build(work: Path, images: int, clusters: int, big: int, seed: int) -> Path:
    bench = make_bench(work / "bench", seed, "--originals", "150", "--copies", "8", "--distractors", "150", "--no-text")
    ws = work / f"ws-{images}-{clusters}-{big}"
    if (ws / "pimmi.sqlite").exists():
        return ws
    exe = str(Path(sys.executable).parent / "pimmi")
    real = work / "ws-real"
    if not (real / "pimmi.sqlite").exists():
        subprocess.run([exe, "--nb-threads", "2", "--silent", "fill", str(bench / "images"), str(real)], check=True)
        q = [exe, "--nb-threads", "2", "--silent", "query", str(bench / "images"), str(real), "-o", "/dev/null"]
        subprocess.run(q, check=True)
    shutil.copytree(real, ws)
    with Workspace(ws) as w:
        real_clusters = len({c for c in _real_cluster_ids(w)})
        add_synthetic(w, bench / "images", images, clusters - real_clusters, big, random.Random(seed))
    return ws


def _real_cluster_ids(w: Workspace) -> list[int]:
    from pimmi.clusters import workspace_clusters
    from pimmi.settings import Settings

    return [r.cluster_id for r in workspace_clusters(w, Settings())]


def add_synthetic(w: Workspace, image_dir: Path, total: int, clusters: int, big: int, rng: random.Random) -> None:
    """Catalogue entries up to ``total`` images, grouped into ``clusters`` clusters (one of ``big`` images)."""
    real = w.images("i.status = 'ok'")
    root = w.root_id(image_dir)
    todo = total - w.count()
    folder = image_dir / "synthetic"
    folder.mkdir(exist_ok=True)
    rows = []
    for k in range(todo):
        src = real[k % len(real)]
        name = f"synthetic/{k:06d}{Path(src.path).suffix}"
        link = image_dir / name
        if not link.is_symlink():
            link.symlink_to(Path(src.full_path))
        rows.append((root, name, src.width, src.height, src.scale, src.nb_points))
    with w.transaction() as db:
        db.executemany(
            "INSERT OR IGNORE INTO images (root_id, path, width, height, scale, nb_points, status, indexed) "
            "VALUES (?, ?, ?, ?, ?, ?, 'ok', 1)",
            rows,
        )
    ids = [r.id for r in w.images("i.path LIKE 'synthetic/%'")]
    sizes = [big] + [min(200, 2 + int(rng.paretovariate(1.6))) for _ in range(clusters - 1)]
    clustered = min(len(ids), int(0.6 * len(ids)))
    while sum(sizes) > clustered:  # shrink the tail until the clusters fit 60 % of the images
        i = rng.randrange(1, len(sizes))
        sizes[i] = max(2, sizes[i] - 1)
        if sum(sizes) > clustered and all(s == 2 for s in sizes[1:]):
            break
    rng.shuffle(ids)
    links, start = [], 0
    for size in sizes:
        members = ids[start : start + size]
        start += size
        edges = {(members[i - 1], members[i]) for i in range(1, len(members))}
        for _ in range(len(members) // 2):
            a, b = rng.sample(members, 2)
            edges.add((a, b))
        links += list(edges)
    with w.transaction() as db:
        db.executemany(
            "INSERT OR IGNORE INTO matches (query_id, result_id, mirrored, nb_match_total, nb_match_ransac, "
            "ransac_ratio, query_box, result_box, transform) VALUES (?, ?, 0, ?, ?, 1.0, ?, ?, ?)",
            (
                (a, b, n, n, "[0, 0, 100, 100]", "[0, 0, 100, 100]", "[1, 0, 0, 0, 1, 0]")
                for a, b in links
                for n in [rng.randint(8, 150)]
            ),
        )


def real_pair(ws: Path) -> tuple[int, int]:
    """A match that pimmi verified (between two of the benchmark's photos), for the pair page."""
    with Workspace(ws, create=False) as w:
        return w.db.execute(
            "SELECT query_id, result_id FROM matches m JOIN images i ON i.id = m.query_id "
            "WHERE i.path NOT LIKE 'synthetic/%' ORDER BY m.nb_match_ransac DESC LIMIT 1"
        ).fetchone()


class Served:
    def __init__(self, ws: Path):
        exe = str(Path(sys.executable).parent / "pimmi")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([exe, "serve", str(ws), "--port", "0"], stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"on (http://\S+/)", line)
        if not m:
            raise RuntimeError(f"pimmi serve did not start: {line}")
        self.url = m.group(1)
        self.start_s = time.perf_counter() - t0
        self.client = httpx2.Client(timeout=120, limits=httpx2.Limits(max_connections=6))

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


def load(served: Served, path: str) -> dict[str, float]:
    """Time to first byte of the page, and until it and every image, script and style it names are in."""
    t0 = time.perf_counter()
    with served.client.stream("GET", served.url + path.lstrip("/")) as r:
        chunks = r.iter_bytes()
        first = next(chunks, b"")
        ttfb = time.perf_counter() - t0
        html = (first + b"".join(chunks)).decode()
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code}")
    refs = sorted(set(re.findall(r'(?:src|href)="(/(?:thumb|static|pair)/[^"]+\.(?:jpg|js|css))"', html)))
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda u: served.client.get(served.url + u.lstrip("/")).status_code, refs))
    if any(c != 200 for c in codes):
        raise RuntimeError(f"{path}: some references failed")
    return {"ttfb_ms": 1000 * ttfb, "full_ms": 1000 * (time.perf_counter() - t0), "requests": 1 + len(refs)}


def browser_graph_ms(served: Served, path: str) -> float | None:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        times = []
        for _ in range(3):
            d.get(served.url + path.lstrip("/"))
            WebDriverWait(d, 60).until(lambda d: d.execute_script("return !!window.pimmiGraph"))
            times.append(d.execute_script("return performance.now()"))
        return statistics.median(times)
    finally:
        d.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--clusters", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=500, help="images in the cluster whose page is timed")
    ap.add_argument("--seed", type=int, default=303)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pimmi-viewer"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    ws = build(a.work, a.images, a.clusters, a.big, a.seed)
    shutil.rmtree(ws / "thumbs", ignore_errors=True)
    served = Served(ws)
    try:
        clusters = served.client.get(served.url + "api/clusters").json()
        big = next(c for c in clusters if c["size"] == a.big)
        rep, other = real_pair(ws)
        pages = [
            ("clusters page", "/"),
            (f"cluster of {a.big} images", f"/cluster/{big['cluster_id']}"),
            ("pair page", f"/pair/{rep}/{other}"),
        ]
        rows = []
        for name, path in pages:
            cold = load(served, path)
            warm = [load(served, path) for _ in range(3)]
            rows.append(
                {
                    "page": name,
                    "requests": cold["requests"],
                    "ttfb_cold_ms": cold["ttfb_ms"],
                    "full_cold_ms": cold["full_ms"],
                    "ttfb_warm_ms": statistics.median(w["ttfb_ms"] for w in warm),
                    "full_warm_ms": statistics.median(w["full_ms"] for w in warm),
                }
            )
        t0 = time.perf_counter()
        served.client.get(served.url + "api/clusters")
        api_ms = 1000 * (time.perf_counter() - t0)
        graph_ms = browser_graph_ms(served, f"/cluster/{big['cluster_id']}")
    finally:
        served.close()
    print(
        f"{a.images} images, {len(clusters)} clusters; server start (clusters computed) {served.start_s:.1f} s; "
        f"/api/clusters (all {len(clusters)}) {api_ms:.0f} ms"
        + (f"; cluster of {a.big} in Chromium: graph drawn {graph_ms:.0f} ms after navigation" if graph_ms else "")
    )
    print_table(rows, list(rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
