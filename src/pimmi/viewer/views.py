"""The viewer's routes: each HTML page has a JSON twin under /api; images are served by catalogue id only."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import zipfile
from typing import Any
from urllib.parse import urlencode, urlsplit

import cv2
import networkx as nx
import numpy as np
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from pimmi import thumbnails
from pimmi.paths import shown_path
from pimmi.provenance import overlay
from pimmi.timeline import timeline_svg
from pimmi.viewer import model
from pimmi.viewer.pages import ServerLinks, page_of, render
from pimmi.workspace import ImageRecord

log = logging.getLogger(__name__)
LINKS = ServerLinks()
CACHE = {"Cache-Control": "private, max-age=86400"}


def _viewer(request: Request):
    return request.app.state.viewer


def _id(request: Request, name: str) -> int:
    """An id from the URL: 400 when it is not a whole number."""
    value = request.path_params[name]
    try:
        return int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, not {value!r}") from None


class AsciiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: a file name that is not UTF-8 travels as its escapes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _html(name: str, request: Request, **context: Any) -> HTMLResponse:
    return HTMLResponse(render(name, LINKS, workspace=str(_viewer(request).dir), **context))


# -- clusters
def _filters(request: Request) -> dict[str, Any]:
    p = request.query_params
    try:
        min_size = int(p.get("min_size", "2"))
        page = int(p.get("page", "1"))
    except ValueError:
        raise HTTPException(400, "min_size and page must be whole numbers") from None
    return {
        "sort": p.get("sort", "size"),
        "min_size": min_size,
        "kind": p.get("kind", "any"),
        "reviewed": p.get("reviewed", "any"),
        "q": p.get("q", ""),
        "page": page,
    }


def _selected(request: Request) -> tuple[list[model.Cluster], dict[str, Any], model.Snapshot]:
    f = _filters(request)
    snap = _viewer(request).snapshot()
    try:
        found = model.select_clusters(snap, f["sort"], f["min_size"], f["kind"], f["q"], f["reviewed"])
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    return found, f, snap


def clusters_html(request: Request) -> HTMLResponse:
    found, f, snap = _selected(request)
    shown, pages = page_of(found, f["page"])
    query = urlencode({k: v for k, v in f.items() if k != "page"})
    return _html(
        "clusters.html",
        request,
        clusters=shown,
        total=len(found),
        nb_images=len(snap.records),
        nb_clustered=len(snap.memberships),
        page=min(max(1, f["page"]), pages),
        pages=pages,
        f=f,
        query=query,
        has_posts=snap.has_posts,
    )


def clusters_json(request: Request) -> JSONResponse:
    """All the clusters the filters select (``offset`` and ``limit`` page them); the count in X-Total-Count."""
    found, _, _ = _selected(request)
    try:
        offset = int(request.query_params.get("offset", "0"))
        limit = int(request.query_params.get("limit", str(len(found))))
    except ValueError:
        raise HTTPException(400, "offset and limit must be whole numbers") from None
    body = [c.summary() for c in found[max(0, offset) : max(0, offset) + max(0, limit)]]
    return AsciiJSON(body, headers={"X-Total-Count": str(len(found))})


def clusters_csv(request: Request) -> Response:
    found, _, snap = _selected(request)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["cluster_id", "size", "whole", "parts", "quality", "representative", "representative_path", "review", "paths"]
    )
    for c in found:
        w.writerow(
            [
                c.cluster_id,
                c.size,
                c.whole,
                c.parts,
                c.quality,
                c.representative,
                snap.records[c.representative].path,
                c.review or "",
                "|".join(m.path for m in c.members),
            ]
        )
    return Response(
        shown_path(buf.getvalue()),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="clusters.csv"'},
    )


# -- one cluster
def _built(request: Request, build, missing: str) -> Any:
    """``build(catalogue, snapshot, viewer)`` under the catalogue's lock; 404 saying ``missing`` for None."""
    viewer = _viewer(request)
    snap = viewer.snapshot()
    with viewer.catalogue() as ws:
        page = build(ws, snap, viewer)
    if page is None:
        raise HTTPException(404, missing)
    return page


def _cluster_page(request: Request) -> dict[str, Any]:
    cluster_id = _id(request, "cluster_id")
    return _built(request, lambda ws, snap, v: model.cluster_page(ws, snap, cluster_id), f"no cluster {cluster_id}")


def cluster_html(request: Request) -> HTMLResponse:
    page = _cluster_page(request)
    return _html(
        "cluster.html",
        request,
        c=page["cluster"],
        members=page["members"],
        nodes=page["nodes"],
        edges=page["edges"],
        tree=None,  # fetched when asked for: computing it reads the images
        timeline=None,  # drawn by its own route
    )


def cluster_json(request: Request) -> JSONResponse:
    return AsciiJSON(_cluster_page(request))


def cluster_derivation(request: Request) -> JSONResponse:
    """The cluster's derivation tree: [{id, path, parent, relation, confidence}], the likely original's parent
    null. Computed on demand (the cues read the images: ~10 ms each)."""
    cluster_id = _id(request, "cluster_id")
    build = lambda ws, snap, v: model.derivation(ws, snap, cluster_id, v.settings)  # noqa: E731
    return AsciiJSON(_built(request, build, f"no cluster {cluster_id}"))


def cluster_graph_file(request: Request) -> Response:
    """The cluster's similarity graph for Gephi: GEXF or GraphML."""
    fmt = request.path_params["fmt"]
    if fmt not in ("gexf", "graphml"):
        raise HTTPException(404, "graph formats: gexf, graphml")
    page = _cluster_page(request)
    g = nx.Graph()
    for n in page["nodes"]:
        g.add_node(str(n["id"]), label=n["path"], copy=n["copy"], x=n["x"], y=n["y"])
    for e in page["edges"]:
        g.add_edge(str(e["source"]), str(e["target"]), weight=e["inliers"], review=e["review"] or "")
    text = shown_path("\n".join(nx.generate_gexf(g) if fmt == "gexf" else nx.generate_graphml(g)))
    name = f"cluster-{page['cluster']['cluster_id']}.{fmt}"
    return Response(
        text, media_type="application/xml", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def cluster_timeline(request: Request) -> Response:
    """Posts per day of the cluster's images (matplotlib), stacked by image."""
    cluster_id = _id(request, "cluster_id")
    viewer = _viewer(request)
    snap = viewer.snapshot()
    c = snap.cluster(cluster_id)
    if c is None:
        raise HTTPException(404, f"no cluster {cluster_id}")
    try:
        with viewer.catalogue() as ws:
            svg = timeline_svg(ws, snap.rows, cluster_id, None)
    except ImportError:
        raise HTTPException(404, "timelines need matplotlib: pip install 'pimmi[plots]'") from None
    if svg is None:
        raise HTTPException(404, f"cluster {cluster_id} has no posts")
    return Response(svg, media_type="image/svg+xml")


def cluster_zip(request: Request) -> Response:
    """The originals of the cluster's images (those inside their image folder), stored as they are."""
    page = _cluster_page(request)
    snap = _viewer(request).snapshot()
    cid = page["cluster"]["cluster_id"]
    fd, tmp = tempfile.mkstemp(suffix=".zip")
    with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for m in page["members"]:
            path = thumbnails.safe_path(snap.records[m["id"]])
            if path is not None:
                z.write(path, shown_path(f"cluster-{cid}/{m['path']}"))
    return FileResponse(
        tmp, media_type="application/zip", filename=f"cluster-{cid}.zip", background=BackgroundTask(os.unlink, tmp)
    )


# -- a pair
def _pair_page(request: Request) -> dict[str, Any]:
    a, b = _id(request, "a"), _id(request, "b")
    missing = f"no verified match between images {a} and {b}"
    return _built(request, lambda ws, snap, v: model.pair_page(ws, snap, a, b, v.settings), missing)


def pair_html(request: Request) -> HTMLResponse:
    return _html("pair.html", request, p=_pair_page(request))


def pair_json(request: Request) -> JSONResponse:
    return AsciiJSON(_pair_page(request))


def pair_overlay(request: Request) -> Response:
    """B warped into A's frame by the stored transform (OpenCV), at the size of A's large thumbnail."""
    a, b = _id(request, "a"), _id(request, "b")
    viewer = _viewer(request)
    snap = viewer.snapshot()
    ra, rb = _record(snap, a), _record(snap, b)
    with viewer.catalogue() as ws:
        T = model.pair_transform(ws, a, b)
    if T is None:
        raise HTTPException(404, f"no verified match between images {a} and {b}")
    image_a, image_b = (_pixels(viewer, r) for r in (ra, rb))
    if image_a is None or image_b is None:
        return Response(thumbnails.placeholder(256, "cannot read the image"), media_type="image/jpeg")
    warped = overlay(ra, rb, T, image_a, image_b)
    ok, data = cv2.imencode(".jpg", warped, [cv2.IMWRITE_JPEG_QUALITY, thumbnails.QUALITY])
    return Response(data.tobytes(), media_type="image/jpeg", headers=CACHE)


def _pixels(viewer, rec: ImageRecord) -> np.ndarray | None:
    if thumbnails.safe_path(rec) is None:
        return None
    data = thumbnails.thumbnail(viewer.dir, rec, 1024, viewer.settings.max_image_pixels)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


# -- an image
def _image_page(request: Request) -> dict[str, Any]:
    image_id = _id(request, "image_id")
    missing = f"no image {image_id} in the catalogue"
    return _built(request, lambda ws, snap, v: model.image_page(ws, snap, image_id), missing)


def image_html(request: Request) -> HTMLResponse:
    return _html("image.html", request, i=_image_page(request))


def image_json(request: Request) -> JSONResponse:
    return AsciiJSON(_image_page(request))


def _record(snap: model.Snapshot, image_id: int) -> ImageRecord:
    rec = snap.records.get(image_id)
    if rec is None:
        raise HTTPException(404, f"no image {image_id} in the catalogue")
    return rec


def thumb(request: Request) -> Response:
    image_id = _id(request, "image_id")
    size = _id(request, "size")
    if size not in thumbnails.SIZES:
        raise HTTPException(400, f"thumbnail size must be one of {', '.join(map(str, thumbnails.SIZES))}")
    viewer = _viewer(request)
    rec = _record(viewer.snapshot(), image_id)
    data = thumbnails.thumbnail(viewer.dir, rec, size, viewer.settings.max_image_pixels)
    return Response(data, media_type="image/jpeg", headers=CACHE)


def original(request: Request) -> Response:
    """The original file of a usable catalogued image; nothing outside its image folder."""
    rec = _record(_viewer(request).snapshot(), _id(request, "image_id"))
    path = thumbnails.safe_path(rec) if rec.status in ("ok", "duplicate") else None
    if path is None:
        raise HTTPException(404, f"image {rec.id} has no file that can be served")
    return FileResponse(path, headers=CACHE)


# -- review marks
async def _json_body(request: Request) -> dict[str, Any]:
    """The body of a review request. Only JSON is taken (a form on another site cannot send it without the
    browser asking first), and only from a page of this server when the browser names the page's origin."""
    origin = request.headers.get("origin")
    hosts = request.app.state.hosts
    if origin and "*" not in hosts and (urlsplit(origin).hostname or "") not in {h.strip("[]") for h in hosts}:
        raise HTTPException(403, "review marks come from this viewer's pages only")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send the review as application/json")
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def _body_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise HTTPException(400, f"{name} must be a whole number")
    return value


async def review_match(request: Request) -> JSONResponse:
    """{"a": id, "b": id, "verdict": "wrong" | "right" | null}: a match marked wrong is cut from the clusters."""
    body = await _json_body(request)
    a, b, verdict = _body_int(body, "a"), _body_int(body, "b"), body.get("verdict")
    if verdict not in ("wrong", "right", None):
        raise HTTPException(400, "verdict must be 'wrong', 'right' or null")
    viewer = _viewer(request)
    with viewer.catalogue(writes=True) as ws:
        if ws.match_between(a, b) is None:
            raise HTTPException(404, f"no verified match between images {a} and {b}")
        ws.set_match_review(a, b, verdict)
    return AsciiJSON({"a": a, "b": b, "verdict": verdict})


async def review_cluster(request: Request) -> JSONResponse:
    """{"cluster_id": id, "verdict": "checked" | null}: the mark holds for the cluster's members as they are."""
    body = await _json_body(request)
    cluster_id, verdict = _body_int(body, "cluster_id"), body.get("verdict")
    if verdict not in ("checked", None):
        raise HTTPException(400, "verdict must be 'checked' or null")
    viewer = _viewer(request)
    c = viewer.snapshot().cluster(cluster_id)
    if c is None:
        raise HTTPException(404, f"no cluster {cluster_id}")
    with viewer.catalogue(writes=True) as ws:
        ws.set_cluster_review(c.images, verdict)
    return AsciiJSON({"cluster_id": cluster_id, "verdict": verdict, "images": c.images})


# -- errors
async def error_page(request: Request, exc: HTTPException) -> Response:
    if request.url.path.startswith("/api/"):
        return AsciiJSON({"error": exc.detail}, status_code=exc.status_code)
    text = render("error.html", LINKS, workspace=str(_viewer(request).dir), status=exc.status_code, message=exc.detail)
    return HTMLResponse(text, status_code=exc.status_code)


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected failure: logged with its traceback, one line for the browser."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return await error_page(request, HTTPException(500, f"internal error: {type(exc).__name__}: {exc}"))
