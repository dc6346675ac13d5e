"""One forward pass over a long video, cut into overlapping windows, in bounded memory.

`stream_windows` decodes a file once from its start (no seek per window) and yields each
window's frames as soon as its last frame has been seen. Frames are placed by the times they
carry (their own presentation timestamps), never by counting or by the duration the container
states, so variable-frame-rate files and files with wrong headers are windowed by what is
shown when:

* window `k` starts at `t0 + k * stride` (`t0`: the first frame's time) and spans `span`
  seconds; its `j`-th sample is at `start + offsets[j]`;
* a sample takes the frame on screen at that time: the last frame whose time is at or before it;
* a window is complete once later frames (or the end of the last frame) show its whole span;
  at the end of the stream, the windows whose last sample falls inside a decoded frame are
  complete too and end where the last frame ends (a window never ends after the video); the
  windows whose last sample runs past the end are dropped, except that a video shorter than
  one window still yields one window, from its start to its end (its late samples repeat the
  last frame, as test sampling clamps past the end).

Only the frames that some sample still needs are converted to RGB and kept: memory is bounded
by the open windows (`span / stride + 1` windows of `len(offsets)` frames), never by the
video's length. So that no frame falls into an unbounded number of windows, the stride must
be at least one frame at the stream's average rate (`WindowError`). Frames whose timestamps
repeat or run backwards are skipped, with a note. A stream that breaks mid-way ends the
windows there, with a note.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from aim_video.data.decode import VideoDecodeError, _check_file, _reformatter, output_size
from aim_video.errors import UserError

# Windows decoded ahead of the consumer by the background thread: enough to keep the model fed
# without holding many windows of frames.
PREFETCH_WINDOWS = 8


class WindowError(UserError, ValueError):
    """A stride or window length that cannot window a video; names the file and the value."""


@dataclass
class Window:
    """The frames of one window."""

    index: int  # k: window order
    start: float  # seconds since the first frame
    end: float  # start + span, or the end of the video's last frame when that comes first
    frames: np.ndarray  # uint8 (T, H, W, 3), sample order


@dataclass
class StreamInfo:
    """What a finished (or broken) stream told about the file; filled while streaming."""

    fps: float = 0.0  # the stream's average frame rate (sets dense offsets)
    stated_duration: float | None = None  # seconds, as the container states it
    decoded_frames: int = 0  # frames decoded and placed by their time
    skipped_frames: int = 0  # frames decoded but skipped: their timestamps repeat or go back
    last_time: float = 0.0  # seconds since the first frame, of the last decoded frame's end
    note: str | None = None  # why the stream ended early, when it did


class FrameSource(Protocol):
    """Frames of an input opened by the caller: `container` (its first video stream sets the
    frame rate and size; closed when the windows end) and `frames(stream)`, the decoded frames
    with `pts` in that stream's time base."""

    container: Any

    def frames(self, stream: Any) -> Iterator[Any]: ...


def dense_offsets(num_frames: int, interval: int, fps: Fraction) -> tuple[list[Fraction], Fraction]:
    """Sample offsets and span of a dense clip: `num_frames` frames `interval` frames apart.

    At a constant rate this picks exactly the frames `start_frame + j * interval`, the frames
    dense test sampling picks; the span is `num_frames * interval` frames.
    """
    step = Fraction(interval) / fps
    return [j * step for j in range(num_frames)], num_frames * step


def uniform_offsets(num_segments: int, span: Fraction) -> list[Fraction]:
    """Sample offsets of a uniform (TSN) clip over a window: each segment's middle."""
    return [(2 * j + 1) * span / (2 * num_segments) for j in range(num_segments)]


def _to_fraction(value: float | Fraction) -> Fraction:
    # Through str: 0.1 means one tenth, not the binary float nearest to it.
    return value if isinstance(value, Fraction) else Fraction(str(value))


class _Windower:
    """Assigns decoded frames to the samples of windows; emits complete windows in order."""

    def __init__(self, offsets: Sequence[Fraction], span: Fraction, stride: Fraction) -> None:
        if stride <= 0 or span <= 0:
            raise ValueError(f"stride and span must be positive, got {stride} and {span}")
        self.offsets = list(offsets)
        self.span = span
        self.stride = stride
        self.next_window = 0  # the first window not yet emitted
        self.open: dict[int, list[np.ndarray | None]] = {}  # window -> frames by sample

    def samples_in(self, a: Fraction, b: Fraction) -> list[tuple[int, int]]:
        """(window, sample) pairs of windows not yet emitted whose time lies in [a, b)."""
        pairs = []
        for j, off in enumerate(self.offsets):
            first = max(self.next_window, math.ceil((a - off) / self.stride))
            last = math.ceil((b - off) / self.stride)  # exclusive
            pairs += [(k, j) for k in range(first, last)]
        return pairs

    def place(self, pairs: list[tuple[int, int]], frame: np.ndarray) -> None:
        for k, j in pairs:
            self.open.setdefault(k, [None] * len(self.offsets))[j] = frame

    def complete(
        self, shown_until: Fraction, final: bool = False
    ) -> Iterator[tuple[int, list[np.ndarray]]]:
        """Windows whose whole span has been shown by `shown_until`, in order; with `final`
        (the stream has ended there), those whose last sample lies before it."""
        while True:
            start = self.next_window * self.stride
            if not start + self.offsets[-1] < shown_until:
                return
            if not final and start + self.span > shown_until:
                return
            k = self.next_window
            frames = self.open.pop(k)
            self.next_window += 1
            yield k, frames  # type: ignore[misc]


def stream_windows(
    path: str | os.PathLike[str],
    *,
    sampling: str = "dense",
    num_frames: int = 8,
    interval: int = 16,
    span: float | Fraction | None = None,
    stride: float | Fraction | None = None,
    short_side: int | None = None,
    info: StreamInfo | None = None,
    threads: bool = False,
    source: FrameSource | None = None,
) -> Iterator[Window]:
    """Windows of `path`, decoded once, forward (see the module docstring).

    Args:
        path: the video file.
        sampling: "dense": `num_frames` frames `interval` frames apart at the stream's average
            frame rate, spanning `num_frames * interval` frames (`span` is then ignored);
            "uniform": the middles of `num_frames` equal segments of the window.
        num_frames: frames per window.
        interval: frames between dense samples; with uniform sampling, the default span is
            `num_frames * interval` frames too.
        span: the window's length in seconds (uniform sampling).
        stride: seconds between window starts; None: the span (windows side by side).
        short_side: decode frames so their shorter side has this length (None: native size).
        info: filled with what the stream told (frame rate, frames, an early end's note).
        threads: let FFmpeg decode with threads.
        source: decoded frames from an input opened elsewhere (a live stream, `aim_video.live`)
            instead of opening `path`, which then only names it in errors.

    Yields:
        `Window`s in order.

    Raises:
        VideoDecodeError: the file cannot be opened or yields no frame at all.
        ValueError: an unknown sampling.
        WindowError: a stride or span that is not positive, or a stride shorter than one
            frame at the stream's average rate.
    """
    if sampling not in ("dense", "uniform"):
        raise ValueError(f"sampling must be 'dense' or 'uniform', got {sampling!r}")
    info = info if info is not None else StreamInfo()
    if source is not None:
        container = source.container
    else:
        _check_file(Path(path))  # missing or empty: the same words as the random-access reader
        try:
            container = av.open(os.fspath(path), metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError, OSError) as err:
            raise VideoDecodeError(path, f"not a readable video ({err})") from None
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        else:
            stream.codec_context.thread_count = 1
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or stream.time_base is None:
            raise VideoDecodeError(path, "unknown frame rate")
        info.fps = float(rate)
        if stream.duration is not None:
            info.stated_duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            info.stated_duration = container.duration / av.time_base
        offsets, span_f = dense_offsets(num_frames, interval, Fraction(rate))
        if sampling == "uniform":
            span_f = _to_fraction(span) if span is not None else span_f
            offsets = uniform_offsets(num_frames, span_f)
        stride_f = _to_fraction(stride) if stride is not None else span_f
        if span_f <= 0:
            raise WindowError(f"{path}: the window must be longer than 0 s, got {span} s")
        if stride_f < 1 / Fraction(rate):
            # Each frame would fall into more windows than there are frames: one stride of
            # 1e-9 s is a billion windows a second, which only fill the memory.
            raise WindowError(
                f"{path}: a stride of {float(stride_f):g} s is shorter than one frame "
                f"({1 / float(rate):.4g} s at {float(rate):g} fps); use at least that"
            )
        windower = _Windower(offsets, span_f, stride_f)
        height, width = stream.codec_context.height, stream.codec_context.width
        out_h, out_w = output_size(height, width, short_side=short_side)
        time_base = Fraction(stream.time_base)
        frame_step = 1 / Fraction(rate)  # the last frame's duration when it states none

        t0: Fraction | None = None
        previous: tuple[Fraction, Any] | None = None  # (time, av frame) awaiting its end
        went_back: tuple[Fraction, Fraction] | None = None  # the first backward step's times

        def emit(until: Fraction, final: bool = False) -> Iterator[Window]:
            for k, frames in windower.complete(until, final):
                start = k * windower.stride
                end = min(start + span_f, until)  # the stream's end, for the final windows
                yield Window(k, float(start), float(end), np.stack(frames))

        def settle(frame_time: Fraction, frame: Any, until: Fraction) -> Iterator[Window]:
            """`frame` is shown over [frame_time, until): give it to the samples there.

            One span at a time, each span's complete windows emitted before the next: a frame
            shown for long (a still, or a timestamp that jumps hours ahead) fills its windows
            as they are consumed, never all of them at once.
            """
            rgb = None
            a = frame_time
            while a < until:
                b = min(until, a + span_f)
                pairs = windower.samples_in(a, b)
                if pairs:
                    if rgb is None:
                        rgb = _reformatter().reformat(frame, width=out_w, height=out_h,
                                                      format="rgb24", threads=1).to_ndarray()
                    windower.place(pairs, rgb)
                info.last_time = float(b)
                yield from emit(b)
                a = b

        frames = container.decode(stream) if source is None else source.frames(stream)
        try:
            for frame in frames:
                if frame.pts is None:
                    raise VideoDecodeError(path, "frames carry no timestamps (remux to MP4/MKV)")
                when = frame.pts * time_base
                if t0 is None:
                    t0 = when
                when -= t0
                if previous is not None:
                    if when <= previous[0]:
                        # A repeated or backward timestamp: keep the frame placed first.
                        info.skipped_frames += 1
                        if when < previous[0] and went_back is None:
                            went_back = (previous[0] + t0, when + t0)  # as the file has them
                        continue
                    yield from settle(previous[0], previous[1], when)
                    frame_step = when - previous[0]
                previous = (when, frame)
                info.decoded_frames += 1
        except av.FFmpegError as err:
            info.note = (f"decoding stopped at {float(previous[0]) if previous else 0:.3f} s: "
                         f"{getattr(err, 'strerror', None) or err}; windows after it are missing")
        if previous is None:
            raise VideoDecodeError(path, "no frame decodes: truncated or corrupt")
        end = previous[0] + frame_step
        yield from settle(previous[0], previous[1], end)
        yield from emit(end, final=True)
        if windower.next_window == 0:
            # Shorter than one window: one window, its late samples on the last frame (every
            # sample before the end has a frame; the last one placed need not be the last).
            placed = windower.open.get(0, [None] * len(offsets))
            if any(f is None for f in placed):
                last = _reformatter().reformat(previous[1], width=out_w, height=out_h,
                                               format="rgb24", threads=1).to_ndarray()
                placed = [f if f is not None else last for f in placed]
            yield Window(0, 0.0, float(min(span_f, end)), np.stack(placed))
        if info.note is None and info.skipped_frames:
            # Not "truncated": the frames are there, their times are what is wrong.
            how = (f"run backwards (a frame at {float(went_back[1]):.3f} s after one at "
                   f"{float(went_back[0]):.3f} s)" if went_back is not None else "repeat")
            info.note = (f"{info.skipped_frames} of {info.skipped_frames + info.decoded_frames}"
                         f" frames skipped: their timestamps {how}; re-encode the file")
        elif info.note is None and info.stated_duration is not None:
            if float(end) < info.stated_duration - 2 * float(frame_step) - 0.5:
                info.note = (f"the stream ends at {float(end):.3f} s but {info.stated_duration:.3f}"
                             " s are stated: truncated? windows after it are missing")


def prefetch(windows: Iterator[Window], depth: int = PREFETCH_WINDOWS) -> Iterator[Window]:
    """`windows`, produced by a background thread up to `depth` ahead of the consumer.

    Decoding (FFmpeg releases the GIL) then overlaps the model's compute. An exception in the
    producer is raised in the consumer, at the point where the stream broke.
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for window in windows:
                while not stop.is_set():
                    try:
                        items.put(window, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            items.put(err)

    thread = threading.Thread(target=produce, name="aim-video-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
