"""`aim-video make-synthetic OUT`: write the built-in synthetic benchmark as H.264 videos."""

from __future__ import annotations

import argparse

from aim_video.cli import arguments
from aim_video.cli.arguments import int_at_least, non_negative_int
from aim_video.data.synthetic import TASKS, class_names, make_synthetic
from aim_video.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-synthetic",
        help="write the synthetic time-reversal benchmark (mp4 + MMAction2 lists)",
        description=(
            "Write synthetic H.264 videos with train.txt / val.txt / classes.txt. The motion "
            "task's classes come in time-reversal pairs (moves left / right, grows / shrinks, "
            "...), so a model that ignores frame order cannot beat 50%. A folder that already "
            "holds a complete set with the same parameters is left as it is."
        ),
    )
    parser.add_argument("out", help="output folder")
    parser.add_argument("--num-train", type=non_negative_int, default=800, help="training videos")
    parser.add_argument("--num-val", type=non_negative_int, default=200, help="validation videos")
    parser.add_argument("--frames", type=int_at_least(2), default=16, help="frames per video")
    parser.add_argument("--size", type=_frame_side, default=64,
                        help="frame side in pixels (even, >= 16)")
    parser.add_argument("--seed", type=int, default=0, help="fixes every video's content")
    parser.add_argument("--task", choices=TASKS, default="motion",
                        help="motion: time-reversal pairs; appearance: shape x colour classes")
    parser.add_argument("--pairs", default=None, metavar="NAME,...",
                        help="motion task: keep only these time-reversal pairs, named by their "
                             "forward class (e.g. moves_left,grows); default all five")
    arguments.add(parser, "workers", "no_progress")
    parser.set_defaults(func=run)


def _frame_side(text: str) -> int:
    """H.264's yuv420p halves the chroma planes, so frame sides are even."""
    size = int_at_least(16)(text)
    if size % 2:
        raise argparse.ArgumentTypeError(f"must be even, got {size}")
    return size


def run(args: argparse.Namespace) -> int:
    arguments.check_out(args.out, "folder")
    pairs = args.pairs.split(",") if args.pairs else None
    try:
        class_names(args.task, pairs)  # unknown or repeated pair names, before any work
    except ValueError as err:
        raise UserError(f"--pairs: {err}") from None
    info = make_synthetic(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        task=args.task,
        workers=args.workers,
        progress=not args.no_progress,
        pairs=pairs,
    )
    state = "already complete, left as is" if info.reused else "written"
    print(f"synthetic {info.task} set {state}: {info.root}")
    print(f"  {info.num_train} train + {info.num_val} val videos, "
          f"{info.frames} frames of {info.size}x{info.size} at {info.fps} fps")
    print(f"  {len(info.class_names)} classes: {', '.join(info.class_names)}")
    print(f"  lists: {info.train_list}, {info.val_list}; class names: {info.classes_file}")
    return 0
