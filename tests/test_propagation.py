"""Posts, provenance and timelines on a benchmark with copies of copies and the posts that published them."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from conftest import SHARED, read_csv, run
from pimmi import cli
from pimmi.posts import parse_date
from pimmi.settings import Settings
from pimmi.viewer.app import Viewer, allowed_hosts, create_app

pytestmark = pytest.mark.skipif(not (SHARED / "make_copybench.py").exists(), reason="needs ../shared/bench")


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("chains")
    bench = out / "bench"
    subprocess.run(
        [sys.executable, str(SHARED / "make_copybench.py"), "--pool", str(SHARED / "pool"), "--out", str(bench),
         "--seed", "7", "--originals", "16", "--copies", "5", "--distractors", "10", "--montages", "4",
         "--decoys", "0", "--chains", "0.4", "--posts"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    ws = out / "ws"
    assert run(["--nb-threads", "2", "fill", str(bench / "images"), str(ws)]) == 0
    assert run(["--nb-threads", "2", "query", str(bench / "images"), str(ws), "-o", str(out / "q.csv")]) == 0
    assert run(["clusters", str(ws), "-o", str(out / "c.csv")]) == 0
    assert run(["posts", str(ws), str(bench / "posts.csv")]) == 0
    return {"bench": bench, "ws": ws, "out": out}


def test_dates_are_read_in_the_usual_forms():
    t = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc).timestamp()
    forms = ("2025-03-04T05:06:07Z", "2025-03-04T05:06:07+00:00", "2025-03-04 05:06:07", "2025-03-04T07:06:07+02:00")
    for text in (*forms, str(int(t)), f"{t:.1f}", "Tue Mar 04 05:06:07 +0000 2025"):
        assert parse_date(text) == pytest.approx(t), text
    for bad in ("", "yesterday", "2025-13-01", "04/03/2025"):
        assert parse_date(bad) is None, bad


def test_timeline_agrees_with_the_posts(chains):
    out = chains["out"] / "summary.csv"
    assert run(["timeline", str(chains["ws"]), "-o", str(out), "--plots", str(chains["out"] / "plots")]) == 0
    members = defaultdict(set)
    for r in read_csv(chains["out"] / "c.csv"):
        members[r["cluster_id"]].add(r["path"])
    posts_of = defaultdict(list)
    for p in read_csv(chains["bench"] / "posts.csv"):
        for m in p["media_files"].split("|"):
            posts_of[m].append(p)
    rows = read_csv(out)
    assert {r["cluster_id"] for r in rows} == set(members)
    for r in rows:
        posts = {p["post_id"]: p for m in members[r["cluster_id"]] for p in posts_of[m]}
        assert int(r["nb_images"]) == len(members[r["cluster_id"]])
        assert int(r["nb_posts"]) == len(posts), r["cluster_id"]
        assert int(r["nb_accounts"]) == len({p["account"] for p in posts.values()})
        first = min(posts.values(), key=lambda p: p["date"])
        assert r["first_date"] == first["date"] and r["first_account"] == first["account"]
        assert r["last_date"] == max(p["date"] for p in posts.values())
        assert r["root_path"] in members[r["cluster_id"]]
    plots = chains["out"] / "plots"
    assert (plots / "overview.svg").exists()
    for cid in members:
        png = plots / f"cluster-{cid}.png"
        assert Image.open(png).size[0] > 300 and (plots / f"cluster-{cid}.svg").read_text().startswith("<?xml")


def test_provenance_orients_copies(chains, tmp_path):
    out = tmp_path / "prov.csv"
    assert run(["provenance", str(chains["ws"]), "-o", str(out), "--gexf", str(tmp_path / "tree.gexf")]) == 0
    rows = read_csv(out)
    assert list(rows[0])[:5] == ["path", "parent", "cluster_id", "relation", "confidence"]
    clustered = {r["path"] for r in read_csv(chains["out"] / "c.csv")}
    assert {r["path"] for r in rows} == clustered
    truth = {r["path"]: r for r in read_csv(chains["bench"] / "truth.csv")}
    score = _score(chains, out, tmp_path)
    # measured on this benchmark (seed 7): root 0.81, lineage 0.81, montage parents 1.0; margins for ties
    assert score["root_accuracy"] >= 0.6 and score["lineage_accuracy"] >= 0.6, score
    # crops and added borders, whatever the dates: the parent holds the crop's picture, or sits in the frame
    content = [
        r
        for r in rows
        if truth[r["path"]]["transform"].startswith(("crop", "pad_", "caption_band"))
        and truth[r["path"]]["parent"]
        and r["parent"]
    ]
    parent = {r["path"]: r["parent"].split(";")[0] for r in rows if r["parent"]}

    def ancestors(path: str) -> list[str]:
        chain = []
        while path in parent and parent[path] not in chain:
            path = parent[path]
            chain.append(path)
        return chain

    right = [r for r in content if truth[r["path"]]["parent"] in ancestors(r["path"])]
    assert len(content) >= 8 and len(right) >= 0.7 * len(content)
    assert all(
        r["relation"] in ("crop", "scale", "recompress", "caption/border", "mirror", "colour", "part-of", "copy")
        for r in rows
        if r["parent"]
    )
    assert (tmp_path / "tree.gexf").read_text().count("<edge ") == sum(
        len(r["parent"].split(";")) for r in rows if r["parent"]
    )
    assert run(["provenance", str(chains["ws"]), "--cues", "dates,smell"]) == 1


def test_pixels_orient_edits_without_dates(chains, tmp_path):
    """Noise, blur and text drawn over the picture, told from the pixels alone (no dates)."""
    from pimmi.provenance import CUES

    out = tmp_path / "prov.csv"
    cues = ",".join(c for c in CUES if c != "dates")
    assert run(["provenance", str(chains["ws"]), "-o", str(out), "--cues", cues]) == 0
    rows = {r["path"]: r for r in read_csv(out)}
    truth = read_csv(chains["bench"] / "truth.csv")
    edited = [
        t for t in truth if t["transform"].startswith(("noise", "blur", "caption_impact")) and t["parent"] in rows
    ]
    right = [t for t in edited if t["parent"] in rows[t["path"]]["parent"].split(";")]
    # measured on this benchmark (seed 7): 14 of 15 with the pixel comparisons (edits), 10 of 15 without them
    assert len(edited) >= 10 and len(right) >= 0.8 * len(edited), (len(right), len(edited))


def _score(chains, prov: Path, tmp: Path) -> dict:
    js = tmp / "score.json"
    subprocess.run([sys.executable, str(SHARED / "score.py"), str(chains["bench"] / "truth.csv"),
                    str(chains["out"] / "c.csv"), "--provenance", str(prov), "--json", str(js)],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return json.loads(js.read_text())


def test_report_has_the_timelines(chains, tmp_path):
    out = tmp_path / "report"
    assert run(["report", str(chains["ws"]), "-o", str(out)]) == 0
    pages = sorted((out / "cluster").glob("*.html"))
    svgs = sorted((out / "cluster").glob("*-timeline.svg"))
    assert pages and len(svgs) == len(pages)  # every cluster of this benchmark has posts
    text = pages[0].read_text()
    assert 'id="timeline"' in text and f'src="{pages[0].stem}-timeline.svg"' in text


def test_viewer_shows_posts(chains):
    c = TestClient(
        create_app(Viewer(chains["ws"], Settings(nb_threads=2)), allowed_hosts("127.0.0.1")),
        base_url="http://127.0.0.1:8765",
    )
    clusters = c.get("/api/clusters", params={"sort": "date"}).json()
    firsts = [x["first_date"] for x in clusters if x["first_date"]]
    assert firsts == sorted(firsts) and all(x["nb_posts"] > 0 for x in clusters)
    first = clusters[0]
    assert c.get(f"/cluster/{first['cluster_id']}/timeline.svg").headers["content-type"].startswith("image/svg")
    image = c.get(f"/api/image/{first['representative']}").json()
    assert image["posts"] and all(p["date"] >= first["first_date"] for p in image["posts"])
    assert 'id="posts"' in c.get(f"/image/{first['representative']}").text
    # the search reads the posts' texts (and accounts) too: this text is one post's
    text = image["posts"][0]["text"]
    found = c.get("/api/clusters", params={"q": text.upper()}).json()
    ids = [x["cluster_id"] for x in found]
    assert first["cluster_id"] in ids and len(ids) <= 2  # a post may carry images of two clusters


# -- bad posts files
def test_missing_columns_are_named(chains, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,when,who\n1,2025-01-01,me\n")
    capsys.readouterr()
    assert run(["posts", str(chains["ws"]), str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing columns date (one of date, timestamp_utc" in err[0] and "media_files" in err[0]
    assert run(["posts", str(chains["ws"]), str(bad), "--date-column", "when", "--media-files-column", "nope"]) == 1
    assert "media_files (asked column 'nope')" in capsys.readouterr().err


def test_bad_rows_are_counted_and_named(chains, tmp_path, capsys):
    good = read_csv(chains["bench"] / "posts.csv")[:20]
    path = tmp_path / "posts.csv"
    with open(path, "wb") as f:
        f.write(b"post_id,date,account,platform,url,text,media_files\n")
        for i, p in enumerate(good):
            date = "someday" if i == 3 else p["date"]
            media = "nowhere/x.jpg" if i == 5 else p["media_files"]
            text = b"caf\xe9 latin-1" if i == 7 else p["text"].encode()
            f.write(
                b",".join(
                    [p["post_id"].encode(), date.encode(), p["account"].encode(), b"tw", b"u", text, media.encode()]
                )
                + b"\n"
            )
    capsys.readouterr()
    assert cli.main(["posts", str(chains["ws"]), str(path)]) == 0  # not silent: the report is on stderr
    err = capsys.readouterr().err
    assert "18 of 20 posts imported" in err
    assert "1 rows with an unreadable date, left out: line 5: 'someday'" in err
    assert "1 media names not in the catalogue: line 7: nowhere/x.jpg" in err
    assert "1 rows with bytes that are not UTF-8" in err and "line 9" in err
    # an import replaces the previous one
    assert cli.main(["posts", str(chains["ws"]), str(path)]) == 0
    assert "18 of 20 posts imported" in capsys.readouterr().err
    assert run(["posts", str(chains["ws"]), str(chains["bench"] / "posts.csv")]) == 0  # back as it was


def test_a_large_posts_file_is_streamed(chains, tmp_path):
    """100 MB of posts: memory stays that of a small file (the rows are never all held)."""
    media = [r["path"] for r in read_csv(chains["bench"] / "truth.csv")][:50]

    def write(path: Path, rows: int) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["post_id", "date", "account", "platform", "url", "text", "media_files"])
            pad = "x" * 60
            for i in range(rows):
                w.writerow(
                    [
                        f"p{i}",
                        1735689600 + i,
                        f"user{i % 977}",
                        "telegram",
                        f"https://t.example/{i}",
                        f"post {i} {pad}",
                        media[i % len(media)],
                    ]
                )

    def peak_mb(path: Path) -> float:
        code = (
            "import resource, sys; from pimmi.posts import import_posts; "
            f"r = import_posts({str(chains['ws'])!r}, {str(path)!r}, progress=False); print(r.posts); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        return int(out[0]), float(out[1])

    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    write(small, 10_000)
    write(large, 700_000)
    assert large.stat().st_size > 100e6
    n_small, mb_small = peak_mb(small)
    n_large, mb_large = peak_mb(large)
    assert (n_small, n_large) == (10_000, 700_000)
    assert mb_large < mb_small + 40, (mb_small, mb_large)
    assert run(["posts", str(chains["ws"]), str(chains["bench"] / "posts.csv")]) == 0  # back as it was
