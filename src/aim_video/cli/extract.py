"""`aim-video extract`: feature vectors of videos (or of their windows) for other tools."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from aim_video.cli import arguments
from aim_video.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="feature vectors of videos, before the head",
        description="Write the pooled representation before the classifier (mean over the test "
                    "views) of each video, or of each window with --windows, to DIR/features.npy "
                    "(rows; np.load(..., mmap_mode='r')) and DIR/index.csv (row, path, start, "
                    "end, ok, error). A rerun continues where a previous one stopped. With "
                    "--pretrained alone: the frozen image model's features, no adapters (the "
                    "linear-probe baseline).",
    )
    arguments.add_inputs(parser)
    arguments.add_model(parser)
    arguments.add(parser, "config", "set", "batch_size", "workers", "no_progress", "json")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--windows", action="store_true",
                        help="one row per window (timeline windows) instead of per video")
    windows = parser.add_argument_group("with --windows")
    arguments.add(windows, "window", "stride")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float32")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.data.sources import collect_inputs
    from aim_video.outputs import FeatureStore

    arguments.check_out(args.out, "folder")
    if args.checkpoint:
        arguments.one_checkpoint(args)
    if not args.windows and (args.window is not None or args.stride is not None):
        raise UserError("--window and --stride cut videos into windows: add --windows")
    predictor = arguments.predictor_from_args(args, backbone_only=True)
    frames = predictor.cfg.data.backend == "frames"
    videos = collect_inputs(args.inputs, root=args.root, frame_folders=frames)
    store = FeatureStore(args.out, args.dtype)
    todo = [v for v in dict.fromkeys(videos) if v not in store.done]
    retried = len(store.failed.intersection(todo))  # unreadable in an earlier run
    failed = 0
    bar = tqdm(total=len(todo), unit="video", disable=args.no_progress or not todo,
               file=sys.stderr, desc="extract")
    if args.windows:
        batches = ([predictor.window_features(v, args.stride, args.window,
                                              batch_size=args.batch_size)]
                   for v in todo)
    else:
        batches = predictor.iter_features(todo, batch_size=args.batch_size, workers=args.workers)
    try:
        for part in batches:
            for item in part:
                if not item.ok:
                    failed += 1
                    tqdm.write(f"aim-video extract: unreadable: {item.path}: {item.error}",
                               file=sys.stderr)
                elif item.error:
                    tqdm.write(f"aim-video extract: note: {item.path}: {item.error}",
                               file=sys.stderr)
                store.append(item.path, item.features if item.ok else None, item.windows,
                             item.error)
            store.flush()
            bar.update(len(part))
    finally:
        bar.close()
    path = store.finalise()
    already = len(dict.fromkeys(videos)) - len(todo)
    if args.json:
        print(json.dumps({"extracted": len(todo) - failed, "unreadable": failed,
                          "retried": retried, "already_done": already, "rows": store.rows,
                          "dim": store.dim, "features": str(path), "out": args.out}))
    else:
        rows = f"{store.rows} rows of {store.dim} floats" if store.dim else "no rows"
        print(f"{len(todo) - failed} extracted, {failed} unreadable ({retried} retried), "
              f"{already} already in {args.out}; {rows} in {path}", file=sys.stderr)
    return 1 if failed else 0
