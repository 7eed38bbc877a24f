"""The same commands on a real Dask cluster: a scheduler and two workers on 127.0.0.1, separate processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faiss
import pytest
from distributed import Client

from conftest import read_csv, run
from pimmi.executor import prepare_worker
from pimmi.index import load as load_index
from pimmi.workspace import Workspace

DASK = str(Path(sys.executable).parent / "dask")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by a crash that skips the fixture's end."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-thread workers (no nanny: a killed worker stays dead), stopped by pid."""
    d = tmp_path_factory.mktemp("dask")
    address = d / "scheduler.json"
    log = open(d / "log.txt", "w")
    common = ["--no-dashboard"]
    procs = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(address), *common],
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
    ]
    deadline = time.monotonic() + 60
    while not address.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = [
        subprocess.Popen(
            [
                DASK,
                "worker",
                "--scheduler-file",
                str(address),
                "--nthreads",
                "1",
                "--no-nanny",
                "--host",
                "127.0.0.1",
                "--name",
                f"w{i}",
                "--local-directory",
                str(d / f"w{i}"),
                *common,
            ],
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        for i in range(2)
    ]
    procs += workers
    client = Client(scheduler_file=str(address), set_as_default=False)
    client.wait_for_workers(2, timeout=120)
    try:
        yield {"address": str(address), "workers": workers, "client": client, "log": d / "log.txt"}
    finally:
        client.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def _pipeline(images: Path, ws: Path, out: Path, *options: str) -> tuple[list, set]:
    assert run([*options, "fill", str(images), str(ws)]) == 0
    assert run([*options, "query", str(images), str(ws), "-o", str(out / "q.csv")]) == 0
    assert run(["clusters", str(ws), "-o", str(out / "c.csv")]) == 0
    return _matches(out), _clusters(out)


def _matches(out: Path) -> list:
    return sorted((r["query_path"], r["result_path"], r["nb_match_ransac"]) for r in read_csv(out / "q.csv"))


def _clusters(out: Path) -> set:
    groups: dict[str, set[str]] = {}
    for r in read_csv(out / "c.csv"):
        groups.setdefault(r["cluster_id"], set()).add(r["path"])
    return {frozenset(g) for g in groups.values()}


def _lists(ws: Path) -> list[tuple[bytes, bytes]]:
    """Each inverted list's ids and codes."""
    with Workspace(ws, create=False) as w:
        index = load_index(w.index_path())
    ivf = faiss.extract_index_ivf(index)  # a view: ``index`` must outlive it
    out = []
    for lst in range(ivf.nlist):
        n = ivf.invlists.list_size(lst)
        ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n).tobytes() if n else b""
        codes = faiss.rev_swig_ptr(ivf.invlists.get_codes(lst), n * ivf.code_size).tobytes() if n else b""
        out.append((ids, codes))
    return out


def _features(ws: Path) -> list:
    db = sqlite3.connect(ws / "pimmi.sqlite")
    rows = db.execute(
        "SELECT i.path, f.xy, f.descriptors, f.repeated FROM features f JOIN images i ON i.id = f.image_id "
        "ORDER BY i.path"
    ).fetchall()
    db.close()
    return rows


def test_a_cluster_gives_what_the_local_pool_gives(demo_corpus, cluster, tmp_path):
    images = demo_corpus / "images"
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    # an index with lists, so that the workers encode its vectors too
    ivf = ["--index-type", "IVF16,SQ8"]
    local = _pipeline(images, tmp_path / "ws-local", tmp_path / "local", "--nb-threads", "2", *ivf)
    remote = _pipeline(
        images, tmp_path / "ws-dask", tmp_path / "dask", "--scheduler", cluster["address"],
        "--dask-batch-images", "10", "--query-batch-images", "16", *ivf,
    )  # fmt: skip
    features = _features(tmp_path / "ws-local")
    assert features and features == _features(tmp_path / "ws-dask")  # byte for byte
    assert _lists(tmp_path / "ws-local") == _lists(tmp_path / "ws-dask")  # the same ids and codes, in order
    assert local[0] and remote[0] == local[0]  # the same pairs with the same inliers
    assert remote[1] == local[1]
    # both workers ran tasks
    assert set(cluster["client"].run(lambda: prepare_worker.cache_info().currsize).values()) == {1}


def test_a_worker_lost_during_a_query(demo_corpus, cluster, tmp_path):
    images = demo_corpus / "images"
    (tmp_path / "local").mkdir()
    local = _pipeline(images, tmp_path / "ws-local", tmp_path / "local", "--nb-threads", "2")
    ws, q = tmp_path / "ws", tmp_path / "q.csv"
    options = ["--silent", "--scheduler", cluster["address"], "--query-batch-images", "4", "--dask-batch-images", "4"]
    assert run([*options[1:], "fill", str(images), str(ws)]) == 0
    query = subprocess.Popen([sys.executable, "-m", "pimmi", *options, "query", str(images), str(ws), "-o", str(q)])
    db = sqlite3.connect(ws / "pimmi.sqlite", timeout=30)
    total = db.execute("SELECT COUNT(*) FROM images WHERE status = 'ok'").fetchone()[0]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the first batches stored: the query is under way
        done = db.execute("SELECT COUNT(*) FROM images WHERE queried_gen IS NOT NULL").fetchone()[0]
        if done:
            break
        time.sleep(0.05)
    db.close()
    assert 0 < done < total and query.poll() is None
    victim = cluster["workers"][0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    assert query.wait(300) == 0
    assert run(["clusters", str(ws), "-o", str(tmp_path / "c.csv")]) == 0
    assert _matches(tmp_path) == local[0]
    assert _clusters(tmp_path) == local[1]
