"""`pimmi viz`: the clusters as the JSON records PIMMI's viewer reads, with the graph's edges added."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from pimmi.clusters import Link
from pimmi.workspace import ImageRecord


def viz_json(clusters_csv: str | Path, edges: list[Link], images: dict[int, ImageRecord]) -> str:
    """One record per cluster, largest first: ``cluster, images, sample_path, nb_images, match_quality``,
    plus ``edges`` ([query path, result path, inliers]) for a graph view."""
    members: dict[str, list[tuple[int, str]]] = defaultdict(list)
    quality: dict[str, float] = {}
    with open(clusters_csv, newline="") as f:
        for row in csv.DictReader(f):
            members[row["cluster_id"]].append((int(row["image_id"]), row["path"]))
            quality[row["cluster_id"]] = float(row.get("quality") or 0)
    clusters_of: dict[int, set[str]] = defaultdict(set)  # an image may be in several (parts-aware clustering)
    for c, ms in members.items():
        for i, _ in ms:
            clusters_of[i].add(c)
    cluster_edges = defaultdict(list)
    for e in edges:
        for c in clusters_of.get(e.query, set()) & clusters_of.get(e.result, set()):
            cluster_edges[c].append([images[e.query].path, images[e.result].path, e.inliers])
    records = [
        {
            "cluster": int(c) if c.isdigit() else c,
            "images": [p for _, p in sorted(ms)],
            "sample_path": sorted(ms)[0][1],
            "nb_images": len(ms),
            "match_quality": quality[c],
            "edges": cluster_edges[c],
        }
        for c, ms in members.items()
    ]
    records.sort(key=lambda r: (-r["nb_images"], str(r["cluster"])))
    return json.dumps(records, indent=1) + "\n"
