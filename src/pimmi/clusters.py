"""`pimmi clusters`: the graph of verified matches, and its clusters (components or communities)."""

from __future__ import annotations

import csv
import glob
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import igraph as ig

from pimmi.workspace import ImageRecord


@dataclass(frozen=True)
class ClusterRow:
    """One image in one cluster: PIMMI's clusters columns."""

    path: str
    image_id: int
    nb_points: int
    degree: int
    cluster_id: int
    quality: float


def csv_columns() -> list[str]:
    return [f.name for f in fields(ClusterRow)]


def read_match_csv(paths: Iterable[str | Path]) -> list[tuple[int, int, int]]:
    """(query id, result id, inliers) from query CSV files (pimmi's or PIMMI's)."""
    edges = []
    for p in paths:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            need = {"query_image_id", "result_image_id", "nb_match_ransac"}
            if not reader.fieldnames or not need <= set(reader.fieldnames):
                raise ValueError(f"{p}: not a query CSV (needs columns {', '.join(sorted(need))})")
            for row in reader:
                edges.append((int(row["query_image_id"]), int(row["result_image_id"]), int(row["nb_match_ransac"])))
    return edges


def expand_csv_argument(arg: str) -> list[str]:
    """A CSV path, a glob pattern, or an output template (PIMMI's ``fou`` for fou1.csv, fou2.csv ..., or ``{}``)."""
    if Path(arg).is_file():
        return [arg]
    pattern = arg.replace("{}", "*") if ("{}" in arg or "*" in arg) else f"{arg.removesuffix('.csv')}*.csv"
    found = sorted(glob.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no query CSV matches {arg}")
    return found


def clusters(
    edges: Iterable[tuple[int, int, int]],
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
    weights: dict[tuple[int, int], int] = {}
    for q, r, n in edges:
        if q != r and n >= min_inliers and q in images and r in images:
            weights[(q, r)] = max(n, weights.get((q, r), 0))
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
        points = sorted(images[m].nb_points or 0 for m in members)
        best = 2 * sum(p * w for p, w in zip(points, range(len(points), 0, -1)))
        quality = total / best if best else 0.0
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

        random.seed(seed)  # igraph's Leiden draws from Python's generator
        ig.set_random_number_generator(random)
        return list(u.community_leiden(objective_function="modularity", weights="weight", n_iterations=-1))
    raise ValueError(f"unknown clustering algorithm {algo!r}")
