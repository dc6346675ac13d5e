"""Decode chosen frames of a video file or a frame folder into uint8 RGB arrays.

One interface, three backends:

- ``"pyav"`` (default): FFmpeg through PyAV. Frame-accurate and fast: it seeks to the keyframe
  before the first wanted frame, decodes forward, tells frames apart by their presentation
  timestamp (never by counting after a seek), asks FFmpeg to skip decoding unwanted frames that
  no other frame references, converts only the wanted frames to RGB (scaled by FFmpeg's
  converter when a size is asked for) and seeks again when a keyframe lies between two far-apart
  wanted frames. Where a seek lands after the wanted frame (MPEG-TS, MOV with B-frames) it seeks
  further back. AVI keeps only decode-order timestamps, so AVI files are decoded from the start
  and their frames counted.
- ``"decord"``: ``decord.VideoReader.get_batch`` (optional dependency, imported lazily).
- ``"frames"``: a folder of images named by a template (MMAction2's 1-based ``img_00001.jpg``).
  A directory given to another backend is read this way too when it holds the first frame's
  image; any other directory is an error that says a video file was expected.

Frame indices are 0-based positions in display order. Indices past the end are clamped: first to
``num_frames - 1`` (the count the container declares), then, if the stream really ends a few frames
earlier (edit lists, an overstated header), to the last frame that decodes. A stream that ends
more than ``MISSING_TAIL_TOLERANCE`` frames early is truncated and raises `VideoDecodeError`.
"""

from __future__ import annotations

import abc
import bisect
import errno
import os
import re
import string
import sys
import threading
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from aim_video.errors import UserError

Backend = Literal["pyav", "decord", "frames"]
BACKENDS: tuple[str, ...] = ("pyav", "decord", "frames")

# Containers may declare a few more frames than decode (edit lists, B-frame delay, rounded
# durations); a larger shortfall means the file was cut off.
MISSING_TAIL_TOLERANCE = 8

# Frames decoded per `read` call when a reader without a streaming decoder iterates over a video.
_ITER_CHUNK = 32

# AVI timestamps follow decode order, so frames there are counted instead (see PyAVReader).
_DECODE_ORDER_TIMESTAMP_FORMATS = frozenset({"avi"})

# A seek (an index look-up and a decoder flush) costs about a fifth of decoding one 340x256
# P-frame, so a single-threaded decoder seeks as soon as that skips one frame of decoding.
# With frame threads a flush also discards the frames in flight in every thread: seek only when
# that skips at least 8 frames.
_MIN_FRAMES_SKIPPED_BY_SEEK = 1
_MIN_FRAMES_SKIPPED_BY_SEEK_THREADED = 8


# errno values that name an exhausted machine (memory, file handles), never a bad file.
_MACHINE_ERRNOS = frozenset({errno.ENOMEM, errno.EMFILE, errno.ENFILE})

_converters = threading.local()


class _Everything:
    """The `wanted` set of a pass that decodes every frame (none skipped as unreferenced)."""

    def __contains__(self, index: object) -> bool:
        return True


_EVERY_FRAME: Any = _Everything()

# PyAV's default (0) gives every swscale context a pool of one thread per CPU: costly to start
# for every frame, idle beside busy loader workers, and dead in a forked worker that inherits
# the context (the conversion then waits for them forever).
_CONVERTER_THREADS = 1


def _reformatter() -> VideoReformatter:
    """This thread's frame converter, kept across frames and files.

    `VideoFrame.to_ndarray` builds a new swscale context for every frame, which costs more than
    converting a 340x256 frame; a kept one is rebuilt only when sizes or formats change. One per
    thread, as a context must not be used by two at once.
    """
    converter = getattr(_converters, "reformatter", None)
    if converter is None:
        converter = _converters.reformatter = VideoReformatter()
    return converter


class VideoDecodeError(RuntimeError):
    """A video or frame folder that cannot be opened or decoded.

    Attributes:
        path: The file or folder, as given.
        reason: What went wrong, in words.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        # Both go to `args` so the error survives pickling across worker processes.
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class BackendUnavailableError(UserError, ImportError):
    """A video backend whose optional dependency is not installed (the message says how to
    install it). Not a bad file: every video would fail the same way."""


def short_side_size(height: int, width: int, size: int, *, multiple: int = 1) -> tuple[int, int]:
    """(height, width) after scaling the short side to `size`, keeping the aspect ratio.

    The one short-side rule of the data package (decoding, transforms and `prepare` use it):
    the short side becomes exactly `size`, the long side the nearest multiple of `multiple`
    to its scaled length, halves rounded up (MMAction2's ``Resize(scale=(-1, size))`` for
    `multiple` 1), and at least `multiple`. Exact integer arithmetic: a float product such as
    ``width * (size / height)`` can land just below a half and round the other way.

    Args:
        height: Frame height.
        width: Frame width.
        size: Short side after scaling.
        multiple: Length the long side is a multiple of: 2 where an encoder needs even sides
            (H.264 4:2:0), else 1.
    """
    if size <= 0 or multiple <= 0:
        raise ValueError(f"size and multiple must be positive, got {size} and {multiple}")
    short, long = min(height, width), max(height, width)
    # nearest multiple of `multiple` to long * size / short: floor(x / m + 1/2) * m
    scaled = max(1, (2 * long * size + multiple * short) // (2 * multiple * short)) * multiple
    return (size, scaled) if height <= width else (scaled, size)


def is_decode_error(err: BaseException) -> bool:
    """Whether `err` says that a file cannot be decoded (a bad file), rather than a bug or an
    exhausted machine.

    Bad files: `VideoDecodeError`, FFmpeg's errors (``av.FFmpegError``), decord's
    ``DECORDError``, an `OSError` reading the file and undecodable metadata text. Running out
    of memory or file handles is the machine's problem, whatever library reports it.
    """
    if isinstance(err, MemoryError):  # av.error.MemoryError (ENOMEM) included
        return False
    if isinstance(err, OSError) and err.errno in _MACHINE_ERRNOS:
        return False
    if isinstance(err, (VideoDecodeError, av.FFmpegError, OSError, UnicodeDecodeError)):
        return True
    decord = sys.modules.get("decord")  # only a decord reader can have raised its error
    return decord is not None and isinstance(err, decord.DECORDError)


def output_size(
    height: int,
    width: int,
    *,
    size: tuple[int, int] | None = None,
    short_side: int | None = None,
) -> tuple[int, int]:
    """The (height, width) a frame of the given size is decoded to.

    Args:
        height: Frame height in the file.
        width: Frame width in the file.
        size: Exact (height, width) to scale to.
        short_side: Scale so the shorter side has this length, keeping the aspect ratio
            (`short_side_size`).

    Returns:
        The native size when neither `size` nor `short_side` is given.
    """
    if size is not None and short_side is not None:
        raise ValueError("give either size or short_side, not both")
    if size is not None:
        out_h, out_w = (int(s) for s in size)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"size must be positive, got {size}")
        return out_h, out_w
    if short_side is not None:
        if short_side <= 0:
            raise ValueError(f"short_side must be positive, got {short_side}")
        return short_side_size(height, width, short_side)
    return height, width


class VideoReader(abc.ABC):
    """An open video: frame count, frame rate, frame size, and random access to frames.

    Use as a context manager so the file is closed. Subclasses implement `_read_sorted`.

    Attributes:
        path: The file or folder read.
        num_frames: Number of frames (as the container declares it, for video files).
        fps: Frames per second.
        height: Frame height in the file.
        width: Frame width in the file.
    """

    path: str
    num_frames: int
    fps: float
    height: int
    width: int

    def read(
        self,
        indices: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        short_side: int | None = None,
    ) -> np.ndarray:
        """Decode the frames at `indices`, in the order asked (repeats allowed).

        Args:
            indices: 0-based frame indices in display order; indices past the end are clamped
                (see the module docstring).
            size: Decode to exactly this (height, width).
            short_side: Decode so the shorter side has this length, keeping the aspect ratio.

        Returns:
            uint8 RGB frames, (T, H, W, 3).

        Raises:
            VideoDecodeError: the frames cannot be decoded.
        """
        last = self.num_frames - 1
        order = [min(int(i), last) for i in indices]
        if any(i < 0 for i in order):
            raise ValueError(f"frame indices must be >= 0, got {min(order)}")
        out_h, out_w = output_size(self.height, self.width, size=size, short_side=short_side)
        if not order:
            return np.empty((0, out_h, out_w, 3), dtype=np.uint8)
        frames = self._read_sorted(sorted(set(order)), (out_h, out_w))
        return np.stack([frames[i] for i in order])

    def iter_frames(
        self, *, size: tuple[int, int] | None = None, short_side: int | None = None
    ) -> Iterator[np.ndarray]:
        """Every frame, 0 to `num_frames - 1`, one at a time: what `read(range(num_frames))`
        returns, without holding the whole video in memory.

        Args:
            size: Decode to exactly this (height, width).
            short_side: Decode so the shorter side has this length, keeping the aspect ratio.

        Yields:
            uint8 RGB frames, (H, W, 3).

        Raises:
            VideoDecodeError: a frame cannot be decoded.
        """
        for start in range(0, self.num_frames, _ITER_CHUNK):
            chunk = range(start, min(start + _ITER_CHUNK, self.num_frames))
            yield from self.read(chunk, size=size, short_side=short_side)

    @abc.abstractmethod
    def _read_sorted(self, indices: list[int], out_hw: tuple[int, int]) -> dict[int, np.ndarray]:
        """Decode sorted, unique, in-range frame indices to (H, W, 3) arrays of size `out_hw`."""

    def close(self) -> None:
        """Release the file; reading afterwards is an error."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, "
            f"fps={self.fps:g}, size={self.height}x{self.width})"
        )


def _check_file(path: Path) -> None:
    """Turn the common reasons a file cannot be opened into clear errors before FFmpeg does."""
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _describe(err: BaseException) -> str:
    """A short text for an FFmpeg/PyAV error, without the file name it repeats."""
    strerror = getattr(err, "strerror", None)
    return str(strerror) if strerror else str(err)


class PyAVReader(VideoReader):
    """Frame-accurate random access through PyAV (FFmpeg).

    A frame's index comes from its presentation timestamp. AVI stores decode-order timestamps
    only, so AVI files are decoded from the start, every frame, and frames are counted.

    Args:
        path: The video file.
        threads: Let FFmpeg decode with frame and slice threads (it picks the count). Off by
            default: it lowers the latency of a single read on idle cores but costs about 15%
            more CPU per clip, and data-loader workers already keep every core busy.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: bool = False) -> None:
        self.path = str(path)
        self._threads = threads
        _check_file(Path(path))
        self._open_container()
        try:
            self._setup()
        except BaseException:
            self._container.close()
            raise

    def _open_container(self) -> None:
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError) as err:
            raise VideoDecodeError(self.path, f"not a readable video ({_describe(err)})") from None
        self._untouched = True  # nothing demuxed yet
        if self._container.streams.video:
            self._stream = self._container.streams.video[0]
            if self._threads:
                self._stream.thread_type = "AUTO"
            else:
                # PyAV's default (0) starts one slice thread per CPU at every open: on a 16-core
                # host that is 16 threads per clip, which H.264 files with one slice never use.
                self._stream.codec_context.thread_count = 1

    def _setup(self) -> None:
        if not self._container.streams.video:
            raise VideoDecodeError(self.path, "no video stream")
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or stream.time_base is None:
            raise VideoDecodeError(self.path, "unknown frame rate")
        self.fps = float(rate)
        # A frame's index is its presentation time (since the stream start) times the rate;
        # kept as an integer ratio, exact and cheaper than Fraction arithmetic per frame.
        frames_per_tick = Fraction(stream.time_base) * Fraction(rate)
        self._tick_num, self._tick_den = frames_per_tick.numerator, frames_per_tick.denominator
        self._start_pts = stream.start_time or 0
        self._by_count = self._container.format.name in _DECODE_ORDER_TIMESTAMP_FORMATS
        self.height = stream.codec_context.height
        self.width = stream.codec_context.width
        if self.height <= 0 or self.width <= 0:
            raise VideoDecodeError(self.path, "unknown frame size")
        self.num_frames = stream.frames if stream.frames > 0 else self._count_packets()
        if self.num_frames <= 0:
            raise VideoDecodeError(self.path, "no frames")
        # Keyframe positions from the demuxer's index (complete for MP4/MOV, built while
        # demuxing for others): only used to decide when a second seek pays.
        self._keyframes = (
            []
            if self._by_count
            else sorted(
                self._index(entry.timestamp) for entry in stream.index_entries if entry.is_keyframe
            )
        )
        self._fed_up_to = -1  # largest frame index sent to the decoder since the last seek

    def _count_packets(self) -> int:
        """Count frames by demuxing (no decoding) when the container does not declare them."""
        self._untouched = False
        try:
            return sum(1 for packet in self._container.demux(self._stream) if packet.size)
        except av.FFmpegError as err:
            raise VideoDecodeError(self.path, f"cannot read packets ({_describe(err)})") from None

    def _index(self, pts: int) -> int:
        # Nearest frame, halves rounded up.
        return (2 * (pts - self._start_pts) * self._tick_num + self._tick_den) // (
            2 * self._tick_den
        )

    def _pts(self, index: int) -> int:
        return self._start_pts + index * self._tick_den // self._tick_num

    def close(self) -> None:
        self._container.close()

    def _read_sorted(self, indices: list[int], out_hw: tuple[int, int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        done = 0
        while done < len(indices):
            done = self._decode_run(indices, done, out_hw, out)
        return out

    def _decode_run(
        self,
        indices: list[int],
        done: int,
        out_hw: tuple[int, int],
        out: dict[int, np.ndarray],
    ) -> int:
        """Seek before `indices[done]` and decode forward, filling `out`.

        Returns:
            How many of `indices` are done: all of them, or fewer (but more than before) when
            a keyframe far enough ahead makes a new seek cheaper than decoding on.
        """
        wanted = set(indices[done:])
        if indices[-1] == self.num_frames - 1:
            # The declared last frame may not exist; decode the whole tail so the clamp lands
            # on the true last frame.
            wanted.update(range(self.num_frames - 1 - MISSING_TAIL_TOLERANCE, self.num_frames))
        first_undone = done
        last: tuple[int, Any] | None = None
        for index, frame in self._frames_from(indices[done], wanted):
            if index >= indices[done]:
                array = self._to_array(frame, out_hw)
                # `<=` rather than `==`: a wanted index missing from the stream (a gap in the
                # timestamps) takes the next frame shown.
                while done < len(indices) and indices[done] <= index:
                    out[indices[done]] = array
                    done += 1
                if done == len(indices):
                    return done
            last = (index, frame)
            # Seek again only after progress, so an imprecise seek cannot loop forever.
            if done > first_undone and self._seek_pays(indices[done]):
                return done
        return self._fill_tail(indices, done, last, out_hw, out)

    def _fill_tail(
        self,
        indices: list[int],
        done: int,
        last: tuple[int, Any] | None,
        out_hw: tuple[int, int],
        out: dict[int, np.ndarray],
    ) -> int:
        """At the end of the stream: clamp the remaining indices to the last decoded frame."""
        if last is None:
            raise VideoDecodeError(
                self.path,
                f"no frame decodes at or after frame {indices[done]} "
                f"(of {self.num_frames} declared): truncated or corrupt",
            )
        last_index, frame = last
        self._check_tail(last_index, indices[-1])
        array = self._to_array(frame, out_hw)
        for index in indices[done:]:
            out[index] = array
        return len(indices)

    def _check_tail(self, last_decoded: int, last_wanted: int) -> None:
        """Raise if the stream ends too far before `last_wanted` for clamping to be right."""
        if last_wanted - last_decoded > MISSING_TAIL_TOLERANCE:
            raise VideoDecodeError(self.path, self._why_short(last_decoded))

    def _why_short(self, last_decoded: int) -> str:
        """Why the frames' times end at `last_decoded`, before the declared end.

        A file cut off, or frames whose timestamps run backwards or repeat (every frame may
        decode, yet their times never reach the end): one more pass from the start, on this
        error path only, tells them apart.
        """
        truncated = (
            f"truncated: the stream ends at frame {last_decoded} "
            f"but {self.num_frames} frames are declared"
        )
        if self._by_count:
            return truncated  # indices are counted: only a cut can end them early
        count = repeats = 0
        previous: tuple[int, float] | None = None  # (index, seconds) of the frame before
        try:
            self._seek(0)
            for index, frame in self._decode_forward(_EVERY_FRAME):
                time = float(frame.pts * self._stream.time_base)
                if previous is not None and index < previous[0]:
                    return (
                        f"timestamps run backwards (a frame at {time:.3f} s follows one at "
                        f"{previous[1]:.3f} s), so frames cannot be found by their time; "
                        "re-encode the file"
                    )
                repeats += previous is not None and index == previous[0]
                count += 1
                previous = (index, time)
        except VideoDecodeError:
            return truncated
        if repeats and count >= self.num_frames - MISSING_TAIL_TOLERANCE:
            return (
                f"{count} frames decode, but {repeats} of them repeat the timestamp of the "
                f"frame before, so their times end at frame {last_decoded} of the "
                f"{self.num_frames} declared; re-encode the file"
            )
        return truncated

    def iter_frames(
        self, *, size: tuple[int, int] | None = None, short_side: int | None = None
    ) -> Iterator[np.ndarray]:
        out_hw = output_size(self.height, self.width, size=size, short_side=short_side)
        for frame in self.iter_av_frames():
            yield self._to_array(frame, out_hw)

    def iter_av_frames(self) -> Iterator[av.VideoFrame]:
        """Every frame, 0 to `num_frames - 1`, as decoded (`av.VideoFrame`, native size and
        pixel format) in one pass from the start.

        Frame `i` is the one `read([i])` returns: a gap in the timestamps repeats the next
        frame shown and a stream that ends a little early repeats its last frame (the same
        object is yielded again).

        Raises:
            VideoDecodeError: the stream cannot be decoded or is truncated.
        """
        next_index = 0
        last_index = -1
        for index, frame in self._frames_from(0, set(range(self.num_frames))):
            while next_index <= index and next_index < self.num_frames:
                yield frame
                next_index += 1
            if next_index == self.num_frames:
                return
            last_index = index
        if last_index < 0:
            raise VideoDecodeError(self.path, "no frame decodes: truncated or corrupt")
        self._check_tail(last_index, self.num_frames - 1)
        while next_index < self.num_frames:
            yield frame
            next_index += 1

    def _frames_from(self, target: int, wanted: set[int]) -> Iterator[tuple[int, Any]]:
        """Decoded (index, frame) pairs in display order, the first one at or before `target`.

        Seeks to the keyframe at or before `target`. Should a demuxer land after the target
        (MPEG-TS seeks by byte position; MOV lands on keyframes that B-frames precede) or at
        the end, this seeks again, further back each time, and finally reads from the file's
        start. AVI is always read from the start, as its frames are counted.
        """
        step = max(1, round(self.fps))
        seek_index = 0 if self._by_count else target
        while True:
            self._seek(seek_index)
            frames = self._decode_forward(wanted)
            first = next(frames, None)
            if seek_index == 0 or (first is not None and first[0] <= target):
                if first is not None:
                    yield first
                    yield from frames
                return
            landed = target if first is None else min(target, first[0])
            seek_index = max(0, landed - step)
            step *= 2

    def _seek(self, index: int) -> None:
        """Position the demuxer before frame `index`; frame 0 by reading from the start."""
        if index == 0:
            if not self._untouched:
                # Some demuxers (MPEG-TS) cannot seek to the start exactly; a fresh open can.
                self._container.close()
                self._open_container()
        else:
            try:
                self._container.seek(self._pts(index), backward=True, stream=self._stream)
            except av.FFmpegError as err:
                raise VideoDecodeError(self.path, f"cannot seek ({_describe(err)})") from None
        self._untouched = False
        self._fed_up_to = -1

    def _decode_forward(self, wanted: set[int]) -> Iterator[tuple[int, Any]]:
        """Demux and decode from the current position; (index, frame) in display order."""
        codec = self._stream.codec_context
        counted = 0  # by-count mode (always from the start): the index of the next frame out
        try:
            for packet in self._container.demux(self._stream):
                if not self._by_count and packet.pts is not None:
                    index = self._index(packet.pts)
                    self._fed_up_to = max(self._fed_up_to, index)
                    # Frames no other frame references need not be decoded unless wanted.
                    codec.skip_frame = "DEFAULT" if index in wanted else "NONREF"
                for frame in packet.decode():
                    if self._by_count:
                        index, counted = counted, counted + 1
                    elif frame.pts is None:
                        raise VideoDecodeError(
                            self.path, "frames carry no timestamps (remux it to MP4 or MKV)"
                        )
                    else:
                        index = self._index(frame.pts)
                    yield index, frame
        except av.FFmpegError as err:
            raise VideoDecodeError(
                self.path, f"decoding failed, truncated or corrupt ({_describe(err)})"
            ) from None
        finally:
            codec.skip_frame = "DEFAULT"

    def _seek_pays(self, next_wanted: int) -> bool:
        """Whether a keyframe lies between the frames sent to the decoder and `next_wanted`,
        far enough ahead that seeking to it skips real work (and no wanted frame is in
        flight in the decoder, as all sent frames come before that keyframe)."""
        k = bisect.bisect_right(self._keyframes, next_wanted) - 1
        if self._threads:
            least = _MIN_FRAMES_SKIPPED_BY_SEEK_THREADED
        else:
            least = _MIN_FRAMES_SKIPPED_BY_SEEK
        return k >= 0 and self._keyframes[k] - self._fed_up_to > least

    def _to_array(self, frame: Any, out_hw: tuple[int, int]) -> np.ndarray:
        # Scaling inside FFmpeg's converter is much cheaper than converting full-size RGB first.
        height, width = out_hw
        rgb = _reformatter().reformat(
            frame, width=width, height=height, format="rgb24", threads=_CONVERTER_THREADS
        )
        return rgb.to_ndarray()


class DecordReader(VideoReader):
    """Random access through ``decord.VideoReader.get_batch`` (``pip install decord``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            import decord
        except ImportError:
            raise BackendUnavailableError(
                "the 'decord' backend needs decord: pip install 'aim-video[decord]', "
                "or use the 'pyav' backend"
            ) from None
        _check_file(Path(path))
        self._decord = decord
        self._readers: dict[tuple[int, int], Any] = {}
        reader = self._open()
        self.num_frames = len(reader)
        if self.num_frames <= 0:
            raise VideoDecodeError(path, "no frames")
        self.fps = float(reader.get_avg_fps())
        self.height, self.width = self._native_size(reader)
        self._readers[(self.height, self.width)] = reader

    def _native_size(self, reader: Any) -> tuple[int, int]:
        # decord exposes the size only through a decoded frame's shape; the first key frame
        # is cheap and seeking back is free.
        shape = self._call(lambda: reader.next().shape)
        reader.seek(0)
        return int(shape[0]), int(shape[1])

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except self._decord.DECORDError as err:
            raise VideoDecodeError(self.path, f"decord: {str(err).splitlines()[0]}") from None

    def _open(self, height: int = -1, width: int = -1) -> Any:
        try:
            return self._call(
                lambda: self._decord.VideoReader(self.path, width=width, height=height)
            )
        except RuntimeError as err:  # decord's "Error reading <path>..."
            if isinstance(err, VideoDecodeError):
                raise
            raise VideoDecodeError(self.path, "decord: not a readable video") from None

    def _read_sorted(self, indices: list[int], out_hw: tuple[int, int]) -> dict[int, np.ndarray]:
        # decord scales in its decoder only when the reader is opened with a size.
        reader = self._readers.get(out_hw)
        if reader is None:
            reader = self._readers[out_hw] = self._open(*out_hw)
        batch = self._call(lambda: reader.get_batch(indices).asnumpy())  # (T, H, W, 3)
        return dict(zip(indices, batch, strict=True))

    def close(self) -> None:
        self._readers.clear()


class FrameFolderReader(VideoReader):
    """A folder of images, one per frame, named by a template.

    Args:
        path: The folder.
        template: File name with one integer field, e.g. ``"img_{:05d}.jpg"``.
        start: The number of the first frame's file (1 for MMAction2's ``img_00001.jpg``).
        fps: Frame rate to report (a folder does not record one).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        template: str = "img_{:05d}.jpg",
        *,
        start: int = 1,
        fps: float = 30.0,
    ) -> None:
        self.path = str(path)
        self._folder = Path(path)
        self._template = template
        self._start = start
        self.fps = fps
        if self._folder.is_file():
            raise VideoDecodeError(
                path, "a file where a frame folder was expected (the 'frames' backend reads "
                "folders of images; use 'pyav' or 'decord' for video files)"
            )
        if not self._folder.is_dir():
            raise VideoDecodeError(path, "frame folder not found")
        pattern = template_regex(template)
        self.num_frames = sum(
            1
            for entry in os.scandir(self._folder)
            if (match := pattern.fullmatch(entry.name)) and int(match.group(1)) >= start
        )
        if self.num_frames == 0:
            raise VideoDecodeError(path, f"no frames named like {template!r}")
        first = self._load(0)
        self.height, self.width = first.height, first.width

    def _file(self, index: int) -> Path:
        return self._folder / self._template.format(index + self._start)

    def _load(self, index: int, out_hw: tuple[int, int] | None = None) -> Any:
        from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib

        file = self._file(index)
        try:
            image = Image.open(file)
            if out_hw is not None:
                # JPEG can decode straight to 1/2, 1/4, 1/8 size, no smaller than asked.
                image.draft("RGB", (out_hw[1], out_hw[0]))
            return image.convert("RGB")
        except FileNotFoundError:
            raise VideoDecodeError(file, f"frame {index} missing") from None
        except (UnidentifiedImageError, OSError) as err:
            raise VideoDecodeError(file, f"cannot decode image ({err})") from None

    def _read_sorted(self, indices: list[int], out_hw: tuple[int, int]) -> dict[int, np.ndarray]:
        from PIL import Image

        out = {}
        for index in indices:
            image = self._load(index, out_hw)
            if image.size != (out_hw[1], out_hw[0]):
                image = image.resize((out_hw[1], out_hw[0]), Image.Resampling.BILINEAR)
            out[index] = np.asarray(image)
        return out


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the file names `template` produces; group 1 is the number."""
    parts = list(string.Formatter().parse(template))
    fields = [field for _, field, _, _ in parts if field is not None]
    if len(fields) != 1:
        raise ValueError(f"frame template needs exactly one {{}} field, got {template!r}")
    regex = ""
    for literal, field, _, _ in parts:
        regex += re.escape(literal)
        if field is not None:
            regex += r"(\d+)"
    return re.compile(regex)


def _holds_frames(folder: Path, template: str, start: int) -> bool:
    """Whether `folder` holds the first frame image `template` names."""
    return (folder / template.format(start)).is_file()


def open_video(
    path: str | os.PathLike[str],
    backend: Backend = "pyav",
    frame_template: str = "img_{:05d}.jpg",
    *,
    frame_start: int = 1,
    threads: bool = False,
) -> VideoReader:
    """Open a video file, or a frame folder, for random access to its frames.

    Args:
        path: A video file, or a folder of frame images (always read as a frame folder).
        backend: ``"pyav"``, ``"decord"`` or ``"frames"`` (see the module docstring).
        frame_template: File name of frame images, with one integer field.
        frame_start: Number of the first frame image (MMAction2 starts at 1).
        threads: PyAV only: decode with FFmpeg's frame and slice threads (see `PyAVReader`).

    Returns:
        A `VideoReader`; use it as a context manager.

    Raises:
        VideoDecodeError: the file is missing, empty, not a video, or has no video frames; a
            directory without frame images where a video file was expected; a file where
            the 'frames' backend expected a folder.
        BackendUnavailableError: the 'decord' backend without decord installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
    if backend == "frames":
        return FrameFolderReader(path, frame_template, start=frame_start)
    if Path(path).is_dir():
        if not _holds_frames(Path(path), frame_template, frame_start):
            raise VideoDecodeError(
                path, f"a directory where a video file was expected (backend {backend!r}), "
                f"and no frame folder either: no images named like {frame_template!r} in it"
            )
        return FrameFolderReader(path, frame_template, start=frame_start)
    if backend == "decord":
        return DecordReader(path)
    return PyAVReader(path, threads=threads)
