"""Where parallel work runs: one small interface, so that a Dask client can stand in for the local pool.

A stage hands an ``Executor`` a picklable module-level function and an iterable of work
items, and reads the results back in the order of the items.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import multiprocessing.pool
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1) -> Iterator[R]:
        """Results of ``fn`` on each item, lazily, in the items' order."""
        ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs everything in this process: for one worker, tests and debugging."""

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1) -> Iterator[R]:
        return map(fn, items)

    def close(self) -> None:
        pass


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks for reuse instead of returning them to the system at once.

    SIFT allocates and frees a pyramid of image-sized buffers for every image; with glibc's
    defaults each of them is mapped anew and page-faulted in, which costs ~30 % of extraction
    time. Keeping up to 128 MB of freed memory per process removes that. No-op off glibc.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)  # the largest value glibc accepts
    mallopt(m_trim_threshold, 128 << 20)


def _worker_init() -> None:
    # Ctrl-C is the parent's to handle: it saves what is done, then stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One process per core already: BLAS threads (numpy is not imported yet in a fresh
    # forkserver child) would only fight each other over the cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    keep_freed_memory()
    import cv2

    cv2.setNumThreads(1)  # one process per core already


class ProcessExecutor:
    """A local pool of worker processes (forkserver: safe beside FAISS's OpenMP threads).

    The workers start with the first ``map``: a query whose images are all extracted already
    never pays for them (~1 s of CPU and ~200 MB).
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: multiprocessing.pool.Pool | None = None

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1) -> Iterator[R]:
        if self.pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self.pool = ctx.Pool(self.workers, initializer=_worker_init)
        return self.pool.imap(fn, items, chunksize)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def local_executor(workers: int) -> Executor:
    return SerialExecutor() if workers <= 1 else ProcessExecutor(workers)
