"""Files that inference writes: resumable result lists and feature matrices.

* `JsonlResults`: one JSON object per input, appended and flushed as results come, so a run
  killed at any point loses at most the batch in flight; reopening it lists the inputs done
  (a torn last line is cut off first).
* `FeatureStore`: feature rows appended to a raw file beside `index.csv` (row, path, start, end,
  ok), finalised into a memory-mappable `features.npy` that numpy alone loads; resumable the
  same way.

A timeline's files are `aim_video.timeline`'s.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from aim_video.errors import UserError
from aim_video.files import write_atomic, write_json_atomic


class OutputError(UserError, ValueError):
    """An output file that cannot be continued (another run's, or a different format)."""


def _complete_lines(path: Path) -> list[str]:
    """The file's whole lines; a last line without its newline (a torn write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return data[:end].decode("utf-8").splitlines()


class JsonlResults:
    """An append-only JSONL file of per-input results, keyed by `path`.

    Args:
        path: the file; created with its folder when missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(_complete_lines(self.path), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self.done[record["path"]] = record
            except (ValueError, KeyError, TypeError):
                raise OutputError(f"{self.path}:{number}: not a result line of aim-video "
                                  "predict; give another --out") from None
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Writes one line per record and flushes, so that a kill keeps them."""
        for record in records:
            self._file.write(json.dumps(record) + "\n")
            self.done[record["path"]] = record
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlResults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


INDEX_FIELDS = ("row", "path", "start", "end", "ok", "error")


class FeatureStore:
    """Feature rows of many videos in `DIR/features.npy`, described by `DIR/index.csv`.

    Rows are appended to `features.bin` (raw, native order) as they come; `finalise` writes
    `features.npy` (`np.load(..., mmap_mode="r")` reads one row without the rest) and removes
    the raw file. Reopening a folder continues it: rows past the last complete index line are
    cut off, and `features.npy` of a finished run is turned back into the raw file.

    Args:
        folder: the output folder.
        dtype: "float16" or "float32".
    """

    def __init__(self, folder: str | os.PathLike[str], dtype: str = "float32") -> None:
        if dtype not in ("float16", "float32"):
            raise OutputError(f"--dtype must be float16 or float32, got {dtype!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.index_path = self.folder / "index.csv"
        self.raw_path = self.folder / "features.bin"
        self.npy_path = self.folder / "features.npy"
        self.meta_path = self.folder / "features.json"
        meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}
        if meta and meta["dtype"] != dtype:
            raise OutputError(f"{self.folder}: holds {meta['dtype']} features; "
                              f"continue it with --dtype {meta['dtype']} or give another --out")
        self.dim: int | None = meta.get("dim")
        lines = _complete_lines(self.index_path)
        if lines and tuple(lines[0].split(",")) != INDEX_FIELDS:
            raise OutputError(f"{self.index_path}: not an aim-video extract index")
        self.entries = list(csv.DictReader(io.StringIO("\n".join(lines) + "\n")))
        self.rows = sum(1 for e in self.entries if e["row"] != "")
        self.done = {e["path"] for e in self.entries}
        if self.npy_path.exists() and not self.raw_path.exists():
            with open(self.raw_path, "wb") as f:
                np.load(self.npy_path, mmap_mode="r")[: self.rows].tofile(f)
        self._raw = open(self.raw_path, "ab")
        if self.dim is not None:
            self._raw.truncate(self.rows * self.dim * self.dtype.itemsize)
        self._index = open(self.index_path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._index)
        if not lines:
            self._writer.writerow(INDEX_FIELDS)

    def append(self, path: str, features: np.ndarray | None,
               windows: list[tuple[float, float]] | None = None,
               error: str | None = None) -> None:
        """One video's rows: (D,) or (W, D) features, None when it could not be read."""
        if features is None or features.size == 0:
            self._writer.writerow(("", path, "", "", 0, error or "unreadable"))
        else:
            rows = np.atleast_2d(features).astype(self.dtype)
            if self.dim is None:
                self.dim = int(rows.shape[1])
                write_json_atomic(self.meta_path, {"dim": self.dim, "dtype": self.dtype.name})
            elif rows.shape[1] != self.dim:
                raise OutputError(f"{self.folder}: holds {self.dim}-d features, this model "
                                  f"gives {rows.shape[1]}-d; give another --out")
            rows.tofile(self._raw)
            spans = windows or [("", "")] * len(rows)
            for i, (start, end) in enumerate(spans):
                self._writer.writerow((self.rows + i, path, start, end, 1, error or ""))
            self.rows += len(rows)
        self.done.add(path)

    def flush(self) -> None:
        """Rows first, then their index lines: an index line never names a missing row."""
        self._raw.flush()
        self._index.flush()

    def finalise(self) -> Path:
        """Writes `features.npy` (rows x dim) from the raw rows and removes the raw file."""
        self.flush()
        self._raw.close()
        self._index.close()
        dim = self.dim or 0
        raw = np.fromfile(self.raw_path, dtype=self.dtype).reshape(-1, dim) if dim else \
            np.zeros((0, 0), self.dtype)

        def write(temp: Path) -> None:
            out = np.lib.format.open_memmap(temp, mode="w+", dtype=self.dtype, shape=raw.shape)
            out[:] = raw
            out.flush()
            del out

        write_atomic(self.npy_path, write)
        self.raw_path.unlink()
        return self.npy_path
