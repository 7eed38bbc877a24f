"""`pimmi query`: for every image, the indexed images it is a copy of, verified geometrically.

For a batch of query images: RootSIFT descriptors (and their mirrored twins) are searched in
the index; a neighbour is kept when it is much closer than the farthest neighbour retrieved
(the background), the number of neighbours growing while that farthest one is still close
(viral images have hundreds of copies); kept neighbours vote for their image; the
best-voted images are verified with RANSAC on one-to-one correspondences.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from pimmi import index as idx
from pimmi.executor import DaskExecutor, Executor, executor_for
from pimmi.fill import add_images
from pimmi.overlays import WHOLE_COVER, Cells, Votes, on_shared_overlay, spread
from pimmi.pixels import CLUMPED, Pictures, agreement, in_region, unlike
from pimmi.progress import bar
from pimmi.settings import Settings
from pimmi.sift import Features, mirror, rootsift
from pimmi.verify import FULL_CELLS, PairJob, PairResult, check_pair, check_pairs
from pimmi.workspace import ImageRecord, ImageRecords, Workspace, WorkspaceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    """One verified copy relation, query -> result; a row of the query CSV (PIMMI's columns first)."""

    pack_id: int
    query_image_id: int
    result_image_id: int
    query_path: str
    result_path: str
    nb_match_total: int
    nb_match_ransac: int
    ransac_ratio: float
    query_nb_points: int
    query_width: int
    query_height: int
    result_nb_points: int
    result_width: int
    result_height: int
    mirrored: bool
    query_box: tuple[float, float, float, float]  # matched region, original pixels: x0, y0, x1, y1
    result_box: tuple[float, float, float, float]
    transform: tuple[float, ...]  # a, b, tx, c, d, ty: query pixel -> result pixel (mirroring included)
    query_cells: bytes | None  # where the inliers lie in each region (verify.inlier_cells); hex in the CSV
    result_cells: bytes | None


BOX_COLUMNS = ["x0", "y0", "x1", "y1"]


def csv_columns() -> list[str]:
    cols = []
    for f in fields(Match):
        if f.name.endswith("_box"):
            cols += [f"{f.name[:-4]}_{c}" for c in BOX_COLUMNS]
        else:
            cols.append(f.name)
    return cols


def csv_row(m: Match) -> list:
    row = []
    for f in fields(Match):
        v = getattr(m, f.name)
        if f.name.endswith("_box"):
            row += list(v)
        elif f.name == "transform":
            row.append(" ".join(f"{x:.6g}" for x in v))
        elif f.name.endswith("_cells"):
            row.append(v.hex() if v else "")
        elif isinstance(v, bool):
            row.append(int(v))
        elif isinstance(v, float):
            row.append(round(v, 4))
        else:
            row.append(v)
    return row


@dataclass
class QueryStats:
    queried: int = 0  # images searched
    stored: int = 0  # matches their searches stored
    matches: int = 0  # rows given out: every match of the folder's images
    candidates: int = 0
    verified_pairs: int = 0
    requeried_descriptors: int = 0
    pattern_only: int = 0  # verified matches refused as standing on text or chrome alone
    small_region: int = 0  # verified matches refused as sharing only a small region of both images
    detail_only: int = 0  # verified matches refused as a detail of what both images overlap on
    shared_overlay: int = 0  # verified matches refused as standing on an overlay many images share
    unlike_pixels: int = 0  # verified matches refused as their images' pixels disagree where they overlap
    seconds: dict[str, float] = field(default_factory=lambda: {"extract": 0.0, "search": 0.0, "verify": 0.0})


def query(
    image_dir: str | Path,
    workspace_dir: str | Path,
    settings: Settings,
    nb_img: int | None = None,
    nb_per_pack: int = 10000,
    executor: Executor | None = None,
    progress: bool = True,
    stats: QueryStats | None = None,
    requery: bool = False,
) -> Iterator[Match]:
    """Yield the verified matches of every image under ``image_dir`` against the workspace's index, image
    by image in path order (each image's matches with most inliers first).

    Only what the workspace does not hold is computed (``plan_query``), unless ``requery``; images not in
    the workspace yet are extracted and kept (not indexed). Matches are stored in the workspace, each for
    both its images.
    """
    stats = stats if stats is not None else QueryStats()
    if not Path(image_dir).is_dir():
        raise FileNotFoundError(f"{image_dir} is not a directory")
    ws = Workspace(workspace_dir, create=False)
    try:
        ws.bind_feature_settings(settings.feature_settings())
        index_path = ws.index_path()
        if index_path is None or not index_path.exists():
            raise WorkspaceError(f"{workspace_dir} has no index; run 'pimmi fill' first")
        owned = executor is None
        executor = executor or executor_for(settings.scheduler, settings.nb_threads)
        try:
            added = add_images(ws, image_dir, settings, executor, nb_img, progress)
            stats.seconds["extract"] += added.seconds["hash"] + added.seconds["extract"]
            records = ws.images_by_path(added.root, added.paths)
            ordered = [records[p] for p in added.paths if p in records]
            run_id = ws.start_run("query", settings.to_dict())
            plan = plan_query(ws, [r.id for r in ordered], settings, requery)
            if plan.reason:
                log.info("querying every image: %s", plan.reason)
                # Forgotten first, the new settings recorded: an interrupted run resumes where it stopped.
                ws.forget_queries(plan.search if requery else None)
                ws.set_meta("match_settings", json.dumps(settings.match_settings(), sort_keys=True))
            log.info("%d images to query, %d known already", len(plan.search), plan.known)
            # The matches of the images not searched stand up to the images never queried, which this run
            # (or, interrupted, the next) searches and stores both ways: they stand for the current index.
            ws.mark_queried(plan.standing)
            records = ws.records()  # read as met: a million records took 15 s to read at once
            changed: set[int] = set()
            if plan.search:
                remote = executor if isinstance(executor, DaskExecutor) else None
                index = None
                if remote is None:  # on a cluster, the workers read the index
                    idx.set_threads(settings.nb_threads)
                    index = idx.load(index_path, mmap=True)  # read as searched, shared with the page cache
                    idx.set_nprobe(index, settings.index_nprobe)
                # With 2 workers the search thread keeps both cores busy and verification in the main thread
                # fills the gaps (measured: the pool was 10 % slower); with more, the pool verifies faster.
                verifier = executor if settings.nb_threads > 2 or remote else None
                matcher = Matcher(ws, index, settings, stats, verifier, records, remote, index_path)
                matcher.run([records[i] for i in plan.search], run_id, progress)
                changed = matcher.searched | matcher.touched
            refresh_duplicates(ws, records, plan.duplicates, changed, run_id)
            ws.set_meta("match_settings", json.dumps(settings.match_settings(), sort_keys=True))
        finally:
            if owned:
                executor.close()
        yield from stored_matches(ws, ordered, records, nb_per_pack, stats)
        ws.finish_run(run_id, asdict(stats))  # once the rows are out: their count, and the time they took
    finally:
        ws.close()


@dataclass(frozen=True)
class QueryPlan:
    """What a query computes: the images searched, the exact duplicates whose matches are copied again from
    their original's, and why everything is searched (empty when only what changed is)."""

    search: list[int]
    duplicates: list[int]
    standing: list[int]  # images of the folder whose stored matches stand
    reason: str = ""

    @property
    def known(self) -> int:
        return len(self.standing)


def plan_query(ws: Workspace, folder: list[int], settings: Settings | None, requery: bool = False) -> QueryPlan:
    """The images of ``folder`` (ids) whose stored matches do not stand for the current index (and match
    ``settings``; None: those of the last query).

    An image's matches stand when it was queried with the same match settings against an index that has
    gained no image since, but images searched now: a verified match is stored for both its images, so
    the matches of an image with a new one come from the new one's search (which finds the image when it
    is itself indexed). An exact duplicate's matches are its original's: copied again when those changed
    (the original searched for it when its own matches do not stand)."""
    state = {i: rest for i, *rest in ws.query_state(folder)}  # status, indexed, entered, queried, duplicate of
    originals = {st[4] for st in state.values() if st[0] == "duplicate" and st[4] is not None}
    state |= {i: rest for i, *rest in ws.query_state(sorted(originals - state.keys()))}
    stored = ws.get_meta("match_settings")
    reason = "--requery" if requery else ""
    if not reason and settings and stored is not None and json.loads(stored) != settings.match_settings():
        old = json.loads(stored)
        diff = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in settings.match_settings().items() if old.get(k) != v]
        reason = "match settings changed since the last query: " + ", ".join(diff)
    in_folder = [i for i in folder if state[i][0] in ("ok", "duplicate")]
    new = {i for i in in_folder if state[i][3] is None}
    # Indexed images by the generation they entered at (counted in the catalogue: there may be millions),
    # then without the new images of the folder, which this run searches.
    entered = ws.indexed_generations()
    newest = max(entered, default=0)
    for i in new:
        st, indexed, e, _, _ = state[i]
        if st == "ok" and indexed:
            entered[e or 0] -= 1
    newest_not_searched = max((e for e, n in entered.items() if n > 0), default=0)

    def stale(i: int) -> bool:
        st, indexed, _, queried, _ = state[i]
        if reason or queried is None:
            return True
        # A new indexed image found by nobody's search now, or any new one when this image is not
        # indexed (their searches cannot find it).
        return queried < (newest_not_searched if st == "ok" and indexed else newest)

    search = [i for i in in_folder if state[i][0] == "ok" and stale(i)]
    searched = set(search)
    duplicates, originals = [], []
    for i in in_folder:
        if state[i][0] != "duplicate" or state[i][4] not in state:
            continue
        o = state[i][4]
        if o not in searched and stale(o) and state[o][0] in ("ok", "missing"):
            searched.add(o)
            originals.append(o)  # outside the folder, or gone from it: its features are still there
        duplicates.append(i)
    standing = [i for i in in_folder if state[i][0] == "ok" and i not in searched]
    return QueryPlan(search + originals, duplicates, standing, reason)


def stored_matches(
    ws: Workspace, images: list[ImageRecord], records: ImageRecords, nb_per_pack: int, stats: QueryStats
) -> Iterator[Match]:
    """The stored matches of ``images``, in their order, with the images still there."""
    for position, rec in enumerate(images):
        pack = position // max(1, nb_per_pack)
        stored = ws.stored_matches(rec.id)
        records.load(m["result_id"] for m in stored)  # read together
        for m in stored:
            other = records.get(m["result_id"])
            if other is None or other.status == "missing":
                continue
            stats.matches += 1
            yield stored_match(m, rec, other, pack)


def stored_match(m: dict, q: ImageRecord, r: ImageRecord, pack: int) -> Match:
    """A match (a stored row's fields, or a verified pair's) as a row of the query CSV."""
    return Match(
        pack_id=pack,
        query_image_id=q.id,
        result_image_id=r.id,
        query_path=q.path,
        result_path=r.path,
        nb_match_total=m["nb_match_total"],
        nb_match_ransac=m["nb_match_ransac"],
        ransac_ratio=m["ransac_ratio"],
        query_nb_points=q.nb_points or 0,
        query_width=q.width or 0,
        query_height=q.height or 0,
        result_nb_points=r.nb_points or 0,
        result_width=r.width or 0,
        result_height=r.height or 0,
        mirrored=m["mirrored"],
        query_box=m["query_box"],
        result_box=m["result_box"],
        transform=m["transform"],
        query_cells=m.get("query_cells"),
        result_cells=m.get("result_cells"),
    )


def refresh_duplicates(
    ws: Workspace, records: ImageRecords, duplicates: list[int], changed: set[int], run_id: int
) -> None:
    """Store again the matches of the exact duplicates ``duplicates`` whose original's matches ``changed``
    in this run (or that have none yet): the original's, with the duplicate on the query side."""
    for d in duplicates:
        dup = records[d]
        orig = records[dup.duplicate_of]
        if orig.id not in changed and ws.has_queried(d):
            continue
        own = [duplicate_match(dup, orig)] + [
            replace(stored_match(m, dup, records[m["result_id"]], 0), query_image_id=d, query_path=dup.path)
            for m in ws.stored_matches(orig.id)
            if m["result_id"] != d and m["result_id"] in records
        ]
        ws.clear_matches([d])
        ws.save_matches((vars(m) for m in own), run_id, both_ways=False)
        ws.mark_queried([d])


def duplicate_match(dup: ImageRecord, o: ImageRecord) -> Match:
    """The match of an exact duplicate with the image it duplicates: every point."""
    n = o.nb_points or 0
    box = (0.0, 0.0, float(o.width or 0), float(o.height or 0))
    return Match(
        0, dup.id, o.id, dup.path, o.path, n, n, 1.0, n, o.width or 0, o.height or 0, n, o.width or 0,
        o.height or 0, False, box, box, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), FULL_CELLS, FULL_CELLS,
    )  # fmt: skip


class Matcher:
    def __init__(
        self,
        ws: Workspace,
        index,
        settings: Settings,
        stats: QueryStats,
        executor: Executor | None = None,
        records: ImageRecords | None = None,
        remote: DaskExecutor | None = None,
        index_path: Path | None = None,
    ):
        """``executor``: where candidate pairs are verified; None: in this process. ``records``: the
        catalogue's images, when read already. ``remote``: a Dask cluster whose workers search the index
        file ``index_path`` (``index`` is then None)."""
        self.ws, self.index, self.s, self.stats, self.executor = ws, index, settings, stats, executor
        self.remote, self.index_path = remote, index_path
        self.searcher = idx.Searcher(index, settings.query_match_max_dist**2) if index is not None else None
        self.records: ImageRecords = records if records is not None else ws.records()
        # Indexed images a search may find: not those gone from the folder, nor those changed since indexed
        # (the index holds their old descriptors until the next fill).
        self.findable = np.zeros(ws.last_image_id() + 1, bool)
        self.findable[ws.indexed_ids()] = True
        self.done: dict[tuple[int, int, bool], PairResult] = {}  # unordered pairs verified so far
        # Shared overlays: whether each side of a pair saw the match as standing on one, and the matches
        # held back until the other side says (a match is refused only when both sides see an overlay).
        self.on_overlay: dict[tuple[int, int], bool] = {}  # (query, result) -> seen from query, until result speaks
        self.held: dict[tuple[int, int], tuple[Match, bool]] = {}  # with: is the other image whole in it
        self.pictures = Pictures(settings.max_image_pixels)  # decoded for the pixel check of weak matches
        self.searched: set[int] = set()
        self.touched: set[int] = set()  # images that gained matches from others' searches

    def run(self, images: list[ImageRecord], run_id: int, progress: bool) -> None:
        """Search ``images`` and store their matches, replacing what their earlier searches stored. A match
        held for the other image's view of a shared overlay has that image searched too, when nothing
        else would search it."""
        step = self.s.query_batch_images
        batches = [images[start : start + step] for start in range(0, len(images), step)]
        self.searched.update(r.id for r in images)
        # The next batch is searched while this one is verified: the search runs in FAISS and numpy,
        # which let go of the GIL; verification is mostly Python. One batch ahead: two searched at once
        # oversubscribe 2 cores (measured 12 % slower). On a Dask cluster, one more than its workers.
        depth = self.remote.workers + 1 if self.remote else 1
        flight: deque = deque()
        sent = 0

        def top_up() -> None:
            nonlocal sent
            while len(flight) < depth and sent < len(batches):
                flight.append(self._search_soon(searching, batches[sent]))
                sent += 1

        with bar(len(images), "querying", progress) as pbar, ThreadPoolExecutor(1) as searching:
            top_up()
            i = 0
            while i < len(batches):
                found = self._found(flight.popleft(), batches[i])
                top_up()
                self.stats.seconds["search"] += found.seconds
                self.stats.requeried_descriptors += found.requeried
                matches = self._verify_batch(batches[i], found)
                if i == len(batches) - 1:
                    partners = self._unsearched_partners()
                    if partners:
                        self.searched.update(r.id for r in partners)
                        batches += [partners[start : start + step] for start in range(0, len(partners), step)]
                        pbar.total += len(partners)
                        top_up()
                    else:
                        matches += self._release_held()
                self._emit(matches, [r.id for r in batches[i]], run_id)
                pbar.update(len(batches[i]))
                i += 1

    def _unsearched_partners(self) -> list[ImageRecord]:
        """The other images of held matches that no search of this run has spoken for."""
        ids = sorted({r for _, r in self.held if r not in self.searched and self.findable[r]})
        return [self.records[r] for r in ids]

    def _emit(self, matches: list[Match], query_ids: list[int], run_id: int) -> None:
        self.ws.clear_matches(query_ids)
        self.ws.save_matches((vars(m) for m in matches), run_id)  # vars: no deep copy, unlike asdict
        self.ws.mark_queried(query_ids)
        self.touched.update(m.result_image_id for m in matches)
        self.stats.queried += len(query_ids)
        self.stats.stored += len(matches)

    # -- search
    def _search_soon(self, pool: ThreadPoolExecutor, batch: list[ImageRecord]) -> tuple[Future, dict]:
        """Start searching ``batch``: in ``pool``, or on the Dask cluster. Its features are read here (the
        catalogue stays in one thread)."""
        feats = self.ws.features([r.id for r in batch])
        if self.remote:
            return self.remote.submit(search_batch, SearchJob(str(self.index_path), self.s, batch, feats)), feats
        return pool.submit(self._search, batch, feats), feats

    def _found(self, started: tuple[Future, dict], batch: list[ImageRecord]) -> _Found:
        future, feats = started
        if not self.remote:
            return future.result()
        q_rows, r_ids, dist, requeried, seconds = future.result()
        return _Found(feats, _Queries(batch, feats, self.s.query_mirror), q_rows, r_ids, dist, seconds, requeried)

    def _search(self, batch: list[ImageRecord], feats: dict[int, Features]) -> _Found:
        t0 = time.perf_counter()
        # OpenMP's thread count is per calling thread: the one set in the main thread does not reach this one.
        idx.set_threads(self.s.nb_threads)
        q = _Queries(batch, feats, self.s.query_mirror)
        q_rows, r_ids, dist, requeried = neighbours(self.searcher, self.index.ntotal, q, self.s)
        return _Found(feats, q, q_rows, r_ids, dist, time.perf_counter() - t0, requeried)

    def _verify_batch(self, batch: list[ImageRecord], found: _Found) -> list[Match]:
        t0 = time.perf_counter()
        feats, q, q_rows = found.feats, found.queries, found.rows
        r_img, r_kp = idx.unpack_ids(found.ids)
        q_img = q.image[q_rows]
        keep = (r_img != q_img) & self.findable[r_img]  # an image is not its own copy
        q_rows, r_img, r_kp, dist = q_rows[keep], r_img[keep], r_kp[keep], found.dist[keep]
        pairs = _candidate_pairs(q.local[q_rows], q.mirrored[q_rows], r_img, q.kp[q_rows], self.s)
        self.stats.candidates += len(pairs)
        keypoints = self.ws.keypoints(sorted({int(r) for _, _, r, _ in pairs}))
        self.records.load(keypoints)  # read together
        jobs = []
        for local, mirrored, result_id, sel in pairs:
            rec, f = batch[local], feats[batch[local].id]
            r_xy, r_repeated = keypoints[int(result_id)]
            jobs.append(
                PairJob(
                    rec,
                    self.records[int(result_id)],
                    bool(mirrored),
                    f.xy,
                    f.repeated,
                    r_xy,
                    r_repeated,
                    q.kp[q_rows[sel]],
                    r_kp[sel],
                    dist[sel],
                )
            )
        # The overlay rule's view of the votes, only when the rule is on: sorting a batch's votes is not free.
        on = self.s.query_overlay_min_images > 0
        votes = Votes.of(q.local[q_rows] * 2 + q.mirrored[q_rows], q.kp[q_rows], r_img) if on else None
        position = {rec.id: i for i, rec in enumerate(batch)}
        cells: dict[int, Cells] = {}  # per image, for the spread of its inliers

        def cells_of(image_id: int, xy: np.ndarray) -> Cells:
            if image_id not in cells:
                cells[image_id] = Cells.of(xy)
            return cells[image_id]

        best: dict[tuple[int, int], tuple[Match, bool, bool]] = {}
        for job, pair in zip(jobs, self._outcomes(jobs)):
            if pair is None:
                continue
            seen = pair.towards(job.query.id)
            m = self._match(job.query, job.result, seen)
            key = (job.query.id, job.result.id)
            if key not in best or m.nb_match_ransac > best[key][0].nb_match_ransac:
                group = position[job.query.id] * 2 + job.mirrored
                overlay = votes is not None and on_shared_overlay(
                    votes,
                    group,
                    job.query.id,
                    job.result.id,
                    seen.query_inliers,
                    cells_of(job.query.id, job.q_xy),
                    self.s.query_overlay_min_images,
                    self.s.query_overlay_max_share,
                    self.s.query_match_nb_ransac_threshold,
                )
                whole = overlay and spread(cells_of(job.result.id, job.r_xy), seen.result_inliers) >= WHOLE_COVER
                best[key] = (m, overlay, whole)  # one row per pair of images: the orientation with more inliers
        self.stats.seconds["verify"] += time.perf_counter() - t0
        return self._without_overlays(best.values())

    def _release_held(self) -> list[Match]:
        """Held matches whose other side never proposed the pair: kept when the other image is whole in
        the match (a photo pasted in a grid), refused otherwise (it saw no copy there either)."""
        kept = [m for m, whole in self.held.values() if whole]
        self.stats.shared_overlay += len(self.held) - len(kept)
        self.held.clear()
        return kept

    def _without_overlays(self, matches) -> list[Match]:
        """The matches kept, with those held back whose other side has now spoken for them."""
        kept = []
        for m, overlay, whole in matches:
            q, r = m.query_image_id, m.result_image_id
            other = self.on_overlay.pop((r, q), None)  # each side of a pair speaks once
            if other is None:
                self.on_overlay[(q, r)] = overlay
            if not overlay:
                kept.append(m)
                if (r, q) in self.held:
                    kept.append(self.held.pop((r, q))[0])
            elif other is None:
                self.held[(q, r)] = (m, whole)
            elif other:
                self.stats.shared_overlay += 1 + ((r, q) in self.held)
                self.held.pop((r, q), None)
            else:
                kept.append(m)
        return kept

    def _outcomes(self, jobs: list[PairJob]) -> list[PairResult | None]:
        """Each job's verified pair, as if verified one by one in order.

        An unordered pair (and orientation) is verified once, from the first side that proposes
        it, and from the other side only if that failed; what passed is reused from the other
        side, in this batch or a later one. The verifications of a round run in the workers.
        """
        keys = [(min(j.query.id, j.result.id), max(j.query.id, j.result.id), j.mirrored) for j in jobs]
        out: list[PairResult | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        while pending:
            first: dict[tuple[int, int, bool], int] = {}
            later = []
            for i in pending:
                if keys[i] in self.done:
                    out[i] = self.done[keys[i]]
                elif keys[i] in first:
                    later.append(i)
                else:
                    first[keys[i]] = i
            todo = list(first.values())
            for i, (pair, outcome) in zip(todo, self._check([jobs[i] for i in todo])):
                self.stats.verified_pairs += 1
                if pair is not None and self._unlike(jobs[i], pair):
                    pair, outcome = None, "unlike_pixels"
                if outcome in ("small_region", "detail_only", "pattern_only", "unlike_pixels"):
                    setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
                if pair is not None:
                    self.done[keys[i]] = out[i] = pair
            pending = later
        return out

    def _unlike(self, job: PairJob, pair: PairResult) -> bool:
        """Whether a weak match's images do not look alike where it lays them over each other (pixels.py)."""
        s = self.s
        if s.query_min_pixel_agreement <= 0:
            return False
        q, r = job.query, job.result
        q_density, q_spread = in_region(job.q_xy, q.scale or 1.0, pair.query_box, pair.query_inliers)
        r_density, r_spread = in_region(job.r_xy, r.scale or 1.0, pair.result_box, pair.result_inliers)
        if max(q_density, r_density) >= s.query_pixel_check_density and min(q_spread, r_spread) >= CLUMPED:
            return False
        agreed = agreement(self.pictures, q, r, pair.transform, pair.query_box, pair.result_box)
        return unlike(agreed, s.query_min_pixel_agreement)

    def _check(self, jobs: list[PairJob]) -> list[tuple[PairResult | None, str]]:
        if not jobs:
            return []
        if self.executor is None:
            return [check_pair(j, self.s) for j in jobs]
        # Chunks of a few dozen pairs: the arrays travel pickled, and one task per pair costs more than RANSAC.
        size = max(16, -(-len(jobs) // (8 * self.s.nb_threads)))
        chunks = [(self.s, jobs[i : i + size]) for i in range(0, len(jobs), size)]
        return [r for part in self.executor.map(check_pairs, chunks) for r in part]

    # -- rows
    def _match(self, q: ImageRecord, r: ImageRecord, pair: PairResult) -> Match:
        fields_of = {
            "nb_match_total": pair.nb_total,
            "nb_match_ransac": pair.nb_inliers,
            "ransac_ratio": pair.nb_inliers / max(1, pair.nb_total),
            "mirrored": bool(np.linalg.det(pair.transform[:2, :2]) < 0),
            "query_box": pair.query_box,
            "result_box": pair.result_box,
            "transform": tuple(round(float(x), 6) for x in pair.transform[:2].ravel()),
            "query_cells": pair.query_cells,
            "result_cells": pair.result_cells,
        }
        return stored_match(fields_of, q, r, 0)


def neighbours(
    searcher: idx.Searcher, ntotal: int, q: _Queries, s: Settings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Accepted neighbours of every query row: (row, index id, squared distance), and the number of
    rows searched again with more neighbours."""
    ratio2 = s.query_dist_ratio_threshold**2
    max_d2 = s.query_match_max_dist**2
    rows = np.arange(len(q.vectors))
    k = min(s.query_sift_knn, ntotal)
    likely: np.ndarray | None = None
    found, requeried = [], 0
    probes = searcher.probes(q.vectors)  # the rows asked again keep their lists
    while len(rows):
        near = searcher.close(q.vectors[rows], k, None if probes is None else probes[rows])
        exhausted = k >= min(s.query_adaptative_knn_max, ntotal)
        at = np.searchsorted(near.rows, near.hit_row)  # each hit's row in near.rows
        pair = (q.image[rows[near.hit_row]] << 32) | idx.unpack_ids(near.hit_id)[0]  # (query, indexed image)
        if likely is None:
            likely = _likely_copies(pair, _min_votes(s))
        # The k-th neighbour stands for the background; while it is itself still close enough to
        # be a copy, it is no background: ask for more neighbours. Only where most neighbours are
        # images this one already looks a copy of (a viral image's copies crowd the list): in a dense
        # corpus, a generic corner or edge has thousands of close neighbours in unrelated images, and
        # expanding those would make the search cost grow with the corpus.
        again = near.kth < max_d2
        if exhausted:
            again[:] = False
        elif again.any():
            share = np.bincount(at, np.isin(pair, likely), len(near.rows)) / np.bincount(at, None, len(near.rows))
            again &= share >= 0.5
        ref = near.kth
        if exhausted and k >= ntotal:
            ref = np.full_like(ref, np.inf)  # the whole index was retrieved: no background left
        ok = (near.hit_d < ratio2 * ref[at]) & ~again[at]
        found.append((rows[near.hit_row[ok]], near.hit_id[ok], near.hit_d[ok]))
        rows = rows[near.rows[again]]
        requeried += len(rows)
        k = min(k * 4, s.query_adaptative_knn_max, ntotal)
    q_rows, ids, dist = (np.concatenate(a) for a in zip(*found))
    return q_rows, ids, dist, requeried


@dataclass(frozen=True)
class SearchJob:
    """A batch to search on a Dask worker: the index file (read memory-mapped where the worker sees it),
    the settings, the batch's images and their features."""

    index_path: str
    settings: Settings
    batch: list[ImageRecord]
    feats: dict[int, Features]


def search_batch(job: SearchJob) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """A Dask task: a batch's accepted neighbours (query row, index id, squared distance), the rows searched
    again, the seconds it took."""
    t0 = time.perf_counter()
    s = job.settings
    idx.set_threads(1)  # one thread per Dask worker thread
    index, searcher = _worker_index(job.index_path, s.index_nprobe, s.query_match_max_dist**2)
    q = _Queries(job.batch, job.feats, s.query_mirror)
    q_rows, r_ids, dist, requeried = neighbours(searcher, index.ntotal, q, s)
    return q_rows, r_ids, dist, requeried, time.perf_counter() - t0


@lru_cache(maxsize=1)
def _worker_index(path: str, nprobe: int, max_d2: float) -> tuple[object, idx.Searcher]:
    """The index a worker searches, memory-mapped read-only and kept while its file is current."""
    index = idx.mapped(path)
    idx.set_nprobe(index, nprobe)
    return index, idx.Searcher(index, max_d2)


@dataclass(frozen=True)
class _Found:
    """A batch's accepted neighbours: query row, index id, squared distance (with the batch's queries)."""

    feats: dict[int, Features]
    queries: _Queries
    rows: np.ndarray
    ids: np.ndarray
    dist: np.ndarray
    seconds: float  # the search's wall time
    requeried: int  # rows searched again with more neighbours


class _Queries:
    """The query rows of a batch: RootSIFT vectors, then their mirrored twins."""

    def __init__(self, batch: list[ImageRecord], feats: dict[int, Features], with_mirror: bool):
        vecs, image, local, kp, mirrored = [], [], [], [], []
        for i, rec in enumerate(batch):
            f = feats.get(rec.id)
            if f is None or not len(f):
                continue
            n = len(f)
            for flag in (False, True) if with_mirror else (False,):
                vecs.append(rootsift(mirror(f.descriptors) if flag else f.descriptors))
                image.append(np.full(n, rec.id, np.int64))
                local.append(np.full(n, i, np.int64))
                kp.append(np.arange(n, dtype=np.int64))
                mirrored.append(np.full(n, flag))
        self.vectors = np.concatenate(vecs) if vecs else np.zeros((0, idx.DIM), np.float32)
        self.image, self.local, self.kp = _cat(image, np.int64), _cat(local, np.int64), _cat(kp, np.int64)
        self.mirrored = _cat(mirrored, bool)


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _min_votes(s: Settings) -> int:
    # RANSAC needs as many distinct query keypoints as inliers: fewer votes can never verify.
    return max(s.query_match_nb_threshold, s.query_match_nb_ransac_threshold)


def _likely_copies(pair: np.ndarray, min_votes: int) -> np.ndarray:
    """The (query image, indexed image) keys seen among close neighbours at least ``min_votes`` times, sorted."""
    keys, counts = np.unique(pair, return_counts=True)
    return keys[counts >= min_votes]


def _candidate_pairs(
    local: np.ndarray, mirrored: np.ndarray, r_img: np.ndarray, q_kp: np.ndarray, s: Settings
) -> list[tuple[int, bool, int, np.ndarray]]:
    """Group accepted neighbours by (query image, orientation, result image) and keep the best-voted groups.

    A vote is a distinct query keypoint. Returns (local query index, mirrored, result id, indices).
    """
    if not len(local):
        return []
    group = local * 2 + mirrored
    order = np.lexsort((q_kp, r_img, group))
    g, r, k = group[order], r_img[order], q_kp[order]
    new_pair = np.r_[True, (g[1:] != g[:-1]) | (r[1:] != r[:-1])]
    new_vote = new_pair | np.r_[True, k[1:] != k[:-1]]
    starts = np.flatnonzero(new_pair)
    ends = np.r_[starts[1:], len(order)]
    votes = np.add.reduceat(new_vote.astype(np.int64), starts)
    out = []
    strong = votes >= _min_votes(s)
    for gid in np.unique(g[starts[strong]]):
        mine = np.flatnonzero(strong & (g[starts] == gid))
        mine = mine[np.argsort(-votes[mine], kind="stable")][: s.query_max_candidates]
        for p in mine:
            out.append((int(gid // 2), bool(gid % 2), int(r[starts[p]]), order[starts[p] : ends[p]]))
    return out
