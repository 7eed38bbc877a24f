"""The documentation that is generated or runs: the CLI reference matches the parser, the version is one."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from pimmi import __version__
from pimmi.cli import cli_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_up_to_date():
    text = (DOCS / "cli.md").read_text()
    made_with = text.split("Python ", 1)[1].split("'s argparse")[0]
    if made_with != f"{sys.version_info.major}.{sys.version_info.minor}":
        pytest.skip(f"docs/cli.md was made with Python {made_with}'s argparse, whose layout differs")
    assert text == cli_reference(), "docs/cli.md is out of date: run 'make docs'"


def test_every_command_and_setting_is_in_the_reference():
    text = cli_reference()
    commands = ("fill", "query", "clusters", "posts", "provenance", "timeline", "serve", "report", "status", "viz")
    for command in commands:
        assert f"## pimmi {command}\n" in text
    assert "--query-min-region-area" in text and "--preset fast" in text and "--allow-host" in text


def test_version_is_one_and_python_m_pimmi_works():
    assert version("pimmi") == __version__
    out = subprocess.run([sys.executable, "-m", "pimmi", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pimmi {__version__}"


def test_the_api_example_runs(small_corpus, tmp_path, capsys):
    import re

    text = (DOCS / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    images = small_corpus / "images"
    posts = tmp_path / "posts.csv"
    files = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.*"))
    posts.write_text(
        "post_id,date,account,media_files\n"
        + "".join(f"p{i},2025-01-{1 + i:02d}T10:00:00Z,user{i % 3},{f}\n" for i, f in enumerate(files))
    )
    scope = {"IMAGES": images, "WORKSPACE": tmp_path / "ws", "POSTS": posts}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), scope)
    out = capsys.readouterr().out
    assert re.search(r"^\d+ images extracted; 0 unusable", out, re.M)
    assert len(scope["table"]) == 3 and all(s.nb_posts == 5 for s in scope["table"])  # 3 photos x (1 + 4 copies)
    assert out.count("likely original") == 3
