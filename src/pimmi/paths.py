"""File names as the catalogue keeps them and as people and files are shown them.

On POSIX a file name is bytes; Python holds the bytes that are not UTF-8 (an old Latin-1 archive's names)
as surrogate escapes, which neither SQLite nor a UTF-8 file accepts.
"""

from __future__ import annotations

import os


def stored_path(path: str) -> str | bytes:
    """A file name as the catalogue stores it: text, or its bytes when it is not valid UTF-8, so that every
    name is kept losslessly."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def read_path(stored: str | bytes) -> str:
    """The file name ``stored_path`` stored."""
    return os.fsdecode(stored) if isinstance(stored, bytes) else stored


def shown_path(path: str) -> str:
    """A file name for people and UTF-8 files: bytes that are not UTF-8 written as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
