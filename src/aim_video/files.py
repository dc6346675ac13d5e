"""File helpers shared by everything that writes results: atomic writes (the one mechanism in
the package), the cleanup of what a killed writer left, and JSON helpers.

`write_atomic` writes into a temporary file beside the target (named `.NAME.XXXXXXXX.tmp`),
fsyncs it, renames it over the target and fsyncs the folder: after a crash or a kill the target
holds the old content or the new one, never a mix, and only the temporary file can be left
over (`remove_temp_files` removes those). Files are created with mode 0666 less the umask, as
`open()` would.

Outputs that grow while a command runs (`predict --out`, `extract`'s index, `metrics.jsonl`)
start with a header line naming aim-video and what the file is (`output_header`);
`read_own_lines` refuses any file whose first line is not that header before it changes a byte,
so a user's file given by mistake is never appended to or "repaired".
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aim_video.errors import UserError


class OutputError(UserError, ValueError):
    """An output that is not ours to continue: a user's file, another format, a folder."""


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


# ------------------------------------------------------------ outputs that prove they are ours
OWNER_KEY = "aim-video"
_HEADER_PEEK = 4096  # bytes read to look for the header: a user's big file is never read whole


def output_header(what: str, **fields: Any) -> str:
    """The first line of a growing output: `{"aim-video": what, ...}` and its newline."""
    return json.dumps({OWNER_KEY: what, **fields}) + "\n"


def existing_file(path: str | os.PathLike[str], option: str) -> bool:
    """Whether the output `path` exists (False: it may be created).

    Raises:
        OutputError: `path` is a folder, a special file, or cannot be looked at.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as err:
        raise OutputError(f"{path}: {err.strerror or err}; give another {option}") from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"{path} is a folder; {option} names a file")
    if not stat.S_ISREG(mode):
        raise OutputError(f"{path} is not a regular file; give another {option}")
    return True


def header_of(line: bytes) -> str | None:
    """What a header line says the file is, or None when it is no header of ours."""
    try:
        value = json.loads(line)
    except ValueError:  # UnicodeDecodeError included
        return None
    what = value.get(OWNER_KEY) if isinstance(value, dict) else None
    return what if isinstance(what, str) else None


@dataclass
class OwnLines:
    """What `read_own_lines` found in a file of ours."""

    lines: list[str]  # the whole lines after the header, split on "\n" only
    torn: bool  # a last line without its newline (a write cut short) was cut off the file
    headerless: bool  # no header (an older version's file, accepted on the caller's proof)


def read_own_lines(path: str | os.PathLike[str], what: str, *, option: str,
                   headerless: bool = False) -> OwnLines | None:
    """The lines of an output that grows, once it is proved to be ours; None when missing.

    The file is ours when its first line is `output_header(what)`. Only then is a torn last
    line cut off (the one change made here). An empty file holds nothing to lose: it counts as
    ours, headerless. Lines are split on "\n" alone: `str.splitlines` would also split inside
    a JSON string holding U+2028 or a carriage return.

    Args:
        path: the file.
        what: what the header must name ("predict results", ...).
        option: how the user named the file, for the message ("--out").
        headerless: the caller has other proof that the file is ours (an older version wrote
            it without a header): accept a file whose first line is not a header.

    Raises:
        OutputError: a folder, a special file, or a file that is not ours; nothing is changed.
    """
    path = Path(path)
    if not existing_file(path, option):
        return None
    with open(path, "rb") as f:
        head = f.read(_HEADER_PEEK)
    first, newline, _ = head.partition(b"\n")
    found = header_of(first) if newline else None
    if head and found != what and not (found is None and headerless):
        said = f"aim-video's {found}" if found else "not aim-video's header"
        raise OutputError(f"{path}: not aim-video {what} (its first line is {said}); "
                          f"left as it is: give another {option}")
    data = path.read_bytes()
    start = len(first) + 1 if found else 0
    end = data.rfind(b"\n") + 1
    torn = end < len(data)
    if torn:
        with open(path, "r+b") as f:
            f.truncate(end)
    try:
        text = data[start:end].decode("utf-8")
    except UnicodeDecodeError as err:
        raise OutputError(f"{path}: damaged (not UTF-8 at byte {start + err.start}); "
                          f"give another {option}") from None
    return OwnLines(text.split("\n")[:-1], torn, headerless=not found)
