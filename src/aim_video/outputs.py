"""Files that inference writes: resumable result lists and feature matrices.

Both resumable outputs prove they are ours before a byte changes (see `files.read_own_lines`):
a user's file given by mistake is refused, one line, and left as it was.

* `JsonlResults`: a header line, then one JSON object per input, appended and flushed as results
  come, so a run killed at any point loses at most the batch in flight; reopening it lists the
  inputs done (a torn last line is cut off first). A failed input is not done: a rerun tries it
  again and its new line replaces the old one.
* `FeatureStore`: feature rows appended to a raw file beside `index.csv` (row, path, start, end,
  ok, error, video_rows) and `features.json` (what the folder is, dim, dtype), finalised into a
  memory-mappable `features.npy` that numpy alone loads; resumable the same way.

A timeline's files are `aim_video.timeline`'s.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aim_video.files import (
    OWNER_KEY,
    OutputError,
    existing_file,
    output_header,
    read_own_lines,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)

PREDICT_RESULTS = "predict results"
FEATURES = "extract features"
FORMAT = 1


class JsonlResults:
    """An append-only JSONL file of per-input results, keyed by `path`.

    The file starts with a header line (`{"aim-video": "predict results", "format": 1}`); each
    further line is one input's record. When one path has several records the last one holds
    (a retried failure); `close` then rewrites the file atomically with each path once, where it
    first appeared, so readers of a finished file never meet a stale record.

    Args:
        path: the file; created with its folder when missing.
        option: how the user named it, for messages.

    Raises:
        OutputError: `path` exists and is not a results file of aim-video predict (nothing is
            changed), or one of its lines is not a result.
    """

    def __init__(self, path: str | os.PathLike[str], option: str = "--out") -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}  # the last record of each path
        self._stale = 0  # lines of the file that a later line for the same path replaces
        own = read_own_lines(self.path, PREDICT_RESULTS, option=option)
        if own is None or own.headerless:  # missing or empty
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, output_header(PREDICT_RESULTS, format=FORMAT))
        else:
            for number, line in enumerate(own.lines, 2):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self._keep(record["path"], record)
                except (ValueError, KeyError, TypeError):
                    raise OutputError(f"{self.path}:{number}: not a result line of aim-video "
                                      f"predict; give another {option}") from None
        self._file = open(self.path, "a", encoding="utf-8")

    def _keep(self, path: str, record: dict[str, Any]) -> None:
        self._stale += path in self.records
        self.records[path] = record

    @property
    def done(self) -> dict[str, dict[str, Any]]:
        """The inputs predicted: their last record says ok (a failed one is tried again)."""
        return {path: r for path, r in self.records.items() if r.get("ok")}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Writes one line per record and flushes, so that a kill keeps them."""
        for record in records:
            self._file.write(json.dumps(record) + "\n")
            self._keep(record["path"], record)
        self._file.flush()

    def close(self) -> None:
        """Closes the file; rewrites it with one line per path when a record replaced another."""
        self._file.close()
        if self._stale:
            write_text_atomic(self.path, output_header(PREDICT_RESULTS, format=FORMAT) + "".join(
                json.dumps(record) + "\n" for record in self.records.values()))
            self._stale = 0

    def __enter__(self) -> JsonlResults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


INDEX_FIELDS = ("row", "path", "start", "end", "ok", "error", "video_rows")
_COPY_BYTES = 64 << 20  # rows copied per step when features.npy is written: bounded memory


def _csv_records(data: bytes, path: Path) -> tuple[list[list[str]], list[int]]:
    """The complete records of a CSV file we wrote and the byte offset where each one ends.

    A record ends at a newline outside quotes; what follows the last one is a torn write. Lines
    are fed to the csv module one at a time (split on "\n" only), so a quoted name holding
    "\r", "\n" or U+2028 comes back as it was written.
    """
    pieces = data.split(b"\n")[:-1]  # the bytes after the last newline are torn
    consumed = 0

    def lines() -> Iterator[str]:
        nonlocal consumed
        for piece in pieces:
            consumed += len(piece) + 1
            yield (piece + b"\n").decode("utf-8")

    records, ends = [], []
    reader = csv.reader(lines(), strict=True)
    try:
        for record in reader:
            records.append(record)
            ends.append(consumed)
    except UnicodeDecodeError:
        raise OutputError(f"{path}: damaged (not UTF-8 text); give another --out") from None
    except csv.Error:
        if consumed < data.rfind(b"\n") + 1:
            raise OutputError(f"{path}:{reader.line_num}: damaged; give another --out") from None
        # Otherwise the data ended inside a quoted name: a record torn after a newline in it.
    return records, ends


def _video_rows(record: list[str]) -> int | None:
    """How many index records the video of `record` has (1 for an unreadable one); None when
    `record` is no index record."""
    if len(record) != len(INDEX_FIELDS) or record[4] not in ("0", "1"):
        return None
    try:
        count = int(record[6])
    except ValueError:
        return None
    if record[4] == "0":
        return 1 if count == 0 else None
    return count if count > 0 else None


class FeatureStore:
    """Feature rows of many videos in `DIR/features.npy`, described by `DIR/index.csv`.

    `features.json` says the folder is aim-video's (and the rows' dim and dtype); it is written
    first, and a folder holding any of the store's files without it is refused untouched.
    Rows are appended to `features.bin` (raw, native order, the rows after those already in
    `features.npy`) before the index lines that name them; `finalise` writes `features.npy`
    (`np.load(..., mmap_mode="r")` reads one row without the rest) through memory maps, only
    when rows were added. Each index line carries its video's row count (`video_rows`): a video
    is done when all its lines are in, so reopening a folder cuts a video that a kill left half
    written (its lines and rows) and continues. An unreadable video (ok 0) is not done: a rerun
    tries it again and the index is rewritten without the old line.

    Args:
        folder: the output folder.
        dtype: "float16" or "float32".

    Raises:
        OutputError: the folder is not a features folder of aim-video extract (nothing changed),
            is damaged, or holds another dtype.
    """

    def __init__(self, folder: str | os.PathLike[str], dtype: str = "float32") -> None:
        if dtype not in ("float16", "float32"):
            raise OutputError(f"--dtype must be float16 or float32, got {dtype!r}")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder} is not a folder; --out names the folder to write")
        self.dtype = np.dtype(dtype)
        self.index_path = self.folder / "index.csv"
        self.raw_path = self.folder / "features.bin"
        self.npy_path = self.folder / "features.npy"
        self.meta_path = self.folder / "features.json"
        meta = self._read_meta()
        if meta is None:
            ours = [p for p in (self.index_path, self.raw_path, self.npy_path) if p.exists()]
            if ours:
                raise OutputError(f"{ours[0]}: not written by aim-video extract (no "
                                  f"{self.meta_path.name} beside it); left as it is: give "
                                  "another --out")
            self.folder.mkdir(parents=True, exist_ok=True)
            meta = {"dim": None}
            self._write_meta(None)
        elif meta.get("dtype") != dtype:
            raise OutputError(f"{self.folder}: holds {meta.get('dtype')} features; continue it "
                              f"with --dtype {meta.get('dtype')} or give another --out")
        self.dim: int | None = meta.get("dim")
        # path -> its last group of index records; a path given again replaces its group.
        self.groups: dict[str, list[list[str]]] = {}
        self._stale = 0
        self.rows = self._read_index()
        self.stored = self._check_rows()  # rows already in features.npy
        # Unbuffered: a row is in the file before the index line that names it is written.
        self._raw = open(self.raw_path, "ab", buffering=0)
        self._index = open(self.index_path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._index, quoting=csv.QUOTE_ALL)
        if self._index.tell() == 0:
            self._writer.writerow(INDEX_FIELDS)
            self._index.flush()

    # ------------------------------------------------------------------ reading what is there
    def _read_meta(self) -> dict[str, Any] | None:
        if not existing_file(self.meta_path, "--out"):
            return None
        try:
            meta = json.loads(self.meta_path.read_bytes())
        except ValueError as err:
            raise OutputError(f"{self.meta_path}: damaged ({err}); give another --out") from None
        if not isinstance(meta, dict) or meta.get(OWNER_KEY) != FEATURES:
            raise OutputError(f"{self.meta_path}: not aim-video's {FEATURES} description; left "
                              "as it is: give another --out")
        return meta

    def _write_meta(self, dim: int | None) -> None:
        write_json_atomic(self.meta_path, {OWNER_KEY: FEATURES, "format": FORMAT, "dim": dim,
                                           "dtype": self.dtype.name})

    def _read_index(self) -> int:
        """Reads index.csv into `groups`, cutting a torn tail and a half-written video."""
        if not existing_file(self.index_path, "--out"):
            return 0
        data = self.index_path.read_bytes()
        records, ends = _csv_records(data, self.index_path)
        if not records or tuple(records[0]) != INDEX_FIELDS:
            raise OutputError(f"{self.index_path}: not an index of aim-video extract; left as "
                              "it is: give another --out")
        keep, rows, number = ends[0], 0, 1
        while number < len(records):
            first = records[number]
            count = _video_rows(first)
            group = records[number:number + (count or 1)]
            same = all(len(r) == len(INDEX_FIELDS) and r[1] == first[1] for r in group)
            numbered = first[4] != "1" or [r[0] for r in group] == [
                str(rows + i) for i in range(len(group))]
            if count is None or not same or not numbered or len(group) < count and \
                    number + len(group) < len(records):
                raise OutputError(f"{self.index_path}: record {number + 1} is damaged; give "
                                  "another --out")
            if len(group) < count:
                break  # the last video, half written when a kill came: cut, done again
            self._stale += first[1] in self.groups
            self.groups[first[1]] = group
            rows += len(group) if first[4] == "1" else 0
            number += count
            keep = ends[number - 1]
        if keep < len(data):  # a torn line, or the lines of a video a kill cut short
            with open(self.index_path, "r+b") as f:
                f.truncate(keep)
        return rows

    def _check_rows(self) -> int:
        """Fits the raw file to the index: rows past the last indexed one are cut off."""
        stored = 0
        if existing_file(self.npy_path, "--out"):
            try:
                stored = len(np.load(self.npy_path, mmap_mode="r"))
            except (ValueError, OSError) as err:
                raise OutputError(f"{self.npy_path}: damaged ({err}); give another --out") \
                    from None
        row_bytes = (self.dim or 0) * self.dtype.itemsize
        raw = self.raw_path.stat().st_size if existing_file(self.raw_path, "--out") else 0
        have = stored + (raw // row_bytes if row_bytes else 0)
        if stored > self.rows or have < self.rows:
            raise OutputError(f"{self.folder}: index.csv names {self.rows} rows, the folder "
                              f"holds {have}; give another --out")
        if raw > (self.rows - stored) * row_bytes:
            with open(self.raw_path, "r+b") as f:
                f.truncate((self.rows - stored) * row_bytes)
        return stored

    @property
    def done(self) -> set[str]:
        """The videos whose rows are all in (an unreadable one is tried again)."""
        return {path for path, group in self.groups.items() if group[0][4] == "1"}

    @property
    def failed(self) -> set[str]:
        """The videos recorded as unreadable."""
        return {path for path, group in self.groups.items() if group[0][4] != "1"}

    # ------------------------------------------------------------------ writing
    def append(self, path: str, features: np.ndarray | None,
               windows: list[tuple[float, float]] | None = None,
               error: str | None = None) -> None:
        """One video's rows: (D,) or (W, D) features, None when it could not be read."""
        if features is None or features.size == 0:
            group = [["", path, "", "", "0", error or "unreadable", "0"]]
        else:
            rows = np.atleast_2d(features).astype(self.dtype)
            if self.dim is None:
                self.dim = int(rows.shape[1])
                self._write_meta(self.dim)
            elif rows.shape[1] != self.dim:
                raise OutputError(f"{self.folder}: holds {self.dim}-d features, this model "
                                  f"gives {rows.shape[1]}-d; give another --out")
            self._raw.write(np.ascontiguousarray(rows).tobytes())
            spans = windows or [("", "")] * len(rows)
            group = [[str(self.rows + i), path, str(start), str(end), "1", error or "",
                      str(len(rows))] for i, (start, end) in enumerate(spans)]
            self.rows += len(rows)
        self._writer.writerows(group)
        self._stale += path in self.groups
        self.groups[path] = group

    def flush(self) -> None:
        """The index lines written so far reach the file (their rows already have)."""
        self._index.flush()

    def finalise(self) -> Path:
        """Writes `features.npy` (rows x dim) when rows were added, and removes the raw file.

        Old and new rows are copied through memory maps a bounded block at a time; a rerun that
        added nothing leaves `features.npy` as it was. A retried video's old index line goes.
        """
        self.flush()
        self._raw.close()
        self._index.close()
        if self._stale:
            text = io.StringIO(newline="")
            writer = csv.writer(text, quoting=csv.QUOTE_ALL)
            writer.writerow(INDEX_FIELDS)
            for group in self.groups.values():
                writer.writerows(group)
            write_text_atomic(self.index_path, text.getvalue())
            self._stale = 0
        if self.rows > self.stored or not self.npy_path.exists():
            write_atomic(self.npy_path, self._write_npy)
        self.raw_path.unlink(missing_ok=True)
        return self.npy_path

    def _write_npy(self, temp: Path) -> None:
        dim = self.dim or 0
        out = np.lib.format.open_memmap(temp, mode="w+", dtype=self.dtype,
                                        shape=(self.rows, dim))
        step = max(1, _COPY_BYTES // max(1, dim * self.dtype.itemsize))
        sources = []
        if self.stored:
            sources.append(np.load(self.npy_path, mmap_mode="r"))
        if self.rows > self.stored:
            sources.append(np.memmap(self.raw_path, dtype=self.dtype, mode="r",
                                     shape=(self.rows - self.stored, dim)))
        at = 0
        for source in sources:
            for i in range(0, len(source), step):
                block = source[i:i + step]
                out[at:at + len(block)] = block
                at += len(block)
        out.flush()
        del out, sources
