"""The workspace (INDEX_DIR): an SQLite catalogue of images, features, matches and runs, plus the FAISS index.

Layout::

    INDEX_DIR/
      pimmi.sqlite        catalogue (tables: meta, roots, images, features, matches, reviews, runs)
      index-NNNNNN.faiss  the current FAISS index; its name is recorded in meta.index_file
      thumbs/SIZE/ID.jpg  thumbnails the viewer and the report made (a cache: safe to delete)

Every write is a transaction, and the index file is written beside the old one and
recorded in the catalogue in the same transaction that marks its images indexed, so a
killed process leaves the workspace as it was at the last commit.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pimmi.paths import read_path, stored_path
from pimmi.settings import LEGACY_FEATURE_SETTINGS
from pimmi.sift import Features, repeated_keypoints

SCHEMA_VERSION = 6
CATALOGUE = "pimmi.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    root_id INTEGER NOT NULL REFERENCES roots(id),
    path TEXT NOT NULL,
    size INTEGER,
    mtime REAL,
    sha1 TEXT,
    width INTEGER,
    height INTEGER,
    scale REAL,
    nb_points INTEGER,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    duplicate_of INTEGER,
    indexed INTEGER NOT NULL DEFAULT 0,
    indexed_gen INTEGER,
    queried_gen INTEGER,
    UNIQUE (root_id, path)
);
CREATE INDEX IF NOT EXISTS images_sha1 ON images (sha1);
CREATE TABLE IF NOT EXISTS features (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    xy BLOB NOT NULL,
    descriptors BLOB NOT NULL,
    repeated BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS matches (
    query_id INTEGER NOT NULL,
    result_id INTEGER NOT NULL,
    mirrored INTEGER NOT NULL,
    nb_match_total INTEGER NOT NULL,
    nb_match_ransac INTEGER NOT NULL,
    ransac_ratio REAL NOT NULL,
    query_box TEXT NOT NULL,
    result_box TEXT NOT NULL,
    transform TEXT NOT NULL,
    run_id INTEGER,
    derived INTEGER NOT NULL DEFAULT 0,
    query_cells BLOB,
    result_cells BLOB,
    PRIMARY KEY (query_id, result_id)
);
CREATE TABLE IF NOT EXISTS unindexed (
    image_id INTEGER PRIMARY KEY,
    nb_points INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    kind TEXT NOT NULL,
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    members TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (kind, a, b)
);
CREATE TABLE IF NOT EXISTS posts (
    id INTEGER PRIMARY KEY,
    post_id TEXT NOT NULL,
    date REAL,
    account TEXT,
    platform TEXT,
    url TEXT,
    text TEXT,
    line INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS post_images (
    post INTEGER NOT NULL REFERENCES posts(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    PRIMARY KEY (image_id, post)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    settings TEXT NOT NULL,
    stats TEXT
);
"""


# The status a missing image returns to when its file is found again.
_RESTORED = (
    "(CASE WHEN EXISTS (SELECT 1 FROM features f WHERE f.image_id = images.id) THEN 'ok' "
    "WHEN duplicate_of IS NOT NULL THEN 'duplicate' WHEN error IS NOT NULL THEN 'error' ELSE 'pending' END)"
)


class WorkspaceError(Exception):
    pass


class WorkspaceBusy(WorkspaceError):
    """Another process is writing the workspace (the CLI exits with status 75, EX_TEMPFAIL)."""


LOCK = "pimmi.lock"


@contextmanager
def writer_lock(directory: str | Path, command: str, wait: bool = False) -> Iterator[None]:
    """Hold the workspace's one-writer lock while writing it: an OS lock on ``INDEX_DIR/pimmi.lock``, which
    the kernel releases when the process ends, even killed. A second writer is refused at once, naming the
    holder (``wait``: it waits instead). Readers take no lock: SQLite's WAL shows them the last commit."""
    import fcntl

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(d) or "another process"
            if not wait:
                raise WorkspaceBusy(
                    f"{d} is being written by {holder}; run this again when it is done, or with --wait"
                ) from None
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "command": command, "started": time.time()}))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def lock_holder(directory: str | Path) -> str | None:
    """Who holds the workspace's writer lock ("pimmi fill (pid 123, since 2026-12-01 09:30:12)"), or None."""
    import fcntl

    path = Path(directory) / LOCK
    if not path.exists():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(path.read_text() or "{}")
            except ValueError:
                info = {}
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
            return f"pimmi {info.get('command', '?')} (pid {info.get('pid', '?')}, since {since})"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str  # relative to its root
    root: str
    status: str
    width: int | None
    height: int | None
    scale: float | None
    nb_points: int | None
    error: str | None
    duplicate_of: int | None

    @property
    def full_path(self) -> str:
        return os.path.join(self.root, self.path)


def stored_feature_settings(directory: str | Path) -> dict[str, Any] | None:
    """The extraction settings a workspace was built with; None when there is no workspace or none yet."""
    if not (Path(directory) / CATALOGUE).exists():
        return None
    with Workspace(directory, create=False) as ws:
        return ws.feature_settings()


class ImageRecords(Mapping[int, ImageRecord]):
    """The catalogue's image records by id, each read from the catalogue when first asked for, then kept.

    A query of a few thousand images meets a few thousand others; reading the records of a million
    indexed images up front took 15 s (2026-12-02). ``load`` reads many at once. Not for threads: the
    catalogue's connection is its creator's.
    """

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._known: dict[int, ImageRecord | None] = {}  # None: not in the catalogue

    def load(self, image_ids: Iterable[int]) -> None:
        todo = [i for i in image_ids if i not in self._known]
        if todo:
            self._known.update(dict.fromkeys(todo))
            self._known.update((r.id, r) for r in self.ws.images_by_id(todo))

    def __getitem__(self, image_id: int) -> ImageRecord:
        if image_id not in self._known:
            self.load([image_id])
        rec = self._known[image_id]
        if rec is None:
            raise KeyError(image_id)
        return rec

    def __iter__(self) -> Iterator[int]:
        return (i for (i,) in self.ws.db.execute("SELECT id FROM images ORDER BY id").fetchall())

    def __len__(self) -> int:
        return self.ws.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]


class Workspace:
    def __init__(self, directory: str | Path, create: bool = True, threads: bool = False):
        """``threads``: the connection may be used from several threads (the caller serialises its use)."""
        self.dir = Path(directory)
        db = self.dir / CATALOGUE
        if not db.exists():
            if not create:
                raise WorkspaceError(f"{self.dir} is not a pimmi workspace (no {CATALOGUE}); run 'pimmi fill' first")
            self.dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db, isolation_level=None, timeout=60, check_same_thread=not threads)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise WorkspaceError(
                f"{db} is damaged ({e}): move it away and run 'pimmi fill' again to rebuild the workspace"
            ) from None
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
            return
        if int(version) > SCHEMA_VERSION:
            raise WorkspaceError(f"{db}: schema version {version}, this pimmi reads version {SCHEMA_VERSION}")
        if int(version) == 1:
            self._migrate_from_1()
        # 3 added the reviews table, 4 the posts and post_images tables: created above
        if int(version) < 5:
            self._migrate_to_5()
        if int(version) < 6:
            self._migrate_to_6()

    def close(self) -> None:
        self.db.close()

    def _migrate_from_1(self) -> None:
        """Version 2 stores which keypoints lie on repeated patterns; compute them for stored features."""
        with self.transaction() as db:
            db.execute("ALTER TABLE features ADD COLUMN repeated BLOB NOT NULL DEFAULT x''")
            last = -1
            while rows := db.execute(  # in batches: a large catalogue does not fit in memory
                "SELECT image_id, xy, descriptors FROM features WHERE image_id > ? ORDER BY image_id LIMIT 1000",
                (last,),
            ).fetchall():
                for image_id, xy, desc in rows:
                    flags = _pack_bool(repeated_keypoints(_points(xy), _descriptors(desc)))
                    db.execute("UPDATE features SET repeated = ? WHERE image_id = ?", (flags, image_id))
                last = rows[-1][0]
            self.set_meta("schema_version", 2)

    def _migrate_to_5(self) -> None:
        """Version 5 records which index generation each image entered and was queried against (so that a
        query computes only what changed), which matches were derived from the other image's query, and
        the descriptors left in the index by files changed since. Images indexed before are of the current
        generation; none counts as queried: the first query after the migration queries them all."""
        with self.transaction() as db:
            for table, column in (
                ("images", "indexed_gen INTEGER"),
                ("images", "queried_gen INTEGER"),
                ("matches", "derived INTEGER NOT NULL DEFAULT 0"),
            ):
                if column.split()[0] not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            gen = int(self.get_meta("index_generation") or 0)
            db.execute("UPDATE images SET indexed_gen = ? WHERE indexed = 1", (gen,))
            self.set_meta("schema_version", 5)

    def _migrate_to_6(self) -> None:
        """Version 6 records where each match's inliers lie in its regions (``verify.inlier_cells``).
        Matches stored before have none (NULL): clustering treats them as before, until a query with
        ``--requery`` stores them again."""
        with self.transaction() as db:
            have = {row[1] for row in db.execute("PRAGMA table_info(matches)")}
            for column in ("query_cells", "result_cells"):
                if column not in have:
                    db.execute(f"ALTER TABLE matches ADD COLUMN {column} BLOB")
            self.set_meta("schema_version", SCHEMA_VERSION)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever another connection commits to the catalogue (SQLite's ``PRAGMA data_version``)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    # -- meta
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def feature_settings(self) -> dict[str, Any] | None:
        """The extraction settings recorded (None before the first extraction); settings added since
        they were recorded have the value older workspaces used."""
        stored = self.get_meta("feature_settings")
        return None if stored is None else LEGACY_FEATURE_SETTINGS | json.loads(stored)

    def bind_feature_settings(self, feature_settings: dict[str, Any]) -> None:
        """Record the extraction settings on first use; refuse different ones later."""
        old = self.feature_settings()
        if old is None:
            self.set_meta("feature_settings", json.dumps(feature_settings, sort_keys=True))
            return
        diff = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in feature_settings.items() if old.get(k) != v]
        if diff:
            raise WorkspaceError(
                f"{self.dir} was built with other extraction settings: {', '.join(diff)}; "
                "use the same settings, or start over with 'pimmi fill --erase'"
            )

    # -- images
    def root_id(self, root: str | Path) -> int:
        path = stored_path(str(Path(root).resolve()))
        self.db.execute("INSERT OR IGNORE INTO roots (path) VALUES (?)", (path,))
        return self.db.execute("SELECT id FROM roots WHERE path = ?", (path,)).fetchone()[0]

    def root_path(self, root_id: int) -> str:
        return read_path(self.db.execute("SELECT path FROM roots WHERE id = ?", (root_id,)).fetchone()[0])

    def register(self, root_id: int, paths: Sequence[str]) -> None:
        """Add paths not yet in the catalogue; ids follow the (sorted) order given."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO images (root_id, path) VALUES (?, ?)",
                ((root_id, stored_path(p)) for p in paths),
            )

    def images(self, where: str = "1", params: Sequence[Any] = ()) -> list[ImageRecord]:
        rows = self.db.execute(
            "SELECT i.id, i.path, r.path, i.status, i.width, i.height, i.scale, i.nb_points, i.error, "
            f"i.duplicate_of FROM images i JOIN roots r ON r.id = i.root_id WHERE {where} ORDER BY i.id",
            params,
        ).fetchall()
        return [ImageRecord(i, read_path(p), read_path(root), *rest) for i, p, root, *rest in rows]

    def images_by_id(self, image_ids: Iterable[int]) -> list[ImageRecord]:
        """The records of ``image_ids`` (those in the catalogue), by id."""
        out: list[ImageRecord] = []
        for chunk in _chunks(sorted(set(image_ids)), 500):
            out += self.images(f"i.id IN ({','.join('?' * len(chunk))})", chunk)
        return out

    def records(self) -> ImageRecords:
        """Every image's record by id, read when first asked for (see ``ImageRecords``)."""
        return ImageRecords(self)

    def images_by_path(self, root_id: int, paths: Iterable[str]) -> dict[str, ImageRecord]:
        wanted = set(paths)
        return {r.path: r for r in self.images("i.root_id = ?", (root_id,)) if r.path in wanted}

    def known_files(self, root_id: int) -> dict[str, tuple[int, str, int | None, float | None, str | None]]:
        """path -> (id, status, size, mtime, sha1) of the catalogue's images of ``root_id``."""
        rows = self.db.execute("SELECT path, id, status, size, mtime, sha1 FROM images WHERE root_id = ?", (root_id,))
        return {read_path(p): (i, st, size, mtime, sha1) for p, i, st, size, mtime, sha1 in rows}

    def mark_missing(self, image_ids: Sequence[int]) -> None:
        """Files gone from their folder: kept in the catalogue (features, matches, marks), left out of
        queries and clusters until they come back."""
        with self.transaction() as db:
            db.executemany("UPDATE images SET status = 'missing' WHERE id = ?", ((i,) for i in image_ids))

    def restore(self, rows: Iterable[tuple[int, int, float]]) -> None:
        """rows: (id, size, mtime) of missing files found again with the same content."""
        with self.transaction() as db:
            db.executemany(
                f"UPDATE images SET status = {_RESTORED}, size = ?, mtime = ? WHERE id = ?",
                ((size, mtime, i) for i, size, mtime in rows),
            )

    def touch(self, rows: Iterable[tuple[int, int, float]]) -> None:
        """rows: (id, size, mtime) of files whose time changed but not their content."""
        with self.transaction() as db:
            db.executemany("UPDATE images SET size = ?, mtime = ? WHERE id = ?", ((s, m, i) for i, s, m in rows))

    def reset_changed(self, image_ids: Sequence[int]) -> None:
        """Files changed in place: their features and matches are dropped, they are hashed and extracted
        again (their exact duplicates too); the descriptors the index holds of them are removed at its next
        update. Marks and posts stay with the file."""
        with self.transaction() as db:
            for i in image_ids:
                db.execute(
                    "INSERT OR REPLACE INTO unindexed (image_id, nb_points) "
                    "SELECT id, COALESCE(nb_points, 0) FROM images WHERE id = ? AND indexed = 1",
                    (i,),
                )
                dups = [d for (d,) in db.execute("SELECT id FROM images WHERE duplicate_of = ?", (i,))]
                for d in dups:
                    db.execute("DELETE FROM matches WHERE query_id = ? OR result_id = ?", (d, d))
                    db.execute(
                        "UPDATE images SET status = 'pending', duplicate_of = NULL, queried_gen = NULL WHERE id = ?",
                        (d,),
                    )
                db.execute("DELETE FROM features WHERE image_id = ?", (i,))
                db.execute("DELETE FROM matches WHERE query_id = ? OR result_id = ?", (i, i))
                db.execute(
                    "UPDATE images SET status = 'pending', size = NULL, mtime = NULL, sha1 = NULL, width = NULL, "
                    "height = NULL, scale = NULL, nb_points = NULL, error = NULL, duplicate_of = NULL, indexed = 0, "
                    "indexed_gen = NULL, queried_gen = NULL WHERE id = ?",
                    (i,),
                )

    def adopt_moved(self, root_id: int) -> list[int]:
        """New files of ``root_id`` whose content is that of a missing image are that image, moved or renamed:
        it takes their path and keeps its features, matches, marks and posts. Returns the images moved."""
        pairs = self.db.execute(
            "SELECT n.id, n.path, n.size, n.mtime, (SELECT MIN(m.id) FROM images m WHERE m.sha1 = n.sha1 "
            "AND m.status = 'missing') FROM images n WHERE n.root_id = ? AND n.status = 'pending' "
            "AND n.sha1 IS NOT NULL ORDER BY n.id",
            (root_id,),
        ).fetchall()
        moved: dict[int, None] = {}  # in order
        with self.transaction() as db:
            for new, path, size, mtime, old in pairs:
                if old is None or old in moved:
                    continue
                moved[old] = None
                db.execute("DELETE FROM images WHERE id = ?", (new,))
                db.execute(
                    f"UPDATE images SET root_id = ?, path = ?, size = ?, mtime = ?, status = {_RESTORED} WHERE id = ?",
                    (root_id, path, size, mtime, old),
                )
        return list(moved)

    def set_digests(self, rows: Iterable[tuple[int, int, float, str | None, str | None]]) -> None:
        """rows: (image id, size, mtime, sha1 or None, error or None)."""
        with self.transaction() as db:
            for image_id, size, mtime, sha1, error in rows:
                if error:
                    db.execute(
                        "UPDATE images SET size=?, mtime=?, status='error', error=? WHERE id=?",
                        (size, mtime, error, image_id),
                    )
                else:
                    db.execute("UPDATE images SET size=?, mtime=?, sha1=? WHERE id=?", (size, mtime, sha1, image_id))

    def mark_duplicates(self) -> int:
        """Pending images whose bytes equal an earlier image's become duplicates of it, without extraction."""
        with self.transaction() as db:
            cur = db.execute(
                """UPDATE images SET status='duplicate', duplicate_of=(
                       SELECT MIN(o.id) FROM images o WHERE o.sha1 = images.sha1 AND o.id < images.id
                         AND o.status NOT IN ('error', 'missing'))
                   WHERE status='pending' AND sha1 IS NOT NULL AND EXISTS (SELECT 1 FROM images o
                       WHERE o.sha1 = images.sha1 AND o.id < images.id AND o.status NOT IN ('error', 'missing'))"""
            )
            return cur.rowcount

    def save_features(self, results: Iterable[tuple[int, Features | str, tuple[int, int, float] | None]]) -> None:
        """results: (image id, features or error message, (width, height, scale) or None)."""
        with self.transaction() as db:
            for image_id, feats, size in results:
                if isinstance(feats, str):
                    db.execute("UPDATE images SET status='error', error=? WHERE id=?", (feats, image_id))
                    continue
                width, height, scale = size
                db.execute(
                    "INSERT OR REPLACE INTO features (image_id, xy, descriptors, repeated) VALUES (?, ?, ?, ?)",
                    (
                        image_id,
                        feats.xy.astype(np.float32).tobytes(),
                        feats.descriptors.astype(np.uint8).tobytes(),
                        _pack_bool(feats.repeated),
                    ),
                )
                db.execute(
                    "UPDATE images SET status='ok', error=NULL, width=?, height=?, scale=?, nb_points=? WHERE id=?",
                    (width, height, scale, len(feats), image_id),
                )

    def copy_duplicate_sizes(self) -> None:
        """Duplicates share their original's size and number of points (they are never extracted)."""
        with self.transaction() as db:
            db.execute(
                """UPDATE images SET (width, height, scale, nb_points) = (
                       SELECT o.width, o.height, o.scale, o.nb_points FROM images o WHERE o.id = images.duplicate_of)
                   WHERE status = 'duplicate'"""
            )

    def features(self, image_ids: Sequence[int]) -> dict[int, Features]:
        out = {}
        for chunk in _chunks(list(image_ids), 500):
            marks = ",".join("?" * len(chunk))
            for image_id, xy, desc, rep in self.db.execute(
                f"SELECT image_id, xy, descriptors, repeated FROM features WHERE image_id IN ({marks})", chunk
            ):
                out[image_id] = _features(xy, desc, rep)
        return out

    def keypoints(self, image_ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(positions, repeated-pattern flags) of the keypoints of each image; no descriptors."""
        out = {}
        for chunk in _chunks(list(image_ids), 500):
            marks = ",".join("?" * len(chunk))
            for image_id, xy, rep in self.db.execute(
                f"SELECT image_id, xy, repeated FROM features WHERE image_id IN ({marks})", chunk
            ):
                points = _points(xy)
                out[image_id] = (points, _unpack_bool(rep, len(points)))
        return out

    def iter_features(
        self, where: str, params: Sequence[Any] = (), batch: int = 1000
    ) -> Iterator[tuple[int, Features]]:
        """(image id, features) of the images matching ``where``, in id order, streamed."""
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT f.image_id, f.xy, f.descriptors, f.repeated FROM features f JOIN images i ON i.id = f.image_id "
                f"WHERE f.image_id > ? AND ({where}) ORDER BY f.image_id LIMIT ?",
                (last, *params, batch),
            ).fetchall()
            if not rows:
                return
            for image_id, xy, desc, rep in rows:
                yield image_id, _features(xy, desc, rep)
            last = rows[-1][0]

    def count(self, where: str = "1", params: Sequence[Any] = ()) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM images WHERE {where}", params).fetchone()[0]

    def total_points(self, where: str = "1") -> int:
        return self.db.execute(f"SELECT COALESCE(SUM(nb_points), 0) FROM images WHERE {where}").fetchone()[0]

    # -- index
    def index_path(self) -> Path | None:
        name = self.get_meta("index_file")
        return self.dir / name if name else None

    def next_index_path(self) -> Path:
        generation = int(self.get_meta("index_generation") or 0) + 1
        return self.dir / f"index-{generation:06d}.faiss"

    def commit_index(self, path: Path, image_ids: Sequence[int], index_type: str, built_for: int | None = None) -> None:
        """Make ``path`` the current index and mark ``image_ids`` as in it, in one transaction; ``built_for``:
        the index was built anew, trained for this many descriptors (it holds ``image_ids`` only)."""
        old = self.index_path()
        with self.transaction() as db:
            generation = int(path.stem.split("-")[1])
            if built_for is not None:
                db.execute("UPDATE images SET indexed = 0")
                self.set_meta("index_built_points", built_for)
            # An image keeps the generation it first entered the index at, through rebuilds: what a query
            # must look for again is the images new since it ran, not those the index was trained anew with.
            db.executemany(
                "UPDATE images SET indexed = 1, indexed_gen = COALESCE(indexed_gen, ?) WHERE id = ?",
                ((generation, i) for i in image_ids),
            )
            db.execute("DELETE FROM unindexed")
            self.set_meta("index_file", path.name)
            self.set_meta("index_generation", generation)
            self.set_meta("index_type", index_type)
        if old and old != path:
            old.unlink(missing_ok=True)
        self.remove_stray_index_files()

    def unindexed(self) -> list[tuple[int, int]]:
        """(image id, number of descriptors) of images whose old descriptors the index still holds."""
        return self.db.execute("SELECT image_id, nb_points FROM unindexed ORDER BY image_id").fetchall()

    def remove_stray_index_files(self) -> None:
        """Index files a killed process wrote but never committed."""
        current = self.get_meta("index_file")
        for p in self.dir.glob("index-*.faiss*"):
            if p.name != current:
                p.unlink(missing_ok=True)

    # -- matches
    def save_matches(self, rows: Iterable[dict[str, Any]], run_id: int | None, both_ways: bool = True) -> None:
        """Store matches found by querying their query image; ``both_ways``: each also for its result image,
        seen from there (a verified match is symmetric), unless that image's own query stored one."""
        own, derived = [], []
        for r in rows:
            row = (
                r["query_image_id"],
                r["result_image_id"],
                int(r["mirrored"]),
                r["nb_match_total"],
                r["nb_match_ransac"],
                r["ransac_ratio"],
                json.dumps(r["query_box"]),
                json.dumps(r["result_box"]),
                json.dumps(r["transform"]),
                run_id,
                r.get("query_cells"),
                r.get("result_cells"),
            )
            own.append(row)
            if both_ways:
                derived.append(_reversed(row))
        columns = "query_id, result_id, mirrored, nb_match_total, nb_match_ransac, ransac_ratio, query_box, "
        columns += "result_box, transform, run_id, query_cells, result_cells, derived"
        with self.transaction() as db:
            db.executemany(f"INSERT OR REPLACE INTO matches ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0)", own)
            db.executemany(f"INSERT OR IGNORE INTO matches ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1)", derived)

    def clear_matches(self, query_ids: Sequence[int]) -> None:
        """Forget what the queries of ``query_ids`` stored: their own matches and those derived from them."""
        with self.transaction() as db:
            db.executemany("DELETE FROM matches WHERE query_id = ? AND derived = 0", ((i,) for i in query_ids))
            db.executemany("DELETE FROM matches WHERE result_id = ? AND derived = 1", ((i,) for i in query_ids))

    def mark_queried(self, image_ids: Sequence[int]) -> None:
        """``image_ids`` were queried against the current index."""
        gen = int(self.get_meta("index_generation") or 0)
        with self.transaction() as db:
            db.executemany("UPDATE images SET queried_gen = ? WHERE id = ?", ((gen, i) for i in image_ids))

    def forget_queries(self, image_ids: Sequence[int] | None = None) -> None:
        """``image_ids`` (None: every image) no longer count as queried: the next query searches them (and
        replaces their matches then)."""
        with self.transaction() as db:
            if image_ids is None:
                db.execute("UPDATE images SET queried_gen = NULL")
            else:
                db.executemany("UPDATE images SET queried_gen = NULL WHERE id = ?", ((i,) for i in image_ids))

    def query_state(
        self, image_ids: Sequence[int] | None = None
    ) -> list[tuple[int, str, bool, int | None, int | None, int | None]]:
        """(id, status, indexed, index generation it entered at, generation it was queried against, image it
        duplicates) of every image, or of ``image_ids``."""
        sql = "SELECT id, status, indexed, indexed_gen, queried_gen, duplicate_of FROM images"
        if image_ids is None:
            rows = self.db.execute(sql + " ORDER BY id").fetchall()
        else:
            rows = []
            for chunk in _chunks(sorted(set(image_ids)), 500):
                rows += self.db.execute(f"{sql} WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk)
        return [(i, st, bool(ix), g, q, d) for i, st, ix, g, q, d in rows]

    def indexed_generations(self) -> dict[int, int]:
        """Index generation an image entered at (0 for none recorded) -> how many indexed images did."""
        rows = self.db.execute(
            "SELECT COALESCE(indexed_gen, 0), COUNT(*) FROM images WHERE status = 'ok' AND indexed GROUP BY 1"
        )
        return dict(rows.fetchall())

    def last_image_id(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0]

    def indexed_ids(self) -> np.ndarray:
        """The ids of the images in the index and still as indexed (status ok): those a search may find."""
        rows = self.db.execute("SELECT id FROM images WHERE status = 'ok' AND indexed")
        return np.fromiter((i for (i,) in rows), np.int64)

    def stored_matches(self, query_id: int) -> list[dict[str, Any]]:
        """The stored matches of ``query_id`` towards others (its own and those derived from theirs), most
        inliers first."""
        rows = self.db.execute(
            "SELECT query_id, result_id, mirrored, nb_match_total, nb_match_ransac, query_box, result_box, "
            "transform, ransac_ratio, query_cells, result_cells FROM matches WHERE query_id = ? "
            "ORDER BY nb_match_ransac DESC, result_id",
            (query_id,),
        ).fetchall()
        return [
            _match_dict(row[:8]) | {"ransac_ratio": row[8], "query_cells": row[9], "result_cells": row[10]}
            for row in rows
        ]

    def has_queried(self, image_id: int) -> bool:
        row = self.db.execute("SELECT queried_gen FROM images WHERE id = ?", (image_id,)).fetchone()
        return row is not None and row[0] is not None

    def match_links(self) -> list[tuple[int, int, int, tuple, tuple, tuple, bytes | None, bytes | None]]:
        """(query id, result id, inliers, query box, result box, transform, query cells, result cells) of every
        stored match, but those a person marked wrong."""
        rows = self.db.execute(
            "SELECT query_id, result_id, nb_match_ransac, query_box, result_box, transform, query_cells, "
            "result_cells FROM matches m "
            "WHERE NOT EXISTS ("
            "SELECT 1 FROM reviews v WHERE v.kind = 'match' AND v.verdict = 'wrong' "
            "AND v.a = MIN(m.query_id, m.result_id) AND v.b = MAX(m.query_id, m.result_id))"
        )
        return [
            (q, r, n, tuple(json.loads(qb)), tuple(json.loads(rb)), tuple(json.loads(t)), qc, rc)
            for q, r, n, qb, rb, t, qc, rc in rows
        ]

    def matches_of(self, image_id: int) -> list[dict[str, Any]]:
        """The stored matches with ``image_id`` on either side, as that image's: its region first."""
        rows = self.db.execute(
            "SELECT query_id, result_id, mirrored, nb_match_total, nb_match_ransac, query_box, result_box, transform "
            "FROM matches WHERE query_id = ? OR result_id = ? ORDER BY nb_match_ransac DESC, query_id, result_id",
            (image_id, image_id),
        ).fetchall()
        return [_match_dict(row) for row in rows]

    def matches_among(self, image_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The stored matches between two of ``image_ids`` (as ``matches_of``'s), marked or not."""
        wanted = set(image_ids)
        out = []
        for chunk in _chunks(sorted(wanted), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT query_id, result_id, mirrored, nb_match_total, nb_match_ransac, query_box, result_box, "
                f"transform FROM matches WHERE query_id IN ({marks})",
                chunk,
            )
            out += [_match_dict(row) for row in rows if row[1] in wanted]
        return out

    def match_between(self, a: int, b: int) -> dict[str, Any] | None:
        """The stored match of ``a`` towards ``b`` (or of ``b`` towards ``a``, when only that one is stored)."""
        for q, r in ((a, b), (b, a)):
            row = self.db.execute(
                "SELECT query_id, result_id, mirrored, nb_match_total, nb_match_ransac, query_box, result_box, "
                "transform FROM matches WHERE query_id = ? AND result_id = ?",
                (q, r),
            ).fetchone()
            if row:
                return _match_dict(row)
        return None

    # -- reviews: what a person said of a match or a cluster, in the viewer
    def set_match_review(self, a: int, b: int, verdict: str | None) -> None:
        """Mark the match between images ``a`` and ``b`` (either direction) ``wrong`` or ``right``; None clears."""
        a, b = min(a, b), max(a, b)
        with self.transaction() as db:
            db.execute("DELETE FROM reviews WHERE kind = 'match' AND a = ? AND b = ?", (a, b))
            if verdict is not None:
                db.execute(
                    "INSERT INTO reviews (kind, a, b, verdict, at) VALUES ('match', ?, ?, ?, ?)",
                    (a, b, verdict, time.time()),
                )

    def match_reviews(self) -> dict[tuple[int, int], str]:
        """(smaller id, larger id) -> verdict."""
        rows = self.db.execute("SELECT a, b, verdict FROM reviews WHERE kind = 'match'")
        return {(a, b): v for a, b, v in rows}

    def set_cluster_review(self, members: Sequence[int], verdict: str | None) -> None:
        """Mark a cluster (identified by its smallest image id; its members are kept to tell when it changed)."""
        first = min(members)
        with self.transaction() as db:
            db.execute("DELETE FROM reviews WHERE kind = 'cluster' AND a = ?", (first,))
            if verdict is not None:
                db.execute(
                    "INSERT INTO reviews (kind, a, b, verdict, members, at) VALUES ('cluster', ?, 0, ?, ?, ?)",
                    (first, verdict, json.dumps(sorted(members)), time.time()),
                )

    def cluster_reviews(self) -> dict[int, tuple[str, list[int], float]]:
        """smallest image id -> (verdict, members when marked, time)."""
        rows = self.db.execute("SELECT a, verdict, members, at FROM reviews WHERE kind = 'cluster'")
        return {a: (v, json.loads(m), at) for a, v, m, at in rows}

    # -- runs
    def start_run(self, command: str, settings: dict[str, Any]) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (command, started, settings) VALUES (?, ?, ?)",
            (command, time.time(), json.dumps(settings, sort_keys=True)),
        )
        return cur.lastrowid

    def finish_run(self, run_id: int, stats: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE runs SET finished = ?, stats = ? WHERE id = ?", (time.time(), json.dumps(stats), run_id)
        )


def seen_from(match: dict[str, Any], a: int) -> tuple[np.ndarray, tuple, tuple]:
    """A stored match seen from its image ``a`` (either side): the transform from ``a``'s pixels to the other
    image's (2x3, original pixels; the inverse of the stored one when ``a`` is its result) and the matched
    regions, ``a``'s first."""
    T = np.array(match["transform"], np.float64).reshape(2, 3)
    if match["query_id"] == a:
        return T, match["query_box"], match["result_box"]
    return cv2.invertAffineTransform(T), match["result_box"], match["query_box"]


def _reversed(row: tuple) -> tuple:
    """A match row seen from its result image: sides, regions and transform swapped."""
    q, r, mirrored, total, inliers, ratio, qb, rb, transform, run_id, qc, rc = row
    T = cv2.invertAffineTransform(np.array(json.loads(transform), np.float64).reshape(2, 3))
    inverse = json.dumps([round(float(x), 6) for x in T.ravel()])
    return r, q, mirrored, total, inliers, ratio, rb, qb, inverse, run_id, rc, qc


def _match_dict(row: Sequence[Any]) -> dict[str, Any]:
    q, r, mirrored, total, inliers, qb, rb, transform = row
    return {
        "query_id": q,
        "result_id": r,
        "mirrored": bool(mirrored),
        "nb_match_total": total,
        "nb_match_ransac": inliers,
        "query_box": tuple(json.loads(qb)),
        "result_box": tuple(json.loads(rb)),
        "transform": tuple(json.loads(transform)),
    }


def _features(xy: bytes, desc: bytes, repeated: bytes) -> Features:
    points = _points(xy)
    return Features(points, _descriptors(desc), _unpack_bool(repeated, len(points)))


def _points(xy: bytes) -> np.ndarray:
    return np.frombuffer(xy, np.float32).reshape(-1, 2)


def _descriptors(desc: bytes) -> np.ndarray:
    return np.frombuffer(desc, np.uint8).reshape(-1, 128)


def _pack_bool(flags: np.ndarray) -> bytes:
    return np.packbits(flags.astype(bool)).tobytes()


def _unpack_bool(data: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8), count=n).astype(bool)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
