"""`aim-video predict`: top-k classes of videos with a trained checkpoint (or its ONNX export)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from tqdm import tqdm

from aim_video.cli import arguments

if TYPE_CHECKING:
    from aim_video.outputs import JsonlResults
    from aim_video.predictor import Prediction, Predictor



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="top-k classes of video files",
        description="Classify videos with a training checkpoint, using the checkpoint's test "
                    "views. With --out, results are appended to a JSONL file as they come and a "
                    "rerun skips the inputs already there. Unreadable videos are reported one "
                    "line each on stderr (exit status 1). Several --checkpoint options trained "
                    "on the same backbone answer every video together, each task named by its "
                    "run folder (each result gets 'tasks': {RUN_FOLDER_NAME: {top}}).",
    )
    arguments.add_inputs(parser)
    arguments.add_model(parser)
    arguments.add(parser, "top_k", "batch_size", "workers", "no_progress", "json")
    parser.add_argument("--out", metavar="RESULTS.jsonl",
                        help="append one JSON object per input (path, ok, top, error); the "
                             "summary (or with --json, its JSON object) then says how many")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.data.sources import collect_inputs
    from aim_video.outputs import JsonlResults

    arguments.check_out(args.out, "file")
    predictor = arguments.predictor_from_args(args)
    frames = predictor.cfg.data.backend == "frames"
    videos = collect_inputs(args.inputs, root=args.root, frame_folders=frames)
    results = JsonlResults(args.out) if args.out else None
    retried = 0
    if results is not None:
        _check_same_tasks(results, predictor)
        todo = [v for v in dict.fromkeys(videos) if v not in results.done]
        retried = sum(1 for v in todo if v in results.records)  # failed in an earlier run
    else:
        todo = videos
    failed, printed = 0, []
    bar = tqdm(total=len(todo), unit="video", disable=args.no_progress or not todo,
               file=sys.stderr, desc="predict")
    try:
        for part in predictor.iter_predict(todo, args.top_k, batch_size=args.batch_size,
                                           workers=args.workers):
            for p in part:
                if not p.ok:
                    failed += 1
                    tqdm.write(f"aim-video predict: unreadable: {p.path}: {p.error}",
                               file=sys.stderr)
            if results is not None:
                results.append(p.to_dict() for p in part)
            else:
                printed += part
            bar.update(len(part))
    finally:
        bar.close()
        if results is not None:
            results.close()
    if results is not None:
        already = len(dict.fromkeys(videos)) - len(todo)
        if args.json:
            print(json.dumps({"predicted": len(todo) - failed, "unreadable": failed,
                              "retried": retried, "already_done": already, "out": args.out}))
        else:
            print(f"{len(todo) - failed} predicted, {failed} unreadable ({retried} retried), "
                  f"{already} already in {args.out}", file=sys.stderr)
        return 1 if failed else 0
    _print(printed, args.json)
    if failed:
        print(f"{failed} of {len(printed)} videos unreadable", file=sys.stderr)
    return 1 if failed else 0


def _check_same_tasks(results: JsonlResults, predictor: Predictor) -> None:
    """A results file is continued by the same tasks: a rerun with other checkpoints would
    skip inputs whose lines lack (or hold other) tasks' results."""
    from aim_video.outputs import OutputError

    wanted = sorted(t.name for t in predictor.tasks) if predictor.multitask else None
    for record in results.done.values():
        if not record.get("ok"):
            continue
        held = sorted(record["tasks"]) if "tasks" in record else None
        if held != wanted:
            what = f"tasks {', '.join(held)}" if held else "one model's results"
            now = f"tasks {', '.join(wanted)}" if wanted else "one model"
            raise OutputError(f"{results.path}: holds {what}, this run predicts with {now}; "
                              "give another --out")
        return


def _print(predictions: list[Prediction], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"videos": [p.to_dict() for p in predictions]}))
        return
    for p in predictions:
        print(p.path)
        if not p.ok:
            print(f"  unreadable: {p.error}")
        elif p.tasks is None:
            _print_top(p.top, "  ")
        else:
            for name, top in p.tasks.items():
                print(f"  {name}:")
                _print_top(top, "    ")


def _print_top(top: list[tuple[str, float]], indent: str) -> None:
    width = max(len(name) for name, _ in top)
    for rank, (name, prob) in enumerate(top, 1):
        print(f"{indent}{rank}. {name:<{width}}  {prob:.3f}")
