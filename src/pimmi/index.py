"""The FAISS index of descriptors: type chosen from the corpus size, ids that map back to (image, keypoint)."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

DIM = 128
KEYPOINT_BITS = 20  # up to ~1M keypoints per image; the rest of the int64 id is the image id
FLAT_MAX = 30_000  # below this many descriptors exact search is cheap enough
PQ_MIN = 20_000_000  # from here on vectors are compressed to 32 bytes (IVF-PQ)
LIST_SIZE = 256  # descriptors per inverted list: a probe costs the same whatever the corpus size
GRAPH_MIN_NLIST = 8192  # from here the lists' centroids are found with an HNSW graph, not exhaustively
MAX_NLIST = 262144
# Copies' descriptors are close and fall in the same list nearly always. A fixed number of probes
# (lists that grow with the corpus keep their size) keeps the search cost per image flat.
DEFAULT_NPROBE = 2
TRAIN_CHUNK = 65536  # training vectors rotated at a time


def pack_ids(image_id: int, n: int) -> np.ndarray:
    return (np.int64(image_id) << KEYPOINT_BITS) | np.arange(n, dtype=np.int64)


def unpack_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ids >> KEYPOINT_BITS, ids & ((1 << KEYPOINT_BITS) - 1)


def remove_images(index: faiss.Index, images: list[tuple[int, int]]) -> int:
    """Remove the descriptors of ``images`` ((image id, number of descriptors)) from ``index``, in one pass
    over its lists; returns how many were removed."""
    if not images:
        return 0
    ids = np.concatenate([pack_ids(i, n) for i, n in images])
    return int(index.remove_ids(faiss.IDSelectorBatch(ids)))


def has_lists(index: faiss.Index) -> bool:
    """Whether ``index`` keeps its vectors in inverted lists (IVF), which ``encode`` fills."""
    return _ivf(index) is not None


def _transformed(index: faiss.Index, x: np.ndarray) -> np.ndarray:
    """``x`` as the inverted file sees it: through the index's transforms (an OPQ rotation), if any."""
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):
        for i in range(outer.chain.size()):
            x = outer.chain.at(i).apply(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _lists_of(ivf: faiss.IndexIVF, x: np.ndarray, assigner: Assigner | None, threads: int) -> np.ndarray:
    if assigner is not None:
        return assigner.nearest(x, threads)[1]
    _, assign = ivf.quantizer.search(x, 1)
    return np.ascontiguousarray(assign.ravel(), dtype=np.int64)


def encode(index: faiss.Index, x: np.ndarray, assigner: Assigner | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The list and the code ``index`` stores each vector of ``x`` as (what ``add_with_ids`` computes: a
    worker can compute them where the trained index is at hand), or None for an index without lists."""
    ivf = _ivf(index)
    if ivf is None:
        return None
    x = _transformed(index, x)
    lists = _lists_of(ivf, x, assigner, 1)
    codes = np.empty((len(x), ivf.code_size), np.uint8)
    ivf.encode_vectors(len(x), faiss.swig_ptr(x), faiss.swig_ptr(lists), faiss.swig_ptr(codes))
    return lists, codes


def add(index: faiss.Index, x: np.ndarray, ids: np.ndarray, assigner: Assigner | None = None, threads: int = 1) -> None:
    """``index.add_with_ids``, each vector's list found by ``assigner`` when given (many lists)."""
    ivf = _ivf(index)
    if assigner is None or ivf is None:
        index.add_with_ids(x, ids)
        return
    x = _transformed(index, x)
    lists = _lists_of(ivf, x, assigner, threads)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
    _count_in_wrapper(index, len(x))


def _count_in_wrapper(index: faiss.Index, n: int) -> None:
    """After ``n`` vectors went into the inverted file directly: a wrapper (OPQ) counts its vectors too."""
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):
        outer.ntotal += n


def add_encoded(index: faiss.Index, lists: np.ndarray, codes: np.ndarray, ids: np.ndarray) -> None:
    """Append vectors ``encode`` gave to their lists, in order: the index ``add_with_ids`` would make."""
    ivf = _ivf(index)
    order = np.argsort(lists, kind="stable")
    lists, codes, ids = lists[order], np.ascontiguousarray(codes[order]), np.ascontiguousarray(ids[order])
    starts = np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]]) if len(lists) else np.zeros(0, np.int64)
    for start, end in zip(starts, np.r_[starts[1:], len(lists)]):
        ivf.invlists.add_entries(
            int(lists[start]), int(end - start), faiss.swig_ptr(ids[start:end]), faiss.swig_ptr(codes[start:end])
        )
    ivf.ntotal += len(ids)
    _count_in_wrapper(index, len(ids))


@lru_cache(maxsize=2)
def mapped(path: str) -> faiss.Index:
    """The index file ``path`` memory-mapped read-only, kept per process (a Dask worker reads it once)."""
    return load(Path(path), mmap=True)


@lru_cache(maxsize=2)
def mapped_assigner(path: str) -> Assigner | None:
    """The ``Assigner`` of the index file ``path``, kept per process like ``mapped``."""
    return Assigner.of(mapped(path))


def choose_index_type(n_descriptors: int) -> str:
    """A FAISS factory string for this many descriptors.

    Exact search for tiny corpora; IVF with 8-bit scalar quantization (128 bytes a vector,
    near-exact distances) up to ~20M descriptors (~100k images); IVF-PQ with 32-byte codes
    beyond, so that 2e8 descriptors (~1M images) take ~8 GB. The number of lists grows with
    the corpus (~256 descriptors each), so that a search visits as many descriptors at 10k
    images as at 1M; from 8k lists the nearest lists are found with a graph (HNSW).
    """
    if n_descriptors < FLAT_MAX:
        return "IDMap,Flat"
    nlist = min(MAX_NLIST, 2 ** round(math.log2(max(256, n_descriptors / LIST_SIZE))))
    ivf = f"IVF{nlist}_HNSW32" if nlist >= GRAPH_MIN_NLIST else f"IVF{nlist}"
    if n_descriptors < PQ_MIN:
        return f"{ivf},SQ8"
    return f"OPQ32_128,{ivf},PQ32"


def create_index(index_type: str) -> faiss.Index:
    try:
        index = faiss.index_factory(DIM, index_type)
    except RuntimeError as e:
        raise ValueError(f"invalid --index-type {index_type!r}: {str(e).splitlines()[-1]}") from None
    ivf = _ivf(index)
    if ivf is not None:
        ivf.cp.niter = 10  # k-means converges well enough for assignment in 10 iterations
        ivf.cp.max_points_per_centroid = 64
    return index


def training_size(index: faiss.Index) -> int:
    ivf = _ivf(index)
    return 0 if ivf is None else 40 * ivf.nlist


def train(index: faiss.Index, data: np.ndarray) -> None:
    """Train ``index`` on ``data`` (float32, C-contiguous); lists found with a graph (many lists) are trained
    in two levels. ``data`` may be overwritten: a rotation (OPQ) is applied to it in place, by chunks, so that
    the sample is held once (FAISS's own training rotated a copy, and the graph's lists another: 6.6 GB at
    100k images for a 1.7 GB sample)."""
    ivf = _ivf(index)
    graph = ivf is not None and not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat)
    if not graph or index.is_trained:
        index.train(data)
        return
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):  # e.g. OPQ: lists are made in the rotated space
        for i in range(outer.chain.size()):
            vt = outer.chain.at(i)
            vt.train(data)
            if vt.d_out != vt.d_in:
                data = vt.apply(data)
                continue
            for start in range(0, len(data), TRAIN_CHUNK):
                data[start : start + TRAIN_CHUNK] = vt.apply(data[start : start + TRAIN_CHUNK])
    ivf.quantizer.add(_two_level_centroids(data, ivf.nlist))  # IVF training then skips its own k-means
    ivf.train(data)
    if isinstance(outer, faiss.IndexPreTransform):
        outer.is_trained = True


def _two_level_centroids(x: np.ndarray, n: int) -> np.ndarray:
    """``n`` k-means centroids at the cost of ~2·sqrt(n) centroids per point: sqrt(n) coarse clusters,
    then each split in proportion to its size (exhaustive k-means on 262k centroids would take hours)."""
    n1 = int(math.sqrt(n))
    coarse = faiss.Kmeans(DIM, n1, niter=10, max_points_per_centroid=2000, min_points_per_centroid=1, seed=1)
    coarse.train(x)
    assign = coarse.assign(x)[1]
    sizes = np.bincount(assign, minlength=n1)
    shares = np.diff(np.r_[0, np.cumsum(sizes) * n // len(x)])  # sums to n exactly
    order = np.argsort(assign, kind="stable")  # one sort, not a scan of all points per coarse cluster
    ends = np.cumsum(sizes)
    parts = []
    for c in range(n1):
        members = x[order[ends[c] - sizes[c] : ends[c]]]
        k = int(min(shares[c], len(members)))
        if k == 0:
            continue
        if k == len(members):
            parts.append(members)
            continue
        km = faiss.Kmeans(DIM, k, niter=10, max_points_per_centroid=64, min_points_per_centroid=1, seed=1)
        km.train(members)
        parts.append(km.centroids)
    centroids = np.concatenate(parts)
    if len(centroids) < n:  # a coarse cluster smaller than its share: pad with training points
        extra = x[np.random.default_rng(0).choice(len(x), n - len(centroids), replace=False)]
        centroids = np.concatenate([centroids, extra])
    return np.ascontiguousarray(centroids, dtype=np.float32)


# From this many lists, vectors are assigned to their list by grouped matrix products (``Assigner``), not by
# the quantizer's graph: at 262,144 lists the graph took ~45 µs a descriptor, 2.8 hours for 1M images.
GROUPED_MIN_NLIST = 65536
# Groups of centroids a vector is compared with: adding, 8 (the nearest list 96.9 % of the time at 262,144
# lists, 18 µs); searching its nearest two lists, 12 (both found 97.9 % of the time, as often as the graph).
ADD_GROUP_PROBES, SEARCH_GROUP_PROBES = 8, 12
ASSIGN_CHUNK = 8192


class Assigner:
    """The nearest centroids of vectors by matrix products, for quantizers of many centroids.

    The centroids are grouped by k-means (sqrt(n) groups); a vector is compared with the groups'
    centroids, then with every centroid of its ``probes`` nearest groups, the vectors that share a
    group in one product. A vector's nearest centroid lies outside its nearest groups now and then:
    its list is then a near one, which the search's probes of a near copy reach too.
    """

    def __init__(self, centroids: np.ndarray, probes: int = ADD_GROUP_PROBES):
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        n_groups = max(1, int(math.sqrt(len(centroids))))
        km = faiss.Kmeans(DIM, n_groups, niter=10, max_points_per_centroid=64, min_points_per_centroid=1, seed=1)
        km.train(centroids)
        _, group = km.index.search(centroids, 1)
        group = group.ravel()
        self.order = np.argsort(group, kind="stable")  # centroid ids, grouped
        self.vectors = centroids[self.order]
        self.norms = np.einsum("ij,ij->i", self.vectors, self.vectors)
        self.bounds = np.r_[0, np.cumsum(np.bincount(group, minlength=n_groups))]
        self.group_vectors = np.ascontiguousarray(km.centroids)
        self.group_norms = np.einsum("ij,ij->i", self.group_vectors, self.group_vectors)
        self.probes = min(probes, n_groups)
        self._pool: ThreadPoolExecutor | None = None
        self._threads = 0

    @classmethod
    def of(cls, index: faiss.Index, probes: int = ADD_GROUP_PROBES) -> Assigner | None:
        """An assigner for ``index``'s lists, when it has enough of them to need one."""
        ivf = _ivf(index)
        if ivf is None or ivf.nlist < GROUPED_MIN_NLIST or not ivf.is_trained:
            return None
        return cls(ivf.quantizer.reconstruct_n(0, ivf.nlist), probes)

    def nearest(self, x: np.ndarray, threads: int = 1, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The squared distances to the ``k`` nearest centroids of each vector, nearest first, and their ids
        (int64; a row ``(n,)`` when ``k`` is 1); the vectors split between ``threads`` threads, each with a
        single-threaded BLAS (small products)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        # Chunks small enough that a group's products stay in cache (~8k vectors: ~130 rows a group).
        chunks = [(s, min(len(x), s + ASSIGN_CHUNK)) for s in range(0, len(x), ASSIGN_CHUNK)]
        with threadpool_limits(1, user_api="blas"):
            if len(chunks) <= 1 or threads <= 1:
                parts = [self._nearest(x[s:e], k) for s, e in chunks]
            else:
                if self._pool is None or self._threads != threads:
                    self._pool, self._threads = ThreadPoolExecutor(threads), threads
                parts = list(self._pool.map(lambda c: self._nearest(x[c[0] : c[1]], k), chunks))
        if not parts:
            parts = [(np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))]
        d, i = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return (d[:, 0], i[:, 0]) if k == 1 else (d, i)

    def _nearest(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n, probes = len(x), self.probes
        # Each (vector, probed group) pair's k nearest centroids in a cell of its own: no merging per group.
        cand_d = np.full((n, probes, k), np.inf, np.float32)
        cand_i = np.full((n, probes, k), -1, np.int64)
        if n:
            to_groups = x @ self.group_vectors.T  # nearest groups: the largest x.g - |g|²/2
            to_groups -= self.group_norms / 2
            flat = np.argpartition(-to_groups, probes - 1, axis=1)[:, :probes].ravel()
            order = np.argsort(flat, kind="stable")  # the (vector, group) pairs, by group
            groups = flat[order]
            starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
            for s, e in zip(starts, np.r_[starts[1:], len(order)]):
                g = int(groups[s])
                lo, hi = self.bounds[g], self.bounds[g + 1]
                if lo == hi:
                    continue
                rows, slot = np.divmod(order[s:e], probes)  # rows distinct: a vector's groups are
                d = x[rows] @ self.vectors[lo:hi].T  # |x - c|² - |x|² = |c|² - 2 x.c
                d *= -2
                d += self.norms[lo:hi]
                for t in range(min(k, hi - lo)):  # k is small (the probes): argmin passes beat argpartition
                    j = d.argmin(axis=1)
                    cand_d[rows, slot, t] = d[np.arange(len(rows)), j]
                    cand_i[rows, slot, t] = lo + j
                    if t + 1 < k:
                        d[np.arange(len(rows)), j] = np.inf
        cand_d, cand_i = cand_d.reshape(n, -1), cand_i.reshape(n, -1)
        pick = np.argpartition(cand_d, k - 1, axis=1)[:, :k] if k < cand_d.shape[1] else np.argsort(cand_d, axis=1)
        best, arg = np.take_along_axis(cand_d, pick, axis=1), np.take_along_axis(cand_i, pick, axis=1)
        if k > 1:
            order = np.argsort(best, axis=1, kind="stable")
            best, arg = np.take_along_axis(best, order, axis=1), np.take_along_axis(arg, order, axis=1)
        best += np.einsum("ij,ij->i", x, x)[:, None]
        found = arg >= 0
        return np.where(found, np.maximum(best, 0), np.inf).astype(np.float32), np.where(found, self.order[arg], -1)


def set_threads(n: int) -> None:
    faiss.omp_set_num_threads(max(1, n))


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe or DEFAULT_NPROBE


def save(index: faiss.Index, path: Path) -> None:
    """Write atomically: a temporary file, flushed, then renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path, mmap: bool = False) -> faiss.Index:
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    return faiss.read_index(str(path), flags)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances and ids of the ``k`` nearest neighbours (id -1 where fewer exist)."""
    k = max(1, min(k, index.ntotal))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


# Scanning the probed lists by matrix products pays when a batch brings this many queries to a list;
# fewer (a graph-quantized index of many small lists, a small batch) go through FAISS's own search.
SCAN_MIN_QUERIES_PER_LIST = 32


@dataclass(frozen=True)
class Close:
    """The ``k`` nearest neighbours of a batch of queries, as far as a match could use them.

    Only rows with a neighbour within the match distance appear: ``rows`` (sorted query rows),
    ``kth`` (their k-th nearest distance: the background a ratio test compares to; inf when
    fewer than k descriptors were searched). ``hit_row``, ``hit_id``, ``hit_d``: the neighbours
    within the match distance among the k nearest, by row, then nearest first.
    """

    rows: np.ndarray
    kth: np.ndarray
    hit_row: np.ndarray
    hit_id: np.ndarray
    hit_d: np.ndarray

    @classmethod
    def from_knn(cls, D: np.ndarray, ids: np.ndarray, max_d2: float) -> Close:
        r, c = np.nonzero((ids >= 0) & (D < max_d2))  # row-major: by row, then nearest first
        rows = r[np.diff(r, prepend=-1) != 0]  # r is sorted: numpy 2.4's np.unique hashes, ~20x slower
        kth = np.where(ids[rows, -1] >= 0, D[rows, -1], np.inf).astype(np.float32)
        return cls(rows, kth, r, ids[r, c], D[r, c])


@dataclass(frozen=True)
class Probes:
    """The inverted lists each query visits, nearest first: distances to their centroids, list ids
    (queries x nprobe)."""

    distances: np.ndarray
    lists: np.ndarray

    def __getitem__(self, rows: np.ndarray) -> Probes:
        return Probes(self.distances[rows], self.lists[rows])


class Searcher:
    """Neighbours within a distance for batches of queries: FAISS's search, or for an IVF index with
    8-bit (SQ8) or float codes and batches that fill its lists, a scan of each probed list by one
    matrix product for all the queries that probe it.

    FAISS compares a query with a list's codes one by one (~30 ns a code on a 2-core machine);
    grouped by list, the same distances come from a GEMM at ~1.5 ns each. The codes are used
    where they lie in the index (an SQ8 code decodes as ``base + scale * code``, linear, so the
    scale moves onto the list's codes as they are multiplied and nothing is decoded ahead): the
    results are FAISS's (same probes, same decoded vectors), up to float rounding.
    """

    def __init__(self, index: faiss.Index, max_d2: float):
        self.index, self.max_d2 = index, max_d2
        outer = faiss.downcast_index(index)
        ivf = outer if isinstance(outer, (faiss.IndexIVFScalarQuantizer, faiss.IndexIVFFlat)) else None
        if ivf is not None and not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat):
            ivf = None  # a graph quantizer means many small lists: FAISS's search is as fast
        self.scale = self.base = None
        if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
            if ivf.sq.qtype != faiss.ScalarQuantizer.QT_8bit:
                ivf = None
            else:  # FAISS's 8-bit codec: value = vmin + (code + 0.5) / 255 * vdiff, per dimension
                vmin, vdiff = np.split(faiss.vector_to_array(ivf.sq.trained), 2)
                self.scale = (vdiff / 255).astype(np.float32)
                self.base = (vmin + 0.5 * self.scale).astype(np.float32)
        self.ivf = ivf
        self.inverted = inverted = _ivf(index)  # the inverted file, inside any transform (None: no lists)
        if inverted is not None:
            # FAISS's search splits its queries between threads before calling search_preassigned, which
            # is called here directly: over queries in its own threads (3), not one thread (0: measured at
            # 1M images, 69 µs a query row on 1 thread, 78 on 2; 33 with this).
            inverted.parallel_mode = 3
        # The probed lists of a graph-quantized index of many lists, found by products (see Assigner).
        self.assigner = Assigner.of(index, SEARCH_GROUP_PROBES) if ivf is None else None
        self._lists: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._threads = 0

    def probes(self, queries: np.ndarray) -> Probes | None:
        """The lists each query visits (None for an index without lists): found once, they serve every
        round of a search that asks the same rows again for more neighbours (``close``'s ``probes``)."""
        ivf = self.inverted
        if ivf is None:
            return None
        x = _transformed(self.index, queries)
        if self.assigner is None:
            return Probes(*ivf.quantizer.search(x, ivf.nprobe))
        d, lists = self.assigner.nearest(x, max(1, faiss.omp_get_max_threads()), k=ivf.nprobe)
        return Probes(d.reshape(len(x), -1), lists.reshape(len(x), -1))

    def close(self, queries: np.ndarray, k: int, probes: Probes | None = None) -> Close:
        """The neighbours of ``queries`` (``Close``); ``probes``: their lists, when ``probes`` gave them."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        ivf = self.inverted
        if ivf is None:
            return Close.from_knn(*search(self.index, queries, k), self.max_d2)
        if probes is None:
            probes = self.probes(queries)
        if self.ivf is not None and len(queries) * ivf.nprobe >= SCAN_MIN_QUERIES_PER_LIST * ivf.nlist:
            return self._scan(queries, k, probes.lists)
        k = max(1, min(k, self.index.ntotal))
        D, ids = ivf.search_preassigned(_transformed(self.index, queries), k, probes.lists, probes.distances)
        return Close.from_knn(D, ids, self.max_d2)

    def _codes(self, lst: int) -> np.ndarray:
        """List ``lst``'s codes as floats, the SQ8 scale applied (a new array: the index is not touched)."""
        ivf = self.ivf
        n = ivf.invlists.list_size(lst)
        codes = faiss.rev_swig_ptr(ivf.invlists.get_codes(lst), n * ivf.code_size).reshape(n, -1)
        if self.scale is None:
            return codes.view(np.float32)
        out = codes.astype(np.float32)
        out *= self.scale
        return out

    def _prepared(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each list's ids, its vectors' offset (centroid + codec base), and the vectors' squared norms."""
        if self._lists is None:
            ivf, lists = self.ivf, []
            zero = np.zeros(DIM, np.float32)
            for lst in range(ivf.nlist):
                n = ivf.invlists.list_size(lst)
                ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n).copy() if n else np.zeros(0, np.int64)
                offset = ivf.quantizer.reconstruct(lst) if ivf.by_residual else zero.copy()
                if self.base is not None:
                    offset += self.base
                x = self._codes(lst) + offset if n else np.zeros((0, DIM), np.float32)
                lists.append((ids, offset, np.einsum("ij,ij->i", x, x)))
            self._lists = lists
        return self._lists

    def _scan(self, xq: np.ndarray, k: int, assign: np.ndarray) -> Close:
        nprobe = self.ivf.nprobe
        flat = assign.ravel()
        order = np.argsort(flat, kind="stable")  # the (query, probe) pairs grouped by list
        lists = flat[order]
        starts = np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]])
        groups = [(int(lists[s]), order[s:e]) for s, e in zip(starts, np.r_[starts[1:], len(order)]) if lists[s] >= 0]
        qn = np.einsum("ij,ij->i", xq, xq)
        smallest = np.full((len(xq), nprobe * k), np.inf, np.float32)  # each probe's k nearest distances
        prepared = self._prepared()

        def scan(part: list[tuple[int, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            hits = []
            for lst, pairs in part:
                ids, offset, xn = prepared[lst]
                if not len(ids):
                    continue
                r, probe = pairs // nprobe, pairs % nprobe
                q = xq[r]
                d = q @ self._codes(lst).T  # |q - x|² = |q|² + |x|² - 2 q.(offset + scaled codes)
                d += (q @ offset)[:, None]
                d *= -2
                d += qn[r, None]
                d += xn
                m = min(k, len(ids))
                if len(ids) > m:
                    near = np.partition(d, m - 1, axis=1)[:, :m]  # column m - 1: each row's m-th nearest
                    # Hits among the list's k nearest only: in a dense corpus most of a list is within reach.
                    a, b = np.nonzero((d < self.max_d2) & (d <= near[:, m - 1 :]))
                else:
                    near = d
                    a, b = np.nonzero(d < self.max_d2)
                smallest[r[:, None], probe[:, None] * k + np.arange(m)] = near  # rows' probes: disjoint cells
                hits.append((r[a], ids[b], d[a, b]))
            return hits

        threads = max(1, faiss.omp_get_max_threads())
        if self._pool is None or self._threads != threads:
            # kept between batches: fresh threads would each grow a malloc arena of their own
            self._pool, self._threads = ThreadPoolExecutor(threads), threads
        # One thread per core, each with a single-threaded BLAS: the products are small, and BLAS
        # threads under several callers fight over the cores (measured 1.4x slower).
        with threadpool_limits(1, user_api="blas"):
            hits = [h for part in self._pool.map(scan, [groups[i::threads] for i in range(threads)]) for h in part]
        if not hits:
            empty = np.zeros(0, np.int64)
            return Close(empty, np.zeros(0, np.float32), empty, empty, np.zeros(0, np.float32))
        r, ids, d = (np.concatenate(a) for a in zip(*hits))
        # Linear-time bookkeeping, not np.unique's sorts: this runs while a core may wait for it.
        has_hit = np.zeros(len(xq), bool)
        has_hit[r] = True  # each such row keeps its nearest hit below: it is within its k nearest
        rows = np.flatnonzero(has_hit)
        kth = np.partition(smallest[rows], k - 1, axis=1)[:, k - 1]
        within = d <= kth[(np.cumsum(has_hit) - 1)[r]]
        r, ids, d = r[within], ids[within], d[within]
        # By row, then nearest first: one sort of a key (row, distance's bits: non-negative floats
        # order as their bit patterns), not a lexsort's two.
        key = (r.astype(np.int64) << 32) | np.maximum(d, 0).view(np.uint32)
        order = np.argsort(key, kind="stable")
        r, ids, d = r[order], ids[order], d[order]
        first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        count = np.diff(np.r_[first, len(r)])
        keep = np.arange(len(r)) - np.repeat(first, count) < k  # the k nearest hits of each row (ties)
        return Close(rows, kth, r[keep], ids[keep], d[keep])


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
