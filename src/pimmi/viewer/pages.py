"""Rendering the viewer's pages: one Jinja2 environment, and the links between pages, for the server
(absolute URLs) and for the static report (relative file names)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from pimmi.paths import shown_path

HERE = Path(__file__).parent
STATIC = HERE / "static"
PAGE_SIZE = 60  # cluster cards per page


class ServerLinks:
    """URLs of the served pages."""

    static_site = False

    def home(self) -> str:
        return "/"

    def clusters_page(self, page: int, query: str = "") -> str:
        return f"/?{query}&page={page}" if query else f"/?page={page}"

    def cluster(self, cluster_id: int) -> str:
        return f"/cluster/{cluster_id}"

    def image(self, image_id: int) -> str:
        return f"/image/{image_id}"

    def pair(self, a: int, b: int) -> str:
        return f"/pair/{a}/{b}"

    def thumb(self, image_id: int, size: int = 256) -> str:
        return f"/thumb/{image_id}/{size}.jpg"

    def original(self, image_id: int) -> str | None:
        return f"/original/{image_id}"

    def overlay(self, a: int, b: int) -> str | None:
        return f"/pair/{a}/{b}/overlay.jpg"

    def static(self, name: str) -> str:
        return f"/static/{name}"

    def timeline(self, cluster_id: int) -> str | None:
        return f"/cluster/{cluster_id}/timeline.svg"

    def derivation(self, cluster_id: int) -> str | None:
        return f"/api/cluster/{cluster_id}/derivation"

    def export(self, name: str) -> str | None:
        return f"/{name}"


class ReportLinks(ServerLinks):
    """File names of the static report, relative to a page ``depth`` folders below its root."""

    static_site = True

    def __init__(self, depth: int = 0):
        self.up = "../" * depth

    def home(self) -> str:
        return f"{self.up}index.html"

    def clusters_page(self, page: int, query: str = "") -> str:
        return f"{self.up}index.html" if page == 1 else f"{self.up}page-{page}.html"

    def cluster(self, cluster_id: int) -> str:
        return f"{self.up}cluster/{cluster_id}.html"

    def image(self, image_id: int) -> str:
        return f"{self.up}image/{image_id}.html"

    def pair(self, a: int, b: int) -> str:
        return f"{self.up}pair/{a}-{b}.html"

    def thumb(self, image_id: int, size: int = 256) -> str:
        return f"{self.up}thumbs/{size}/{image_id}.jpg"

    def original(self, image_id: int) -> str | None:
        return None

    def overlay(self, a: int, b: int) -> str | None:
        return None

    def static(self, name: str) -> str:
        return f"{self.up}static/{name}"

    def timeline(self, cluster_id: int) -> str | None:
        return None

    def derivation(self, cluster_id: int) -> str | None:
        return None  # the report embeds the tree in the page

    def export(self, name: str) -> str | None:
        return None


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = to_json
    env.filters["pct"] = lambda x: f"{100 * x:.0f} %"
    return env


def to_json(value: Any) -> Markup:
    """JSON that is safe inside a <script> element."""
    text = json.dumps(value, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def render(name: str, links: ServerLinks, **context: Any) -> str:
    """A page; file names that are not UTF-8 are shown escaped (\\xNN)."""
    return shown_path(environment().get_template(name).render(links=links, **context))


def page_of(items: list, page: int) -> tuple[list, int]:
    """The items of page ``page`` (from 1) and the number of pages."""
    pages = max(1, -(-len(items) // PAGE_SIZE))
    page = min(max(1, page), pages)
    return items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE], pages
