"""`pimmi posts`: the posts that published the images (a CSV from a collection tool), joined to the catalogue.

The CSV is streamed: a file of millions of posts is read row by row and written in batches,
in one transaction that replaces an earlier import. Rows with an unreadable date or naming an
image the catalogue does not hold are counted and reported (the first ones with their line
numbers), never fatal.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pimmi.progress import bar
from pimmi.workspace import Workspace

# Column names, the first found wins: the médialab's collection tools (minet, twitter exports) and
# ../shared/bench's posts.csv.
COLUMNS: dict[str, tuple[str, ...]] = {
    "post_id": ("post_id", "id", "tweet_id", "message_id"),
    "date": ("date", "timestamp_utc", "created_at", "timestamp", "published_at"),
    "account": ("account", "user_screen_name", "screen_name", "user", "author", "channel"),
    "platform": ("platform", "source"),
    "url": ("url", "link", "permalink"),
    "text": ("text", "message", "caption", "body"),
    "media_files": ("media_files", "media", "images", "files"),
}
REQUIRED = ("post_id", "date", "media_files")
BATCH = 5000
SHOWN = 5  # problem rows named in the report, per kind


class PostsError(ValueError):
    """A posts file that cannot be imported at all (its columns); the message names the file and the fields."""


@dataclass
class PostsReport:
    rows: int = 0
    posts: int = 0  # rows imported (with a readable date and at least one known image)
    links: int = 0  # (post, image) pairs
    images_posted: int = 0
    bad_dates: int = 0
    unknown_images: int = 0  # media names the catalogue does not hold
    no_media: int = 0
    not_utf8: int = 0  # rows with bytes that are not UTF-8 (kept, shown as U+FFFD)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def note(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples[kind]) < SHOWN:
            self.examples[kind].append(text)


def parse_date(value: str) -> float | None:
    """Unix seconds (UTC) from ISO 8601 (with or without a zone: none means UTC), Unix seconds, or Twitter's
    ``Wed Oct 10 20:19:24 +0000 2018``; None when it is none of these."""
    v = value.strip()
    if not v:
        return None
    try:
        return float(v) if v.replace(".", "", 1).isdigit() else _iso(v)
    except ValueError:
        pass
    try:
        return dt.datetime.strptime(v, "%a %b %d %H:%M:%S %z %Y").timestamp()
    except ValueError:
        return None


def _iso(v: str) -> float:
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    t = dt.datetime.fromisoformat(v)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def resolve_columns(header: list[str], names: dict[str, str | None], path: str) -> dict[str, str | None]:
    """The CSV column holding each field: the name given, else the first default found."""
    out: dict[str, str | None] = {}
    missing = []
    for key, defaults in COLUMNS.items():
        given = names.get(key)
        if given:
            if given not in header:
                missing.append(f"{key} (asked column {given!r})")
            out[key] = given
            continue
        out[key] = next((c for c in defaults if c in header), None)
        if out[key] is None and key in REQUIRED:
            missing.append(f"{key} (one of {', '.join(defaults)})")
    if missing:
        raise PostsError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {'; '.join(missing)}; has {', '.join(header)}"
        )
    return out


class ImageNames:
    """Media names to catalogue ids: the path relative to the image folder, else the file name alone when
    only one catalogued image has it."""

    def __init__(self, ws: Workspace):
        self.by_path: dict[str, int] = {}
        names: dict[str, list[int]] = defaultdict(list)
        for image_id, path in ws.db.execute("SELECT id, path FROM images"):
            self.by_path.setdefault(path, image_id)
            names[os.path.basename(path)].append(image_id)
        self.by_name = {n: ids[0] for n, ids in names.items() if len(ids) == 1}

    def find(self, media: str) -> int | None:
        m = media.strip().replace("\\", "/")
        while m.startswith("./"):
            m = m[2:]
        return self.by_path.get(m) or self.by_name.get(os.path.basename(m))


def import_posts(
    workspace_dir: str | Path,
    posts_csv: str | Path,
    columns: dict[str, str | None] | None = None,
    separator: str = "|",
    progress: bool = True,
) -> PostsReport:
    """Import the posts of ``posts_csv`` into the workspace, replacing an earlier import."""
    report = PostsReport()
    size = os.path.getsize(posts_csv)
    with Workspace(workspace_dir, create=False) as ws, open(posts_csv, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if not header:
            raise PostsError(f"{posts_csv}: empty file, no header")
        header = [h.strip().lstrip("\ufeff") for h in header]
        cols = resolve_columns(header, columns or {}, str(posts_csv))
        index = {k: header.index(c) if c else None for k, c in cols.items()}
        names = ImageNames(ws)
        posted: set[int] = set()
        with ws.transaction() as db, bar(size, "posts", progress, unit="B") as pbar:
            db.execute("DELETE FROM post_images")
            db.execute("DELETE FROM posts")
            posts, links = [], []
            last_pos = 0
            for line, row in _rows(reader):
                report.rows += 1
                post = _post(row, index, line, separator, names, report)
                if post is not None:
                    record, image_ids = post
                    posts.append(record)
                    links += [(record[0], i) for i in image_ids]
                    posted.update(image_ids)
                if len(posts) >= BATCH:
                    _flush(db, posts, links, report)
                    posts, links = [], []
                    pos = raw.tell()
                    pbar.update(pos - last_pos)
                    last_pos = pos
            _flush(db, posts, links, report)
            pbar.update(size - last_pos)
        report.images_posted = len(posted)
    return report


def _rows(reader) -> Iterator[tuple[int, list[str]]]:
    """Rows with the line each starts on (a quoted field may span lines)."""
    start = reader.line_num + 1
    for row in reader:
        yield start, row
        start = reader.line_num + 1


def _post(row: list[str], index: dict[str, int | None], line: int, sep: str, names: ImageNames, report: PostsReport):
    def get(key: str) -> str:
        i = index[key]
        return row[i] if i is not None and i < len(row) else ""

    if any("\ufffd" in v for v in row):
        report.note("not_utf8", f"line {line}")
    date = parse_date(get("date"))
    if date is None:
        report.note("bad_dates", f"line {line}: {get('date')[:40]!r}")
        return None
    media = [m for m in get("media_files").split(sep) if m.strip()]
    if not media:
        report.note("no_media", f"line {line}")
        return None
    ids = []
    for m in media:
        image_id = names.find(m)
        if image_id is None:
            report.note("unknown_images", f"line {line}: {m[:80]}")
        elif image_id not in ids:
            ids.append(image_id)
    if not ids:
        return None
    record = (report.rows, get("post_id"), date, get("account"), get("platform"), get("url"), get("text"), line)
    return record, ids


def _flush(db, posts: list[tuple], links: list[tuple[int, int]], report: PostsReport) -> None:
    db.executemany(
        "INSERT INTO posts (id, post_id, date, account, platform, url, text, line) VALUES (?,?,?,?,?,?,?,?)", posts
    )
    db.executemany("INSERT OR IGNORE INTO post_images (post, image_id) VALUES (?, ?)", links)
    report.posts += len(posts)
    report.links += len(links)


def report_lines(report: PostsReport, path: str) -> list[str]:
    """What the import did and what it left out, for people (stderr)."""
    lines = [
        f"pimmi posts: {report.posts} of {report.rows} posts imported from {path}, {report.links} images posted "
        f"({report.images_posted} distinct)"
    ]
    what = {
        "bad_dates": "rows with an unreadable date, left out",
        "unknown_images": "media names not in the catalogue",
        "no_media": "rows without media, left out",
        "not_utf8": "rows with bytes that are not UTF-8 (kept, shown as \ufffd)",
    }
    for kind, label in what.items():
        n = getattr(report, kind)
        if n:
            lines.append(f"pimmi posts: {n} {label}: {', '.join(report.examples[kind])}{', ...' if n > SHOWN else ''}")
    return lines


# -- reading them back
@dataclass(frozen=True)
class Post:
    post_id: str
    date: float
    account: str
    platform: str
    url: str
    text: str


def has_posts(ws: Workspace) -> bool:
    return ws.db.execute("SELECT 1 FROM posts LIMIT 1").fetchone() is not None


def posts_of(ws: Workspace, image_id: int) -> list[Post]:
    rows = ws.db.execute(
        "SELECT p.post_id, p.date, p.account, p.platform, p.url, p.text FROM posts p "
        "JOIN post_images pi ON pi.post = p.id WHERE pi.image_id = ? ORDER BY p.date, p.id",
        (image_id,),
    )
    return [Post(*r) for r in rows]


def first_posts(ws: Workspace) -> dict[int, float]:
    """Each posted image's first post date (Unix seconds)."""
    rows = ws.db.execute(
        "SELECT pi.image_id, MIN(p.date) FROM post_images pi JOIN posts p ON p.id = pi.post GROUP BY pi.image_id"
    )
    return dict(rows.fetchall())


def post_rows(ws: Workspace, image_ids: list[int]) -> list[tuple[int, int, float, str, str, str, str]]:
    """(image id, post row id, date, post id, account, platform, url) of the posts of ``image_ids``."""
    out = []
    ids = sorted(set(image_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        out += ws.db.execute(
            "SELECT pi.image_id, p.id, p.date, p.post_id, p.account, p.platform, p.url FROM post_images pi "
            f"JOIN posts p ON p.id = pi.post WHERE pi.image_id IN ({marks})",
            chunk,
        ).fetchall()
    return out


def post_words(ws: Workspace, image_ids: list[int]) -> str:
    """The accounts and texts of the posts of ``image_ids``, lower-cased: what the viewer's search reads."""
    words = set()
    ids = sorted(set(image_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for account, text in ws.db.execute(
            "SELECT DISTINCT p.account, p.text FROM post_images pi JOIN posts p ON p.id = pi.post "
            f"WHERE pi.image_id IN ({marks})",
            chunk,
        ):
            words.add(f"{account or ''}\n{text or ''}".lower())
    return "\n".join(sorted(words))


def to_iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
