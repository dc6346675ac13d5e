"""Convert a data set once into videos that decode fast: what `aim-video prepare` runs.

Every video of an annotation file is re-encoded at the training short side as H.264 that is
cheap to decode at random positions: a keyframe every `gop` frames (so a clip's frame is at most
`gop - 1` decoded frames away from a seek), no B-frames, and x264's ``fastdecode`` tuning (CAVLC
instead of CABAC, no deblocking filter). Frame `i` of a prepared file is frame `i` of the source
as `VideoReader.read` returns it, scaled by the same converter, so frame indices, counts and
rates stay the same and samplers pick the same frames; audio is dropped.

Measured on 10 s 340x256 Kinetics-like videos (docs/benchmarks.md, "Data loading"): with the
defaults (`gop=4`, `crf=20`) and device augmentation an 8-frame training clip costs a loader
worker about 3x less CPU than the x264-default originals (5-6x less than decord on those:
37-47 clips per busy core-second on a 2-core EPYC); the files are about 5x the originals'
size (synthetic videos with much fine texture: ~2 Mbit/s at 340x256) and 36-37 dB PSNR
against them. `gop=8` costs 10-40% more CPU per clip at 0.7x the size; `gop=1` (every frame a
keyframe; give `crf=14` for 35 dB) saves 0-26% at 2.6x the size.

The output folder receives the videos (under the path each had below the sources' common
folder, extension ``.mp4``), an MMAction2 list with the same labels and order pointing at them by
absolute path (``<annotation name>.txt``), the class names (``classes.txt``; give it as
`class_names` when loading the list), the settings used (``prepare.json``; a folder is only
ever filled with one set of settings) and the inputs that could not be decoded, with reasons
(``bad_inputs.json``, of the last run; they are left out of the list). The splits of a data
set may share a folder, each with its own list, when they share settings and class names.

Resumable: every file is written beside its final name and renamed when complete, so a file
that exists is finished and is skipped by a rerun, and an interrupted one is redone. Two runs
must not write into the same folder at the same time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from aim_video.data.annotations import (
    VIDEO_EXTENSIONS,
    Annotations,
    VideoRecord,
    load_class_names,
    save_class_names,
    save_list_file,
)
from aim_video.data.check import BadEntry
from aim_video.data.decode import (
    Backend,
    PyAVReader,
    VideoDecodeError,
    VideoReader,
    open_video,
    short_side_size,
)
from aim_video.data.pool import process_pool, usable_cpus
from aim_video.errors import UserError
from aim_video.files import remove_temp_files, write_atomic, write_text_atomic

SUFFIX = ".mp4"
SETTINGS_FILE = "prepare.json"
BAD_INPUTS_FILE = "bad_inputs.json"
CLASS_NAMES_FILE = "classes.txt"

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
)


class PrepareError(UserError, RuntimeError):
    """A setup problem that stops the whole conversion (not a bad input, which is listed)."""


@dataclass(frozen=True)
class EncodeSettings:
    """How prepared videos are encoded (see the module docstring for the measured trade-offs)."""

    short_side: int = 256  # short side of the prepared frames: the training short side (even)
    gop: int = 4  # frames from one keyframe to the next; 1: all keyframes (use crf 14 then)
    crf: float = 20.0  # x264 constant rate factor: lower keeps more detail in larger files
    preset: str = "fast"  # x264 preset: "superfast" encodes ~4x sooner into ~25% larger files

    def __post_init__(self) -> None:
        if self.short_side < 2 or self.short_side % 2:
            raise ValueError(
                f"short_side must be even and positive (H.264 4:2:0 needs even sides), "
                f"got {self.short_side}"
            )
        if self.gop < 1:
            raise ValueError(f"gop must be >= 1, got {self.gop}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {X264_PRESETS}, got {self.preset!r}")

    def x264_options(self) -> dict[str, str]:
        """The libx264 encoder options these settings stand for."""
        return {
            "crf": f"{self.crf:g}",
            "g": str(self.gop),
            "bf": "0",  # no B-frames: every frame decodes as soon as its packet arrives
            "tune": "fastdecode",  # CAVLC, no deblocking: about 2x faster to decode
            "preset": self.preset,
            "threads": "1",  # the conversion runs one video per process already
        }


@dataclass
class PrepareReport:
    """What a conversion did."""

    annotation_file: Path  # the MMAction2 list of the prepared videos
    class_names_file: Path  # their class names, one a line
    converted: int = 0  # videos encoded by this run
    reused: int = 0  # videos already prepared by an earlier run, left as they were
    bad: list[BadEntry] = field(default_factory=list)  # inputs that could not be decoded
    source_bytes: int = 0  # size of the sources of the listed videos
    prepared_bytes: int = 0  # size of the listed prepared videos
    seconds: float = 0.0  # wall time of this run

    @property
    def listed(self) -> int:
        """Distinct videos in the prepared list."""
        return self.converted + self.reused


# ---------------------------------------------------------------- one video


def prepared_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of a prepared frame: the short side is `short_side`, the long side is
    scaled alike and rounded to the nearest even length (4:2:0 video needs even sides)."""
    return short_side_size(height, width, short_side, multiple=2)


def _frame_rate(reader: VideoReader) -> Fraction:
    # Readers report float rates; NTSC rates (30000/1001) come back exactly.
    return Fraction(reader.fps).limit_denominator(1001 * 1000)


def _source_frames(reader: VideoReader, height: int, width: int) -> Iterator[av.VideoFrame]:
    """The reader's frames at (height, width) as yuv420p frames for the encoder.

    Video files are scaled from their decoded YUV planes: converting through RGB and back
    costs about 2 dB of PSNR (chroma is smoothed twice). Frame folders come as RGB anyway.
    """
    if isinstance(reader, PyAVReader):
        converter = VideoReformatter()
        for frame in reader.iter_av_frames():
            yield converter.reformat(
                frame, width=width, height=height, format="yuv420p", threads=1
            )
    else:
        for array in reader.iter_frames(size=(height, width)):
            yield av.VideoFrame.from_ndarray(array, format="rgb24")


def _encode(reader: VideoReader, path: Path, settings: EncodeSettings) -> int:
    """Encode every frame of `reader` into the mp4 file `path`; the number of frames."""
    height, width = prepared_size(reader.height, reader.width, settings.short_side)
    rate = _frame_rate(reader)
    # faststart: the index goes first, so opening the file reads its start only.
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = settings.x264_options()
        count = 0
        for count, frame in enumerate(_source_frames(reader, height, width), start=1):
            # Constant rate: frame i is shown at i / rate (a source frame's own time base
            # would make the encoder rescale its timestamp).
            frame.pts, frame.time_base = count - 1, 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode())  # flush the encoder's delayed frames
    return count


def prepare_video(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    settings: EncodeSettings = EncodeSettings(),
    *,
    backend: Backend = "pyav",
    frame_template: str = "img_{:05d}.jpg",
) -> int:
    """Re-encode one video (or frame folder) into `target` (see the module docstring).

    The file is written beside `target` and renamed to it when complete
    (`aim_video.files.write_atomic`); what an interrupted run left there is removed first.

    Args:
        source: The video file or frame folder.
        target: The prepared ``.mp4`` file; its folder is created.
        settings: Size and encoding.
        backend: Reader of the source, as in `open_video`.
        frame_template: File names inside frame folders.

    Returns:
        The number of frames written, the source's frame count.

    Raises:
        VideoDecodeError: the source cannot be decoded (nothing is left at `target`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_temp_files(target.parent, target.name)
    counts = []
    with open_video(source, backend, frame_template) as reader:
        write_atomic(target, lambda temp: counts.append(_encode(reader, temp, settings)))
    return counts[0]


# ---------------------------------------------------------------- a data set


def target_paths(sources: Sequence[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Where each source's prepared video goes: its path below the sources' common folder,
    under `out_dir`, with a video extension replaced by (any other name extended by) ``.mp4``.

    Raises:
        PrepareError: two different sources would share a target, or a target is a source.
    """
    absolute = [Path(os.path.abspath(source)) for source in sources]
    if not absolute:
        return []
    base = Path(os.path.commonpath([path.parent for path in absolute]))
    out = Path(os.path.abspath(out_dir))
    targets, owner = [], {}
    for source, path in zip(sources, absolute, strict=True):
        relative = path.relative_to(base)
        stem = relative.stem if relative.suffix.lower() in VIDEO_EXTENSIONS else relative.name
        target = out / relative.parent / f"{stem}{SUFFIX}"
        first = owner.setdefault(target, path)
        if first != path:
            raise PrepareError(
                f"{first} and {path} would both be prepared as {target}; rename one of them"
            )
        if target == path:
            raise PrepareError(f"preparing {path} would overwrite it: choose another output folder")
        targets.append(target)
    return targets


def _check_settings(out_dir: Path, settings: EncodeSettings) -> None:
    """Record `settings` in a new folder, or check that they are the folder's."""
    path = out_dir / SETTINGS_FILE
    wanted = asdict(settings)
    if not path.is_file():
        write_text_atomic(path, json.dumps(wanted, indent=1) + "\n")
        return
    try:
        found = json.loads(path.read_text())
    except ValueError as err:
        raise PrepareError(f"{path}: unreadable ({err}); delete it to start the folder afresh")
    if found != wanted:
        changes = ", ".join(
            f"{key} {found.get(key)!r} -> {value!r}"
            for key, value in wanted.items()
            if found.get(key) != value
        )
        raise PrepareError(
            f"{out_dir} holds videos prepared with other settings ({changes}); "
            "choose another output folder"
        )


def _check_class_names(path: Path, names: Sequence[str]) -> None:
    """Refuse a folder whose class names (from another split) differ: its lists share them."""
    if path.is_file() and load_class_names(path) != list(names):
        raise PrepareError(
            f"{path} holds other class names than this annotation file's: prepare every split "
            "with the same class names (--class-names), or into another folder"
        )


def _size(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or of the files directly in a folder (frame folders)."""
    path = Path(path)
    if path.is_dir():
        return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
    return path.stat().st_size if path.exists() else 0


_Task = tuple[str, str, EncodeSettings, Backend, str]  # source, target, settings, backend, template


def _convert(task: _Task) -> str | None:
    """Run one conversion; the reason when the source cannot be decoded, else None."""
    source, target, settings, backend, template = task
    try:
        prepare_video(source, target, settings, backend=backend, frame_template=template)
    except VideoDecodeError as err:
        return err.reason
    except Exception as err:
        # The input decoded but the output could not be written: a setup problem (disk full,
        # permissions), not a bad input. Name the file; the run stops.
        raise PrepareError(f"{source} -> {target}: {type(err).__name__}: {err}") from err
    return None


def _run(tasks: list[_Task], workers: int) -> Iterator[tuple[int, str | None]]:
    """(task index, reason or None) as conversions finish."""
    if workers <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            yield i, _convert(task)
        return
    pool = process_pool(min(workers, len(tasks)))
    try:
        futures = {pool.submit(_convert, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        # On an error (or Ctrl-C) do not wait for the queued conversions.
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_dataset(
    annotations: Annotations,
    out_dir: str | os.PathLike[str],
    settings: EncodeSettings = EncodeSettings(),
    *,
    list_name: str = "train.txt",
    workers: int | None = None,
    progress: bool = True,
    backend: Backend = "pyav",
    frame_template: str = "img_{:05d}.jpg",
) -> PrepareReport:
    """Prepare every video of `annotations` into `out_dir` (see the module docstring).

    Args:
        annotations: The videos, labels and class names.
        out_dir: The output folder (created).
        settings: Size and encoding; a folder holds videos of one setting only.
        list_name: File name of the MMAction2 list written into `out_dir`.
        workers: Processes (default: the usable CPUs); 0 or 1 converts in this process.
        progress: Show a progress bar on stderr.
        backend: Reader of the sources, as in `open_video`.
        frame_template: File names inside frame folders.

    Returns:
        Counts, the inputs that could not be decoded, sizes and the files written.

    Raises:
        PrepareError: the folder holds other settings, two sources share a target, or an
            output cannot be written.
    """
    start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    _check_class_names(out / CLASS_NAMES_FILE, annotations.class_names)
    records = annotations.records
    targets = target_paths([record.path for record in records], out)
    sources = dict(zip(targets, (record.path for record in records), strict=True))
    report = PrepareReport(out / list_name, out / CLASS_NAMES_FILE)
    # Each target once: a list may name a video twice.
    todo = [target for target in sources if not target.is_file()]
    report.reused = len(sources) - len(todo)
    tasks = [(sources[target], str(target), settings, backend, frame_template) for target in todo]
    failed: dict[Path, str] = {}
    if workers is None:
        workers = usable_cpus()
    bar = tqdm(total=len(sources), initial=report.reused, desc="prepare", unit="video",
               disable=not progress, file=sys.stderr)
    with bar:
        for i, reason in _run(tasks, workers):
            if reason is not None:
                failed[todo[i]] = reason
            bar.update()
    report.converted = len(todo) - len(failed)

    kept: list[VideoRecord] = []
    for record, target in zip(records, targets, strict=True):
        if target in failed:
            report.bad.append(BadEntry(record.path, failed[target]))
        else:
            kept.append(VideoRecord(str(target), record.label))
    for target, source in sources.items():
        if target not in failed:
            report.source_bytes += _size(source)
            report.prepared_bytes += _size(target)
    bad = [asdict(entry) for entry in report.bad]
    write_text_atomic(out / BAD_INPUTS_FILE, json.dumps(bad, indent=1) + "\n")
    write_atomic(report.class_names_file,
                  lambda path: save_class_names(annotations.class_names, path))
    prepared = Annotations(kept, list(annotations.class_names))
    write_atomic(report.annotation_file, lambda path: save_list_file(prepared, path))
    report.seconds = time.monotonic() - start
    return report
