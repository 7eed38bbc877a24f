"""`pimmi eval`: PIMMI's metrics of a clustering against a truth column."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path


def best_matching_macro_average(truth: list[list[int]], predicted: list[list[int]]) -> tuple[float, float, float]:
    """For each truth cluster, the predicted cluster of best F1; precision, recall and F1 averaged over truth."""
    where = {}
    size = {}
    for i, cluster in enumerate(predicted):
        for item in cluster:
            where[item] = i
        size[i] = len(cluster)
    P = R = F = 0.0
    for cluster in truth:
        best = (0.0, 0.0, -1.0)
        for cid, tp in Counter(where[item] for item in cluster).items():
            p, r = tp / size[cid], tp / len(cluster)
            f = 2 * p * r / (p + r)
            if f > best[2]:
                best = (p, r, f)
        P, R, F = P + best[0], R + best[1], F + best[2]
    n = len(truth)
    return P / n, R / n, F / n


def evaluate(
    path: str | Path,
    truth_column: str = "truth",
    predicted_column: str = "cluster_id",
    query_column: str | None = None,
    ignore_missing: bool = False,
) -> dict[str, float]:
    """Cluster precision, recall and F1 (best-matching macro average), and with ``query_column``
    (rows whose value is ``original`` are queries) the query average precision, as PIMMI reports them.

    Rows with no predicted cluster are singletons, unless ``ignore_missing``.
    """
    truth, predicted = defaultdict(list), defaultdict(list)
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for col in filter(None, (truth_column, predicted_column, query_column)):
            if col not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no column {col!r} (columns: {', '.join(reader.fieldnames or [])})")
        for i, row in enumerate(reader):
            pred = (row.get(predicted_column) or "").strip()
            if not pred:
                if ignore_missing:
                    continue
                pred = f"singleton-{i}"
            truth[row[truth_column]].append(i)
            predicted[pred].append(i)
            rows.append((i, row[truth_column], pred, row.get(query_column) if query_column else None))
    if not rows:
        raise ValueError(f"{path}: no rows to evaluate")
    p, r, f1 = best_matching_macro_average(list(truth.values()), list(predicted.values()))
    out = {"cluster precision": p, "cluster recall": r, "cluster f1": f1}
    if query_column:
        members = {c: [t for _, t, pc, _ in rows if pc == c] for c in predicted}
        precisions = []
        for _, t, pred, status in rows:
            if status == "original":
                others = list(members[pred])
                others.remove(t)
                precisions.append(sum(1 for x in others if x == t) / len(others) if others else 0.0)
        if precisions:
            out["query average precision"] = sum(precisions) / len(precisions)
    return out
