"""``pimmi report``: the viewer's clusters, cluster, image and pair pages written as static HTML, with their
thumbnails, relative links and no server: a folder to send to a colleague or an editor."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pimmi import thumbnails
from pimmi.progress import bar
from pimmi.provenance import provenance
from pimmi.settings import Settings
from pimmi.timeline import timeline_svg
from pimmi.viewer import model
from pimmi.viewer.pages import STATIC, ReportLinks, page_of, render
from pimmi.workspace import Workspace


@dataclass(frozen=True)
class ReportStats:
    clusters: int
    images: int
    pairs: int


def write_report(
    workspace_dir: str | Path,
    out_dir: str | Path,
    settings: Settings,
    clusters_csv: str | Path | None = None,
    progress: bool = True,
) -> ReportStats:
    """Write the report under ``out_dir`` (made anew: written beside it, then moved into place)."""
    out = Path(out_dir)
    if out.exists() and not (out / "index.html").exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a pimmi report: choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with Workspace(workspace_dir, create=False) as ws:
            stats = _write(ws, tmp, settings, clusters_csv, str(workspace_dir), progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


def _write(ws: Workspace, out: Path, settings: Settings, clusters_csv, name: str, progress: bool) -> ReportStats:
    snap = model.load_snapshot(ws, settings, clusters_csv)
    shutil.copytree(STATIC, out / "static")
    for sub in ("cluster", "image", "pair"):
        (out / sub).mkdir()
    found = model.select_clusters(snap, "size", min_size=1)
    _, pages = page_of(found, 1)
    for page in range(1, pages + 1):
        shown, _ = page_of(found, page)
        links = ReportLinks(0)
        text = render(
            "clusters.html",
            links,
            workspace=name,
            clusters=shown,
            total=len(found),
            nb_images=len(snap.records),
            nb_clustered=len(snap.memberships),
            page=page,
            pages=pages,
            f={},
            query="",
        )
        (out / links.clusters_page(page)).write_text(text)
    links = ReportLinks(1)
    derived = provenance(ws, settings, rows=snap.rows)
    images: set[int] = set()
    pairs: set[tuple[int, int]] = set()
    with bar(len(found), "report: clusters", progress) as pbar:
        for c in found:
            page = model.cluster_page(ws, snap, c.cluster_id)
            timeline = _timeline(ws, snap, c, out) if c.nb_posts else None
            text = render(
                "cluster.html",
                links,
                workspace=name,
                c=page["cluster"],
                members=page["members"],
                nodes=page["nodes"],
                edges=page["edges"],
                tree=model.tree_of(derived, c),
                timeline=timeline,
            )
            (out / "cluster" / f"{c.cluster_id}.html").write_text(text)
            images.update(c.images)
            pbar.update(1)
    with bar(len(images), "report: images", progress) as pbar:
        for image_id in sorted(images):
            page = model.image_page(ws, snap, image_id)
            (out / "image" / f"{image_id}.html").write_text(render("image.html", links, workspace=name, i=page))
            for m in page["matches"]:
                pairs.add((image_id, m["image"]["id"]))
            _thumbs(ws.dir, out, snap.records[image_id], settings)
            pbar.update(1)
    with bar(len(pairs), "report: pairs", progress) as pbar:
        for a, b in sorted(pairs):
            page = model.pair_page(ws, snap, a, b, settings)
            if page is not None:
                (out / "pair" / f"{a}-{b}.html").write_text(render("pair.html", links, workspace=name, p=page))
            for other in (a, b):
                if other not in images:  # a match kept out of the clusters (too few inliers, marked wrong)
                    images.add(other)
                    text = render("image.html", links, workspace=name, i=model.image_page(ws, snap, other))
                    (out / "image" / f"{other}.html").write_text(text)
                    _thumbs(ws.dir, out, snap.records[other], settings)
            pbar.update(1)
    return ReportStats(len(found), len(images), len(pairs))


def _timeline(ws: Workspace, snap: model.Snapshot, c: model.Cluster, out: Path) -> str | None:
    """The cluster's timeline as cluster/ID-timeline.svg (None without matplotlib: the page goes without)."""
    try:
        svg = timeline_svg(ws, snap.rows, c.cluster_id, None)
    except ImportError:
        return None
    if svg is None:
        return None
    name = f"{c.cluster_id}-timeline.svg"
    (out / "cluster" / name).write_bytes(svg)
    return name


def _thumbs(workspace_dir: Path, out: Path, rec, settings: Settings) -> None:
    for size in thumbnails.SIZES:
        path = out / "thumbs" / str(size) / f"{rec.id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(thumbnails.thumbnail(workspace_dir, rec, size, settings.max_image_pixels))
