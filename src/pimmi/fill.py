"""`pimmi fill`: list images, extract their features once into the workspace, and index them."""

from __future__ import annotations

import logging
import os
import random
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from pimmi import index as idx
from pimmi.executor import Executor, local_executor
from pimmi.images import ImageError, decode_gray, file_digest, list_images
from pimmi.progress import bar
from pimmi.settings import Settings
from pimmi.sift import Extractor, Features, rootsift
from pimmi.workspace import CATALOGUE, Workspace

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 2.0
ADD_BATCH_IMAGES = 500  # images whose descriptors are added to the index together


@dataclass
class FillReport:
    listed: int = 0
    extracted: int = 0
    duplicates: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of every unusable image
    indexed_images: int = 0
    index_type: str = ""
    index_points: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


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
        executor = executor or local_executor(settings.nb_threads)
        try:
            added = add_images(ws, image_dir, settings, executor, nb_img, progress)
        finally:
            if owned:
                executor.close()
        root, paths = added.root, added.paths
        report.listed, report.duplicates, report.extracted = len(paths), added.duplicates, added.extracted
        report.seconds.update(added.seconds)

        t0 = time.perf_counter()
        update_index(ws, settings, progress)
        report.seconds["index"] = time.perf_counter() - t0

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
            run_id, {k: v for k, v in report.__dict__.items() if k != "errors"} | {"errors": len(report.errors)}
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
    ws.register(root, paths)
    t1 = time.perf_counter()
    _digest_new(ws, root, settings.nb_threads, progress)
    duplicates = ws.mark_duplicates()
    t2 = time.perf_counter()
    extracted = extract_pending(ws, root, settings, executor, progress)
    seconds = {"list": t1 - t0, "hash": t2 - t1, "extract": time.perf_counter() - t2}
    return Added(root, paths, duplicates, extracted, seconds)


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
    done, buffer, last = 0, [], time.monotonic()
    with bar(len(todo), "extracting", progress) as pbar:
        try:
            for result in executor.map(extract_image, jobs, chunksize=8):
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


def update_index(ws: Workspace, settings: Settings, progress: bool) -> None:
    """Add the extracted images not yet indexed; build the index anew when the corpus outgrew its type."""
    new_points = ws.total_points("status = 'ok' AND indexed = 0")
    current = ws.index_path()
    total = ws.total_points("status = 'ok'")
    built_for = int(ws.get_meta("index_built_points") or 0)
    wanted = settings.index_type if settings.index_type != "auto" else idx.choose_index_type(total)
    rebuild = (
        current is None
        or (settings.index_type == "auto" and (wanted != ws.get_meta("index_type") and total > 4 * built_for))
        or (settings.index_type != "auto" and wanted != ws.get_meta("index_type"))
    )
    if new_points == 0 and not rebuild:
        return
    idx.set_threads(settings.nb_threads)
    if rebuild:
        index = idx.create_index(wanted)
        _train(index, ws, settings)
        where = "i.status = 'ok'"
        ws.set_meta("index_built_points", total)
    else:
        index = idx.load(current)
        where = "i.status = 'ok' AND i.indexed = 0"
    added: list[int] = []
    n_images = ws.count(where.replace("i.", ""))
    vectors: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    with bar(n_images, "indexing", progress) as pbar:
        for image_id, feats in ws.iter_features(where):
            if len(feats):
                vectors.append(rootsift(feats.descriptors))
                ids.append(idx.pack_ids(image_id, len(feats)))
            added.append(image_id)
            pbar.update()
            if len(vectors) >= ADD_BATCH_IMAGES:
                _add(index, vectors, ids)
        _add(index, vectors, ids)
    path = ws.next_index_path()
    idx.save(index, path)
    ws.commit_index(path, added, wanted, rebuilt=rebuild)
    log.info("index %s: %d descriptors of %d images", wanted, index.ntotal, ws.count("indexed = 1"))


def _add(index, vectors: list[np.ndarray], ids: list[np.ndarray]) -> None:
    """Add the buffered images' descriptors in one call (one coarse-assignment GEMM), then empty the buffers."""
    if vectors:
        index.add_with_ids(np.concatenate(vectors), np.concatenate(ids))
    vectors.clear()
    ids.clear()


def _train(index, ws: Workspace, settings: Settings) -> None:
    need = idx.training_size(index)
    if index.is_trained and need == 0:
        return
    ids = [r[0] for r in ws.db.execute("SELECT id FROM images WHERE status = 'ok' AND nb_points > 0")]
    random.Random(0).shuffle(ids)  # a seeded sample: the same corpus gives the same index
    ids = ids[: settings.index_nb_images_to_train]
    vectors, have = [], 0
    for start in range(0, len(ids), 500):
        for feats in ws.features(ids[start : start + 500]).values():
            vectors.append(rootsift(feats.descriptors))
            have += len(feats)
        if need and have >= 2 * need:
            break
    data = np.concatenate(vectors) if vectors else np.zeros((0, idx.DIM), np.float32)
    if need and len(data) > need:
        data = data[np.random.default_rng(0).choice(len(data), need, replace=False)]
    log.info("training %s on %d descriptors", type(index).__name__, len(data))
    idx.train(index, data)
