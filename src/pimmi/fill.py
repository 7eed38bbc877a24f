"""`pimmi fill`: list images, extract their features once into the workspace, and index them."""

from __future__ import annotations

import logging
import os
import random
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from pimmi import index as idx
from pimmi.executor import DaskExecutor, Executor, executor_for
from pimmi.images import ImageError, decode_gray, file_digest, list_images
from pimmi.progress import bar
from pimmi.settings import Settings
from pimmi.sift import Extractor, Features, rootsift
from pimmi.workspace import CATALOGUE, Workspace

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 2.0
ADD_BATCH_IMAGES = 500  # images whose descriptors are added to the index together
GROWTH_REBUILD = 4  # the index is built anew when the corpus has grown this many times past its training


@dataclass
class FillReport:
    listed: int = 0
    extracted: int = 0
    duplicates: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of every unusable image
    indexed_images: int = 0
    index_type: str = ""
    index_points: int = 0
    index_update: str = ""  # what the index update did, in words
    seconds: dict[str, float] = field(default_factory=dict)
    changes: Changes = field(default_factory=lambda: Changes())


@dataclass(frozen=True)
class ExtractJob:
    image_id: int
    path: str
    settings: Settings


ExtractResult = tuple[int, "Features | str", "tuple[int, int, float] | None"]


@lru_cache(maxsize=4)
def _extractor(settings: Settings) -> Extractor:  # one per worker process and settings
    return Extractor(settings)


def extract_image(job: ExtractJob) -> ExtractResult:
    """Decode and extract one image; a bad image gives its reason instead of features. Runs in workers."""
    s = job.settings
    try:
        img = decode_gray(job.path, s.sift_max_image_dimension, s.max_image_pixels, s.min_image_side)
        feats = _extractor(s)(img.gray)
    except ImageError as e:
        return job.image_id, str(e), None
    except Exception as e:  # never lose a run to one image: record the reason
        return job.image_id, f"{type(e).__name__}: {e}", None
    return job.image_id, feats, (img.width, img.height, img.scale)


def _stat_and_digest(path: str) -> tuple[int, float, str | None, str | None]:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever, a device never end
            return 0, 0.0, None, f"not a regular file ({_file_kind(st.st_mode)})"
        return st.st_size, st.st_mtime, file_digest(path), None
    except OSError as e:
        return 0, 0.0, None, f"cannot read file ({e.strerror})"


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "special file"


def erase_workspace(directory: str | Path) -> None:
    d = Path(directory)
    for name in (CATALOGUE, CATALOGUE + "-wal", CATALOGUE + "-shm"):
        (d / name).unlink(missing_ok=True)
    for p in d.glob("index-*.faiss*"):
        p.unlink()


def fill(
    image_dir: str | Path,
    workspace_dir: str | Path,
    settings: Settings,
    erase: bool = False,
    nb_img: int | None = None,
    executor: Executor | None = None,
    progress: bool = True,
) -> FillReport:
    """Add the images under ``image_dir`` that are not yet in the workspace, and update the index."""
    if not Path(image_dir).is_dir():
        raise FileNotFoundError(f"{image_dir} is not a directory")
    if erase and Path(workspace_dir).exists():
        erase_workspace(workspace_dir)
    report = FillReport()
    with Workspace(workspace_dir) as ws:
        ws.bind_feature_settings(settings.feature_settings())
        ws.remove_stray_index_files()
        run_id = ws.start_run("fill", settings.to_dict())
        owned = executor is None
        executor = executor or executor_for(settings.scheduler, settings.nb_threads)
        try:
            added = add_images(ws, image_dir, settings, executor, nb_img, progress)
            root, paths = added.root, added.paths
            report.listed, report.duplicates, report.extracted = len(paths), added.duplicates, added.extracted
            report.seconds.update(added.seconds)
            report.changes = added.changes
            t0 = time.perf_counter()
            report.index_update = update_index(ws, settings, progress, executor, report.seconds)
            report.seconds["index"] = time.perf_counter() - t0
        finally:
            if owned:
                executor.close()

        wanted = set(paths)
        report.errors = [
            (r.path, r.error or "")
            for r in ws.images("i.root_id = ? AND i.status = 'error'", (root,))
            if r.path in wanted
        ]
        report.indexed_images = ws.count("indexed = 1")
        report.index_type = ws.get_meta("index_type") or ""
        report.index_points = ws.total_points("indexed = 1")
        ws.finish_run(
            run_id,
            {k: v for k, v in report.__dict__.items() if k not in ("errors", "changes")}
            | {"errors": len(report.errors), "changes": vars(report.changes)},
        )
    return report


@dataclass
class Added:
    """What ``add_images`` did."""

    root: int  # the image folder's id in the catalogue
    paths: list[str]  # the images listed, sorted
    duplicates: int  # exact duplicates found among the new images
    extracted: int
    seconds: dict[str, float]  # list, hash, extract
    changes: Changes


@dataclass
class Changes:
    """What changed in the folder since the catalogue last saw it."""

    missing: int = 0  # files gone (kept in the catalogue, left out of queries and clusters)
    restored: int = 0  # missing files found again
    moved: int = 0  # new names of missing files (same content: features and matches kept)
    changed: int = 0  # files whose content changed in place (extracted again, their matches dropped)


def add_images(
    ws: Workspace,
    image_dir: str | Path,
    settings: Settings,
    executor: Executor,
    nb_img: int | None = None,
    progress: bool = True,
) -> Added:
    """List the images under ``image_dir`` (the first ``nb_img``), register those the catalogue lacks, hash
    them, mark exact duplicates and extract the pending ones: the stage ``fill`` and ``query`` share."""
    t0 = time.perf_counter()
    paths = list_images(image_dir)[: nb_img or None]
    root = ws.root_id(image_dir)
    # A partial listing (nb_img) says nothing of the files it left out: none is missing then.
    changes, gone = sync_folder(ws, root, paths, settings.nb_threads, complete=nb_img is None)
    ws.register(root, paths)
    t1 = time.perf_counter()
    _digest_new(ws, root, settings.nb_threads, progress)
    moved = ws.adopt_moved(root)
    changes.moved, changes.missing = len(moved), len(set(gone) - set(moved))  # moved: found under a new name
    duplicates = ws.mark_duplicates()
    t2 = time.perf_counter()
    extracted = extract_pending(ws, root, settings, executor, progress)
    seconds = {"list": t1 - t0, "hash": t2 - t1, "extract": time.perf_counter() - t2}
    for what, n in vars(changes).items():
        if n:
            log.info("%d images %s since the last run", n, what)
    return Added(root, paths, duplicates, extracted, seconds, changes)


def sync_folder(ws: Workspace, root: int, paths: list[str], threads: int, complete: bool) -> tuple[Changes, list[int]]:
    """Bring the catalogue's images of ``root`` up to date with the files listed: gone ones missing, those
    back restored, those changed in place reset. A file is read again only when its size or time changed.
    Returns the changes and the images found gone."""
    known = ws.known_files(root)
    changes = Changes()
    if complete:
        listed = set(paths)
        gone = [i for p, (i, status, *_) in known.items() if p not in listed and status != "missing"]
        ws.mark_missing(gone)
    else:
        gone = []
    seen = [(p, known[p]) for p in paths if p in known and known[p][4] is not None]  # hashed before
    if not seen:
        return changes, gone
    folder = ws.root_path(root)
    full = [os.path.join(folder, p) for p, _ in seen]
    stats = [_stat(p) for p in full]  # a thread pool costs more than a stat of a cached folder
    again = [k for k, ((_, (_, _, size, mtime, _)), st) in enumerate(zip(seen, stats)) if st != (size, mtime)]
    with ThreadPoolExecutor(max(2, threads)) as pool:
        digests = dict(zip(again, pool.map(lambda k: _stat_and_digest(full[k])[2], again)))
    touched, restored, changed = [], [], []
    for k, ((_, (image_id, status, _, _, sha1)), st) in enumerate(zip(seen, stats)):
        if k in digests and digests[k] != sha1:
            changed.append(image_id)
        elif k in digests and st is not None:
            (restored if status == "missing" else touched).append((image_id, *st))
        elif status == "missing":
            restored.append((image_id, *st))
    ws.touch(touched)
    ws.restore(restored)
    ws.reset_changed(changed)
    changes.restored, changes.changed = len(restored), len(changed)
    return changes, gone


def _stat(path: str) -> tuple[int, float] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime


def _digest_new(ws: Workspace, root: int, threads: int, progress: bool) -> None:
    todo = ws.images("i.root_id = ? AND i.status = 'pending' AND i.sha1 IS NULL", (root,))
    if not todo:
        return
    with ThreadPoolExecutor(max(2, threads)) as pool, bar(len(todo), "hashing", progress) as pbar:
        rows = []
        for rec, (size, mtime, sha1, err) in zip(todo, pool.map(lambda r: _stat_and_digest(r.full_path), todo)):
            rows.append((rec.id, size, mtime, sha1, err))
            pbar.update()
        ws.set_digests(rows)


def extract_pending(ws: Workspace, root: int, settings: Settings, executor: Executor, progress: bool) -> int:
    """Extract every pending image of ``root``; results are committed every few seconds, so a killed run resumes."""
    todo = ws.images("i.root_id = ? AND i.status = 'pending'", (root,))
    if not todo:
        ws.copy_duplicate_sizes()
        return 0
    jobs = (ExtractJob(r.id, r.full_path, settings) for r in todo)
    per_task = settings.dask_batch_images if settings.scheduler else 8
    done, buffer, last = 0, [], time.monotonic()
    with bar(len(todo), "extracting", progress) as pbar:
        try:
            for result in executor.map(extract_image, jobs, chunksize=per_task):
                buffer.append(result)
                pbar.update()
                if time.monotonic() - last > COMMIT_EVERY_S:
                    ws.save_features(buffer)
                    done += len(buffer)
                    buffer, last = [], time.monotonic()
        finally:
            ws.save_features(buffer)  # keep what is done, even on Ctrl-C
            done += len(buffer)
    ws.copy_duplicate_sizes()
    return done


def update_index(
    ws: Workspace,
    settings: Settings,
    progress: bool,
    executor: Executor | None = None,
    seconds: dict[str, float] | None = None,
) -> str:
    """Add the extracted images not yet indexed; build the index anew when the corpus outgrew its type.
    On a Dask cluster the workers encode the descriptors (list and code) and this process appends them.
    Returns what was done, in words (logged, and recorded with the fill's run); the training's seconds go
    to ``seconds["train"]``."""
    new_points = ws.total_points("status = 'ok' AND indexed = 0")
    current = ws.index_path()
    total = ws.total_points("status = 'ok'")
    built_for = int(ws.get_meta("index_built_points") or 0)
    have = ws.get_meta("index_type")
    wanted = settings.index_type if settings.index_type != "auto" else idx.choose_index_type(total)
    # Lists trained on a corpus a quarter the size still work (benchmarks/incremental.py --growth); past
    # that, the lists grow long and the search slows: a new index of the type the corpus now calls for.
    if current is None:
        rebuild = "built"
    elif settings.index_type == "auto" and wanted != have and total > GROWTH_REBUILD * built_for:
        rebuild = f"rebuilt: {total} descriptors, {total / max(1, built_for):.1f}x those it was trained for"
    elif settings.index_type != "auto" and wanted != have:
        rebuild = "rebuilt: another index type was asked"
    else:
        rebuild = ""
    stale = ws.unindexed()
    if new_points == 0 and not stale and not rebuild:
        return "unchanged"
    idx.set_threads(settings.nb_threads)
    if rebuild:
        index = idx.create_index(wanted)
        t0 = time.perf_counter()
        _train(index, ws, settings)
        if seconds is not None:
            seconds["train"] = time.perf_counter() - t0
        where = "i.status = 'ok'"
    else:
        index = idx.load(current)
        idx.remove_images(index, stale)  # the descriptors of files changed since they were indexed
        where = "i.status = 'ok' AND i.indexed = 0"
    added: list[int] = []
    n_images = ws.count(where.replace("i.", ""))
    path = ws.next_index_path()
    with bar(n_images, "indexing", progress) as pbar:
        if isinstance(executor, DaskExecutor) and idx.has_lists(index):
            trained = current if not rebuild else path.with_name(path.name + ".trained")  # what workers read
            if rebuild:
                idx.save(index, trained)
            jobs = (EncodeJob(str(trained), d, i) for d, i in _feature_batches(ws, where, added, pbar))
            for lists, codes, vector_ids in executor.map(encode_batch, jobs):
                idx.add_encoded(index, lists, codes, vector_ids)
            if rebuild:
                trained.unlink()
        else:
            assigner = idx.Assigner.of(index)
            for descriptors, ids in _feature_batches(ws, where, added, pbar):
                # one call a batch: one coarse-assignment GEMM
                x = np.concatenate([rootsift(d) for d in descriptors])
                idx.add(index, x, np.concatenate(ids), assigner, settings.nb_threads)
    idx.save(index, path)
    ws.commit_index(path, added, wanted, built_for=total if rebuild else None)
    done = f"{wanted} {rebuild}" if rebuild else f"{wanted}: {len(added)} images added"
    if stale:
        done += f", {len(stale)} changed images' old descriptors removed"
    log.info("index %s (%d descriptors of %d images)", done, index.ntotal, ws.count("indexed = 1"))
    return done


@dataclass(frozen=True)
class EncodeJob:
    """Images' descriptors for a Dask worker to encode with the trained index file it reads."""

    index_path: str
    descriptors: list[np.ndarray]  # uint8 SIFT, one array per image
    ids: list[np.ndarray]


def _feature_batches(
    ws: Workspace, where: str, added: list[int], pbar
) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """The descriptors and index ids of the images ``where`` selects, by ADD_BATCH_IMAGES images with
    features; each image's id is appended to ``added``."""
    descriptors: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    for image_id, feats in ws.iter_features(where):
        if len(feats):
            descriptors.append(feats.descriptors)
            ids.append(idx.pack_ids(image_id, len(feats)))
        added.append(image_id)
        pbar.update()
        if len(descriptors) >= ADD_BATCH_IMAGES:
            yield descriptors, ids
            descriptors, ids = [], []
    if descriptors:
        yield descriptors, ids


def encode_batch(job: EncodeJob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Dask task: the lists and codes of a batch's RootSIFT descriptors, and their ids."""
    idx.set_threads(1)
    index = idx.mapped(job.index_path)
    lists, codes = idx.encode(index, rootsift(np.concatenate(job.descriptors)), idx.mapped_assigner(job.index_path))
    return lists, codes, np.concatenate(job.ids)


def _train(index, ws: Workspace, settings: Settings) -> None:
    need = idx.training_size(index)
    if index.is_trained and need == 0:
        return
    ids = [r[0] for r in ws.db.execute("SELECT id FROM images WHERE status = 'ok' AND nb_points > 0")]
    random.Random(0).shuffle(ids)  # a seeded sample: the same corpus gives the same index
    ids = ids[: settings.index_nb_images_to_train]
    rng = np.random.default_rng(0)
    # Each sampled image gives an equal share of the points wanted (a quarter more, for images with fewer
    # points), written into one array: the sample is spread over many images, and no more than it is ever
    # held (keeping whole images, then a copy of them, took 8.9 GB at 100k images for 2.6M points).
    cap = int(1.25 * need) if need else None
    per_image = -(-cap // max(1, len(ids))) if cap else None
    parts, data, have = [], np.empty((cap or 0, idx.DIM), np.float32), 0
    for start in range(0, len(ids), 500):
        for feats in ws.features(ids[start : start + 500]).values():
            d = feats.descriptors
            if per_image and len(d) > per_image:
                d = d[rng.choice(len(d), per_image, replace=False)]
            if cap is None:
                parts.append(rootsift(d))
                continue
            d = d[: cap - have]
            data[have : have + len(d)] = rootsift(d)
            have += len(d)
        if cap is not None and have >= cap:
            break
    if cap is None:
        data = np.concatenate(parts) if parts else data
    else:
        data = data[: min(have, need)]  # a view: the images come in a shuffled order, their points sampled
    log.info("training %s on %d descriptors", type(index).__name__, len(data))
    idx.train(index, data)
