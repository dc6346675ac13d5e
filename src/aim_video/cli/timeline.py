"""`aim-video timeline`: class probabilities over a long video, window by window."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from aim_video.cli import arguments
from aim_video.errors import UserError

if TYPE_CHECKING:
    from aim_video.predictor import Timeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "timeline",
        help="classify every window of a long video",
        description="Slide the clip the model was trained on over a whole video (decoded once, "
                    "forward) and classify each window with the checkpoint's test crops. Writes "
                    "timeline.csv, timeline.json, segments.json (runs of windows with the same "
                    "top class at --threshold or above) and timeline.png. Runs on a checkpoint or "
                    "on an exported file (--runtime onnx). With several "
                    "--checkpoint options trained on one backbone, each task (named by its run "
                    "folder) gets these files in DIR/TASK/.",
    )
    parser.add_argument("video", metavar="VIDEO")
    arguments.add_model(parser)
    arguments.add(parser, "window", "stride", "threshold", "top_k", "batch_size", "no_progress",
                  "json")
    parser.add_argument("--out", default="timeline", metavar="DIR", help="output folder")
    parser.add_argument("--no-plot", action="store_true", help="no timeline.png")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.data.decode import VideoDecodeError
    from aim_video.engine.config import parse_views

    if args.views is not None and parse_views(args.views)[0] != 1:
        raise UserError(f"--views {args.views}: a window is one clip; give 1xCROPS, e.g. 1x3")
    arguments.check_out(args.out, "folder")
    # Stored in timeline.json: `aim-video report DIR` links the video from any folder.
    video = os.path.abspath(args.video)
    predictor = arguments.predictor_from_args(args)
    try:
        with tqdm(unit="window", disable=args.no_progress, file=sys.stderr,
                  desc="timeline") as bar:
            timelines = predictor.timelines(video, stride=args.stride, window=args.window,
                                            batch_size=args.batch_size, progress=bar.update)
    except VideoDecodeError as err:
        print(f"aim-video timeline: unreadable: {err}", file=sys.stderr)
        return 1
    note = next(iter(timelines.values())).note
    if note:
        print(f"aim-video timeline: note: {args.video}: {note}", file=sys.stderr)
    summaries = {}
    for name, timeline in timelines.items():
        folder = Path(args.out) / name if predictor.multitask else Path(args.out)
        summaries[name] = _write(timeline, folder, args)
    if args.json:
        tasks = summaries if predictor.multitask else next(iter(summaries.values()))
        print(json.dumps({"video": video, **({"tasks": tasks} if predictor.multitask
                                            else tasks)}))
    else:
        for name, summary in summaries.items():
            if predictor.multitask:
                print(f"{name}:")
            _print(summary)
    return 0


def _write(timeline: Timeline, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One task's files in `folder`; returns its summary (windows, span, segments, folder)."""
    from aim_video.timeline import write_timeline

    paths = write_timeline(timeline, folder, top_k=args.top_k, threshold=args.threshold,
                           plot=not args.no_plot)
    segments = json.loads(paths["segments"].read_text())["segments"]
    has = len(timeline.starts) > 0
    return {"windows": len(timeline.starts),
            "start": float(timeline.starts[0]) if has else None,
            "end": float(timeline.ends[-1]) if has else None,
            "segments": segments, "out": str(folder)}


def _print(summary: dict[str, Any]) -> None:
    span = (f"{summary['start']:.2f}-{summary['end']:.2f} s" if summary["windows"] else "-")
    print(f"{summary['windows']} windows ({span}), {len(summary['segments'])} segments -> "
          f"{summary['out']}")
    for seg in summary["segments"]:
        print(f"  {seg['start']:8.2f} - {seg['end']:8.2f} s  {seg['class']}  "
              f"(mean p {seg['mean_prob']:.2f})")
