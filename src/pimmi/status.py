"""`pimmi status`: what a workspace holds and what is happening to it, for people (text) or scripts (JSON)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pimmi.workspace import CATALOGUE, Workspace, WorkspaceError, lock_holder

COMMON_ERRORS = 5


def workspace_status(directory: str | Path) -> dict[str, Any]:
    """Images by status (with the commonest error reasons), the index, the posts and review marks, the last
    run of each command, the writer holding the lock. A damaged catalogue gives ``{"damaged": reason}``."""
    d = Path(directory)
    out: dict[str, Any] = {"workspace": str(d), "writer": lock_holder(d)}
    if not (d / CATALOGUE).exists():
        raise WorkspaceError(f"{d} is not a pimmi workspace (no {CATALOGUE}); run 'pimmi fill' first")
    try:
        ws = Workspace(d, create=False)
    except WorkspaceError as e:
        return out | {"damaged": str(e)}
    with ws:
        db = ws.db
        out["schema_version"] = int(ws.get_meta("schema_version") or 0)
        out["images"] = dict(db.execute("SELECT status, COUNT(*) FROM images GROUP BY status ORDER BY status"))
        out["images_total"] = sum(out["images"].values())
        errors = Counter(dict(db.execute("SELECT error, COUNT(*) FROM images WHERE status = 'error' GROUP BY error")))
        out["commonest_errors"] = [{"reason": r, "images": n} for r, n in errors.most_common(COMMON_ERRORS)]
        out["index"] = _index(ws)
        out["matches"] = db.execute("SELECT COUNT(*) FROM matches").fetchone()[0]
        out["posts"] = db.execute("SELECT COUNT(*) FROM posts").fetchone()[0]
        out["review_marks"] = db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]
        out["last_runs"] = [
            {"command": c, "started": _iso(s), "seconds": round(f - s, 1) if f else None, "finished": f is not None}
            for c, s, f in db.execute(
                "SELECT command, started, finished FROM runs r WHERE id = "
                "(SELECT MAX(id) FROM runs WHERE command = r.command) ORDER BY started"
            )
        ]
        out["next_query"] = _next_query(ws)
        out["feature_settings"] = ws.feature_settings()
    return out


def _index(ws: Workspace) -> dict[str, Any]:
    path = ws.index_path()
    info: dict[str, Any] = {
        "type": ws.get_meta("index_type"),
        "file": path.name if path else None,
        "bytes": path.stat().st_size if path and path.exists() else 0,
        "images_indexed": ws.count("indexed = 1"),
        "descriptors": ws.total_points("indexed = 1"),
    }
    if path and path.exists():
        import faiss

        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        ivf = faiss.try_extract_index_ivf(index) if "IVF" in (info["type"] or "") else None
        if ivf is not None:
            info["lists"] = ivf.nlist
            info["list_imbalance"] = round(float(ivf.invlists.imbalance_factor()), 3)
    return info


def _next_query(ws: Workspace) -> dict[str, int]:
    """What a query of the catalogue's images (those still there) would compute, with the last query's
    settings."""
    from pimmi.query import plan_query

    images = [i for i, status, *_ in ws.query_state() if status != "missing"]
    plan = plan_query(ws, images, None)
    return {"search": len(plan.search), "up_to_date": plan.known}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def status_text(s: dict[str, Any]) -> str:
    lines = [f"workspace {s['workspace']}"]
    lines.append(f"  writer: {s['writer'] or 'none'}")
    if "damaged" in s:
        return "\n".join(lines + [f"  damaged: {s['damaged']}"])
    by = ", ".join(f"{n} {k}" for k, n in s["images"].items()) or "none"
    lines.append(f"  images: {s['images_total']} ({by}); schema {s['schema_version']}")
    for e in s["commonest_errors"]:
        lines.append(f"    {e['images']} x {e['reason']}")
    ix = s["index"]
    if ix["file"]:
        extra = f", {ix['lists']} lists, imbalance {ix['list_imbalance']}" if "lists" in ix else ""
        lines.append(
            f"  index: {ix['type']}, {ix['descriptors']} descriptors of {ix['images_indexed']} images, "
            f"{ix['bytes'] / 2**20:.1f} MB{extra}"
        )
    else:
        lines.append("  index: none yet")
    lines.append(f"  matches: {s['matches']}; posts: {s['posts']}; review marks: {s['review_marks']}")
    nq = s["next_query"]
    lines.append(f"  next query: {nq['search']} images to search, {nq['up_to_date']} up to date")
    for r in s["last_runs"]:
        took = f"{r['seconds']} s" if r["finished"] else "did not finish (interrupted, or running)"
        lines.append(f"  last {r['command']}: {r['started']}, {took}")
    return "\n".join(lines)


def status_json(s: dict[str, Any]) -> str:
    return json.dumps(s, indent=1, sort_keys=True)
