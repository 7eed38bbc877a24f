"""`pimmi clusters`: the graph of verified matches, and its clusters (components or communities)."""

from __future__ import annotations

import csv
import glob
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pimmi.settings import Settings
from pimmi.verify import FULL_CELLS, cells_inside
from pimmi.workspace import ImageRecord, Workspace

if TYPE_CHECKING:
    import igraph as ig

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in original pixels


def _igraph():
    """igraph, imported here rather than with the module (a command that never clusters skips it), and
    without the ``matplotlib.pyplot`` it imports for its own plotting, which pimmi does not use: an
    import of igraph took 1.2 s with it, 0.26 s without (2026-12-02), in a command that clusters in 0.5 s."""
    if "igraph" in sys.modules or "matplotlib" in sys.modules:
        import igraph

        return igraph
    sys.modules["matplotlib"] = None  # type: ignore[assignment]  # igraph then plots with a stand-in
    try:
        import igraph
    finally:
        del sys.modules["matplotlib"]
    return igraph


@dataclass(frozen=True)
class Link:
    """A verified match: the matched region in each image, when known."""

    query: int
    result: int
    inliers: int
    query_box: Box | None = None
    result_box: Box | None = None
    transform: tuple[float, ...] | None = None  # a, b, tx, c, d, ty: query pixel -> result pixel
    query_cells: bytes | None = None  # where the inliers lie in each region (verify.inlier_cells)
    result_cells: bytes | None = None


@dataclass(frozen=True)
class ClusterRow:
    """One image in one cluster: PIMMI's clusters columns."""

    path: str
    image_id: int
    nb_points: int
    degree: int
    cluster_id: int
    quality: float


@dataclass(frozen=True)
class PartClusterRow(ClusterRow):
    """With parts-aware clustering: the image's region that belongs to the cluster, and whether it is the
    whole image (a copy) or a part of it (a montage tile, the photo in a screenshot)."""

    region_x0: float
    region_y0: float
    region_x1: float
    region_y1: float
    copy: str  # whole | part


def csv_columns(algo: str = "components") -> list[str]:
    return [f.name for f in fields(PartClusterRow if algo == "parts" else ClusterRow)]


def read_match_csv(paths: Iterable[str | Path]) -> list[Link]:
    """Links from query CSV files (pimmi's, with regions, or PIMMI's, without)."""
    edges = []
    for p in paths:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            need = {"query_image_id", "result_image_id", "nb_match_ransac"}
            if not reader.fieldnames or not need <= set(reader.fieldnames):
                raise ValueError(f"{p}: not a query CSV (needs columns {', '.join(sorted(need))})")
            boxed = "query_x0" in reader.fieldnames and "result_y1" in reader.fieldnames
            placed = "transform" in reader.fieldnames
            celled = "query_cells" in reader.fieldnames and "result_cells" in reader.fieldnames
            for line, row in enumerate(reader, start=2):
                q, r, n = int(row["query_image_id"]), int(row["result_image_id"]), int(row["nb_match_ransac"])
                if boxed:
                    t = tuple(float(x) for x in row["transform"].split()) if placed and row["transform"] else None
                    cells = _cells(p, line, row) if celled else (None, None)
                    edges.append(Link(q, r, n, _box(row, "query"), _box(row, "result"), t, *cells))
                else:
                    edges.append(Link(q, r, n))
    return edges


def _box(row: dict[str, str], side: str) -> Box:
    """The box ``side_x0 .. side_y1`` of a CSV row."""
    return tuple(float(row[f"{side}_{c}"]) for c in ("x0", "y0", "x1", "y1"))  # type: ignore[return-value]


def _cells(path: str | Path, line: int, row: dict[str, str]) -> tuple[bytes | None, bytes | None]:
    """A CSV row's ``query_cells`` and ``result_cells`` (empty: unknown)."""
    out = []
    for column in ("query_cells", "result_cells"):
        text = row[column] or ""
        if not text:
            out.append(None)
            continue
        try:
            cells = bytes.fromhex(text)
        except ValueError:
            cells = b""
        if len(cells) != len(FULL_CELLS):
            raise ValueError(f"{path}: line {line}: {column} is not {2 * len(FULL_CELLS)} hexadecimal digits")
        out.append(cells)
    return out[0], out[1]


def expand_csv_argument(arg: str) -> list[str]:
    """A CSV path, a glob pattern, or an output template (PIMMI's ``fou`` for fou1.csv, fou2.csv ..., or ``{}``)."""
    if Path(arg).is_file():
        return [arg]
    pattern = arg.replace("{}", "*") if ("{}" in arg or "*" in arg) else f"{arg.removesuffix('.csv')}*.csv"
    found = sorted(glob.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no query CSV matches {arg}")
    return found


def workspace_links(ws: Workspace) -> list[Link]:
    """The workspace's stored matches, but those a person marked wrong in the viewer."""
    return [Link(*row) for row in ws.match_links()]


def workspace_clusters(ws: Workspace, settings: Settings) -> list[ClusterRow]:
    """The clusters of the workspace's stored matches: what ``pimmi clusters INDEX_DIR`` writes. Images whose
    file is gone from its folder are left out, and their matches with them."""
    images = {r.id: r for r in ws.images("i.status != 'missing'")}
    return clusters(workspace_links(ws), images, settings.nb_match_ransac, settings.algo)


def read_clusters_csv(path: str | Path, images: dict[int, ImageRecord]) -> list[ClusterRow]:
    """The rows of a clusters CSV written by ``pimmi clusters`` (either algorithm's columns), or PIMMI's."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"image_id", "cluster_id"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ValueError(f"{path}: not a clusters CSV (needs columns {', '.join(sorted(need))})")
        parts = {"region_x0", "region_y1", "copy"} <= set(reader.fieldnames)
        rows: list[ClusterRow] = []
        for line, row in enumerate(reader, start=2):
            try:
                image_id, cid = int(row["image_id"]), int(row["cluster_id"])
            except ValueError:
                raise ValueError(f"{path}, line {line}: image_id and cluster_id must be integers") from None
            rec = images.get(image_id)
            if rec is None:
                raise ValueError(f"{path}, line {line}: image {image_id} is not in the workspace")
            base = (
                rec.path,
                image_id,
                rec.nb_points or 0,
                int(row.get("degree") or 0),
                cid,
                float(row.get("quality") or 0),
            )
            if parts:
                box = _box(row, "region")
                rows.append(PartClusterRow(*base, *box, row["copy"] or "whole"))
            else:
                rows.append(ClusterRow(*base))
    return rows


def clusters(
    edges: Iterable[Link],
    images: dict[int, ImageRecord],
    min_inliers: int,
    algo: str = "components",
    seed: int = 0,
) -> list[ClusterRow]:
    """Cluster the images joined by matches with at least ``min_inliers`` inliers.

    Clusters are numbered by decreasing size (ties: smallest image id first); images without
    any match are left out, as PIMMI does. ``quality`` is PIMMI's: the sum of inliers over
    the cluster's directed matches, divided by the most matches its images' points allow.
    """
    links = [
        e
        for e in edges
        if e.query != e.result and e.inliers >= min_inliers and e.query in images and e.result in images
    ]
    if algo == "parts":
        return part_clusters(links, images)
    weights: dict[tuple[int, int], int] = {}
    for e in links:
        weights[(e.query, e.result)] = max(e.inliers, weights.get((e.query, e.result), 0))
    ig = _igraph()

    nodes = sorted({v for e in weights for v in e})
    pos = {v: i for i, v in enumerate(nodes)}
    g = ig.Graph(n=len(nodes), edges=[(pos[q], pos[r]) for q, r in weights], directed=True)
    g.es["weight"] = list(weights.values())
    groups = _communities(g, algo, seed)
    groups = sorted((sorted(nodes[i] for i in grp) for grp in groups), key=lambda m: (-len(m), m[0]))
    undirected = g.as_undirected(mode="collapse")
    degree = dict(zip(nodes, undirected.degree()))
    rows = []
    for cid, members in enumerate(groups):
        inside = set(members)
        total = sum(w for (q, r), w in weights.items() if q in inside and r in inside)
        quality = _quality(total, [images[m].nb_points or 0 for m in members])
        for m in members:
            rec = images[m]
            rows.append(ClusterRow(rec.path, m, rec.nb_points or 0, degree[m], cid, round(quality, 6)))
    return rows


def _communities(g: ig.Graph, algo: str, seed: int) -> list[list[int]]:
    if algo == "components":
        return list(g.connected_components(mode="weak"))
    u = g.as_undirected(mode="collapse", combine_edges="sum")
    if algo == "louvain":
        return list(u.community_multilevel(weights="weight"))
    if algo == "leiden":
        import random

        ig = _igraph()
        random.seed(seed)  # igraph's Leiden draws from Python's generator
        ig.set_random_number_generator(random)
        return list(u.community_leiden(objective_function="modularity", weights="weight", n_iterations=-1))
    raise ValueError(f"unknown clustering algorithm {algo!r}")


def _quality(total_inliers: int, nb_points: list[int]) -> float:
    """PIMMI's quality: inliers over the most matches the images' points allow."""
    points = sorted(nb_points)
    best = 2 * sum(p * w for p, w in zip(points, range(len(points), 0, -1)))
    return total_inliers / best if best else 0.0


# -- parts-aware clustering
SAME_REGION = 0.5  # two regions of an image are one part when they overlap by half of the smaller
WHOLE = 0.5  # a region covering this share of its image makes the image a (whole) copy


def part_clusters(links: list[Link], images: dict[int, ImageRecord]) -> list[PartClusterRow]:
    """Cluster image *parts*: an image whose matches fall on distinct regions (a montage, a screenshot
    holding two photos) joins the cluster of each region, without merging those clusters.

    In each image, the regions of its matches are grouped into parts (regions overlapping by
    half of the smaller one); each part is a node, each match joins the parts it touches on both
    sides, and the clusters are the connected components of that graph. A region that spans
    several small separate parts (a whole copy of a grid) is split into one per part, each carried into
    the other image by the match's transform (``_split_by_parts``; between two images tiled there, only
    the parts holding its inliers); any other region spanning several parts touches them all.
    """
    sides = [(e.query, e.query_box or _whole(images[e.query]), e.result, e.result_box or _whole(images[e.result]), i)
             for i, e in enumerate(links)]  # fmt: skip
    sides = _split_by_parts(sides, links, images)
    regions: dict[int, list[tuple[Box, int]]] = defaultdict(list)
    for j, (a, box_a, b, box_b, _) in enumerate(sides):
        regions[a].append((box_a, j))
        regions[b].append((box_b, j))
    node_of: dict[tuple[int, int], int] = {}  # (image, part index) -> node
    touches: dict[tuple[int, int], list[int]] = defaultdict(list)  # (image, link) -> nodes
    node_image: list[int] = []
    node_boxes: list[list[Box]] = []
    for image, items in regions.items():
        parts: list[Box] = []  # a representative (the smallest) region per part
        for box, link in sorted(items, key=lambda it: _area(it[0])):
            hits = [k for k, rep in enumerate(parts) if _overlap(box, rep) >= SAME_REGION]
            if not hits:
                parts.append(box)
                hits = [len(parts) - 1]
            for k in hits:
                if (image, k) not in node_of:
                    node_of[(image, k)] = len(node_image)
                    node_image.append(image)
                    node_boxes.append([])
                node = node_of[(image, k)]
                node_boxes[node].append(box)
                touches[(image, link)].append(node)
    ig = _igraph()
    g = ig.Graph(n=len(node_image))
    g.add_edges([(x, y) for j, (a, _, b, _, _) in enumerate(sides) for x in touches[(a, j)] for y in touches[(b, j)]])
    # igraph's VertexClustering copies its membership list at each access: read it once (with 20k
    # clusters, indexing it per link and per cluster took 20 s).
    membership = g.connected_components().membership
    component_nodes: dict[int, list[int]] = defaultdict(list)
    for node, c in enumerate(membership):
        component_nodes[c].append(node)
    # Every node a link touches ends in one component (the link joins them): file each link once.
    links_of: dict[int, list[Link]] = defaultdict(list)
    first = {}  # a link split by parts is filed with its first piece
    for j, (a, _, _, _, i) in enumerate(sides):
        first.setdefault(i, membership[touches[(a, j)][0]])
    for i, c in first.items():
        links_of[c].append(links[i])
    groups = []
    for c, comp in sorted(component_nodes.items()):
        members = sorted({node_image[n] for n in comp})
        groups.append((members, comp, links_of[c]))
    groups.sort(key=lambda mc: (-len(mc[0]), mc[0][0]))
    rows = []
    for cid, (members, comp, inner) in enumerate(groups):
        partners: dict[int, set[int]] = defaultdict(set)
        total = 0
        for e in inner:
            partners[e.query].add(e.result)
            partners[e.result].add(e.query)
            total += e.inliers
        quality = round(_quality(total, [images[m].nb_points or 0 for m in members]), 6)
        boxes: dict[int, list[Box]] = defaultdict(list)
        for n in comp:
            boxes[node_image[n]] += node_boxes[n]
        for m in members:
            rec = images[m]
            x0, y0, x1, y1 = _union(boxes[m])
            whole = (x1 - x0) * (y1 - y0) >= WHOLE * max(1, (rec.width or 1) * (rec.height or 1))
            rows.append(
                PartClusterRow(
                    rec.path,
                    m,
                    rec.nb_points or 0,
                    len(partners[m]),
                    cid,
                    quality,
                    x0,
                    y0,
                    x1,
                    y1,
                    "whole" if whole else "part",
                )
            )
    return rows


Side = tuple[int, Box, int, Box, int]  # image a, its region, image b, its region, the link's index
TILE = 0.25  # a part covering less than this share of its image can be a tile of a grid or montage
MIN_CELLS = 2  # a part holds a link's inliers when this many of its cells hold some (verify.inlier_cells)


def _split_by_parts(sides: list[Side], links: list[Link], images: dict[int, ImageRecord]) -> list[Side]:
    """Links whose region in one image spans several separate small parts of it (a copy of a grid, two
    grids sharing tiles laid out alike) as one link per part, each part carried into the other image by the
    link's transform: the parts stay apart there too instead of joining through the one region."""
    regions: dict[int, list[Box]] = defaultdict(list)
    for a, box_a, b, box_b, _ in sides:
        regions[a].append(box_a)
        regions[b].append(box_b)
    parts = {image: _parts(boxes) for image, boxes in regions.items()}
    out = []
    for a, box_a, b, box_b, i in sides:
        e = links[i]
        if e.transform is None:
            out.append((a, box_a, b, box_b, i))
            continue
        small_a, small_b = _small_parts(a, box_a, parts, images), _small_parts(b, box_b, parts, images)
        tiles_a, tiles_b = _separate(small_a), _separate(small_b)
        if not (tiles_a or tiles_b):
            out.append((a, box_a, b, box_b, i))
            continue
        M = np.array(e.transform, np.float64).reshape(2, 3)
        # Where the inliers lie decides only between two images that both look tiled there.
        cells_a, cells_b = (e.query_cells, e.result_cells) if small_a and small_b else (None, None)
        if tiles_a and (pieces := _pieces(tiles_a, box_a, cells_a, images[b], M)):
            out += [(a, pa, b, pb, i) for pa, pb in pieces]
        elif tiles_b and (pieces := _pieces(tiles_b, box_b, cells_b, images[a], cv2.invertAffineTransform(M))):
            out += [(a, pa, b, pb, i) for pb, pa in pieces]
        else:
            out.append((a, box_a, b, box_b, i))
    return out


def _small_parts(image: int, box: Box, parts: dict[int, list[Box]], images: dict[int, ImageRecord]) -> list[Box]:
    """The parts of ``image`` that ``box`` spans, when it spans several and all are small (tiles of a
    grid, say); else none."""
    rec = images[image]
    area = max(1.0, (rec.width or 1) * (rec.height or 1))
    touched = [p for p in parts[image] if _overlap(box, p) >= SAME_REGION]
    if len(touched) < 2 or any(_area(p) >= TILE * area for p in touched):
        return []
    return touched


def _separate(parts: list[Box]) -> list[Box]:
    """``parts`` when none overlaps another; else none."""
    if any(_overlap(p, q) > 0.1 for k, p in enumerate(parts) for q in parts[k + 1 :]):
        return []
    return parts


def _pieces(
    tiles: list[Box], box: Box, cells: bytes | None, other: ImageRecord, M: np.ndarray
) -> list[tuple[Box, Box]]:
    """(tile, its image in ``other``) for each tile that the link of region ``box`` spans and, when its
    ``cells`` are given, that holds some of its inliers.

    Two grids that share two tiles laid out alike match through one transform, and the bounding box of
    its inliers spans the tiles beside them too: those hold no inlier, and are not carried into the other
    grid, where the transform would lay them on tiles of other photos. Cells are given only when the
    region spans small parts in both images: a photo whose parts are the regions of two crops (one with
    no keypoint of a whole copy's inliers) lies whole in that copy, every part where the transform puts it."""
    if cells is not None:
        tiles = [p for p in tiles if cells_inside(cells, box, p) >= MIN_CELLS] or tiles
    out = []
    for p in tiles:
        corners = box_quad(p, M)
        x0, y0 = np.maximum(corners.min(axis=0), 0)
        x1, y1 = np.minimum(corners.max(axis=0), [other.width or 0, other.height or 0])
        if x1 > x0 and y1 > y0:
            out.append((p, (float(x0), float(y0), float(x1), float(y1))))
    return out if len(out) >= 2 or (out and cells is not None) else []


def box_quad(box: Box, T: np.ndarray) -> np.ndarray:
    """A box's corners carried by ``T`` (2x3)."""
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64) @ T[:, :2].T + T[:, 2]


def _parts(boxes: list[Box]) -> list[Box]:
    """An image's parts: its regions grouped (smallest first) with those overlapping half of the smaller;
    each part is represented by its smallest region."""
    parts: list[Box] = []
    for box in sorted(boxes, key=_area):
        if not any(_overlap(box, rep) >= SAME_REGION for rep in parts):
            parts.append(box)
    return parts


def _whole(rec: ImageRecord) -> Box:
    return (0.0, 0.0, float(rec.width or 0), float(rec.height or 0))


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _overlap(a: Box, b: Box) -> float:
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    return inter / max(1e-9, min(_area(a), _area(b)))


def _union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
