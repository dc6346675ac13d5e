"""Small file helpers shared by the tools that cache work on disk (make-synthetic, the demo)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from aim_video.errors import UserError


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Creates the folder `path` if needed and checks that a file can be written in it.

    Called before long work whose results go there, so that a read-only or misspelt output
    folder fails at once rather than after the work.

    Raises:
        UserError: the folder cannot be created or written to (names it and why).
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A real write: permission bits alone miss read-only mounts, quotas and root's rights.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"cannot write to the output folder {folder}: "
                        f"{err.strerror or err}") from None
    return folder


def write_text_atomic(path: Path, text: str) -> None:
    """Writes `text` beside `path` and renames it into place: a reader sees all of it or none."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_json_atomic(path: Path, value: Any) -> None:
    """`value` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(value, indent=1) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable (a cache to rebuild)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
