"""Small file helpers shared by the tools that cache work on disk (make-synthetic, the demo)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
