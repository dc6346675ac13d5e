"""Scan a data set for entries that cannot be read, before a long run trips over them.

Every entry is opened and its first and last frames decoded (the last one catches truncated
files, whose headers still promise every frame), in worker processes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from aim_video.data.annotations import Annotations, VideoRecord
from aim_video.data.decode import Backend, VideoDecodeError, is_decode_error, open_video
from aim_video.data.pool import process_pool, usable_cpus


@dataclass(frozen=True)
class BadEntry:
    """An unreadable entry: its path and why."""

    path: str
    reason: str


@dataclass
class ScanReport:
    """How many entries read fine, and the ones that did not (in annotation order)."""

    good: int = 0
    bad: list[BadEntry] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.good + len(self.bad)

    def to_dict(self) -> dict[str, Any]:
        """``{"good": int, "bad": [{"path", "reason"}], "total": int}``."""
        return {"good": self.good, "bad": [asdict(b) for b in self.bad], "total": self.total}


def check_entry(
    record: VideoRecord, backend: Backend = "pyav", frame_template: str = "img_{:05d}.jpg"
) -> str | None:
    """Why `record` cannot be read, or None when its first and last frames decode."""
    try:
        with open_video(record.path, backend, frame_template) as reader:
            if record.num_frames is not None and reader.num_frames < record.num_frames:
                return (
                    f"the annotation declares {record.num_frames} frames, "
                    f"only {reader.num_frames} found"
                )
            reader.read([0, reader.num_frames - 1])
    except VideoDecodeError as err:
        return err.reason
    except Exception as err:
        # A decoder's own failure is a bad entry; anything else (a bug, no memory) ends the scan.
        if not is_decode_error(err):
            raise
        return f"{type(err).__name__}: {err}"
    return None


def _check(task: tuple[VideoRecord, Backend, str]) -> str | None:
    return check_entry(*task)


def scan(
    annotations: Annotations,
    backend: Backend = "pyav",
    workers: int | None = None,
    progress: bool = True,
    frame_template: str = "img_{:05d}.jpg",
) -> ScanReport:
    """Open every entry and decode its first and last frames.

    Args:
        annotations: The entries to check.
        backend: Video backend, as in `open_video`.
        workers: Worker processes (default: one per CPU); 0 or 1 checks in this process.
        progress: Show a progress bar on stderr.
        frame_template: File names inside frame folders.

    Returns:
        The count of readable entries and the unreadable ones with reasons.
    """
    records = annotations.records
    if workers is None:
        workers = usable_cpus()
    tasks = [(record, backend, frame_template) for record in records]
    report = ScanReport()
    bar = tqdm(
        total=len(tasks), desc="check-data", unit="video", disable=not progress, file=sys.stderr
    )
    with bar:
        for record, reason in zip(records, _results(tasks, workers), strict=True):
            if reason is None:
                report.good += 1
            else:
                report.bad.append(BadEntry(record.path, reason))
            bar.update()
    return report


def _results(tasks: list[tuple[VideoRecord, Backend, str]], workers: int) -> Iterator[str | None]:
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_check, tasks)
        return
    chunk = max(1, min(16, len(tasks) // (4 * workers)))
    with process_pool(workers) as pool:
        yield from pool.map(_check, tasks, chunksize=chunk)
