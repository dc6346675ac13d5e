"""Live video: the windows of a stream classified as they complete (`aim-video watch`).

Live equals offline by construction: frames reach `stream_windows` (the code `timeline` windows
a file with) through a `LiveSource`; each window goes through the checkpoint's test transform
and `Predictor.task_probabilities`, as a timeline window does; segments follow the rule of
`timeline.segments`, one window at a time (`SegmentTracker`). What is live is around that:

* the source: a URL FFmpeg reads (rtsp, http(s) incl. HLS, MPEG-TS, udp, tcp, ...), `-` for a
  stream on standard input, or a file (as fast as it decodes, or at its own pace: `realtime`);
* reconnection: a URL that drops or ends is reopened with back-off (0.25 s, doubling up to
  8 s) for up to `reconnect` seconds; each reopening is reported as a gap;
* time: window times are the stream's seconds since its first frame, as in a timeline. A
  timestamp that goes back or leaps forward by more than `JUMP_SECONDS` (a camera reboot, an
  HLS discontinuity, a reopened stream whose clock restarted) is a discontinuity: times go on
  one frame after the last frame and it is reported, so window times only grow. Each window's
  record also carries the wall-clock time it was classified at;
* bounded lag: the source is decoded in a thread, at most `PREFETCH_WINDOWS` windows ahead of
  the model. With a live source (a URL, standard input, a file at its own pace), a window more
  than `max_lag` seconds (default: one stride) later than the stream's pace makes it due is
  skipped (counted and reported) as soon as a newer one is ready, so a model slower than the
  stream always takes the newest window and no backlog grows (see `_Handoff`). A file decoded
  as fast as possible, or any source with `max_lag` 0 or infinite, waits for the model
  instead, so every window is classified (a live source is then read only as fast as the
  model goes: a recording that must not lose a window).

A window's lag is the time from its completion (the arrival of the first frame past its last
sample, which is when any reader could have it) to its result.
"""

from __future__ import annotations

import collections
import json
import math
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from aim_video.data.dataset import build_eval_transform
from aim_video.data.stream import PREFETCH_WINDOWS, StreamInfo, Window, stream_windows
from aim_video.errors import UserError
from aim_video.files import output_header, read_own_lines
from aim_video.predictor import Predictor, Timeline

JUMP_SECONDS = Fraction(5)  # a forward timestamp step longer than this is a discontinuity
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 8.0  # seconds before the first reopening, and the longest wait
OPEN_TIMEOUT, READ_TIMEOUT = 10.0, 10.0  # seconds before a network open or read gives up
LAGS_KEPT = 65536  # the summary's lag figures are over the last this many windows (flat memory)

Record = dict[str, Any]


class SourceError(UserError):
    """A source that cannot be opened (nothing is watched)."""


def is_url(source: str) -> bool:
    """True for a network source (`scheme://...`); False for a file or `-`."""
    return "://" in source


def open_source(source: str) -> Any:
    """The opened input of `source` (a PyAV container with a video stream).

    Raises:
        SourceError: it cannot be opened or has no video stream (names it and why).
    """
    if source == "-":
        name, timeout = "pipe:0", None
    elif is_url(source):
        name, timeout = source, (OPEN_TIMEOUT, READ_TIMEOUT)
    else:
        if not Path(source).is_file():
            raise SourceError(f"{source}: no such file (give a file, a URL or - for standard "
                              "input)")
        name, timeout = source, None
    try:
        container = av.open(name, metadata_errors="ignore", timeout=timeout)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise SourceError(f"{source}: cannot be opened: {getattr(err, 'strerror', None) or err}"
                          ) from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{source}: has no video stream")
    return container


class LiveSource:
    """A source's frames for `stream_windows` (a `FrameSource`), reopened after a drop.

    Args:
        source: a URL, `-` (standard input) or a file.
        realtime: hand frames over no faster than their timestamps (a file at its own pace).
        reconnect: seconds to keep trying to reopen a URL that dropped or ended (0: never).
        stop: set to end the frames at the next one.
        notify: called (in the decoding thread) with a record for each gap and discontinuity.

    Raises:
        SourceError: the source cannot be opened.
    """

    def __init__(self, source: str, *, realtime: bool = False, reconnect: float = 0.0,
                 stop: threading.Event | None = None,
                 notify: Callable[[Record], None] = lambda record: None) -> None:
        self.source = source
        self.realtime = realtime
        self.reconnect = reconnect if is_url(source) else 0.0
        self.stop = stop or threading.Event()
        self.notify = notify
        self.container = open_source(source)

    def frames(self, stream: Any) -> Iterator[Any]:
        """Decoded frames, `pts` in `stream`'s time base, never going back (see the module)."""
        time_base = Fraction(stream.time_base)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        step = 1 / Fraction(rate) if rate else Fraction(1, 25)
        container, current = self.container, stream
        offset = Fraction(0)  # added to the current input's times (changes at discontinuities)
        first: Fraction | None = None  # the first frame's time: window times count from it
        last: Fraction | None = None  # the last frame's time (after `offset`)
        paced: tuple[float, Fraction] | None = None  # (clock, time) of the first paced frame
        reopened: list[Any] = []  # containers opened here, closed here
        try:
            while True:
                try:
                    for frame in container.decode(current):
                        if self.stop.is_set():
                            return
                        if frame.pts is None:  # stream_windows refuses it, in its words
                            yield frame
                            continue
                        when = frame.pts * Fraction(current.time_base) + offset
                        if last is not None and (when < last or when > last + JUMP_SECONDS):
                            self.notify({"type": "jump", "at": float(last - first),
                                         "from": float(last - offset),
                                         "to": float(when - offset)})
                            offset += last + step - when
                            when = last + step
                        if first is None:
                            first = when
                        if last is not None and when > last:
                            step = when - last
                        last = when
                        if self.realtime:
                            paced = paced or (time.monotonic(), when)
                            delay = paced[0] + float(when - paced[1]) - time.monotonic()
                            if delay > 0 and self.stop.wait(delay):
                                return
                        if current is not stream or offset:
                            frame.pts = round(when / time_base)
                        yield frame
                    reason = "the stream ended"
                except av.FFmpegError as err:
                    if not self.reconnect:
                        raise  # stream_windows notes where the stream broke
                    reason = f"{getattr(err, 'strerror', None) or err}"
                if not self.reconnect or self.stop.is_set():
                    return
                dropped = time.monotonic()
                container = self._reopen(reason, float(last - first) if last is not None else 0.0)
                if container is None:
                    return
                reopened.append(container)
                current = container.streams.video[0]
                current.codec_context.thread_count = 1
                self.notify({"type": "gap", "at": float(last - first) if last is not None
                             else 0.0, "seconds": round(time.monotonic() - dropped, 3),
                             "reason": reason})
        finally:
            for c in reopened:
                c.close()

    def _reopen(self, reason: str, at: float) -> Any:
        """The source opened again, or None when `reconnect` seconds of back-off ran out (or
        `stop` was set)."""
        deadline = time.monotonic() + self.reconnect
        delay = min(BACKOFF_FIRST, self.reconnect)
        while True:  # at least one try, however long this thread waited to run
            if self.stop.wait(delay):
                return None
            try:
                return open_source(self.source)
            except SourceError as err:
                reason = str(err)
            delay = min(2 * delay, BACKOFF_MAX)
            if time.monotonic() + delay > deadline:
                break
        self.notify({"type": "lost", "at": at, "reason": reason,
                     "note": f"not back within {self.reconnect:g} s"})
        return None


class _Handoff:
    """Complete windows (and the source's notices, in order) from the decoding thread to the
    model; the decoding thread waits while `depth` windows are queued.

    Skipping (`skip`, a live source): a window is late when `clock` has passed the time it was
    due by more than `budget` seconds; a late window is dropped (and counted) as soon as a
    newer one is queued. A window is due `anchor` seconds after its end in stream time,
    `anchor` being the most any window so far took to arrive after its end: a burst (a stream
    opened or piped faster than its pace) is early, not late; a stream that drops and comes
    back moves the anchor by the gap; only a model slower than the stream makes windows late.
    `clock` is the time, in seconds, that arrivals and lateness are measured in.
    """

    def __init__(self, skip: bool, budget: float, depth: int = PREFETCH_WINDOWS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.skip, self.budget, self.depth, self.clock = skip, budget, depth, clock
        self.items: collections.deque[tuple[str, Any, float]] = collections.deque()
        self.cond = threading.Condition()
        self.finished = False
        self.error: BaseException | None = None
        self.skipped = 0  # since the last window taken
        self.anchor = -math.inf  # seconds from a window's end (stream time) to its arrival

    def _windows(self) -> int:
        return sum(1 for item in self.items if item[0] == "window")

    def _drop_late(self) -> None:
        windows = [item for item in self.items if item[0] == "window"]
        if not self.skip or len(windows) < 2:
            return
        now = self.clock()
        kept: collections.deque[tuple[str, Any, float]] = collections.deque()
        for item in self.items:
            if (item[0] == "window" and item is not windows[-1]
                    and now - (self.anchor + item[1].end) > self.budget):
                self.skipped += 1
            else:
                kept.append(item)
        self.items = kept

    def put(self, kind: str, payload: Any, stop: threading.Event) -> None:
        with self.cond:
            arrived = self.clock()
            if kind == "window":
                self.anchor = max(self.anchor, arrived - payload.end)
                self._drop_late()
                while self._windows() >= self.depth and not stop.is_set():
                    self.cond.wait(0.1)
                    self._drop_late()
            self.items.append((kind, payload, arrived))
            self._drop_late()
            self.cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.finished, self.error = True, error
            self.cond.notify_all()

    def take(self, stop: threading.Event) -> tuple[str, Any, float, int] | None:
        """(kind, payload, arrival clock, windows skipped just before it); None at the end."""
        with self.cond:
            while not self.items and not self.finished and not stop.is_set():
                self.cond.wait(0.1)
            if stop.is_set():
                return None
            if not self.items:
                if self.error is not None:
                    raise self.error
                return None
            self._drop_late()
            kind, payload, arrived = self.items.popleft()
            skipped = 0
            if kind == "window":
                skipped, self.skipped = self.skipped, 0
            self.cond.notify_all()
            return kind, payload, arrived, skipped


class SegmentTracker:
    """`timeline.segments`, one window at a time: runs of consecutive windows whose top class is
    the same and at `threshold` or above; a run closes at the first window that breaks it."""

    def __init__(self, class_names: list[str], threshold: float) -> None:
        self.class_names = class_names
        self.threshold = threshold
        self.run: dict[str, Any] | None = None  # class index, start, end, prob sum, windows

    def add(self, start: float, end: float, probs: np.ndarray) -> Record | None:
        """Adds a window's probabilities; returns the segment it closed, if any."""
        c = int(probs.argmax())
        best = probs[c] >= self.threshold
        if best and self.run is not None and c == self.run["c"]:
            self.run["end"] = end
            self.run["sum"] += float(probs[c])
            self.run["windows"] += 1
            return None
        closed = self.close()
        if best:
            self.run = {"c": c, "start": start, "end": end, "sum": float(probs[c]), "windows": 1}
        return closed

    def close(self) -> Record | None:
        """The open segment, closed (None when none is open)."""
        run, self.run = self.run, None
        if run is None:
            return None
        return {"class": self.class_names[run["c"]], "start": run["start"], "end": run["end"],
                "mean_prob": run["sum"] / run["windows"], "windows": run["windows"]}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def watch(predictor: Predictor, source: str | LiveSource, *, stride: float | None = None,
          window: float | None = None, threshold: float = 0.5, top_k: int = 5,
          realtime: bool = False, reconnect: float = 0.0, max_lag: float | None = None,
          stop: threading.Event | None = None) -> Iterator[Record]:
    """The records of watching `source`, in order, as they happen (see the module docstring).

    Records (`type`): `window` (start, end, top [{class, prob}] or tasks {name: {top}}, lag,
    skipped: windows skipped just before it, time), `segment` (class, start, end, mean_prob,
    windows; task with several tasks), `gap` (at, seconds, reason: a reopened source), `jump`
    (at, from, to: a timestamp discontinuity), `lost` (a source not back in time), and last
    `end` (reason, windows, skipped, segments, gaps, jumps, lag_median, lag_p95, note, time).
    Times (`start`, `end`, `at`) are the stream's seconds since its first frame; `time` is the
    wall clock (UTC) when the record was made.

    Args:
        predictor: the model and its data settings.
        source: a URL, `-`, a file, or an opened `LiveSource`.
        stride: seconds between window starts (default: the window's length).
        window: window length in seconds (uniform sampling only, as in `timeline`).
        threshold: least top-class probability of a window in a segment.
        top_k: classes per window record.
        realtime: a file at its own pace (and skipping when the model falls behind).
        reconnect: seconds to keep reopening a URL that dropped or ended.
        max_lag: seconds a live source's window may be later than the stream's pace before it
            is skipped for a newer one (None: one stride; 0 or infinite: never skip, every
            window is classified however far the model falls behind).
        stop: set to end (a signal): the open segments are closed and `end` comes next.

    Raises:
        SourceError: the source cannot be opened (before any record).
        VideoDecodeError: the source yields no frame.
        ValueError: a negative `max_lag`.
    """
    if max_lag is not None and not max_lag >= 0:
        raise ValueError(f"max_lag must be 0 or more seconds, got {max_lag}")
    stop = stop or threading.Event()
    notices: queue.SimpleQueue[Record] = queue.SimpleQueue()
    if isinstance(source, LiveSource):
        live = source
        live.notify = notices.put
    else:
        live = LiveSource(source, realtime=realtime, reconnect=reconnect, stop=stop,
                          notify=notices.put)
    live.stop = stop
    data = predictor.cfg.data
    transform = build_eval_transform(data)
    info = StreamInfo()
    windows = stream_windows(  # the arguments `Predictor.windows` gives a timeline
        live.source, sampling=data.sampling, num_frames=data.num_frames,
        interval=data.frame_interval, span=window, stride=stride,
        short_side=transform.short_side if data.resize_in_decoder else None, info=info,
        source=live)
    skip = ((live.realtime or is_url(live.source) or live.source == "-")
            and max_lag not in (0, math.inf))
    # The first call of a model is slow (allocations, kernel choice): make it before the
    # stream starts, so that it counts neither as lag nor towards skipping.
    size = data.input_size
    predictor.task_probabilities(transform(torch.zeros(data.num_frames, size, size, 3,
                                                       dtype=torch.uint8))[None])
    # By default skipping waits one stride; before the first window it is not known yet.
    handoff = _Handoff(skip, budget=max_lag if max_lag is not None else stride or 0.0)

    def produce() -> None:
        def forward_notices() -> None:
            while not notices.empty():
                handoff.put("notice", notices.get(), stop)

        try:
            for item in windows:
                forward_notices()
                if not handoff.budget:
                    handoff.budget = item.end - item.start
                handoff.put("window", item, stop)
                if stop.is_set():
                    break
            forward_notices()
            handoff.finish()
        except BaseException as err:  # noqa: BLE001 - raised again in the consumer
            handoff.finish(err)

    thread = threading.Thread(target=produce, name="aim-video-watch", daemon=True)
    thread.start()
    trackers = {task.name: SegmentTracker(task.class_names, threshold)
                for task in predictor.tasks}
    counts = {"windows": 0, "skipped": 0, "segments": 0, "gaps": 0, "jumps": 0}
    lags: collections.deque[float] = collections.deque(maxlen=LAGS_KEPT)
    notes: list[str] = []

    def closed_segments(closed: dict[str, Record | None]) -> Iterator[Record]:
        for name, segment in closed.items():
            if segment is not None:
                counts["segments"] += 1
                yield {"type": "segment", **({"task": name} if predictor.multitask else {}),
                       **segment}

    reason = "end of stream"
    try:
        while True:
            item = handoff.take(stop)
            if item is None:
                break
            kind, payload, arrived, skipped = item
            if kind == "notice":
                counts["gaps"] += payload["type"] == "gap"
                counts["jumps"] += payload["type"] == "jump"
                if payload["type"] == "lost":
                    notes.append(f"the stream dropped at {payload['at']:.2f} s and was "
                                 f"{payload['note']} ({payload['reason']})")
                yield payload
                continue
            w: Window = payload
            views = transform(torch.from_numpy(w.frames))[None]  # (1, V, C, T, H, W)
            probs = {name: p[0].numpy() for name, p in predictor.task_probabilities(views).items()}
            lag = handoff.clock() - arrived
            lags.append(lag)
            counts["windows"] += 1
            counts["skipped"] += skipped
            tops = {task.name: Timeline("", task.class_names, np.array([w.start]),
                                        np.array([w.end]), probs[task.name][None], 0.0
                                        ).top(top_k)[0] for task in predictor.tasks}
            record: Record = {"type": "window", "start": w.start, "end": w.end}
            if predictor.multitask:
                record["tasks"] = {name: {"top": _top(top)} for name, top in tops.items()}
            else:
                record["top"] = _top(next(iter(tops.values())))
            record |= {"lag": round(lag, 4), "skipped": skipped, "time": _now()}
            yield record
            yield from closed_segments({name: trackers[name].add(w.start, w.end, probs[name])
                                        for name in trackers})
    finally:
        stop_requested = stop.is_set()
        stop.set()  # the decoding thread ends at its next frame
    if stop_requested:
        reason = "stopped"
    counts["skipped"] += handoff.skipped  # dropped after the last window taken
    yield from closed_segments({name: t.close() for name, t in trackers.items()})
    thread.join(timeout=1.0)
    if info.note and not stop_requested:  # not the early end a stop makes
        notes.append(info.note)
    if counts["jumps"]:
        notes.append(f"timestamps jumped {counts['jumps']} time(s): window times went on one "
                     "frame after the last each time")
    ordered = sorted(lags)
    yield {"type": "end", "reason": reason, **counts,
           "lag_median": round(statistics.median(ordered), 4) if ordered else None,
           "lag_p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4)
           if ordered else None,
           "note": "; ".join(notes) or None, "time": _now()}


def _top(top: list[tuple[str, float]]) -> list[Record]:
    return [{"class": name, "prob": prob} for name, prob in top]


# ------------------------------------------------------------------------------ events file
WATCH_EVENTS = "watch events"  # what an events file's header line says it is


class EventsFile:
    """An append-only JSONL file of watch records that proves it is ours.

    Its first line is `files.output_header("watch events", format=1)`, as every output of
    aim-video that grows; a file whose first line is not is refused before a byte changes
    (`files.read_own_lines`), and only then is a last line torn by a kill cut off. Each record
    is flushed as it is written.

    Raises:
        OutputError: the file is not an events file of `aim-video watch`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        found = read_own_lines(self.path, WATCH_EVENTS, option="--out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        if found is None or (found.headerless and not found.lines):  # new, or empty
            self._file.write(output_header(WATCH_EVENTS, format=1))
            self._file.flush()

    def write(self, record: Record) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

