"""`pimmi timeline`: one row per cluster joining its images to their posts (first and last post, accounts,
peak day, the likely original), and plots of how each cluster spread (matplotlib, optional: pimmi[plots])."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

from pimmi.clusters import ClusterRow
from pimmi.paths import shown_path
from pimmi.posts import post_rows, to_iso
from pimmi.provenance import ProvenanceRow
from pimmi.workspace import Workspace


@dataclass(frozen=True)
class ClusterSummary:
    cluster_id: int
    nb_images: int
    nb_posts: int
    nb_accounts: int
    first_date: str
    first_post_id: str
    first_account: str
    first_url: str
    last_date: str
    peak_day: str
    root_path: str
    root_confidence: float | str
    root_is_earliest: int | str  # 1 when the likely original is the first image posted; empty without posts


def summary_columns() -> list[str]:
    return [f.name for f in fields(ClusterSummary)]


@dataclass(frozen=True)
class ClusterPosts:
    """The posts of one cluster's images: (date, post id, account, url, image id), by date."""

    cluster_id: int
    posts: list[tuple[float, str, str, str, int]]


def cluster_posts(ws: Workspace, rows: list[ClusterRow]) -> dict[int, ClusterPosts]:
    members: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        members[r.cluster_id].append(r.image_id)
    out = {}
    for cid, ids in members.items():
        seen: dict[int, tuple[float, str, str, str, int]] = {}
        for image_id, post_row, date, post_id, account, _platform, url in post_rows(ws, ids):
            if post_row not in seen or image_id < seen[post_row][4]:  # a post carrying two of its images: once
                seen[post_row] = (date, post_id, account, url, image_id)
        out[cid] = ClusterPosts(cid, sorted(seen.values(), key=lambda p: (p[0], p[1])))
    return out


def summaries(ws: Workspace, rows: list[ClusterRow], provenance: list[ProvenanceRow] | None) -> list[ClusterSummary]:
    members: dict[int, set[int]] = defaultdict(set)
    for r in rows:
        members[r.cluster_id].add(r.image_id)
    roots: dict[int, ProvenanceRow] = {}
    for p in provenance or []:
        if not p.parent:
            for cid in p.cluster_id.split(";"):
                roots[int(cid)] = p
    posts = cluster_posts(ws, rows)
    out = []
    for cid in sorted(members):
        ps = posts[cid].posts
        root = roots.get(cid)
        days = Counter(to_iso(p[0])[:10] for p in ps)
        first, last = (ps[0], ps[-1]) if ps else (None, None)
        earliest: int | str = ""
        if root is not None and first is not None:
            root_first = min((p[0] for p in ps if p[4] == root.image_id), default=None)
            earliest = int(root_first is not None and root_first <= first[0])
        out.append(
            ClusterSummary(
                cid,
                len(members[cid]),
                len(ps),
                len({p[2] for p in ps}),
                to_iso(first[0]) if first else "",
                first[1] if first else "",
                first[2] if first else "",
                first[3] if first else "",
                to_iso(last[0]) if last else "",
                max(days, key=lambda d: (days[d], d)) if days else "",
                root.path if root else "",
                root.confidence if root else "",
                earliest,
            )
        )
    return out


def plot_timelines(
    ws: Workspace,
    rows: list[ClusterRow],
    provenance: list[ProvenanceRow] | None,
    out_dir: str | Path,
    largest: int = 12,
) -> list[Path]:
    """A timeline per cluster with posts (posts per day, stacked by image, the likely original's first post
    marked), as PNG and SVG, and ``overview.png/svg`` for the ``largest`` clusters. Returns the files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'pimmi[plots]'") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    roots = {int(c): p.image_id for p in provenance or [] if not p.parent for c in p.cluster_id.split(";")}
    paths = {r.image_id: r.path for r in rows}
    written = []
    posts = {cid: cp for cid, cp in cluster_posts(ws, rows).items() if cp.posts}
    for cid, cp in posts.items():
        fig = timeline_figure(plt, cp, roots.get(cid), paths)
        written += _save(fig, out / f"cluster-{cid}", plt)
    if posts:
        top = sorted(posts.values(), key=lambda cp: (-len(cp.posts), cp.cluster_id))[:largest]
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(top) + 1.5))
        for y, cp in enumerate(top):
            dates = [dt.datetime.fromtimestamp(p[0], dt.timezone.utc) for p in cp.posts]
            ax.scatter(dates, [y] * len(dates), s=12, alpha=0.6)
        ax.set_yticks(range(len(top)), [f"cluster {cp.cluster_id} ({len(cp.posts)} posts)" for cp in top])
        ax.invert_yaxis()
        ax.set_title(f"Posts of the {len(top)} clusters posted most")
        fig.autofmt_xdate()
        written += _save(fig, out / "overview", plt)
    return written


def timeline_svg(ws: Workspace, rows: list[ClusterRow], cluster_id: int, root: int | None) -> bytes | None:
    """One cluster's timeline as SVG (the viewer's), None when it has no posts."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cp = cluster_posts(ws, [r for r in rows if r.cluster_id == cluster_id]).get(cluster_id)
    if cp is None or not cp.posts:
        return None
    fig = timeline_figure(plt, cp, root, {r.image_id: r.path for r in rows if r.cluster_id == cluster_id})
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def timeline_figure(plt, cp: ClusterPosts, root: int | None, paths: dict[int, str]):
    """Posts per day of one cluster, stacked by image (the 8 posted most; the others together)."""
    by_image = Counter(p[4] for p in cp.posts)
    shown = [i for i, _ in by_image.most_common(8)]
    days = sorted({to_iso(p[0])[:10] for p in cp.posts})
    day_index = {d: k for k, d in enumerate(days)}
    x = [dt.date.fromisoformat(d) for d in days]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    bottom = [0] * len(days)
    for image in [*shown, None]:
        counts = [0] * len(days)
        for p in cp.posts:
            if (p[4] == image) if image is not None else p[4] not in shown:
                counts[day_index[to_iso(p[0])[:10]]] += 1
        if not any(counts):
            continue
        label = "other images" if image is None else shown_path(os.path.basename(paths.get(image, str(image))))
        if image is not None and image == root:
            label += " (likely original)"
        ax.bar(x, counts, bottom=bottom, label=label, width=0.9)
        bottom = [b + c for b, c in zip(bottom, counts)]
    if root is not None:
        first = min((p[0] for p in cp.posts if p[4] == root), default=None)
        if first is not None:
            ax.axvline(
                dt.datetime.fromtimestamp(first, dt.timezone.utc).date(),
                color="black",
                linestyle="--",
                linewidth=1,
                label="first post of the likely original",
            )
    ax.set_title(f"Cluster {cp.cluster_id}: {len(cp.posts)} posts, {len({p[2] for p in cp.posts})} accounts")
    ax.set_ylabel("posts per day")
    ax.legend(fontsize=7, loc="upper right")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _save(fig, stem: Path, plt) -> list[Path]:
    files = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
        files.append(path)
    plt.close(fig)
    return files
