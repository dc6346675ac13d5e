"""Annotation files of the common action-recognition data sets -> `Annotations`.

Formats (``format=``):

- ``"mmaction"``: MMAction2 video list, ``path label`` per line. The label is the last token,
  so paths may contain spaces.
- ``"mmaction_frames"``: MMAction2 frame-folder list, ``folder total_frames label`` per line.
- ``"kinetics"``: the Kinetics CSV (``label,youtube_id,time_start,time_end,split``, Kinetics-700's
  extra ``is_cc`` column tolerated). Videos are ``{youtube_id}_{start:06d}_{end:06d}.mp4``, in a
  per-class folder (named by the label, or the label with ``_`` for spaces) or directly under
  ``root``; the first that exists is used, else the flat name.
- ``"ssv2"``: Something-Something V2 split JSON (``[{"id", "template", ...}]``). The template
  without its ``[ ]`` brackets is looked up in the labels JSON (``{name: "index"}``), given
  as `class_names` or found beside the split file as ``labels.json`` or
  ``something-something-v2-labels.json``. Videos are ``{id}.webm``.
- ``"diving48"``: Diving48 V2 JSON (``[{"vid_name", "label", ...}]``); videos are
  ``{vid_name}.mp4``; class names from ``Diving48_vocab.json`` beside the file (its word lists
  joined by spaces), else ``class_{i}``.
- ``"ucf101"``: a UCF101 split file (``trainlist01.txt``: ``Class/v_Class_g08_c01.avi 1`` with a
  1-based label; ``testlist01.txt``: no label, the class comes from the folder). Class names from
  ``classInd.txt`` beside the split file (required for test lists), else from the folder names.
- ``"hmdb51"``: the folder of HMDB51 split files ``{class}_test_split{N}.txt`` (lines
  ``name.avi 0|1|2``: 1 = train, 2 = test, 0 = unused), read for ``split`` and ``subset``.
  Classes are the sorted class names; videos are ``{class}/{name}``. A single split file may
  be given instead of the folder: its folder and split number are used.
- ``"folder"``: a folder with one subfolder per class (sorted names are the classes) holding
  video files (by extension, searched recursively).

In the text formats (the MMAction2 and UCF101 lists, HMDB51 split files, class-name files) blank
lines and lines starting with ``#`` are skipped, so a path cannot start with ``#``. Every file is
read as UTF-8 (a leading byte-order mark is dropped); a file that is not, or is not a regular
file (a FIFO, device or socket, which could block forever), is an `AnnotationError`. A list
that names no video (empty, or comments only) is one too.

``"auto"`` picks by the path: a folder holding ``*_test_split*.txt`` files is ``hmdb51``, any
other folder ``folder``; ``.csv`` is ``kinetics``; ``.json`` is ``diving48`` when its entries
have ``vid_name``, else ``ssv2``; ``trainlistNN.txt`` / ``testlistNN.txt`` are ``ucf101``;
``*_test_splitN.txt`` is ``hmdb51``; any other text file is ``mmaction_frames`` when every line
ends in two integers after a folder, else ``mmaction``.

Labels are 0-based. Formats that carry no class names (the MMAction2 lists) take `class_names`
when given, else ``str(label)`` for labels 0 .. max; without names a label must be below
``MAX_UNNAMED_CLASSES``, so one absurd label cannot make millions of names (and a head as big).
`class_names` is a list or a file: ``.json`` (a list, or a ``{name: index}`` mapping) or text
with one name per line.

Where labels do not matter (inference inputs), ``labels=False`` reads the text lists as plain
lists too: each line is a path, optionally followed by its label (an integer, ignored), and
every record's label is ``NO_LABEL``.

`root` prefixes relative video paths; without it they stay as written (relative to the working
directory). The ``folder`` format lists the files it finds, so it ignores `root`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

from aim_video.errors import UserError

Format = Literal[
    "auto",
    "mmaction",
    "mmaction_frames",
    "kinetics",
    "ssv2",
    "diving48",
    "ucf101",
    "hmdb51",
    "folder",
]
FORMATS: tuple[str, ...] = get_args(Format)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
     ".ts", ".mts", ".m2ts"}  # the last three: MPEG transport streams (broadcast, camcorders)
)
SSV2_LABEL_FILES = ("labels.json", "something-something-v2-labels.json")
DIVING48_VOCAB_FILE = "Diving48_vocab.json"
UCF101_CLASS_FILE = "classInd.txt"

# Without class names, labels name classes "0" .. max: far more classes than any action data set
# has (Kinetics-700, Something-Something's 174), yet a bound, so a stray huge number is an error
# instead of a list of that many names that fills the memory.
MAX_UNNAMED_CLASSES = 100_000

# The label of records read with ``labels=False``.
NO_LABEL = -1

# Text lists (MMAction2, UCF101, HMDB51, class names) skip lines starting with this; the
# Kinetics CSV and the JSON formats have no comments.
COMMENT = "#"

_UCF101_SPLIT = re.compile(r"(train|test)list\d+\.txt")
_HMDB51_SPLIT = re.compile(r"(.+)_test_split(\d+)\.txt")
_HMDB51_SUBSETS = {"train": "1", "test": "2"}
# A label or frame count: ASCII digits only (Python's int() also takes "1_000", "+5", "٣").
_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_NEWLINE = re.compile(r"\r\n|\r|\n")
_ASCII_SPACE = " \t\r\n\f\v"


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video.

    Attributes:
        path: Video file or frame folder.
        label: 0-based class index (``NO_LABEL`` when read with ``labels=False``).
        num_frames: Frame count when the annotation states it (frame-folder lists).
    """

    path: str
    label: int
    num_frames: int | None = None


@dataclass
class Annotations:
    """The records of a data set split and the names of its classes (index = label)."""

    records: list[VideoRecord]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.records)


class AnnotationError(UserError, ValueError):
    """A malformed annotation file; the message names the file and, for text, the line."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, reason: str) -> None:
        super().__init__(str(path), line, reason)
        self.path = str(path)
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


# ---------------------------------------------------------------- helpers


def _join(root: str | os.PathLike[str] | None, path: str) -> str:
    return path if root is None else str(Path(root) / path)


def _check_regular(path: Path) -> None:
    """Refuse, before opening it, what is not a regular file: reading a FIFO (or a terminal
    device) waits for a writer that may never come."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: annotation file not found") from None
    except OSError as err:
        raise AnnotationError(path, None, f"cannot read it ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise AnnotationError(path, None, "a folder where an annotation file was expected")
    if not stat.S_ISREG(mode):
        raise AnnotationError(
            path, None, "not a regular file (a FIFO, device or socket): give a list file"
        )


def _read_text(path: Path) -> str:
    """The file's text: UTF-8, a leading byte-order mark dropped (Windows editors write one)."""
    _check_regular(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AnnotationError(path, None, f"cannot read it ({err.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise AnnotationError(
            path, None, f"not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8"
        ) from None


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for every line that is neither blank nor a
    ``#`` comment."""
    text = _read_text(path)
    # Only newlines end lines: str.splitlines would also split at U+2028, U+0085 and form
    # feeds, which file names may hold.
    for number, line in enumerate(_NEWLINE.split(text), start=1):
        line = line.strip(_ASCII_SPACE)
        if line and not line.startswith(COMMENT):
            yield number, line


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise AnnotationError(path, err.lineno, f"invalid JSON: {err.msg}") from None


def _int(value: str, path: Path, line: int | None, what: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise AnnotationError(path, line, f"{what} must be an integer, got {value!r}")
    return int(value)


def _entry_error(path: Path, number: int, reason: str) -> AnnotationError:
    # JSON lists have no useful line numbers per entry; name the entry instead.
    return AnnotationError(path, None, f"entry {number}: {reason}")


def load_class_names(source: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """Class names from a list, a JSON file (list or ``{name: index}``), or one name per line.

    Args:
        source: The names, or the file holding them.

    Returns:
        Names in label order.
    """
    if not isinstance(source, (str, os.PathLike)):
        return [str(name) for name in source]
    path = Path(source)
    if path.suffix.lower() != ".json":
        return [line for _, line in _text_lines(path)]
    data = _read_json(path)
    if isinstance(data, list):
        return [str(name) for name in data]
    if isinstance(data, dict):
        by_index = {
            _int(str(index), path, None, f"index of {name!r}"): name for name, index in data.items()
        }
        if sorted(by_index) != list(range(len(data))):
            raise AnnotationError(path, None, "class indices must be 0 .. N-1, each once")
        return [by_index[i] for i in range(len(data))]
    raise AnnotationError(path, None, "expected a list of names or a {name: index} mapping")


def save_class_names(names: Sequence[str], path: str | os.PathLike[str]) -> None:
    """Write class names, one per line, in label order."""
    Path(path).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def save_list_file(annotations: Annotations, path: str | os.PathLike[str]) -> None:
    """Write an MMAction2 list: ``path label`` per line, or ``path num_frames label`` when
    every record knows its frame count (the frame-folder list). `load_annotations` reads
    either back unchanged."""
    records = annotations.records
    with_frames = bool(records) and all(r.num_frames is not None for r in records)
    lines = (
        f"{r.path} {r.num_frames} {r.label}\n" if with_frames else f"{r.path} {r.label}\n"
        for r in records
    )
    Path(path).write_text("".join(lines), encoding="utf-8")


def _check_unnamed_labels(
    records: list[VideoRecord], path: Path, lines: Sequence[int | None]
) -> None:
    """Labels that name classes without class names must stay below ``MAX_UNNAMED_CLASSES``.

    Args:
        lines: each record's line (text formats), or None to name the entry's position.
    """
    for number, (record, line) in enumerate(zip(records, lines, strict=True)):
        if record.label >= MAX_UNNAMED_CLASSES:
            reason = (
                f"label {record.label} without class names: labels then name classes 0 .. "
                f"{MAX_UNNAMED_CLASSES - 1}; fix the label or give the class names"
            )
            raise (
                AnnotationError(path, line, reason)
                if line is not None
                else _entry_error(path, number, reason)
            )


def _names_for_labels(
    records: list[VideoRecord],
    class_names: str | os.PathLike[str] | Sequence[str] | None,
    path: Path,
    lines: list[int],
) -> list[str]:
    """The given class names (checked against every label), else ``str(label)``."""
    if class_names is None:
        _check_unnamed_labels(records, path, lines)
        top = max((r.label for r in records), default=-1)
        return [str(i) for i in range(top + 1)]
    names = load_class_names(class_names)
    for record, line in zip(records, lines, strict=True):
        if not 0 <= record.label < len(names):
            raise AnnotationError(
                path, line, f"label {record.label} outside the {len(names)} class names"
            )
    return names


# ---------------------------------------------------------------- MMAction2 lists


def _load_paths(path: Path, root: Any, frames: bool) -> Annotations:
    """A text list read for its paths: ``path [label]`` or ``folder total_frames label`` per
    line; the labels are neither required nor checked."""
    records = []
    for number, line in _text_lines(path):
        tokens = line.split()
        num_frames = None
        if frames:
            if len(tokens) < 3:
                raise AnnotationError(
                    path, number, f"expected 'folder total_frames label', got {line!r}"
                )
            num_frames = _int(tokens[-2], path, number, "total_frames")
            video = line.rsplit(maxsplit=2)[0]
        elif len(tokens) > 1 and _INTEGER.fullmatch(tokens[-1]):
            # A trailing integer is the label, so a path cannot end in " <digits>" here.
            video = line.rsplit(maxsplit=1)[0]
        else:
            video = line
        records.append(VideoRecord(_join(root, video), NO_LABEL, num_frames))
    return Annotations(records, [])


def _load_mmaction(path: Path, root: Any, class_names: Any, frames: bool) -> Annotations:
    records, lines = [], []
    needed = 3 if frames else 2
    shape = "folder total_frames label" if frames else "path label"
    for number, line in _text_lines(path):
        tokens = line.split()
        if len(tokens) < needed:
            raise AnnotationError(path, number, f"expected '{shape}', got {line!r}")
        label = _int(tokens[-1], path, number, "label")
        if label < 0:
            raise AnnotationError(path, number, f"label must be >= 0, got {label}")
        num_frames = _int(tokens[-2], path, number, "total_frames") if frames else None
        # The path is everything before the numbers, spaces included.
        video = line.rsplit(maxsplit=needed - 1)[0]
        records.append(VideoRecord(_join(root, video), label, num_frames))
        lines.append(number)
    return Annotations(records, _names_for_labels(records, class_names, path, lines))


def _looks_like_frame_list(path: Path) -> bool:
    """Every line is ``folder int int``."""
    found = False
    for _, line in _text_lines(path):
        tokens = line.split()
        if len(tokens) < 3 or not (_DIGITS.fullmatch(tokens[-1]) and _DIGITS.fullmatch(tokens[-2])):
            return False
        found = True
    return found


# ---------------------------------------------------------------- Kinetics


def _kinetics_file(root: Any, label: str, youtube_id: str, start: int, end: int) -> str:
    name = f"{youtube_id}_{start:06d}_{end:06d}.mp4"
    candidates = [Path(label) / name, Path(label.replace(" ", "_")) / name, Path(name)]
    base = Path(root) if root is not None else Path()
    for candidate in candidates:
        if (base / candidate).exists():
            return _join(root, str(candidate))
    return _join(root, name)


def _load_kinetics(path: Path, root: Any, class_names: Any) -> Annotations:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    missing = {"label", "youtube_id", "time_start", "time_end"} - set(reader.fieldnames or [])
    if missing:
        raise AnnotationError(path, 1, f"header lacks column(s) {sorted(missing)}")
    rows = []
    for row in reader:
        if None in row.values() or None in row:
            raise AnnotationError(path, reader.line_num, "wrong number of columns")
        rows.append((reader.line_num, row))
    names = (
        load_class_names(class_names)
        if class_names is not None
        else sorted({row["label"] for _, row in rows})
    )
    label_of = {name: i for i, name in enumerate(names)}
    records = []
    for line, row in rows:
        if row["label"] not in label_of:
            raise AnnotationError(path, line, f"label {row['label']!r} not in the class names")
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except ValueError:
            raise AnnotationError(path, line, "time_start/time_end must be numbers") from None
        video = _kinetics_file(root, row["label"], row["youtube_id"], start, end)
        records.append(VideoRecord(video, label_of[row["label"]]))
    return Annotations(records, names)


# ---------------------------------------------------------------- Something-Something V2


def _ssv2_label_file(path: Path, class_names: Any) -> Any:
    if class_names is not None:
        return class_names
    for name in SSV2_LABEL_FILES:
        if (path.parent / name).exists():
            return path.parent / name
    raise AnnotationError(
        path, None, f"no labels file: pass class_names or put one of {SSV2_LABEL_FILES} beside it"
    )


def _load_ssv2(path: Path, root: Any, class_names: Any) -> Annotations:
    names = load_class_names(_ssv2_label_file(path, class_names))
    label_of = {name: i for i, name in enumerate(names)}
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise AnnotationError(path, None, "expected a JSON list of videos")
    records = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise _entry_error(path, number, "needs 'id' and 'template'")
        name = entry["template"].replace("[", "").replace("]", "")
        if name not in label_of:
            raise _entry_error(path, number, f"template {name!r} not in the labels")
        records.append(VideoRecord(_join(root, f"{entry['id']}.webm"), label_of[name]))
    return Annotations(records, names)


# ---------------------------------------------------------------- Diving48


def _load_diving48(path: Path, root: Any, class_names: Any) -> Annotations:
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise AnnotationError(path, None, "expected a JSON list of videos")
    records = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or "vid_name" not in entry or "label" not in entry:
            raise _entry_error(path, number, "needs 'vid_name' and 'label'")
        label = entry["label"]
        if not isinstance(label, int) or label < 0:
            raise _entry_error(path, number, f"label must be an integer >= 0, got {label!r}")
        records.append(VideoRecord(_join(root, f"{entry['vid_name']}.mp4"), label))
    vocab = path.parent / DIVING48_VOCAB_FILE
    if class_names is not None:
        names = load_class_names(class_names)
    elif vocab.exists():
        names = [
            " ".join(words) if isinstance(words, list) else str(words)
            for words in _read_json(vocab)
        ]
    else:
        _check_unnamed_labels(records, path, [None] * len(records))
        top = max((r.label for r in records), default=-1)
        names = [f"class_{i}" for i in range(top + 1)]
    for number, record in enumerate(records):
        if record.label >= len(names):
            raise _entry_error(path, number, f"label {record.label} outside {len(names)} classes")
    return Annotations(records, names)


# ---------------------------------------------------------------- UCF101 / HMDB51


def _load_ucf101(path: Path, root: Any, class_names: Any) -> Annotations:
    class_file = path.parent / UCF101_CLASS_FILE
    names: list[str] | None = None
    if class_names is not None:
        names = load_class_names(class_names)
    elif class_file.exists():
        names = []
        for number, line in _text_lines(class_file):
            tokens = line.split()
            if len(tokens) != 2 or _int(tokens[0], class_file, number, "index") != len(names) + 1:
                raise AnnotationError(class_file, number, "expected 'index name', counting from 1")
            names.append(tokens[1])
    label_of_folder = {name.lower(): i for i, name in enumerate(names or [])}
    records, folders, lines = [], {}, []
    for number, line in _text_lines(path):
        tokens = line.split()
        video, folder = tokens[0], tokens[0].split("/")[0]
        if len(tokens) == 2:
            label = _int(tokens[1], path, number, "label") - 1  # the files count from 1
            if label < 0:
                raise AnnotationError(path, number, f"labels count from 1, got {label + 1}")
            if names is not None and label >= len(names):
                raise AnnotationError(path, number, f"label {label + 1} > {len(names)} classes")
        elif len(tokens) == 1:
            if names is None:
                raise AnnotationError(
                    path, number, f"no label and no {UCF101_CLASS_FILE} beside the file"
                )
            if folder.lower() not in label_of_folder:
                raise AnnotationError(path, number, f"class folder {folder!r} not in the classes")
            label = label_of_folder[folder.lower()]
        else:
            raise AnnotationError(path, number, f"expected 'Class/video.avi [label]', got {line!r}")
        folders.setdefault(label, folder)
        records.append(VideoRecord(_join(root, video), label))
        lines.append(number)
    if names is None:
        _check_unnamed_labels(records, path, lines)
        # Without classInd.txt, the folder of each label's videos names it.
        names = [folders.get(i, f"class_{i}") for i in range(max(folders, default=-1) + 1)]
    return Annotations(records, names)


def _load_hmdb51(path: Path, root: Any, class_names: Any, split: int, subset: str) -> Annotations:
    if subset not in _HMDB51_SUBSETS:
        raise ValueError(f"subset must be one of {sorted(_HMDB51_SUBSETS)}, got {subset!r}")
    if path.is_file():
        match = _HMDB51_SPLIT.fullmatch(path.name)
        if match is None:
            raise AnnotationError(path, None, "not an HMDB51 split file ({class}_test_splitN.txt)")
        path, split = path.parent, int(match.group(2))
    files = {}
    for file in path.iterdir():
        match = _HMDB51_SPLIT.fullmatch(file.name)
        if match and int(match.group(2)) == split:
            files[match.group(1)] = file
    if not files:
        raise AnnotationError(path, None, f"no HMDB51 files '*_test_split{split}.txt'")
    names = load_class_names(class_names) if class_names is not None else sorted(files)
    label_of = {name: i for i, name in enumerate(names)}
    records = []
    for name in sorted(files):
        if name not in label_of:
            raise AnnotationError(files[name], None, f"class {name!r} not in the class names")
        for number, line in _text_lines(files[name]):
            tokens = line.split()
            if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
                raise AnnotationError(
                    files[name], number, f"expected 'video.avi 0|1|2', got {line!r}"
                )
            if tokens[1] == _HMDB51_SUBSETS[subset]:
                records.append(VideoRecord(_join(root, f"{name}/{tokens[0]}"), label_of[name]))
    return Annotations(records, names)


# ---------------------------------------------------------------- class-per-folder tree


def _load_folder(path: Path, class_names: Any) -> Annotations:
    classes = sorted(entry.name for entry in path.iterdir() if entry.is_dir())
    names = load_class_names(class_names) if class_names is not None else classes
    label_of = {name: i for i, name in enumerate(names)}
    records = []
    for name in classes:
        if name not in label_of:
            raise AnnotationError(path / name, None, "class folder not in the class names")
        for file in sorted((path / name).rglob("*")):
            if file.is_file() and file.suffix.lower() in VIDEO_EXTENSIONS:
                records.append(VideoRecord(str(file), label_of[name]))
    if not records:
        raise AnnotationError(path, None, "no class folders with video files")
    return Annotations(records, names)


# ---------------------------------------------------------------- entry point


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format ``"auto"`` resolves to for `path` (rule in the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return "hmdb51" if any(path.glob("*_test_split*.txt")) else "folder"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "kinetics"
    if suffix == ".json":
        entries = _read_json(path)
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            return "diving48" if "vid_name" in entries[0] else "ssv2"
        raise AnnotationError(path, None, "JSON is neither an SSv2 nor a Diving48 video list")
    if _UCF101_SPLIT.fullmatch(path.name):
        return "ucf101"
    if _HMDB51_SPLIT.fullmatch(path.name):
        return "hmdb51"
    return "mmaction_frames" if _looks_like_frame_list(path) else "mmaction"


def load_annotations(
    path: str | os.PathLike[str],
    format: Format = "auto",
    root: str | os.PathLike[str] | None = None,
    class_names: str | os.PathLike[str] | Sequence[str] | None = None,
    *,
    split: int = 1,
    subset: Literal["train", "test"] = "train",
    labels: bool = True,
) -> Annotations:
    """Read an annotation file (or folder) into records and class names.

    Args:
        path: The annotation file, or a folder for ``"folder"`` and ``"hmdb51"``.
        format: One of the formats in the module docstring, or ``"auto"``.
        root: Prefix for relative video paths.
        class_names: Names in label order (a list or a file); replaces or supplies the names
            the format carries.
        split: HMDB51 split number (1-3).
        subset: HMDB51 part to read.
        labels: False: the labels do not matter (inference inputs); the MMAction2 and UCF101
            lists may then be plain lists of paths, and every record's label is ``NO_LABEL``
            with no class names.

    Returns:
        The records, with 0-based labels, and the class names.

    Raises:
        FileNotFoundError: `path` does not exist.
        AnnotationError: the file is malformed, not a regular file or folder, or lists no
            video; the message names the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: annotation file not found")
    if format not in FORMATS:
        raise ValueError(f"unknown annotation format {format!r}")
    if not path.is_dir():
        _check_regular(path)  # before `detect_format` reads it
    if format == "auto":
        format = detect_format(path)  # type: ignore[assignment]
    annotations = _load(path, format, root, class_names, split, subset, labels)
    if not annotations.records:
        raise AnnotationError(path, None, "lists no video (empty, or only comments)")
    if not labels:
        return Annotations([replace(r, label=NO_LABEL) for r in annotations.records], [])
    return annotations


def _load(
    path: Path, format: str, root: Any, class_names: Any, split: int, subset: str, labels: bool
) -> Annotations:
    if format in ("mmaction", "mmaction_frames") or (format == "ucf101" and not labels):
        frames = format == "mmaction_frames"
        if not labels:
            return _load_paths(path, root, frames)
        return _load_mmaction(path, root, class_names, frames)
    if format == "kinetics":
        return _load_kinetics(path, root, class_names)
    if format == "ssv2":
        return _load_ssv2(path, root, class_names)
    if format == "diving48":
        return _load_diving48(path, root, class_names)
    if format == "ucf101":
        return _load_ucf101(path, root, class_names)
    if format == "hmdb51":
        return _load_hmdb51(path, root, class_names, split, subset)
    return _load_folder(path, class_names)
