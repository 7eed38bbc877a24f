"""fill: bad files never stop a run, reruns add only what is new, interrupted runs resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import copy_tree, run
from pimmi import cli
from pimmi.demo import build_corpus, sample_photo
from pimmi.fill import fill
from pimmi.query import QueryStats, query
from pimmi.settings import PRESETS, Settings
from pimmi.sift import rootsift
from pimmi.workspace import SCHEMA_VERSION, Workspace


def make_bad_files(folder: Path) -> dict[str, str]:
    """Unusable files and the reason each must be reported with."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = sample_photo("coffee")
    photo.save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is text, not a picture")
    photo.resize((8, 8)).save(folder / "tiny.png")
    return {
        "truncated.jpg": "truncated",
        "empty.jpg": "empty file",
        "notes.jpg": "not an image",
        "tiny.png": "too small",
    }


def make_odd_good_files(folder: Path) -> list[str]:
    """Unusual but usable images: all must be indexed."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = sample_photo("rocket")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    a16 = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(a16).save(folder / "deep16.png")
    photo.save(folder / "anim.gif", save_all=True, append_images=[photo.rotate(90)], duration=50)
    photo.save(folder / "Ünïcode name with spaces.JPG")
    photo.save(folder / "web.webp")
    Image.new("RGB", (12000, 9000), (90, 120, 150)).save(folder / "huge.jpg", quality=40)
    return ["cmyk.jpg", "deep16.png", "anim.gif", "Ünïcode name with spaces.JPG", "web.webp", "huge.jpg"]


def test_bad_files_are_listed_and_skipped(small_corpus, tmp_path, capsys):
    images = copy_tree(small_corpus / "images", tmp_path / "images")
    bad = make_bad_files(images / "bad")
    odd = make_odd_good_files(images / "odd")
    ws = tmp_path / "ws"
    assert run(["fill", str(images), str(ws)]) == 0
    capsys.readouterr()
    assert __import__("pimmi.cli").cli.main(["fill", str(images), str(ws)]) == 0  # rerun, not silent
    err = capsys.readouterr().err
    for name, reason in bad.items():
        line = next(ln for ln in err.splitlines() if f"bad/{name}" in ln)
        assert line.startswith("pimmi: skipped") and reason in line
    assert "0 extracted" in err  # nothing new the second time
    with Workspace(ws, create=False) as w:
        status = {r.path: r for r in w.images()}
    for name in odd:
        assert status[f"odd/{name}"].status == "ok", name
        assert status[f"odd/{name}"].nb_points > 0 or name == "huge.jpg"
    assert (status["odd/huge.jpg"].width, status["odd/huge.jpg"].height) == (12000, 9000)
    assert all(r.status in ("ok", "duplicate") for p, r in status.items() if not p.startswith("bad/"))


def test_exact_duplicates_are_not_extracted(small_corpus, tmp_path):
    images = copy_tree(small_corpus / "images", tmp_path / "images")
    (images / "again").mkdir()
    (images / "again" / "same.jpg").write_bytes((images / "coffee" / "coffee.jpg").read_bytes())
    ws = tmp_path / "ws"
    assert run(["fill", str(images), str(ws)]) == 0
    assert run(["query", str(images), str(ws), "-o", str(tmp_path / "q.csv")]) == 0
    assert run(["clusters", str(ws), "-o", str(tmp_path / "c.csv")]) == 0
    with Workspace(ws, create=False) as w:
        recs = {r.path: r for r in w.images()}
        first, dup = recs["again/same.jpg"], recs["coffee/coffee.jpg"]  # the first in path order is kept
        assert first.status == "ok" and dup.status == "duplicate" and dup.duplicate_of == first.id
        assert w.features([dup.id]) == {} and dup.nb_points == first.nb_points
    rows = {r.split(",")[0]: r.split(",")[4] for r in (tmp_path / "c.csv").read_text().splitlines()[1:]}
    assert rows["again/same.jpg"] == rows["coffee/coffee.jpg"]


def _corpus_for_interrupts(tmp_path: Path) -> Path:
    for seed in range(3):
        build_corpus(tmp_path / "c" / f"part{seed}", seed=seed)
    return tmp_path / "c"


def _snapshot(ws: Path) -> dict[str, tuple]:
    with Workspace(ws, create=False) as w:
        recs = {r.id: r for r in w.images()}
        feats = w.features(list(recs))
        ntotal = __import__("faiss").read_index(str(w.index_path())).ntotal
    return {"ntotal": ntotal, **{recs[i].path: (recs[i].status, f.descriptors.tobytes()) for i, f in feats.items()}}


# The CLI in a process that commits every 50 ms instead of every 2 s: on a fast machine the whole test
# corpus is extracted within the first 2 s, and the interrupt would come after the work, not during it.
FILL_COMMITTING_OFTEN = (
    "import sys, pimmi.fill, pimmi.cli; pimmi.fill.COMMIT_EVERY_S = 0.05; sys.exit(pimmi.cli.main())"
)


def _fill_process(images: Path, ws: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", FILL_COMMITTING_OFTEN, "--nb-threads", "1", "fill", str(images), str(ws)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal sends it: a test run started in the background of a shell (`make test &`)
        # ignores SIGINT, and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_extracted(ws: Path, proc: subprocess.Popen, n: int) -> int:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(ws / "pimmi.sqlite") as db:
                done = db.execute("SELECT COUNT(*) FROM images WHERE status = 'ok'").fetchone()[0]
            if done >= n:
                return done
        except sqlite3.OperationalError:
            pass
        time.sleep(0.02)
    raise AssertionError("fill ended before it could be interrupted")


def test_interrupted_fill_resumes_to_the_same_result(tmp_path):
    images = _corpus_for_interrupts(tmp_path)
    reference = tmp_path / "ref"
    assert run(["--nb-threads", "1", "fill", str(images), str(reference)]) == 0
    expected = _snapshot(reference)

    for sig, name in [(signal.SIGKILL, "kill"), (signal.SIGINT, "int")]:
        ws = tmp_path / name
        proc = _fill_process(images, ws)
        done = _wait_for_extracted(ws, proc, 20)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and "run the same command again to resume" in err
            assert "Traceback" not in err
        else:
            assert proc.returncode == -signal.SIGKILL
        resumed = subprocess.run(
            [sys.executable, "-m", "pimmi", "--nb-threads", "1", "fill", str(images), str(ws)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr
        extracted = int(resumed.stderr.split(" extracted")[0].split()[-1])
        assert extracted <= len(expected) - 1 - done  # what was done is not extracted again
        assert _snapshot(ws) == expected


def test_workspace_of_schema_1_gains_repeated_pattern_flags(small_corpus, tmp_path, capsys):
    ws_dir = tmp_path / "ws"
    # Schema-1 workspaces kept the strongest keypoints, with no oversampling.
    assert run(["--sift-oversample", "1", "fill", str(small_corpus), str(ws_dir)]) == 0
    with Workspace(ws_dir, create=False) as ws:
        ids = [r.id for r in ws.images() if r.status == "ok"]
        before = ws.features(ids)
    db = sqlite3.connect(ws_dir / "pimmi.sqlite")
    db.execute("ALTER TABLE features DROP COLUMN repeated")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    stored = json.loads(db.execute("SELECT value FROM meta WHERE key = 'feature_settings'").fetchone()[0])
    del stored["sift_oversample"]  # a setting schema 1 did not have
    db.execute("UPDATE meta SET value = ? WHERE key = 'feature_settings'", (json.dumps(stored),))
    db.commit()
    db.close()
    with Workspace(ws_dir, create=False) as ws:
        assert ws.get_meta("schema_version") == str(SCHEMA_VERSION)
        after = ws.features(ids)
    assert all(np.array_equal(before[i].repeated, after[i].repeated) for i in ids)
    assert any(before[i].repeated.any() for i in ids)
    # The workspace was built without oversampling: asking for oversampling is refused with a one-line
    # reason; without the option, the workspace's own value is used.
    capsys.readouterr()
    assert run(["--sift-oversample", "2", "query", str(small_corpus), str(ws_dir), "-o", str(tmp_path / "q.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sift_oversample=1.0 (now 2.0)" in err
    assert run(["query", str(small_corpus), str(ws_dir), "-o", str(tmp_path / "q.csv")]) == 0


def downgrade(ws_dir: Path, version: int, *statements: str) -> None:
    """Make a workspace look like an older schema's: ``statements``, then its version."""
    db = sqlite3.connect(ws_dir / "pimmi.sqlite")
    for statement in statements:
        db.execute(statement)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    db.commit()
    db.close()


def test_workspace_of_schema_2_gains_the_reviews_and_posts_tables(small_corpus, tmp_path):
    ws_dir = tmp_path / "ws"
    assert run(["fill", str(small_corpus), str(ws_dir)]) == 0
    downgrade(ws_dir, 2, *(f"DROP TABLE {table}" for table in ("reviews", "post_images", "posts")))
    with Workspace(ws_dir, create=False) as ws:
        assert ws.get_meta("schema_version") == str(SCHEMA_VERSION) == "6"
        ws.set_cluster_review([3, 1, 2], "checked")
        assert ws.cluster_reviews()[1][:2] == ("checked", [1, 2, 3])
        assert ws.db.execute("SELECT COUNT(*) FROM posts").fetchone() == (0,)


def test_workspace_of_schema_4_is_queried_once_in_full_then_incrementally(small_corpus, tmp_path):
    ws_dir, out = tmp_path / "ws", tmp_path / "q.csv"
    assert run(["fill", str(small_corpus), str(ws_dir)]) == 0
    assert run(["query", str(small_corpus), str(ws_dir), "-o", str(out)]) == 0
    before = out.read_text()
    columns = (("images", "indexed_gen"), ("images", "queried_gen"), ("matches", "derived"))
    downgrade(ws_dir, 4, *(f"ALTER TABLE {t} DROP COLUMN {c}" for t, c in columns), "DROP TABLE unindexed")
    with Workspace(ws_dir, create=False) as ws:
        assert ws.get_meta("schema_version") == str(SCHEMA_VERSION)
        indexed = ws.db.execute("SELECT COUNT(*) FROM images WHERE indexed_gen IS NOT NULL").fetchone()[0]
        assert indexed == ws.count("indexed = 1") > 0
        usable = ws.count("status = 'ok'")
    stats = QueryStats()
    list(query(small_corpus, ws_dir, Settings(), progress=False, stats=stats))
    assert stats.queried == usable  # none counts as queried before: all searched once
    assert run(["query", str(small_corpus), str(ws_dir), "-o", str(out)]) == 0
    assert out.read_text() == before
    stats = QueryStats()
    list(query(small_corpus, ws_dir, Settings(), progress=False, stats=stats))
    assert stats.queried == 0


def test_workspace_of_schema_5_keeps_its_matches_and_clusters_them_as_before(small_corpus, tmp_path):
    ws_dir, out = tmp_path / "ws", tmp_path / "q.csv"
    assert run(["fill", str(small_corpus), str(ws_dir)]) == 0
    assert run(["query", str(small_corpus), str(ws_dir), "-o", str(out)]) == 0
    assert run(["clusters", str(ws_dir), "-o", str(tmp_path / "before.csv")]) == 0
    downgrade(ws_dir, 5, *(f"ALTER TABLE matches DROP COLUMN {column}" for column in ("query_cells", "result_cells")))
    with Workspace(ws_dir, create=False) as ws:
        assert ws.get_meta("schema_version") == str(SCHEMA_VERSION) == "6"
        stored = ws.db.execute("SELECT COUNT(*), COUNT(query_cells) FROM matches").fetchone()
    assert stored[0] > 0 and stored[1] == 0  # where the inliers lie is unknown for matches stored before
    assert run(["clusters", str(ws_dir), "-o", str(tmp_path / "after.csv")]) == 0
    assert (tmp_path / "after.csv").read_text() == (tmp_path / "before.csv").read_text()
    assert run(["query", str(small_corpus), str(ws_dir), "--requery", "-o", str(out)]) == 0
    with Workspace(ws_dir, create=False) as ws:
        assert ws.db.execute("SELECT COUNT(*) = COUNT(query_cells) FROM matches").fetchone() == (1,)


def test_fast_preset_is_remembered_by_the_workspace_and_finds_copies(small_corpus, tmp_path):
    ws_dir, images = tmp_path / "ws", small_corpus / "images"
    assert run(["--preset", "fast", "fill", str(images), str(ws_dir)]) == 0
    with Workspace(ws_dir, create=False) as ws:
        stored = json.loads(ws.get_meta("feature_settings"))
        points = [r.nb_points for r in ws.images() if r.status == "ok"]
    assert {k: stored[k] for k in PRESETS["fast"]} == PRESETS["fast"]
    assert max(points) == PRESETS["fast"]["sift_nfeatures"]
    # neither query nor a later fill needs the preset again: the workspace's settings are the defaults
    assert run(["fill", str(images), str(ws_dir)]) == 0
    assert run(["query", str(images), str(ws_dir), "-o", str(tmp_path / "q.csv")]) == 0
    assert run(["clusters", str(ws_dir), "-o", str(tmp_path / "c.csv")]) == 0
    with open(tmp_path / "c.csv", newline="") as f:
        cluster = {row["path"]: row["cluster_id"] for row in csv.DictReader(f)}
    for name in ("astronaut", "coffee", "chelsea"):  # each photo with its jpeg, crop, flip, rotate copies
        assert len({cluster.get(f"{name}/{p.name}") for p in (images / name).iterdir()} - {None}) == 1
        assert sum(f"{name}/{p.name}" in cluster for p in (images / name).iterdir()) == 5
    assert not [p for p in cluster if p.startswith("other/")]  # the distractors joined nothing


def test_hostile_folders_give_reported_skips(small_corpus, tmp_path, capsys):
    """A FIFO named like an image, a link loop, a link to a folder, a damaged catalogue: each a reported
    skip or a one-line error, never a hang, a stop or 40 levels of the same folder."""
    import os

    images = tmp_path / "images"
    shutil.copytree(small_corpus / "images" / "coffee", images / "coffee")
    os.mkfifo(images / "coffee" / "pipe.jpg")
    (images / "loop").symlink_to(images)  # loop -> the folder itself
    (images / "again").symlink_to(images / "coffee")  # a second way into one folder
    ws = tmp_path / "ws"
    capsys.readouterr()
    assert cli.main(["--nb-threads", "2", "fill", str(images), str(ws)]) == 0
    err = capsys.readouterr().err
    assert "skipped coffee/pipe.jpg: not a regular file (a FIFO)" in err
    with Workspace(ws, create=False) as w:
        paths = [r.path for r in w.images()]
    assert not any(p.startswith(("loop/", "again/")) for p in paths)  # each real folder walked once
    assert len(paths) == len(list((small_corpus / "images" / "coffee").iterdir())) + 1
    # a catalogue that is not a database: one line saying what to do
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "pimmi.sqlite").write_bytes(b"this is not a database" * 100)
    assert cli.main(["clusters", str(damaged)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged (file is not a database)" in err[0] and "pimmi fill" in err[0]


def test_one_writer_at_a_time(small_corpus, tmp_path):
    """A second writer is refused at once (status 75, the holder named), or waits with --wait; a writer
    killed with SIGKILL leaves no lock behind; readers are never refused."""
    from pimmi.workspace import lock_holder, writer_lock

    images, ws = small_corpus / "images", tmp_path / "ws"
    assert run(["fill", str(images), str(ws)]) == 0
    pimmi = [sys.executable, "-m", "pimmi", "--silent"]
    with writer_lock(ws, "fill"):
        assert lock_holder(ws).startswith(f"pimmi fill (pid {os.getpid()}, since ")
        for argv in (
            ["fill", str(images), str(ws)],
            ["fill", "--erase", str(images), str(ws)],
            ["query", str(images), str(ws), "-o", str(tmp_path / "q.csv")],
        ):
            t0 = time.monotonic()
            done = subprocess.run([*pimmi, *argv], capture_output=True, text=True, timeout=120)
            assert done.returncode == 75, done.stderr
            assert time.monotonic() - t0 < 30  # at once, not after a time-out
            err = done.stderr.strip().splitlines()
            assert len(err) == 1 and f"is being written by pimmi fill (pid {os.getpid()}" in err[0]
        reader = subprocess.run([*pimmi, "clusters", str(ws)], capture_output=True, text=True, timeout=120)
        assert reader.returncode == 0  # readers take no lock
        waiting = subprocess.Popen([*pimmi, "fill", "--wait", str(images), str(ws)])
        time.sleep(1.0)
        assert waiting.poll() is None  # it waits for the holder
    assert waiting.wait(120) == 0  # and runs once the lock is free
    assert lock_holder(ws) is None
    with Workspace(ws, create=False) as w:
        assert w.count("status = 'ok'") > 0  # the erase never ran while the lock was held
    # a writer killed with SIGKILL: the kernel frees its lock
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pimmi.workspace import writer_lock\n"
         f"with writer_lock({str(ws)!r}, 'query'):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert lock_holder(ws).startswith(f"pimmi query (pid {holder.pid}")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert lock_holder(ws) is None
    assert run(["fill", str(images), str(ws)]) == 0


def test_status_says_what_the_workspace_holds(small_corpus, tmp_path, capsys):
    from pimmi.workspace import writer_lock

    images, ws = small_corpus / "images", tmp_path / "ws"
    (tmp_path / "bad").mkdir()
    broken = tmp_path / "bad" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    shutil.copytree(images, tmp_path / "all")
    shutil.copy(broken, tmp_path / "all" / "broken.jpg")
    assert run(["fill", str(tmp_path / "all"), str(ws)]) == 0
    capsys.readouterr()
    with writer_lock(ws, "query"):
        assert cli.main(["status", str(ws), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    listed = len(list(images.rglob("*.*")))
    assert s["images"] == {"ok": listed, "error": 1} and s["images_total"] == listed + 1
    assert s["commonest_errors"][0]["images"] == 1 and s["writer"].startswith(f"pimmi query (pid {os.getpid()}")
    assert s["index"]["images_indexed"] == listed and s["index"]["descriptors"] > 0
    assert [r["command"] for r in s["last_runs"]] == ["fill"] and s["last_runs"][0]["finished"]
    assert s["next_query"] == {"search": listed, "up_to_date": 0}
    assert cli.main(["status", str(ws)]) == 0
    text = capsys.readouterr().out
    assert f"images: {listed + 1} (1 error, {listed} ok)" in text and "writer: none" in text
    assert f"next query: {listed} images to search, 0 up to date" in text
    (ws / "pimmi.sqlite").write_bytes(b"garbage" * 1000)
    assert cli.main(["status", str(ws)]) == 1
    assert "damaged:" in capsys.readouterr().out


def test_index_training_sample_takes_a_share_of_every_sampled_image(small_corpus, tmp_path, monkeypatch):
    from pimmi import fill as fill_module

    seen = {}
    real_train = fill_module.idx.train

    def train(index, data):
        seen["data"] = data
        real_train(index, data)

    monkeypatch.setattr(fill_module.idx, "train", train)
    report = fill(small_corpus / "images", tmp_path / "ws", Settings(nb_threads=2, index_type="IVF16,SQ8"),
                  progress=False)  # fmt: skip
    data = seen["data"]
    assert len(data) == 40 * 16 and data.dtype == np.float32 and data.flags["C_CONTIGUOUS"]
    assert np.allclose(np.linalg.norm(data, axis=1), 1.0, atol=1e-3)  # RootSIFT rows
    assert report.seconds["train"] > 0
    with Workspace(tmp_path / "ws", create=False) as ws:
        feats = ws.features([r.id for r in ws.images() if r.status == "ok"])
    # Every sampled image gives its share: rows come from most images, none gives all of its points.
    owner = {}
    for image_id, f in feats.items():
        for row in rootsift(f.descriptors):
            owner[row.tobytes()] = image_id
    counts = np.bincount([owner[row.tobytes()] for row in data if row.tobytes() in owner])
    assert (counts > 0).sum() >= 0.7 * len(feats) and counts.max() < max(len(f) for f in feats.values())
