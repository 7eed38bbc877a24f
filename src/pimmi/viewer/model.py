"""What the viewer's pages show, computed from the workspace: the server and the static report both call these.

A ``Snapshot`` is the workspace's clusters at one moment (the last committed state); pages
are plain dictionaries built from it and the catalogue, which the templates render and the
JSON twins return as they are.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import igraph as ig
import numpy as np

from pimmi.clusters import Box, ClusterRow, PartClusterRow, read_clusters_csv, workspace_clusters
from pimmi.posts import has_posts, post_rows, post_words, posts_of, to_iso
from pimmi.provenance import WHOLE_FRAME, frame_share, provenance
from pimmi.settings import Settings
from pimmi.sift import mirror, rootsift
from pimmi.verify import one_to_one
from pimmi.workspace import ImageRecord, Workspace, seen_from

SORTS = ("size", "quality", "least_quality", "id", "date")
KINDS = ("any", "whole", "parts")
REVIEWED = ("any", "checked", "unchecked")
MAX_LINES = 400  # inlier correspondences drawn on a pair page


@dataclass(frozen=True)
class Member:
    image_id: int
    path: str
    copy: str  # whole | part
    region: Box | None  # the image's part in the cluster (original pixels), parts-aware clustering only
    degree: int


@dataclass(frozen=True)
class Cluster:
    cluster_id: int
    quality: float
    representative: int  # the most connected image
    members: tuple[Member, ...]
    review: str | None  # checked | changed (checked when it had other members) | None
    nb_posts: int = 0
    first_date: float | None = None  # first and last post of its images (Unix seconds), with posts
    last_date: float | None = None
    post_words: str = ""  # its posts' accounts and texts, lower-cased, for the search

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def parts(self) -> int:
        return sum(m.copy == "part" for m in self.members)

    @property
    def whole(self) -> int:
        return self.size - self.parts

    @property
    def images(self) -> list[int]:
        return [m.image_id for m in self.members]

    def summary(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "size": self.size,
            "whole": self.whole,
            "parts": self.parts,
            "quality": self.quality,
            "representative": self.representative,
            "review": self.review,
            "nb_posts": self.nb_posts,
            "first_date": to_iso(self.first_date) if self.first_date is not None else None,
            "last_date": to_iso(self.last_date) if self.last_date is not None else None,
            "images": self.images,
        }


@dataclass
class Snapshot:
    records: dict[int, ImageRecord]
    clusters: list[Cluster]  # by cluster id
    memberships: dict[int, list[tuple[int, Member]]] = field(default_factory=dict)  # image -> (cluster id, member)
    layouts: dict[int, dict[int, tuple[float, float]]] = field(default_factory=dict)  # cluster -> positions
    rows: list[ClusterRow] = field(default_factory=list)
    has_posts: bool = False

    def cluster(self, cluster_id: int) -> Cluster | None:
        return self.clusters[cluster_id] if 0 <= cluster_id < len(self.clusters) else None


def load_snapshot(ws: Workspace, settings: Settings, clusters_csv: str | Path | None = None) -> Snapshot:
    """The workspace's clusters, as ``pimmi clusters INDEX_DIR`` computes them (or as read from a CSV)."""
    records = {r.id: r for r in ws.images()}
    rows = read_clusters_csv(clusters_csv, records) if clusters_csv else workspace_clusters(ws, settings)
    snap = snapshot_of(rows, records, ws.cluster_reviews())
    snap.rows = rows
    if has_posts(ws):
        snap.has_posts = True
        snap.clusters = [_with_posts(c, ws) for c in snap.clusters]
    return snap


def _with_posts(c: Cluster, ws: Workspace) -> Cluster:
    """The cluster with its posts counted: distinct posts of its images, first and last date."""
    posts = {(row, date) for _, row, date, *_ in post_rows(ws, c.images)}
    if not posts:
        return c
    dates = [d for _, d in posts]
    words = post_words(ws, c.images)
    return replace(c, nb_posts=len(posts), first_date=min(dates), last_date=max(dates), post_words=words)


def snapshot_of(
    rows: list[ClusterRow], records: dict[int, ImageRecord], reviews: dict[int, tuple[str, list[int], float]]
) -> Snapshot:
    by_cluster: dict[int, list[ClusterRow]] = defaultdict(list)
    for row in rows:
        by_cluster[row.cluster_id].append(row)
    clusters = []
    for new_id, cid in enumerate(sorted(by_cluster)):  # dense ids: a CSV may skip some
        members = tuple(_member(r) for r in sorted(by_cluster[cid], key=lambda r: r.image_id))
        rep = max(members, key=lambda m: (m.degree, -m.image_id)).image_id
        ids = sorted(m.image_id for m in members)
        review = None
        if ids[0] in reviews:
            verdict, marked, _ = reviews[ids[0]]
            review = verdict if marked == ids else "changed"
        clusters.append(Cluster(new_id, by_cluster[cid][0].quality, rep, members, review))
    snap = Snapshot(records, clusters)
    for c in clusters:
        for m in c.members:
            snap.memberships.setdefault(m.image_id, []).append((c.cluster_id, m))
    return snap


def _member(row: ClusterRow) -> Member:
    if isinstance(row, PartClusterRow):
        box = (row.region_x0, row.region_y0, row.region_x1, row.region_y1)
        return Member(row.image_id, row.path, row.copy, box, row.degree)
    return Member(row.image_id, row.path, "whole", None, row.degree)


# -- the clusters page
def select_clusters(
    snap: Snapshot, sort: str = "size", min_size: int = 2, kind: str = "any", q: str = "", reviewed: str = "any"
) -> list[Cluster]:
    """The clusters a user asked for: at least ``min_size`` images, of a ``kind`` (any, whole: only whole
    copies, parts: holding parts), whose paths or posts (accounts, texts) contain ``q`` (case-insensitive),
    reviewed or not."""
    for name, value, allowed in (("sort", sort, SORTS), ("kind", kind, KINDS), ("reviewed", reviewed, REVIEWED)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    needle = q.strip().lower()
    out = []
    for c in snap.clusters:
        if c.size < min_size or (kind == "whole" and c.parts) or (kind == "parts" and not c.parts):
            continue
        if reviewed == "checked" and c.review != "checked" or reviewed == "unchecked" and c.review == "checked":
            continue
        if needle and not any(needle in m.path.lower() for m in c.members) and needle not in c.post_words:
            continue
        out.append(c)
    keys = {
        "size": lambda c: (-c.size, c.cluster_id),
        "quality": lambda c: (-c.quality, c.cluster_id),
        "least_quality": lambda c: (c.quality, c.cluster_id),
        "id": lambda c: c.cluster_id,
        "date": lambda c: (c.first_date is None, c.first_date or 0.0, c.cluster_id),
    }
    return sorted(out, key=keys[sort])


# -- a cluster page
def cluster_page(ws: Workspace, snap: Snapshot, cluster_id: int) -> dict[str, Any] | None:
    """The cluster's members and its similarity graph (nodes placed, edges weighted by inliers)."""
    c = snap.cluster(cluster_id)
    if c is None:
        return None
    ids = c.images
    verdicts = ws.match_reviews()
    weights: dict[tuple[int, int], int] = {}
    for m in ws.matches_among(ids):
        key = (min(m["query_id"], m["result_id"]), max(m["query_id"], m["result_id"]))
        weights[key] = max(m["nb_match_ransac"], weights.get(key, 0))
    pos = snap.layouts.get(cluster_id)
    if pos is None:
        pos = snap.layouts[cluster_id] = layout(ids, list(weights))
    nodes = [
        {"id": m.image_id, "path": m.path, "copy": m.copy, "x": pos[m.image_id][0], "y": pos[m.image_id][1]}
        for m in c.members
    ]
    edges = [
        {"source": a, "target": b, "inliers": n, "review": verdicts.get((a, b))}
        for (a, b), n in sorted(weights.items())
    ]
    return {"cluster": c.summary(), "members": [_member_dict(m) for m in c.members], "nodes": nodes, "edges": edges}


def layout(nodes: list[int], edges: list[tuple[int, int]]) -> dict[int, tuple[float, float]]:
    """Positions in [0, 1000]², seeded so that a cluster is drawn the same way every time: Fruchterman-Reingold,
    DrL for large graphs (it stays fast at thousands of nodes)."""
    index = {v: i for i, v in enumerate(nodes)}
    g = ig.Graph(n=len(nodes), edges=[(index[a], index[b]) for a, b in edges])
    seed = np.random.default_rng(0).uniform(-1, 1, (len(nodes), 2)).tolist()
    if len(nodes) <= 1:
        coords = np.zeros((len(nodes), 2))
    elif len(nodes) <= 1000:
        coords = np.array(g.layout_fruchterman_reingold(seed=seed, niter=500).coords)
    else:
        coords = np.array(g.layout_drl(seed=seed).coords)
    if len(nodes):
        coords -= coords.min(axis=0)
        coords *= 1000 / max(1e-9, float(coords.max()))
    return {v: (round(float(x), 1), round(float(y), 1)) for v, (x, y) in zip(nodes, coords)}


def derivation(ws: Workspace, snap: Snapshot, cluster_id: int, settings: Settings) -> list[dict[str, Any]] | None:
    """The cluster's derivation tree: each member's most likely parent in it (``pimmi provenance``'s)."""
    if snap.cluster(cluster_id) is None:
        return None
    return tree_of(provenance(ws, settings, rows=snap.rows, cluster=cluster_id), snap.cluster(cluster_id))


def tree_of(rows: list, c: Cluster) -> list[dict[str, Any]]:
    """A cluster's members with their parent in it, from ``pimmi provenance``'s rows."""
    inside = set(c.images)
    out = []
    for r in rows:
        if r.image_id not in inside:
            continue
        parents = [int(x) for x in r.parent_ids.split(";") if x and int(x) in inside]
        out.append(
            {
                "id": r.image_id,
                "path": r.path,
                "parent": parents[0] if parents else None,
                "relation": r.relation if parents else "",
                "confidence": r.confidence,
            }
        )
    return out


# -- a pair page
def pair_page(ws: Workspace, snap: Snapshot, a: int, b: int, settings: Settings) -> dict[str, Any] | None:
    """Why ``a`` and ``b`` matched: the regions, the inlier correspondences, the transform in words."""
    ra, rb = snap.records.get(a), snap.records.get(b)
    m = ws.match_between(a, b) if ra and rb else None
    if m is None:
        return None
    T, box_a, box_b = seen_from(m, a)
    lines = inlier_lines(ws, ra, rb, T, settings)
    return {
        "a": image_summary(ra),
        "b": image_summary(rb),
        "inliers": m["nb_match_ransac"],
        "correspondences": m["nb_match_total"],
        "region_a": list(box_a),
        "region_b": list(box_b),
        "transform": [round(float(x), 6) for x in T.ravel()],
        "words": transform_words(T, ra, rb),
        "lines": lines,
        "review": ws.match_reviews().get((min(a, b), max(a, b))),
    }


def inlier_lines(ws: Workspace, ra: ImageRecord, rb: ImageRecord, T: np.ndarray, settings: Settings) -> list:
    """The correspondences that agree with the stored transform (``a`` pixel -> ``b`` pixel), recomputed:
    each keypoint of ``a`` paired with the keypoint of ``b`` nearest in descriptor space among those lying
    where the transform puts it, one to one. [[xa, ya, xb, yb], ...] in original pixels."""
    feats = ws.features([ra.id, rb.id])
    if ra.id not in feats or rb.id not in feats:
        return []
    fa, fb = feats[ra.id], feats[rb.id]
    mirrored = np.linalg.det(T[:, :2]) < 0
    da = rootsift(mirror(fa.descriptors) if mirrored else fa.descriptors)
    db = rootsift(fb.descriptors)
    pa = fa.xy.astype(np.float64) * (ra.scale or 1.0)
    pb = fb.xy.astype(np.float64) * (rb.scale or 1.0)
    if not len(pa) or not len(pb):
        return []
    d2 = np.maximum(0.0, 2.0 - 2.0 * da @ db.T)  # unit vectors
    projected = pa @ T[:, :2].T + T[:, 2]
    err = np.linalg.norm(projected[:, None, :] - pb[None, :, :], axis=2)
    tolerance = 1.5 * settings.query_ransac_reproj_threshold * (rb.scale or 1.0)
    cost = np.where((err < tolerance) & (d2 < settings.query_match_max_dist**2), d2, np.inf)
    best = cost.argmin(axis=1)
    qa = np.flatnonzero(np.isfinite(cost[np.arange(len(pa)), best]))
    qb = best[qa]
    keep = one_to_one(qa, qb, cost[qa, qb])[:MAX_LINES]
    return [[round(float(v), 1) for v in (*pa[i], *pb[j])] for i, j in zip(qa[keep], qb[keep])]


def transform_words(T: np.ndarray, ra: ImageRecord, rb: ImageRecord) -> str:
    """The transform from ``a`` to ``b`` said as a person would: scale, rotation, mirroring, and what each
    image holds of the other (each frame carried into the other image by the transform)."""
    L = T[:, :2]
    mirrored = np.linalg.det(L) < 0
    if mirrored:
        L = L @ np.diag([-1.0, 1.0])
    scale = math.sqrt(abs(np.linalg.det(L)))
    angle = math.degrees(math.atan2(L[1, 0], L[0, 0]))
    said = [f"B is A scaled ×{scale:.2f}"]
    if abs(angle) >= 1:
        said.append(f"rotated {angle:.0f}° clockwise" if angle > 0 else f"rotated {-angle:.0f}° anticlockwise")
    if mirrored:
        said.append("mirrored")
    shown_a = frame_share(cv2.invertAffineTransform(T), rb, ra)  # how much of A lies inside B's frame
    shown_b = frame_share(T, ra, rb)  # how much of B is A's picture
    text = ", ".join(said)
    if shown_a >= WHOLE_FRAME and shown_b >= WHOLE_FRAME:
        return text + "; each shows all of the other"
    if shown_a < WHOLE_FRAME <= shown_b:
        return text + f"; B is a crop of A: it shows {shown_a:.0%} of A"
    if shown_b < WHOLE_FRAME <= shown_a:
        return (
            text + f"; A is a part of B: A fills {shown_b:.0%} of B (the rest is a border, a caption, other pictures)"
        )
    return text + f"; each holds a part of the other: B shows {shown_a:.0%} of A, A fills {shown_b:.0%} of B"


def pair_transform(ws: Workspace, a: int, b: int) -> np.ndarray | None:
    """The stored transform from ``a`` to ``b`` (original pixels), whichever way the match was stored."""
    m = ws.match_between(a, b)
    return None if m is None else seen_from(m, a)[0]


# -- an image page
def image_page(ws: Workspace, snap: Snapshot, image_id: int) -> dict[str, Any] | None:
    """The image, its clusters (its region in each), its matches."""
    rec = snap.records.get(image_id)
    if rec is None:
        return None
    verdicts = ws.match_reviews()
    matches, shown = [], set()
    for m in ws.matches_of(image_id):
        mine = m["query_id"] == image_id
        other = m["result_id"] if mine else m["query_id"]
        if other not in snap.records or other in shown:
            continue  # stored both ways: the first (most inliers) is shown
        shown.add(other)
        matches.append(
            {
                "image": image_summary(snap.records[other]),
                "inliers": m["nb_match_ransac"],
                "mirrored": m["mirrored"],
                "region": list(m["query_box"] if mine else m["result_box"]),
                "other_region": list(m["result_box"] if mine else m["query_box"]),
                "review": verdicts.get((min(image_id, other), max(image_id, other))),
            }
        )
    clusters = [
        {"cluster_id": cid, "copy": m.copy, "region": list(m.region) if m.region else None}
        for cid, m in snap.memberships.get(image_id, [])
    ]
    posts = [
        {
            "post_id": p.post_id,
            "date": to_iso(p.date),
            "account": p.account,
            "platform": p.platform,
            "url": p.url,
            "text": p.text,
        }
        for p in posts_of(ws, image_id)
    ]
    return {"image": image_summary(rec), "clusters": clusters, "matches": matches, "posts": posts}


def image_summary(rec: ImageRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "path": rec.path,
        "status": rec.status,
        "error": rec.error,
        "width": rec.width,
        "height": rec.height,
        "nb_points": rec.nb_points,
        "duplicate_of": rec.duplicate_of,
    }


def _member_dict(m: Member) -> dict[str, Any]:
    return {"id": m.image_id, "path": m.path, "copy": m.copy, "region": list(m.region) if m.region else None}
