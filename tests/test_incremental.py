"""Living corpora: a query computes only what the workspace lacks, and files that go, move or change."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from PIL import Image

from conftest import read_csv, run
from pimmi import cli
from pimmi.fill import fill
from pimmi.index import load as load_index
from pimmi.query import QueryStats, query
from pimmi.settings import Settings
from pimmi.status import workspace_status
from pimmi.workspace import Workspace

HELD_BACK = ["astronaut/astronaut_rotate.*", "coffee/coffee_crop.*", "coins", "immunohistochemistry"]


def _partition(clusters_csv: Path) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for r in read_csv(clusters_csv):
        groups.setdefault(r["cluster_id"], set()).add(r["path"])
    return {frozenset(g) for g in groups.values()}


def _pairs(query_csv: Path) -> set[frozenset[str]]:
    return {frozenset((r["query_path"], r["result_path"])) for r in read_csv(query_csv)}


def _queried(images: Path, ws: Path) -> int:
    stats = QueryStats()
    for _ in query(images, ws, Settings(nb_threads=2), progress=False, stats=stats):
        pass
    return stats.queried


def test_query_searches_only_new_images_and_equals_a_full_run(demo_corpus, tmp_path):
    """New copies of indexed photos and new photos: only they are searched, and the matches and clusters
    are those of a workspace built from scratch on all the images."""
    everything, images = demo_corpus / "images", tmp_path / "images"
    shutil.copytree(everything, images)
    held = tmp_path / "held"
    new_copies = []
    for pattern in HELD_BACK:
        for path in images.glob(pattern):
            rel = path.relative_to(images)
            new_copies += [str(rel)] if path.is_file() else []
            (held / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, held / rel)
    ws, q1 = tmp_path / "ws", tmp_path / "q1.csv"
    assert run(["--nb-threads", "2", "fill", str(images), str(ws)]) == 0
    assert run(["--nb-threads", "2", "query", str(images), str(ws), "-o", str(q1)]) == 0
    # every match is there for both its images
    pairs = [(r["query_image_id"], r["result_image_id"]) for r in read_csv(q1)]
    assert pairs and all((b, a) in set(pairs) for a, b in pairs)

    shutil.copytree(held, images, dirs_exist_ok=True)
    new = sum(1 for p in held.rglob("*") if p.is_file())
    assert run(["--nb-threads", "2", "fill", str(images), str(ws)]) == 0
    assert workspace_status(ws)["next_query"]["search"] == new
    assert _queried(images, ws) == new  # the new images only
    q2, c2 = tmp_path / "q2.csv", tmp_path / "c2.csv"
    assert run(["--nb-threads", "2", "query", str(images), str(ws), "-o", str(q2)]) == 0  # nothing left to do
    with Workspace(ws, create=False) as w:
        stats = json.loads(
            w.db.execute("SELECT stats FROM runs WHERE command = 'query' ORDER BY id DESC").fetchone()[0]
        )
    assert stats["queried"] == 0 and stats["matches"] == len(read_csv(q2)) > 0  # recorded once the rows are out
    assert _queried(images, ws) == 0
    assert run(["clusters", str(ws), "-o", str(c2)]) == 0

    fresh, q3, c3 = tmp_path / "fresh", tmp_path / "q3.csv", tmp_path / "c3.csv"
    assert run(["--nb-threads", "2", "fill", str(images), str(fresh)]) == 0
    assert run(["--nb-threads", "2", "query", str(images), str(fresh), "-o", str(q3)]) == 0
    assert run(["clusters", str(fresh), "-o", str(c3)]) == 0
    assert _pairs(q2) == _pairs(q3)
    assert _partition(c2) == _partition(c3)
    paths = {r["query_path"] for r in read_csv(q2)}
    assert len(new_copies) == 2 and set(new_copies) <= paths  # new copies of old photos
    # --requery searches all again, to the same matches
    q4 = tmp_path / "q4.csv"
    assert run(["--nb-threads", "2", "query", str(images), str(ws), "-o", str(q4), "--requery"]) == 0
    assert _pairs(q4) == _pairs(q3)
    assert _queried(images, ws) == 0
    # other match settings: every image searched again, once
    stats = QueryStats()
    strict = Settings(nb_threads=2, query_match_nb_ransac_threshold=12)
    list(query(images, ws, strict, progress=False, stats=stats))
    assert stats.queried == len(list(images.rglob("*.*")))
    stats = QueryStats()
    list(query(images, ws, strict, progress=False, stats=stats))
    assert stats.queried == 0


def test_deleted_moved_and_changed_files(small_corpus, tmp_path, capsys):
    """A deleted file leaves the clusters (kept in the catalogue) and comes back when restored; a renamed
    one keeps its features and matches; one changed in place is extracted again, its old matches dropped."""
    images, ws = tmp_path / "images", tmp_path / "ws"
    shutil.copytree(small_corpus / "images", images)
    assert run(["--nb-threads", "2", "fill", str(images), str(ws)]) == 0
    assert run(["--nb-threads", "2", "query", str(images), str(ws), "-o", str(tmp_path / "q0.csv")]) == 0
    with Workspace(ws, create=False) as w:
        before = {r.path: r.id for r in w.images()}
    deleted = next(p for p in before if p.startswith("coffee/") and "_jpeg" in p)
    renamed = next(p for p in before if p.startswith("chelsea/") and "_flip" in p)
    changed = next(p for p in before if p.startswith("astronaut/") and "_crop" in p)
    kept = tmp_path / "kept"
    kept.write_bytes((images / deleted).read_bytes())
    (images / deleted).unlink()
    (images / renamed).rename(images / "chelsea" / "renamed.png")
    coffee = Image.open(images / "coffee" / "coffee.jpg").convert("RGB")
    coffee.rotate(90, expand=True).save(images / changed, "JPEG", quality=90)  # another photo, same name

    report = fill(images, ws, Settings(nb_threads=2), progress=False)
    assert report.extracted == 1  # the changed file only: the renamed one keeps its features
    assert (report.changes.missing, report.changes.moved, report.changes.changed) == (1, 1, 1)
    with Workspace(ws, create=False) as w:
        after = {r.path: r for r in w.images()}
        assert after["chelsea/renamed.png"].id == before[renamed] and renamed not in after
        assert after[deleted].status == "missing" and after[changed].id == before[changed]
        # the index holds the changed file's new descriptors, not its old ones
        index = load_index(w.index_path())
        assert index.ntotal == w.total_points("indexed = 1")
    assert _queried(images, ws) == 1  # the changed file
    q1, c1 = tmp_path / "q1.csv", tmp_path / "c1.csv"
    assert run(["--nb-threads", "2", "query", str(images), str(ws), "-o", str(q1)]) == 0
    assert run(["clusters", str(ws), "-o", str(c1)]) == 0
    rows = read_csv(q1)
    assert not any(deleted in (r["query_path"], r["result_path"]) for r in rows)
    assert any(r["query_path"] == "chelsea/renamed.png" for r in rows)
    partners = {r["result_path"].split("/")[0] for r in rows if r["query_path"] == changed}
    assert partners == {"coffee"}  # linked to the photo it now shows, not to its old one
    cluster_of = {r["path"]: r["cluster_id"] for r in read_csv(c1)}
    assert deleted not in cluster_of and cluster_of[changed] == cluster_of["coffee/coffee.jpg"]
    capsys.readouterr()
    assert cli.main(["status", str(ws), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"]["missing"] == 1

    shutil.copy(kept, images / deleted)  # back again, as it was
    report = fill(images, ws, Settings(nb_threads=2), progress=False)
    assert report.extracted == 0 and report.changes.restored == 1
    c2 = tmp_path / "c2.csv"
    assert run(["--nb-threads", "2", "query", str(images), str(ws), "-o", str(tmp_path / "q2.csv")]) == 0
    assert run(["clusters", str(ws), "-o", str(c2)]) == 0
    cluster_of = {r["path"]: r["cluster_id"] for r in read_csv(c2)}
    assert cluster_of[deleted] == cluster_of["coffee/coffee.jpg"]


def test_names_that_are_not_utf8_and_files_that_vanish(small_corpus, tmp_path, monkeypatch, capsys):
    """A Latin-1 name is stored as it is and shown escaped; a file gone between listing and reading is a
    reported skip; neither stops the run."""
    images, ws = tmp_path / "images", tmp_path / "ws"
    shutil.copytree(small_corpus / "images" / "coffee", images / "coffee")
    latin = os.fsdecode(b"caf\xe9 cr\xe8me.jpg")
    folder = os.fsdecode(b"\xe9t\xe9")
    Image.open(images / "coffee" / "coffee.jpg").convert("RGB").save(images / "coffee" / latin, "JPEG", quality=60)
    (images / folder).mkdir()
    Image.open(images / "coffee" / "coffee.jpg").convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        images / folder / "flip.png"
    )
    import pimmi.fill

    real = pimmi.fill.list_images
    monkeypatch.setattr(pimmi.fill, "list_images", lambda root: [*real(root), "coffee/gone.jpg"])
    capsys.readouterr()
    assert cli.main(["--nb-threads", "2", "fill", str(images), str(ws)]) == 0
    err = capsys.readouterr().err
    assert "skipped coffee/gone.jpg: cannot read file (No such file or directory)" in err
    with Workspace(ws, create=False) as w:
        status = {r.path: r.status for r in w.images()}
    assert status[f"coffee/{latin}"] == "ok" and status[f"{folder}/flip.png"] == "ok"
    q = tmp_path / "q.csv"
    assert run(["--nb-threads", "2", "query", str(images), str(ws), "-o", str(q)]) == 0
    text = q.read_text(encoding="utf-8")  # valid UTF-8, the names escaped
    rows = read_csv(q)
    shown = "coffee/caf\\xe9 cr\\xe8me.jpg"
    assert any(r["query_path"] == shown and r["result_path"] == "coffee/coffee.jpg" for r in rows)
    assert "\\xe9t\\xe9/flip.png" in text
    # the viewer shows it escaped too, and serves the image by its id
    from starlette.testclient import TestClient

    from pimmi.viewer.app import Viewer, allowed_hosts, create_app

    client = TestClient(create_app(Viewer(ws, Settings()), allowed_hosts("127.0.0.1")), base_url="http://127.0.0.1")
    image_id = next(int(r["query_image_id"]) for r in rows if r["query_path"] == shown)
    page = client.get(f"/image/{image_id}")
    assert page.status_code == 200 and "caf\\xe9 cr\\xe8me.jpg" in page.text
    assert client.get(f"/api/image/{image_id}").status_code == 200
    assert client.get("/export/clusters.csv").status_code == 200
    assert client.get(f"/original/{image_id}").status_code == 200
