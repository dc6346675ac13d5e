"""`aim-video timeline`: class probabilities over a long video, window by window."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    from aim_video.predictor import Timeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "timeline",
        help="classify every window of a long video",
        description="Slide the clip the model was trained on over a whole video (decoded once, "
                    "forward) and classify each window with the checkpoint's test crops. Writes "
                    "timeline.csv, timeline.json, segments.json (runs of windows with the same "
                    "top class at --threshold or above) and timeline.png. With several "
                    "--checkpoint options trained on one backbone, each task (named by its run "
                    "folder) gets these files in DIR/TASK/.",
    )
    parser.add_argument("video", metavar="VIDEO")
    parser.add_argument("--checkpoint", required=True, action="append", metavar="PATH",
                        help="last.pt / best.pt of a run; repeat it for several tasks trained "
                             "on one backbone (the video is decoded once for all)")
    parser.add_argument("--pretrained", metavar="PATH", help="backbone weights (if moved)")
    parser.add_argument("--stride", type=float, metavar="SECONDS",
                        help="time between window starts (default: the window's length)")
    parser.add_argument("--window", type=float, metavar="SECONDS",
                        help="window length, uniform-sampling checkpoints only (default: "
                             "data.num_frames x data.frame_interval frames)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="least top-class probability of a window in a segment")
    parser.add_argument("--top-k", type=int, default=5, help="classes per window")
    parser.add_argument("--out", default="timeline", metavar="DIR", help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--crops", type=int, choices=(1, 3),
                        help="crops per window (default: the checkpoint's test crops)")
    parser.add_argument("--batch-size", type=int, help="windows per batch (default: eval.batch_size)")
    parser.add_argument("--no-plot", action="store_true", help="no timeline.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.data.decode import VideoDecodeError
    from aim_video.predictor import Predictor

    views = f"1x{args.crops}" if args.crops else None
    predictor = Predictor.from_checkpoints(args.checkpoint, pretrained=args.pretrained,
                                           device=args.device, views=views)
    try:
        with tqdm(unit="window", disable=args.no_progress, file=sys.stderr,
                  desc="timeline") as bar:
            timelines = predictor.timelines(args.video, stride=args.stride, window=args.window,
                                            batch_size=args.batch_size, progress=bar.update)
    except VideoDecodeError as err:
        print(f"aim-video timeline: unreadable: {err}", file=sys.stderr)
        return 1
    note = next(iter(timelines.values())).note
    if note:
        print(f"aim-video timeline: note: {args.video}: {note}", file=sys.stderr)
    for name, timeline in timelines.items():
        folder = Path(args.out) / name if predictor.multitask else Path(args.out)
        if predictor.multitask:
            print(f"{name}:")
        _write(timeline, folder, args)
    return 0


def _write(timeline: Timeline, folder: Path, args: argparse.Namespace) -> None:
    """One task's files in `folder`, and its summary on stdout."""
    from aim_video.timeline import write_timeline

    paths = write_timeline(timeline, folder, top_k=args.top_k, threshold=args.threshold,
                           plot=not args.no_plot)
    segments = json.loads(paths["segments"].read_text())["segments"]
    span = f"{timeline.starts[0]:.2f}-{timeline.ends[-1]:.2f} s" if len(timeline.starts) else "-"
    print(f"{len(timeline.starts)} windows ({span}), {len(segments)} segments -> {folder}")
    for seg in segments:
        print(f"  {seg['start']:8.2f} - {seg['end']:8.2f} s  {seg['class']}  "
              f"(mean p {seg['mean_prob']:.2f})")
