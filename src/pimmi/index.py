"""The FAISS index of descriptors: type chosen from the corpus size, ids that map back to (image, keypoint)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import faiss
import numpy as np

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


def pack_ids(image_id: int, n: int) -> np.ndarray:
    return (np.int64(image_id) << KEYPOINT_BITS) | np.arange(n, dtype=np.int64)


def unpack_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ids >> KEYPOINT_BITS, ids & ((1 << KEYPOINT_BITS) - 1)


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
    """Train ``index`` on ``data``; lists found with a graph (many lists) are trained in two levels."""
    ivf = _ivf(index)
    graph = ivf is not None and not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat)
    if graph and not index.is_trained:
        x = data
        outer = faiss.downcast_index(index)
        if isinstance(outer, faiss.IndexPreTransform):  # e.g. OPQ: lists are made in the rotated space
            for i in range(outer.chain.size()):
                vt = outer.chain.at(i)
                vt.train(x)
                x = vt.apply(x)
        ivf.quantizer.add(_two_level_centroids(x, ivf.nlist))  # IVF training then skips its own k-means
    index.train(data)


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


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
