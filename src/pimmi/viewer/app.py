"""``pimmi serve``: the viewer as a Starlette application served by uvicorn, on 127.0.0.1 by default."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pimmi.settings import Settings
from pimmi.viewer import views
from pimmi.viewer.model import Snapshot, load_snapshot
from pimmi.viewer.pages import STATIC
from pimmi.workspace import Workspace

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


class Viewer:
    """The served workspace: one catalogue connection, used by one request at a time, and the snapshot of
    its clusters, computed again when another process commits (a fill or a query running beside the viewer)
    or when a review mark changes them."""

    def __init__(self, workspace_dir: str | Path, settings: Settings, clusters_csv: str | Path | None = None):
        self.dir = Path(workspace_dir)
        self.settings = settings
        self.clusters_csv = clusters_csv
        self.ws = Workspace(workspace_dir, create=False, threads=True)
        self.lock = threading.RLock()
        self._snapshot: Snapshot | None = None
        self._version: int | None = None  # the catalogue's data_version when the snapshot was computed
        self._own_writes = self._seen_writes = 0
        self._built_at = self._build_s = 0.0

    def snapshot(self) -> Snapshot:
        """The clusters as of the last commit. A query running beside the viewer commits every few seconds:
        the clusters are then computed again at most once per twice the time they take (at 100k images,
        ~4 s), so that pages keep answering; the viewer's own review marks show at once."""
        with self.lock:
            version = self.ws.data_version()
            stale = self._snapshot is None or self._own_writes != self._seen_writes
            if not stale and version != self._version:
                stale = time.monotonic() - self._built_at >= max(2.0, 2 * self._build_s)
            if stale:
                t0 = time.monotonic()
                self._snapshot = load_snapshot(self.ws, self.settings, self.clusters_csv)
                self._built_at = time.monotonic()
                self._build_s = self._built_at - t0
                self._version, self._seen_writes = version, self._own_writes
                log.info("clusters computed in %.2f s", self._build_s)
            return self._snapshot

    @contextmanager
    def catalogue(self, writes: bool = False) -> Iterator[Workspace]:
        """The catalogue, for one request; ``writes``: the snapshot is computed again afterwards."""
        with self.lock:
            yield self.ws
            if writes:
                self._own_writes += 1

    def close(self) -> None:
        self.ws.close()


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> list[str]:
    """Host header values accepted: the served host's names. A page of another site that resolves its own
    name to 127.0.0.1 (DNS rebinding) sends its own name, and is refused."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    names = [host, *extra]
    if host in LOOPBACK_NAMES:
        names += LOOPBACK_NAMES
    return sorted(set(names))


def create_app(viewer: Viewer, hosts: Sequence[str] = ("127.0.0.1",)) -> Starlette:
    routes = [
        Route("/", views.clusters_html),
        Route("/api/clusters", views.clusters_json),
        Route("/export/clusters.csv", views.clusters_csv),
        Route("/cluster/{cluster_id}", views.cluster_html),
        Route("/api/cluster/{cluster_id}", views.cluster_json),
        Route("/api/cluster/{cluster_id}/derivation", views.cluster_derivation),
        Route("/cluster/{cluster_id}/images.zip", views.cluster_zip),
        Route("/cluster/{cluster_id}/timeline.svg", views.cluster_timeline),
        Route("/cluster/{cluster_id}/graph.{fmt}", views.cluster_graph_file),
        Route("/pair/{a}/{b}", views.pair_html),
        Route("/api/pair/{a}/{b}", views.pair_json),
        Route("/pair/{a}/{b}/overlay.jpg", views.pair_overlay),
        Route("/image/{image_id}", views.image_html),
        Route("/api/image/{image_id}", views.image_json),
        Route("/thumb/{image_id}/{size}.jpg", views.thumb),
        Route("/original/{image_id}", views.original),
        Route("/api/review/match", views.review_match, methods=["POST"]),
        Route("/api/review/cluster", views.review_cluster, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))],
        exception_handlers={HTTPException: views.error_page, Exception: views.server_error},
    )
    app.state.viewer = viewer
    app.state.hosts = list(hosts)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; bound before anything is printed, so the URL said is the one served (port 0: any
    free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, every response after the first on a kept-alive
    # connection waited ~40 ms for the client's delayed ACK (Nagle); uvicorn sets it only on sockets it binds.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    sock.listen(128)
    return sock


def serve(app: Starlette, sock: socket.socket, verbose: bool = False) -> None:
    """Serve until interrupted (Ctrl-C stops it cleanly)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="info" if verbose else "warning", access_log=verbose, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
