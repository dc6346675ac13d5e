"""`aim-video prepare ANNOTATION --out DIR`: re-encode a data set once so that it decodes fast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aim_video.cli import arguments
from aim_video.cli.arguments import positive_int
from aim_video.data.annotations import FORMATS, Annotations, detect_format, load_annotations
from aim_video.data.decode import BACKENDS
from aim_video.data.prepare import (
    BAD_INPUTS_FILE,
    X264_PRESETS,
    EncodeSettings,
    PrepareError,
    PrepareReport,
    prepare_dataset,
    target_paths,
)
from aim_video.data.shards import parse_size, write_shards
from aim_video.data.sources import list_root
from aim_video.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="re-encode a data set at the training size, fast to decode",
        description="Re-encode every video of an annotation file at the training short side "
        "as H.264 with a keyframe every GOP frames, no B-frames and x264's fastdecode tuning, "
        "and write an MMAction2 list of the prepared videos (same labels) and classes.txt "
        "into DIR. Resumable: finished videos are skipped. Videos that cannot be decoded are "
        "left out and listed in DIR/bad_inputs.json (exit status 1). Train on the result with "
        "data.train=DIR/<list> data.class_names=DIR/classes.txt.",
    )
    p.add_argument("annotation", help="annotation file (or folder for 'folder' / 'hmdb51')")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--short-side", type=int, default=EncodeSettings.short_side,
                   help="short side of the prepared frames, even; the training short side "
                   "(default: %(default)s)")
    p.add_argument("--gop", type=positive_int, default=EncodeSettings.gop,
                   help="frames from one keyframe to the next: smaller decodes faster and is "
                   "larger; 1: all keyframes, give --crf 14 with it (default: %(default)s)")
    p.add_argument("--crf", type=float, default=EncodeSettings.crf,
                   help="x264 quality: lower keeps more detail in larger files "
                   "(default: %(default)s)")
    p.add_argument("--preset", default=EncodeSettings.preset, choices=X264_PRESETS,
                   help="x264 preset: encoding time against file size (default: %(default)s)")
    arguments.add(p, "workers")
    arguments.add(p, "format", choices=FORMATS)
    arguments.add(p, "root", "class_names")
    arguments.add(p, "backend", choices=BACKENDS)
    arguments.add(p, "frame_template")
    p.add_argument("--list-name", default=None,
                   help="file name of the prepared list in DIR (default: ANNOTATION's name "
                   "with .txt; UCF101/HMDB51 split files: with _list.txt)")
    p.add_argument("--shards", default=None, metavar="SIZE", type=_size,
                   help="also pack the prepared videos into tar shards of about SIZE (e.g. "
                   "1GB) in the WebDataset layout, with an index NAME.shards.json to train from "
                   "(local, over HTTP or from an object store)")
    arguments.add(p, "no_progress")
    p.set_defaults(func=run)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _list_name(args: argparse.Namespace) -> str:
    """The annotation's name with ``.txt``; UCF101/HMDB51 split names get ``_list`` added, as
    format detection would take the prepared list for their formats."""
    annotation = Path(args.annotation)
    form = detect_format(annotation) if args.format == "auto" else args.format
    suffix = "_list" if form in ("ucf101", "hmdb51") else ""
    return f"{annotation.stem}{suffix}.txt"


def run(args: argparse.Namespace) -> int:
    arguments.check_out(args.out, "folder")
    try:
        settings = EncodeSettings(args.short_side, args.gop, args.crf, args.preset)
    except ValueError as err:  # an impossible --short-side / --crf
        raise UserError(str(err)) from None
    annotations = load_annotations(
        args.annotation, args.format, root=list_root(args.annotation, args.root),
        class_names=args.class_names
    )
    list_name = args.list_name or _list_name(args)
    if (Path(args.out) / list_name).resolve() == Path(args.annotation).resolve():
        raise PrepareError(f"the prepared list would overwrite {args.annotation}: "
                           "give --list-name")
    report = prepare_dataset(
        annotations,
        args.out,
        settings,
        list_name=list_name,
        workers=args.workers,
        progress=not args.no_progress and sys.stderr.isatty(),
        backend=args.backend,
        frame_template=args.frame_template,
    )
    _print_report(report, Path(args.out))
    if args.shards is not None:
        _pack(annotations, report, Path(args.out), Path(list_name).stem, args.shards)
    return 1 if report.bad else 0


def _pack(annotations: Annotations, report: PrepareReport, out: Path, name: str,
          size: int) -> None:
    """The prepared videos (bad inputs left out) into shards and their index."""
    bad = {entry.path for entry in report.bad}
    targets = target_paths([record.path for record in annotations.records], out)
    samples = [(str(target), record.path, record.label)
               for record, target in zip(annotations.records, targets, strict=True)
               if record.path not in bad]
    shards = write_shards(samples, annotations.class_names, out, name, size)
    print(f"{shards.samples} videos in {shards.shards} shards ({shards.written} written now), "
          f"{shards.bytes / 1e6:.1f} MB; index {shards.index_file}")
    print(f"train with: data.train={shards.index_file} (or its URL where the folder is served; "
          "shards are named relative to it)")


def _print_report(report: PrepareReport, out: Path) -> None:
    megabytes = f"{report.source_bytes / 1e6:.1f} MB -> {report.prepared_bytes / 1e6:.1f} MB"
    print(f"{report.listed} videos prepared ({report.converted} now, {report.reused} earlier), "
          f"{megabytes}, {report.seconds:.0f} s")
    if report.bad:
        print(f"{len(report.bad)} inputs could not be decoded and are left out "
              f"(listed in {out / BAD_INPUTS_FILE}):")
        for entry in report.bad[:10]:
            print(f"  {entry.path}: {entry.reason}")
        if len(report.bad) > 10:
            print(f"  ... and {len(report.bad) - 10} more")
    print(f"train with: data.train={report.annotation_file} data.format=mmaction "
          f"data.class_names={report.class_names_file} (paths are absolute: no data.root)")
