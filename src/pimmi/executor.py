"""Where parallel work runs: one small interface, the local process pool or a Dask cluster behind it.

A stage hands an ``Executor`` a picklable module-level function and an iterable of work
items, and reads the results back in the order of the items.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
import multiprocessing
import multiprocessing.pool
import os
import signal
from collections import deque
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


def executor_for(scheduler: str, workers: int) -> Executor:
    """A Dask cluster's executor when ``scheduler`` names one (Dask is imported only then), else the local
    pool of ``workers`` processes."""
    return DaskExecutor(scheduler) if scheduler else local_executor(workers)


class DaskExecutor:
    """Tasks on a Dask distributed cluster. Each task runs ``fn`` on a batch of items (``chunksize``: a task
    costs ~1 ms of scheduling, a small image's extraction); results come back in the items' order, with a
    few tasks per worker in flight, so that a long stage holds little in memory. A task whose worker is lost
    runs again elsewhere (Dask's own rule), and one that raises is tried twice more."""

    def __init__(self, scheduler: str):
        try:
            from distributed import Client
        except ImportError:
            raise RuntimeError("a Dask scheduler needs pip install 'pimmi[dask]'") from None
        if os.path.isfile(scheduler):
            self.client = Client(scheduler_file=scheduler, set_as_default=False)
        else:
            self.client = Client(scheduler, set_as_default=False)
        self.workers = max(1, sum(self.client.nthreads().values()))

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1) -> Iterator[R]:
        it = iter(items)
        flight: deque = deque()

        def send() -> None:
            batch = list(itertools.islice(it, max(1, chunksize)))
            if batch:
                flight.append(self.client.submit(run_batch, fn, batch, pure=False, retries=2))

        for _ in range(2 * self.workers + 1):
            send()
        try:
            while flight:
                results = flight.popleft().result()
                send()
                yield from results
        finally:
            for f in flight:  # stopped early (Ctrl-C, an error): what is queued is not run
                f.cancel()

    def submit(self, fn: Callable[[T], R], item: T):
        """One task; its ``result()`` waits for it."""
        return self.client.submit(run_one, fn, item, pure=False, retries=2)

    def close(self) -> None:
        self.client.close()


def run_batch(fn: Callable[[T], R], batch: list[T]) -> list[R]:
    """A Dask task: ``fn`` on each item, in a worker made ready once."""
    prepare_worker()
    return [fn(x) for x in batch]


def run_one(fn: Callable[[T], R], item: T) -> R:
    prepare_worker()
    return fn(item)


@functools.cache
def prepare_worker() -> None:
    """A Dask worker is a process of its own threads: one thread for OpenCV, freed memory kept (as the local
    pool's workers)."""
    keep_freed_memory()
    import cv2

    cv2.setNumThreads(1)
