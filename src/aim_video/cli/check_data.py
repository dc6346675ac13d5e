"""`aim-video check-data`: list the entries of an annotation file that cannot be decoded."""

from __future__ import annotations

import argparse
import json
import sys

from aim_video.cli import arguments
from aim_video.data.annotations import FORMATS, load_annotations
from aim_video.data.check import ScanReport, scan
from aim_video.data.shards import is_shard_source, scan_shards
from aim_video.data.decode import BACKENDS
from aim_video.data.sources import list_root


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check-data",
        help="find unreadable videos in a data set",
        description="Open every entry of an annotation file and decode its first and last "
        "frames. Prints the unreadable ones with reasons and a summary; exits 1 if any.",
    )
    p.add_argument("annotation", help="annotation file (or folder for 'folder' / 'hmdb51')")
    arguments.add(p, "root")
    arguments.add(p, "format", choices=FORMATS)
    arguments.add(p, "class_names")
    arguments.add(p, "backend", choices=BACKENDS)
    arguments.add(p, "frame_template", "workers", "json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if is_shard_source(args.annotation):  # a shard index (path or URL) or a brace pattern
        report = scan_shards(args.annotation, args.class_names, args.workers,
                             progress=sys.stderr.isatty())
        return _print_report(report, args.json)
    annotations = load_annotations(
        args.annotation, args.format, root=list_root(args.annotation, args.root),
        class_names=args.class_names
    )
    report = scan(
        annotations,
        backend=args.backend,
        workers=args.workers,
        progress=sys.stderr.isatty(),
        frame_template=args.frame_template,
    )
    return _print_report(report, args.json)


def _print_report(report: ScanReport, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        for entry in report.bad:
            print(f"{entry.path}: {entry.reason}")
        print(f"{report.total} entries: {report.good} readable, {len(report.bad)} unreadable")
    return 1 if report.bad else 0
