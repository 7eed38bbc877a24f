"""Fixtures build real corpora: scikit-image's sample photos and generated copies of them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from pimmi import cli
from pimmi.demo import build_corpus

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """8 photos x 9 copies (jpeg, crop, scale, rotate, flip, color, caption, pad, perspective) + 5 distractors."""
    out = tmp_path_factory.mktemp("demo")
    build_corpus(out)
    return out


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    build_corpus(
        out,
        originals=["astronaut", "coffee", "chelsea"],
        distractors=["moon", "clock"],
        copies=["jpeg", "crop", "flip", "rotate"],
    )
    return out


@pytest.fixture(scope="session")
def demo_run(demo_corpus, tmp_path_factory) -> dict[str, Path]:
    """The whole pipeline through the CLI, once for the session."""
    out = tmp_path_factory.mktemp("run")
    ws = out / "ws"
    assert run(["--nb-threads", "2", "fill", str(demo_corpus / "images"), str(ws)]) == 0
    assert run(["--nb-threads", "2", "query", str(demo_corpus / "images"), str(ws), "-o", str(out / "q.csv")]) == 0
    assert run(["clusters", str(ws), "-o", str(out / "c.csv")]) == 0
    # Other tests query more images into "ws"; the viewer's tests read this copy, as the pipeline left it.
    viewed = Path(shutil.copytree(ws, out / "ws-viewed"))
    return {
        "corpus": demo_corpus,
        "ws": ws,
        "viewed": viewed,
        "query": out / "q.csv",
        "clusters": out / "c.csv",
        "out": out,
    }


def run(argv: list[str]) -> int:
    return cli.main(["--silent", *argv])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def truth_of(corpus: Path) -> dict[str, str]:
    return {r["path"]: r["group"] for r in read_csv(corpus / "truth.csv")}


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
