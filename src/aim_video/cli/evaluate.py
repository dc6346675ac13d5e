"""`aim-video eval`: multi-view evaluation of a training checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from aim_video.cli import arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (top-1, top-5, mean class accuracy)",
        description=(
            "Evaluate a training checkpoint with multi-view testing (softmax averaged over "
            "clips x crops). The checkpoint carries its config, class names and the "
            "fingerprint of its backbone; the backbone weights are re-loaded from the "
            "config's model.pretrained (or --pretrained) and must match. Every split, train "
            "included, is read with the test views and transform. Unreadable videos count as "
            "errors in top1/top5 and are reported separately (exit status 1)."
        ),
    )
    arguments.add(parser, "checkpoint", required=True)
    arguments.add(parser, "set")
    parser.add_argument("--split", default="val", choices=("val", "test", "train"),
                        help="which annotation file of the config to evaluate")
    arguments.add(parser, "views", "pretrained", "device", "no_progress", "json")
    parser.add_argument("--out", help="write metrics.json, per_class.csv, confusion.png, "
                                      "predictions.jsonl, report.html (the page to open) and "
                                      "thumbs/ (each video's frame strip, for the page) here; "
                                      "checked before evaluating")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from aim_video.engine.evaluate import evaluate_checkpoint
    from aim_video.report import ThumbnailWriter, build_eval_report

    checkpoint = arguments.one_checkpoint(args)
    arguments.check_out(args.out, "folder")
    result = evaluate_checkpoint(
        checkpoint, split=args.split, out_dir=args.out, pretrained=args.pretrained,
        overrides=args.overrides, views=args.views, device=args.device,
        progress=not args.no_progress,
        on_batch=None if args.out is None else ThumbnailWriter(args.out),
    )
    if args.out is not None and int(os.environ.get("RANK", "0")) == 0:
        build_eval_report(args.out)  # from the files rank 0 wrote and every rank's thumbnails
    for path, reason in result.bad_files.items():  # as predict, extract, timeline name them
        print(f"aim-video eval: unreadable: {path}: {reason}", file=sys.stderr)
    if args.out is None:
        print("aim-video eval: no --out given, so no report files were written", file=sys.stderr)
    if args.json:
        out = result.to_dict()
        del out["confusion"]
        print(json.dumps(out))
        return _status(result)
    print(f"{result.split}: {result.num_videos} videos, {result.views} views, "
          f"{result.seconds:.1f} s")
    print(f"  top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  "
          f"mean class {result.mean_class_accuracy:.2f}%")
    if result.num_bad:
        print(f"  {result.num_bad} unreadable videos counted as errors; over the readable "
              f"ones: top-1 {result.readable_top1:.2f}%  top-5 {result.readable_top5:.2f}%")
    if args.out is not None:
        print(f"  reports in {args.out}")
    return _status(result)


def _status(result) -> int:
    """1 when some videos could not be read (each is named in the summary and the report)."""
    return 1 if result.num_bad else 0
