"""The viewer in process (Starlette's test client) and the static report, on the demo corpus's workspace."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from conftest import read_csv, run, truth_of
from pimmi.images import decode_rgb
from pimmi.settings import Settings
from pimmi.viewer.app import Viewer, allowed_hosts, create_app
from pimmi.workspace import Workspace


def client_for(ws: Path, **kw) -> TestClient:
    viewer = Viewer(ws, Settings(nb_threads=2), **kw)
    return TestClient(create_app(viewer, allowed_hosts("127.0.0.1")), base_url="http://127.0.0.1:8765")


@pytest.fixture(scope="module")
def client(demo_run) -> TestClient:
    return client_for(demo_run["viewed"])


@pytest.fixture()
def own_ws(demo_run, tmp_path) -> Path:
    """A copy of the demo workspace that a test may mark (same image folder)."""
    return Path(shutil.copytree(demo_run["viewed"], tmp_path / "ws"))


def ids_by_path(ws: Path) -> dict[str, int]:
    with Workspace(ws, create=False) as w:
        return {r.path: r.id for r in w.images()}


def groups_of(corpus: Path) -> dict[str, set[str]]:
    groups = defaultdict(set)
    for path, group in truth_of(corpus).items():
        groups[group].add(path)
    return groups


# -- clusters
def test_clusters_json_are_the_demo_groups(client, demo_run):
    r = client.get("/api/clusters")
    assert r.status_code == 200
    clusters = r.json()
    assert r.headers["x-total-count"] == "8"
    paths = {i: p for p, i in ids_by_path(demo_run["viewed"]).items()}
    groups = groups_of(demo_run["corpus"])
    found = [{paths[i] for i in c["images"]} for c in clusters]
    originals = [g for g in groups if len(groups[g]) > 1]
    assert sorted(map(sorted, found)) == sorted(sorted(groups[g]) for g in originals)
    for c in clusters:
        assert {"cluster_id", "size", "representative", "images", "whole", "parts"} <= set(c)
        assert c["size"] == len(c["images"]) == 10 and c["representative"] in c["images"]
    # the same partition as `pimmi clusters INDEX_DIR`
    cli_rows = read_csv(demo_run["clusters"])
    by_cluster = defaultdict(set)
    for row in cli_rows:
        by_cluster[row["cluster_id"]].add(row["path"])
    assert sorted(map(sorted, by_cluster.values())) == sorted(map(sorted, found))


def test_clusters_page_filters_sorts_and_pages(client):
    html = client.get("/").text
    assert len(re.findall(r'<li class="card" data-cluster=', html)) == 8
    assert len(re.findall(r'src="/thumb/\d+/256.jpg"', html)) == 8
    coffee = client.get("/api/clusters", params={"q": "COFFEE/"}).json()
    assert len(coffee) == 1
    members = client.get(f"/api/cluster/{coffee[0]['cluster_id']}").json()["members"]
    assert all(m["path"].startswith("coffee/") for m in members)
    assert client.get("/api/clusters", params={"min_size": 11}).json() == []
    by_quality = [c["quality"] for c in client.get("/api/clusters", params={"sort": "quality"}).json()]
    assert by_quality == sorted(by_quality, reverse=True)
    least = [c["quality"] for c in client.get("/api/clusters", params={"sort": "least_quality"}).json()]
    assert least == sorted(least)
    parts = client.get("/api/clusters", params={"kind": "parts"}).json()
    assert parts and all(c["parts"] > 0 for c in parts)
    whole = client.get("/api/clusters", params={"kind": "whole"}).json()
    assert all(c["parts"] == 0 for c in whole) and len(parts) + len(whole) == 8
    page = client.get("/api/clusters", params={"offset": 2, "limit": 3})
    assert [c["cluster_id"] for c in page.json()] == [2, 3, 4] and page.headers["x-total-count"] == "8"
    for bad in ({"sort": "colour"}, {"min_size": "x"}, {"kind": "half"}, {"page": "one"}, {"limit": "z"}):
        r = client.get("/api/clusters", params=bad)
        assert r.status_code == 400 and "error" in r.json(), bad
    assert client.get("/", params={"sort": "colour"}).status_code == 400


def test_clusters_csv_export(client):
    r = client.get("/export/clusters.csv", params={"q": "rocket"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0])[:6] == ["cluster_id", "size", "whole", "parts", "quality", "representative"]
    assert len(rows) == 1 and sorted(p.split("/")[0] for p in rows[0]["paths"].split("|")) == ["rocket"] * 10


# -- a cluster
def test_cluster_graph_has_every_member_and_match(client, demo_run):
    query = read_csv(demo_run["query"])
    for c in client.get("/api/clusters").json():
        page = client.get(f"/api/cluster/{c['cluster_id']}").json()
        members = set(c["images"])
        assert {n["id"] for n in page["nodes"]} == members
        pairs = {
            (
                min(int(r["query_image_id"]), int(r["result_image_id"])),
                max(int(r["query_image_id"]), int(r["result_image_id"])),
            )
            for r in query
            if int(r["query_image_id"]) in members and int(r["result_image_id"]) in members
        }
        assert {(e["source"], e["target"]) for e in page["edges"]} == pairs
        assert all(0 <= n["x"] <= 1000 and 0 <= n["y"] <= 1000 for n in page["nodes"])
    html = client.get("/cluster/0").text
    assert 'id="graph-data"' in html and "/static/vendor/cytoscape.min.js" in html
    assert len(re.findall(r'<li class="card" data-image=', html)) == 10


def test_cluster_exports(client):
    gexf = client.get("/cluster/0/graph.gexf")
    assert gexf.status_code == 200
    root = ElementTree.fromstring(gexf.content)
    ns = {"g": root.tag.split("}")[0].strip("{")}
    edges = client.get("/api/cluster/0").json()["edges"]
    assert len(root.findall(".//g:node", ns)) == 10 and len(root.findall(".//g:edge", ns)) == len(edges)
    graphml = client.get("/cluster/0/graph.graphml")
    assert graphml.status_code == 200 and b"<graphml" in graphml.content
    assert client.get("/cluster/0/graph.dot").status_code == 404
    z = zipfile.ZipFile(io.BytesIO(client.get("/cluster/0/images.zip").content))
    names = z.namelist()
    assert len(names) == 10 and all(n.startswith("cluster-0/") for n in names)
    Image.open(io.BytesIO(z.read(names[0]))).verify()  # the original files, readable


# -- a pair
def test_pair_page_explains_the_match(client, demo_run):
    ids = ids_by_path(demo_run["viewed"])
    flip = client.get(f"/api/pair/{ids['coffee/coffee.jpg']}/{ids['coffee/coffee_flip.png']}").json()
    assert "mirrored" in flip["words"] and "scaled ×1.00" in flip["words"]
    name = next(p for p in ids if p.startswith("chelsea/chelsea_scale"))
    scale = client.get(f"/api/pair/{ids['chelsea/chelsea.jpg']}/{ids[name]}").json()
    factor = float(re.search(r"scaled ×([\d.]+)", scale["words"]).group(1))
    assert factor in (pytest.approx(0.4, abs=0.02), pytest.approx(0.5, abs=0.02))
    crop_name = next(p for p in ids if p.startswith("astronaut/astronaut_crop"))
    crop = client.get(f"/api/pair/{ids['astronaut/astronaut.jpg']}/{ids[crop_name]}").json()
    assert "B is a crop of A" in crop["words"]
    # the lines drawn agree with the transform, and sit inside the regions
    T = np.array(crop["transform"]).reshape(2, 3)
    lines = np.array(crop["lines"])
    assert len(lines) >= 0.5 * crop["inliers"]
    err = np.linalg.norm(lines[:, :2] @ T[:, :2].T + T[:, 2] - lines[:, 2:], axis=1)
    assert np.median(err) < 4 and err.max() < 15
    x0, y0, x1, y1 = crop["region_a"]
    assert ((lines[:, 0] >= x0 - 1) & (lines[:, 0] <= x1 + 1) & (lines[:, 1] >= y0 - 1) & (lines[:, 1] <= y1 + 1)).all()
    # seen from the other side: the inverse transform, the regions swapped
    back = client.get(f"/api/pair/{ids[crop_name]}/{ids['astronaut/astronaut.jpg']}").json()
    assert back["region_a"] == crop["region_b"] and "A is a part of B" in back["words"]
    caption = client.get(f"/api/pair/{ids['astronaut/astronaut.jpg']}/{ids['astronaut/astronaut_caption.jpg']}").json()
    assert re.search(r"A is a part of B: A fills 8\d% of B", caption["words"])  # a band of 1/6 added on top
    rotated = next(p for p in ids if p.startswith("astronaut/astronaut_rotate"))
    turned = client.get(f"/api/pair/{ids['astronaut/astronaut.jpg']}/{ids[rotated]}").json()["words"]
    angle = int(re.search(r"rotated (\d+)°", turned).group(1))
    assert angle in (90, 12, 15)  # the demo rotates by 90, 270 (90 the other way), 12 or -15 degrees
    html = client.get(f"/pair/{ids['astronaut/astronaut.jpg']}/{ids[crop_name]}").text
    assert 'id="region-a"' in html and 'id="region-b"' in html and html.count("<line ") == len(lines)


def test_overlay_lines_the_copy_up_with_the_original(client, demo_run):
    ids = ids_by_path(demo_run["viewed"])
    a = ids["astronaut/astronaut.jpg"]
    original = np.asarray(decode_rgb(demo_run["corpus"] / "images/astronaut/astronaut.jpg", 1024, 10**8), np.float32)

    def difference(b: int) -> float:
        r = client.get(f"/pair/{a}/{b}/overlay.jpg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        warped = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), np.float32)
        assert warped.shape == original.shape
        inside = warped.sum(axis=2) > 30  # where B lies once warped
        return float(np.abs(warped - original)[inside].mean())

    for kind in ("flip", "rotate", "crop"):
        name = next(p for p in ids if p.startswith(f"astronaut/astronaut_{kind}"))
        assert difference(ids[name]) < 25, kind  # aligned: what differs is re-compression and resampling
    # the same image placed with a wrong transform differs far more: the test can tell aligned from not
    shifted = np.roll(original, 40, axis=1)
    assert float(np.abs(shifted - original).mean()) > 25


# -- an image
def test_image_page_lists_clusters_and_matches(client, demo_run):
    ids = ids_by_path(demo_run["viewed"])
    page = client.get(f"/api/image/{ids['coins/coins.jpg']}").json()
    partners = {r["result_path"] for r in read_csv(demo_run["query"]) if r["query_path"] == "coins/coins.jpg"}
    partners |= {r["query_path"] for r in read_csv(demo_run["query"]) if r["result_path"] == "coins/coins.jpg"}
    assert len(page["clusters"]) == 1 and {m["image"]["path"] for m in page["matches"]} == partners
    assert {m["image"]["path"].split("/")[0] for m in page["matches"]} == {"coins"}
    alone = client.get(f"/api/image/{ids['other/moon.png']}").json()
    assert alone["clusters"] == [] and alone["matches"] == []
    html = client.get(f"/image/{ids['coins/coins.jpg']}").text
    assert html.count('href="/pair/') == len(partners) and "coins/coins.jpg" in html


def test_thumbnails_are_made_once_and_cached(client, demo_run):
    ids = ids_by_path(demo_run["viewed"])
    i = ids["astronaut/astronaut_rotate.JPG"]
    r = client.get(f"/thumb/{i}/256.jpg")
    assert (
        r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and "max-age" in r.headers["cache-control"]
    )
    im = Image.open(io.BytesIO(r.content))
    assert max(im.size) == 256
    cached = demo_run["viewed"] / "thumbs" / "256" / f"{i}.jpg"
    assert cached.read_bytes() == r.content
    assert client.get(f"/thumb/{i}/1024.jpg").status_code == 200
    assert client.get(f"/thumb/{i}/300.jpg").status_code == 400


def test_decode_rgb_orients_and_converts(tmp_path):
    src = Image.new("RGB", (60, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° when shown
    src.save(tmp_path / "o.jpg", exif=exif)
    assert decode_rgb(tmp_path / "o.jpg", 1024, 10**8).size == (40, 60)
    Image.new("CMYK", (50, 50), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    red = decode_rgb(tmp_path / "c.jpg", 1024, 10**8).getpixel((25, 25))
    assert red[0] > 200 and red[1] < 60
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(tmp_path / "d.png")
    assert decode_rgb(tmp_path / "d.png", 1024, 10**8).getpixel((5, 5))[0] > 100


# -- review marks
def test_match_marked_wrong_is_cut_from_the_clusters(own_ws, demo_run):
    c = client_for(own_ws)
    ids = ids_by_path(own_ws)
    flip = ids["rocket/rocket_flip.jpg"]
    partners = [m["image"]["id"] for m in c.get(f"/api/image/{flip}").json()["matches"]]
    assert len(partners) == 9
    for other in partners:
        r = c.post("/api/review/match", json={"a": flip, "b": other, "verdict": "wrong"})
        assert r.status_code == 200
    assert all(m["review"] == "wrong" for m in c.get(f"/api/image/{flip}").json()["matches"])
    rocket = next(cl for cl in c.get("/api/clusters").json() if ids["rocket/rocket.jpg"] in cl["images"])
    assert flip not in rocket["images"] and rocket["size"] == 9
    # and `pimmi clusters` honours the marks
    out = own_ws.parent / "c.csv"
    assert run(["clusters", str(own_ws), "-o", str(out)]) == 0
    assert "rocket/rocket_flip.jpg" not in {r["path"] for r in read_csv(out)}
    # taken back: the image is in its cluster again
    for other in partners:
        assert c.post("/api/review/match", json={"a": other, "b": flip, "verdict": None}).status_code == 200
    assert run(["clusters", str(own_ws), "-o", str(out)]) == 0
    assert "rocket/rocket_flip.jpg" in {r["path"] for r in read_csv(out)}


def test_cluster_checked_mark_and_its_change(own_ws):
    c = client_for(own_ws)
    coins = next(cl for cl in c.get("/api/clusters").json() if cl["size"] == 10 and cl["cluster_id"] == 4)
    assert c.post("/api/review/cluster", json={"cluster_id": 4, "verdict": "checked"}).status_code == 200
    assert c.get("/api/clusters").json()[4]["review"] == "checked"
    assert c.get("/api/clusters", params={"reviewed": "checked"}).headers["x-total-count"] == "1"
    assert "checked" in c.get("/cluster/4").text
    # one of its images leaves the cluster: the mark says it was checked with other members
    last = max(coins["images"])
    for m in c.get(f"/api/image/{last}").json()["matches"]:
        assert c.post("/api/review/match", json={"a": last, "b": m["image"]["id"], "verdict": "wrong"}).is_success
    after = next(cl for cl in c.get("/api/clusters").json() if min(coins["images"]) in cl["images"])
    assert after["review"] == "changed" and last not in after["images"]


def test_review_requests_are_checked(own_ws):
    c = client_for(own_ws)
    assert (
        c.post(
            "/api/review/match",
            content=b"a=1&b=2&verdict=wrong",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ).status_code
        == 415
    )
    r = c.post(
        "/api/review/match", json={"a": 1, "b": 2, "verdict": "wrong"}, headers={"origin": "http://evil.example"}
    )
    assert r.status_code == 403
    assert c.post("/api/review/match", json={"a": "1", "b": 2, "verdict": "wrong"}).status_code == 400
    assert c.post("/api/review/match", json={"a": 1, "b": 2, "verdict": "maybe"}).status_code == 400
    assert c.post("/api/review/match", json={"a": 1, "b": 85, "verdict": "wrong"}).status_code == 404
    assert c.post("/api/review/cluster", json={"cluster_id": 99, "verdict": "checked"}).status_code == 404
    assert (
        c.post("/api/review/match", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert c.get("/api/review/match").status_code == 405
    with Workspace(own_ws, create=False) as ws:
        assert ws.match_reviews() == {}


# -- what is served, and to whom
def test_unknown_and_malformed_ids(client):
    for url in (
        "/cluster/99",
        "/api/cluster/99",
        "/image/999",
        "/api/image/999",
        "/thumb/999/256.jpg",
        "/original/999",
        "/pair/1/999",
        "/api/pair/1/80",
        "/pair/1/80/overlay.jpg",
        "/cluster/-1",
    ):
        assert client.get(url).status_code == 404, url
    for url in (
        "/cluster/x",
        "/api/cluster/1.5",
        "/image/abc",
        "/thumb/1e3/256.jpg",
        "/pair/1/b",
        "/original/.x",
        "/thumb/1/big.jpg",
    ):
        r = client.get(url)
        assert r.status_code == 400, url
        assert "Traceback" not in r.text
    assert client.get("/api/image/abc").json() == {"error": "image_id must be a whole number, not 'abc'"}


def test_no_url_reaches_the_file_system(client):
    for url in (
        "/static/../../workspace.py",
        "/static/%2e%2e/%2e%2e/cli.py",
        "/static/..%2f..%2fcli.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/thumb/%2e%2e%2f1/256.jpg",
        "/original/%2Fetc%2Fpasswd",
        "/original/1%2f..%2f..%2fetc%2fpasswd",
        "/..%2f..%2fetc%2fpasswd",
        "/image/1/../../../../etc/passwd",
    ):
        r = client.get(url)
        assert r.status_code in (400, 404), url
        assert b"root:" not in r.content and b"def " not in r.content, url


def test_symlink_out_of_the_image_folder_is_not_served(small_corpus, tmp_path):
    images = Path(shutil.copytree(small_corpus / "images", tmp_path / "images"))
    outside = tmp_path / "private"
    outside.mkdir()
    shutil.copy(images / "coffee" / "coffee.jpg", outside / "secret.jpg")
    (images / "coffee" / "link.jpg").symlink_to(outside / "secret.jpg")
    crop = next((images / "coffee").glob("coffee_crop.*"))
    (images / f"inside{crop.suffix}").symlink_to(crop)
    ws = tmp_path / "ws"
    assert run(["--nb-threads", "2", "fill", str(images), str(ws)]) == 0
    assert run(["--nb-threads", "2", "query", str(images), str(ws), "-o", str(tmp_path / "q.csv")]) == 0
    c = client_for(ws)
    ids = ids_by_path(ws)
    link, inside = ids["coffee/link.jpg"], ids[f"inside{crop.suffix}"]
    assert c.get(f"/original/{link}").status_code == 404
    real = c.get(f"/thumb/{ids['coffee/coffee.jpg']}/256.jpg").content
    assert c.get(f"/thumb/{link}/256.jpg").content != real  # a placeholder, not the picture
    assert not (ws / "thumbs" / "256" / f"{link}.jpg").exists()
    assert c.get(f"/original/{inside}").status_code == 200  # a link that stays inside is the user's own file
    names = zipfile.ZipFile(io.BytesIO(c.get(f"/cluster/{_cluster_of(c, link)}/images.zip").content)).namelist()
    assert not any(n.endswith("link.jpg") for n in names)


def _cluster_of(c: TestClient, image_id: int) -> int:
    return next(cl["cluster_id"] for cl in c.get("/api/clusters").json() if image_id in cl["images"])


def test_host_header_is_checked(demo_run):
    c = client_for(demo_run["viewed"])
    assert c.get("/", headers={"host": "evil.example:8765"}).status_code == 400
    assert c.get("/", headers={"host": "localhost:8765"}).status_code == 200
    assert c.get("/", headers={"host": "127.0.0.1"}).status_code == 200
    assert allowed_hosts("0.0.0.0") == ["*"]
    assert "archive.lan" in allowed_hosts("10.0.0.5", ["archive.lan"])


def test_the_viewer_follows_commits_of_other_processes(own_ws):
    c = client_for(own_ws)
    before = c.get("/api/clusters").json()
    assert sum(cl["size"] for cl in before) == 80
    ids = ids_by_path(own_ws)
    with Workspace(own_ws, create=False) as other:  # another process's writer
        for m in other.matches_of(ids["camera/camera_flip.jpg"]):
            other.set_match_review(m["query_id"], m["result_id"], "wrong")
        time.sleep(2.1)  # commits are followed at most every 2 s (twice the time the clusters take, at least)
        other.db.execute("BEGIN IMMEDIATE")  # and a write in progress: readers do not wait for it
        t0 = time.perf_counter()
        r = c.get("/api/clusters")
        assert r.status_code == 200 and time.perf_counter() - t0 < 5
        other.db.execute("ROLLBACK")
    assert sum(cl["size"] for cl in r.json()) == 79


def test_clusters_file_option(demo_run, tmp_path):
    rows = read_csv(demo_run["clusters"])
    kept = [r for r in rows if r["cluster_id"] in ("0", "3")]
    path = tmp_path / "two.csv"
    path.write_text(",".join(rows[0]) + "\n" + "\n".join(",".join(r.values()) for r in kept) + "\n")
    c = client_for(demo_run["viewed"], clusters_csv=path)
    assert [cl["size"] for cl in c.get("/api/clusters").json()] == [10, 10]
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,cluster_id\n99999,0\n")
    with pytest.raises(ValueError, match="line 2: image 99999 is not in the workspace"):
        Viewer(demo_run["viewed"], Settings(), bad).snapshot()


# -- the command line
def test_serve_prints_its_url_and_serves(demo_run):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pimmi", "serve", str(demo_run["viewed"]), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        m = re.match(r"pimmi: serving (\S+) on (http://127\.0\.0\.1:(\d+)/)", line)
        assert m, line
        import httpx2

        r = httpx2.get(m.group(2), timeout=10)
        assert r.status_code == 200 and "8 clusters" in r.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_errors_are_one_line(demo_run, tmp_path, capsys):
    assert run(["serve", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a pimmi workspace" in err[0]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert run(["serve", str(demo_run["viewed"]), "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"pimmi: error: cannot listen on 127.0.0.1 port {port}")


# -- the static report
def test_report_is_a_self_contained_folder(demo_run, tmp_path):
    out = tmp_path / "report"
    assert run(["report", str(demo_run["viewed"]), "-o", str(out)]) == 0
    assert len(list((out / "cluster").glob("*.html"))) == 8
    assert len(list((out / "image").glob("*.html"))) == 80
    pages = list(out.rglob("*.html"))
    for page in pages:
        text = page.read_text()
        assert "http://" not in text and "https://" not in text, page  # works offline
        for ref in re.findall(r'(?:href|src)="([^"#?]+)"', text):
            assert not ref.startswith("/"), (page, ref)
            assert (page.parent / ref).resolve().exists(), (page, ref)
    index = (out / "index.html").read_text()
    assert len(re.findall(r'<li class="card" data-cluster=', index)) == 8
    assert (out / "static" / "vendor" / "cytoscape.min.js").exists()
    assert (out / "static" / "vendor" / "cytoscape.LICENSE").exists()
    # written again over itself; never over a folder that is not a report
    assert run(["report", str(demo_run["viewed"]), "-o", str(out)]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert run(["report", str(demo_run["viewed"]), "-o", str(other)]) == 1
    assert (other / "notes.txt").read_text() == "keep"


def test_derivation_tree_of_each_cluster(client, demo_run):
    truth = {r["path"]: r for r in read_csv(demo_run["corpus"] / "truth.csv")}
    originals_at_root = 0
    for c in client.get("/api/clusters").json():
        tree = client.get(f"/api/cluster/{c['cluster_id']}/derivation").json()
        assert {t["id"] for t in tree} == set(c["images"])
        roots = [t for t in tree if t["parent"] is None]
        assert len(roots) == 1  # one tree: every other member has its parent in the cluster
        assert all(t["parent"] in c["images"] and t["relation"] for t in tree if t["parent"] is not None)
        originals_at_root += truth[roots[0]["path"]]["kind"] == "original"
    # no posts: content cues alone; measured 7 of 8 (the hubble field's colour copy is taken for its original)
    assert originals_at_root >= 6
    assert client.get("/api/cluster/99/derivation").status_code == 404
