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


def pack_ids(image_id: int, n: int) -> np.ndarray:
    return (np.int64(image_id) << KEYPOINT_BITS) | np.arange(n, dtype=np.int64)


def unpack_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ids >> KEYPOINT_BITS, ids & ((1 << KEYPOINT_BITS) - 1)


def choose_index_type(n_descriptors: int) -> str:
    """A FAISS factory string for this many descriptors.

    Exact search for tiny corpora; IVF with 8-bit scalar quantization (128 bytes a vector,
    near-exact distances) up to ~20M descriptors (~70k images); IVF-PQ with 32-byte codes
    beyond, so that 2e8 descriptors (~1M images) take ~8 GB.
    """
    if n_descriptors < FLAT_MAX:
        return "IDMap,Flat"
    nlist = 2 ** round(math.log2(max(256, 2.5 * math.sqrt(n_descriptors))))
    if n_descriptors < PQ_MIN:
        return f"IVF{min(nlist, 65536)},SQ8"
    return f"OPQ32_128,IVF{min(nlist, 262144)},PQ32"


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


def set_threads(n: int) -> None:
    faiss.omp_set_num_threads(max(1, n))


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe or default_nprobe(ivf.nlist)


def default_nprobe(nlist: int) -> int:
    # Copies' descriptors are close and fall in the same cell nearly always: few probes suffice.
    return max(2, min(64, nlist // 512))


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
