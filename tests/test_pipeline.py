"""End to end through the CLI on a corpus of real photos and their copies."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from operator import itemgetter
from pathlib import Path

import faiss
import pytest

from conftest import SHARED, read_csv, run, truth_of
from pimmi import index as idx
from pimmi.query import csv_columns

PIMMI_QUERY_COLUMNS = [
    "pack_id",
    "query_image_id",
    "result_image_id",
    "query_path",
    "result_path",
    "nb_match_total",
    "nb_match_ransac",
    "ransac_ratio",
    "query_nb_points",
    "query_width",
    "query_height",
    "result_nb_points",
    "result_width",
    "result_height",
]


def clusters_by_path(path) -> dict[str, str]:
    return {r["path"]: r["cluster_id"] for r in read_csv(path)}


def test_every_copy_with_its_original_and_nothing_else(demo_run):
    truth = truth_of(demo_run["corpus"])
    cluster = clusters_by_path(demo_run["clusters"])
    groups = defaultdict(set)
    for path, group in truth.items():
        groups[group].add(path)
    originals = [r["path"] for r in read_csv(demo_run["corpus"] / "truth.csv") if r["kind"] == "original"]
    assert len(originals) == 8
    for orig in originals:
        members = {p for p, c in cluster.items() if c == cluster[orig]}
        assert members == groups[truth[orig]], orig  # all its copies, and only them
    assert not any(p.startswith("other/") for p in cluster)  # distractors stay alone


def test_query_csv_has_pimmi_columns_and_regions(demo_run):
    rows = read_csv(demo_run["query"])
    header = list(rows[0])
    assert header[: len(PIMMI_QUERY_COLUMNS)] == PIMMI_QUERY_COLUMNS
    assert header == csv_columns()
    flips = [r for r in rows if r["query_path"] == "coffee/coffee_flip.png" and r["result_path"] == "coffee/coffee.jpg"]
    assert flips and flips[0]["mirrored"] == "1"
    for r in rows:
        assert int(r["nb_match_ransac"]) >= 8
        assert 0 <= float(r["query_x0"]) < float(r["query_x1"]) <= int(r["query_width"]) + 1
        assert 0 <= float(r["result_y0"]) < float(r["result_y1"]) <= int(r["result_height"]) + 1


def test_crop_region_found_inside_the_original(demo_run):
    rows = read_csv(demo_run["query"])
    r = next(
        r
        for r in rows
        if r["query_path"] == "astronaut/astronaut_crop.jpg" and r["result_path"] == "astronaut/astronaut.jpg"
    )
    area = (float(r["result_x1"]) - float(r["result_x0"])) * (float(r["result_y1"]) - float(r["result_y0"]))
    assert 0.2 < area / (512 * 512) < 0.65  # the crop kept 45-60 % of the photo


def test_clusters_from_csv_template_equal_clusters_from_workspace(demo_run, tmp_path):
    corpus, ws = demo_run["corpus"], demo_run["ws"]
    template = str(tmp_path / "mining")  # PIMMI's: mining1.csv, mining2.csv ...
    assert run(["query", str(corpus / "images"), str(ws), "--output-template", template, "--nb-per-split", "40"]) == 0
    packs = sorted(tmp_path.glob("mining*.csv"))
    assert [p.name for p in packs] == ["mining1.csv", "mining2.csv", "mining3.csv"]  # 85 images, 40 per pack
    assert run(["clusters", str(ws), template, "-o", str(tmp_path / "c.csv")]) == 0
    assert read_csv(tmp_path / "c.csv") == read_csv(demo_run["clusters"])


def test_clusters_rows_follow_pimmi(demo_run):
    rows = read_csv(demo_run["clusters"])
    pimmi_columns = ["path", "image_id", "nb_points", "degree", "cluster_id", "quality"]
    assert list(rows[0])[:6] == pimmi_columns
    assert list(rows[0])[6:] == ["region_x0", "region_y0", "region_x1", "region_y1", "copy"]
    sizes = defaultdict(int)
    for r in rows:
        sizes[int(r["cluster_id"])] += 1
        assert 0 < float(r["quality"]) <= 1 and int(r["degree"]) >= 1
    ordered = [sizes[c] for c in sorted(sizes)]
    assert ordered == sorted(ordered, reverse=True)


@pytest.mark.parametrize("algo", ["components", "louvain", "leiden"])
def test_community_algorithms(demo_run, tmp_path, algo):
    out = tmp_path / "c.csv"
    assert run(["clusters", str(demo_run["ws"]), "--algo", algo, "-o", str(out)]) == 0
    truth = truth_of(demo_run["corpus"])
    by_cluster = defaultdict(set)
    for r in read_csv(out):
        by_cluster[r["cluster_id"]].add(truth[r["path"]])
    assert all(len(groups) == 1 for groups in by_cluster.values())  # communities never mix photos
    assert list(read_csv(out)[0]) == ["path", "image_id", "nb_points", "degree", "cluster_id", "quality"]


def test_eval_and_viz(demo_run, tmp_path, capsys):
    truth = truth_of(demo_run["corpus"])
    cluster = clusters_by_path(demo_run["clusters"])
    merged = tmp_path / "merged.csv"
    kinds = {r["path"]: r["kind"] for r in read_csv(demo_run["corpus"] / "truth.csv")}
    lines = ["path,truth,cluster_id,image_status"]
    lines += [f"{p},{g},{cluster.get(p, '')},{kinds[p]}" for p, g in sorted(truth.items())]
    merged.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert run(["eval", str(merged), "--query-column", "image_status"]) == 0
    out = capsys.readouterr().out
    assert "cluster f1: 1.0000" in out and "query average precision: 1.0000" in out

    viz = tmp_path / "viz.json"
    assert run(["viz", str(demo_run["ws"]), str(demo_run["clusters"]), "-o", str(viz)]) == 0
    records = json.loads(viz.read_text())
    assert len(records) == 8 and records[0]["nb_images"] == 10 and records[0]["edges"]


def test_verification_in_worker_processes_finds_the_same_matches(demo_run, tmp_path):
    # Beyond 2 workers, candidate pairs are verified in the worker pool, a round at a time.
    ws = shutil.copytree(demo_run["ws"], tmp_path / "ws")
    out = tmp_path / "q.csv"
    assert run(["--nb-threads", "3", "query", str(demo_run["corpus"] / "images"), str(ws), "-o", str(out)]) == 0
    by_pair = itemgetter("query_path", "result_path")
    got, want = (sorted(read_csv(p), key=by_pair) for p in (out, demo_run["query"]))
    assert len(got) > 50
    assert [_exact(r) for r in got] == [_exact(r) for r in want]
    for g, w in zip(got, want):  # a transform's last digits may differ between processes (float refinement)
        assert _numbers(g) == pytest.approx(_numbers(w), rel=1e-4, abs=0.2)


def test_search_thread_uses_the_thread_setting(demo_run, tmp_path, monkeypatch):
    # OpenMP's thread count is per thread: the search runs in one of its own, which must set it too.
    seen = []
    close = idx.Searcher.close

    def spy(self, queries, k, probes=None):
        seen.append(faiss.omp_get_max_threads())
        return close(self, queries, k, probes)

    monkeypatch.setattr(idx.Searcher, "close", spy)
    ws = shutil.copytree(demo_run["ws"], tmp_path / "ws")
    images = str(demo_run["corpus"] / "images")
    assert run(["--nb-threads", "1", "query", images, str(ws), "-o", str(tmp_path / "q.csv"), "--requery"]) == 0
    assert seen and set(seen) == {1}


def _exact(row: dict[str, str]) -> list[str]:
    return [row[c] for c in PIMMI_QUERY_COLUMNS[3:] + ["mirrored"]]


def _numbers(row: dict[str, str]) -> list[float]:
    boxes = [float(row[c]) for c in row if c.endswith(("_x0", "_y0", "_x1", "_y1"))]
    return boxes + [float(x) for x in row["transform"].split()]


def test_query_new_images_against_the_index(demo_run, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(demo_run["corpus"] / "images" / "rocket" / "rocket_crop.png", new / "found_online.png")
    out = tmp_path / "q.csv"
    assert run(["query", str(new), str(demo_run["ws"]), "-o", str(out)]) == 0
    results = {r["result_path"] for r in read_csv(out)}
    # its source's copies, and nothing else (the crop is of the launch tower, a lattice of repeated
    # keypoints: its link to the original itself rests on them and may be refused as pattern-only)
    assert len(results) >= 6
    assert all(p.startswith("rocket/") for p in results)


def test_query_with_other_extraction_settings_is_refused(demo_run, capsys):
    corpus, ws = demo_run["corpus"], demo_run["ws"]
    assert run(["--sift-nfeatures", "300", "query", str(corpus / "images"), str(ws)]) == 1
    assert "sift_nfeatures=200 (now 300)" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "pimmi_small").is_dir(), reason="needs ../shared/bench/pimmi_small")
def test_pimmi_small_dataset(tmp_path):
    """PIMMI's own small_dataset: 8 distinct scenes. 000002, 000005 and 000007 are the same photo (exact
    duplicates), 000008 and 000009 the same truck at two sizes; the other six photos share nothing.
    (PIMMI's test suite expects all 11 in one cluster: its many-to-many RANSAC links unrelated photos.)"""
    data = SHARED / "pimmi_small"
    ws = tmp_path / "ws"
    assert run(["fill", str(data), str(ws)]) == 0
    assert run(["query", str(data), str(ws), "-o", str(tmp_path / "q.csv")]) == 0
    assert run(["clusters", str(ws), "-o", str(tmp_path / "c.csv")]) == 0
    cluster = clusters_by_path(tmp_path / "c.csv")
    assert cluster["0/000002.jpg"] == cluster["0/000005.jpg"] == cluster["0/000007.jpg"]
    assert cluster["0/000008.jpg"] == cluster["0/000009.jpg"] != cluster["0/000002.jpg"]
    assert len(cluster) == 5


def screenshot(first, second):
    """A dark social-media post: a line of text, then two photos, the second smaller."""
    from PIL import Image, ImageDraw, ImageFont

    shot = Image.new("RGB", (640, 900), (21, 32, 43))
    draw = ImageDraw.Draw(shot)
    draw.text((20, 20), "@someone 3h: look at this cat", font=ImageFont.load_default(size=30), fill="white")
    shot.paste(first.resize((420, 280)), (40, 120))
    shot.paste(second.resize((260, 260)), (350, 580))
    return shot


def test_montage_and_screenshot_join_each_source_without_merging(tmp_path):
    from PIL import Image

    from pimmi.demo import build_corpus, sample_photo

    build_corpus(
        tmp_path,
        originals=["astronaut", "coffee", "chelsea", "camera"],
        distractors=["moon"],
        copies=["jpeg", "flip", "scale"],
    )
    images = tmp_path / "images"
    a, c = sample_photo("astronaut"), sample_photo("coffee")
    montage = Image.new("RGB", (900, 420), "white")
    montage.paste(a.resize((400, 400)), (10, 10))
    montage.paste(c.resize((470, 313)), (420, 50))
    montage.save(images / "montage.jpg", quality=90)
    screenshot(sample_photo("chelsea"), sample_photo("camera")).save(images / "screenshot.png")
    ws = tmp_path / "ws"
    assert run(["fill", str(images), str(ws)]) == 0
    assert run(["query", str(images), str(ws), "-o", str(tmp_path / "q.csv")]) == 0
    for algo in ("parts", "components"):
        assert run(["clusters", str(ws), "--algo", algo, "-o", str(tmp_path / f"{algo}.csv")]) == 0
    rows = read_csv(tmp_path / "parts.csv")
    clusters_of = defaultdict(set)
    for r in rows:
        clusters_of[r["path"]].add(r["cluster_id"])
    one = {p: next(iter(c)) for p, c in clusters_of.items() if len(c) == 1}
    assert one["astronaut/astronaut.jpg"] != one["coffee/coffee.jpg"]  # not merged through the montage
    assert clusters_of["montage.jpg"] == {one["astronaut/astronaut.jpg"], one["coffee/coffee.jpg"]}
    assert clusters_of["screenshot.png"] == {
        one["chelsea/chelsea.jpg"],
        one["camera/camera.jpg"],
    }
    kinds = {(r["path"], r["cluster_id"]): r["copy"] for r in rows}
    assert kinds[("montage.jpg", one["coffee/coffee.jpg"])] == "part"
    assert kinds[("coffee/coffee.jpg", one["coffee/coffee.jpg"])] == "whole"
    components = clusters_by_path(tmp_path / "components.csv")
    assert components["astronaut/astronaut.jpg"] == components["coffee/coffee.jpg"]  # PIMMI's behaviour merges


def meme(im, text: str):
    """A meme caption: outlined white capitals at the top and the bottom, as meme generators draw them."""
    from PIL import ImageDraw, ImageFont

    out = im.convert("RGB").resize((512, round(512 * im.height / im.width)))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=out.height // 9)
    top, bottom = text.split("|")
    for line, y in ((top, out.height * 0.03), (bottom, out.height * 0.97 - font.size * 1.2)):
        x = (out.width - draw.textlength(line, font=font)) / 2
        draw.text((x, y), line, font=font, fill="white", stroke_width=3, stroke_fill="black")
    return out


def test_a_shared_caption_alone_does_not_merge_clusters(tmp_path):
    """Photos carrying the same caption are not merged by it; the captioned copies still join their originals."""
    from pimmi.demo import build_corpus, sample_photo

    originals = ["astronaut", "coffee", "chelsea"]
    build_corpus(tmp_path, originals=originals, distractors=[], copies=["jpeg", "scale"])
    images = tmp_path / "images"
    caption = "WHEN THE MEETING|COULD HAVE BEEN AN EMAIL"
    for name in originals:
        meme(sample_photo(name), caption).save(images / name / f"{name}_meme.jpg", quality=90)
    for name in ["rocket", "immunohistochemistry", "camera", "coins"]:
        meme(sample_photo(name), caption).save(images / f"decoy_{name}.jpg", quality=90)
    ws = tmp_path / "ws"
    assert run(["fill", str(images), str(ws)]) == 0

    def caption_links(workspace: Path, *options) -> int:
        out = tmp_path / "q.csv"
        assert run([*options, "query", str(images), str(workspace), "-o", str(out)]) == 0
        return sum(group(r["query_path"]) != group(r["result_path"]) for r in read_csv(out))

    def group(path: str) -> str:  # an original's folder holds its copies; each decoy is alone
        return path.split("/")[0] if "/" in path else path

    # Keeping the strongest keypoints, the caption's letters take much of each image's budget:
    # unfiltered, they link the decoys; the pattern test refuses most of those links.
    strongest = tmp_path / "ws_strongest"
    assert run(["--sift-oversample", "1", "fill", str(images), str(strongest)]) == 0
    off = ("--sift-oversample", "1", "--query-pattern-alpha", "0", "--query-min-region-area", "0")
    off += ("--query-min-overlap-share", "0")
    unfiltered = caption_links(strongest, *off, "--query-min-pixel-agreement", "0")
    tested = caption_links(strongest, "--sift-oversample", "1", "--query-min-pixel-agreement", "0")
    print("caption links", unfiltered, tested)
    assert unfiltered >= 6 and tested < unfiltered / 3
    # The pixel check alone sees it too: two photos that agree on a caption only.
    assert caption_links(strongest, *off) < unfiltered / 2
    # By default the caption's keypoints come last: no link at all stands on it.
    assert caption_links(ws) == 0
    assert run(["clusters", str(ws), "-o", str(tmp_path / "c.csv")]) == 0
    cluster = clusters_by_path(tmp_path / "c.csv")
    for name in originals:
        assert cluster[f"{name}/{name}_meme.jpg"] == cluster[f"{name}/{name}.jpg"]
    assert len({cluster[f"{n}/{n}.jpg"] for n in originals}) == 3
