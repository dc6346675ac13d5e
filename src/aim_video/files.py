"""File helpers shared by everything that writes results: atomic writes (the one mechanism in
the package), the cleanup of what a killed writer left, and JSON helpers.

`write_atomic` writes into a temporary file beside the target (named `.NAME.XXXXXXXX.tmp`),
fsyncs it, renames it over the target and fsyncs the folder: after a crash or a kill the target
holds the old content or the new one, never a mix, and only the temporary file can be left
over (`remove_temp_files` removes those). Files are created with mode 0666 less the umask, as
`open()` would.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable
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


_TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")  # `.NAME.XXXXXXXX.tmp`


def _new_temp_file(path: Path) -> Path:
    """Creates an empty, unique temporary file beside `path` (mode 0666 less the umask)."""
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
        try:
            # O_EXCL: never share a file with another writer; 0o666: the umask applies, unlike
            # mkstemp's 0600.
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temp


def write_atomic(path: str | os.PathLike[str], payload: bytes | Callable[[Path], None]) -> Path:
    """Writes a file so that it appears complete or not at all, even after a crash.

    Args:
        path: the file to write; its folder must exist.
        payload: the bytes to write, or a function that writes the file at the path it is given
            (a temporary file beside `path`: `torch.save`, an encoder, ...).

    Returns:
        `path`.
    """
    path = Path(path)
    temp = _new_temp_file(path)
    try:
        if isinstance(payload, bytes):
            temp.write_bytes(payload)
        else:
            payload(temp)
        with open(temp, "rb+") as f:  # durable before it becomes visible under `path`
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Makes a rename durable (a no-op where folders cannot be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_files(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """The temporary files `write_atomic` left in `folder` (for the file `name`, or for any)."""
    try:
        entries = sorted(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and (name is None or match["name"] == name) and entry.is_file():
            found.append(entry)
    return found


def remove_temp_files(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Deletes what `temp_files(folder, name)` lists (what killed writers left); returns it.

    Only for folders that no other process is writing into at the time.
    """
    removed = temp_files(folder, name)
    for temp in removed:
        temp.unlink(missing_ok=True)
    return removed


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically (see `write_atomic`)."""
    write_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], value: Any) -> None:
    """`value` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(value, indent=1) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable (a cache to rebuild)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
