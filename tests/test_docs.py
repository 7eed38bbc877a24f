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
    for command in ("fill", "query", "clusters", "posts", "provenance", "timeline", "serve", "report", "viz", "eval"):
        assert f"## pimmi {command}\n" in text
    assert "--query-min-region-area" in text and "--preset fast" in text and "--allow-host" in text


def test_version_is_one_and_python_m_pimmi_works():
    assert version("pimmi") == __version__
    out = subprocess.run([sys.executable, "-m", "pimmi", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pimmi {__version__}"
