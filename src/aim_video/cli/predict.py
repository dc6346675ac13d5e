"""`aim-video predict`: top-k classes of videos with a trained checkpoint (or its ONNX export)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from tqdm import tqdm

from aim_video.errors import UserError

if TYPE_CHECKING:
    from aim_video.outputs import JsonlResults
    from aim_video.predictor import Prediction, Predictor

def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUTS, --checkpoint and the options shared by predict and extract."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders of videos, or list files (any annotation "
                             "format aim-video reads; labels are ignored)")
    parser.add_argument("--root", help="folder that relative paths in list files are under "
                        "(default: the list file's own folder)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--views", metavar="CLIPSxCROPS", help="test views, e.g. 3x1")
    parser.add_argument("--workers", type=int, help="decoding processes (default: the "
                                                    "checkpoint's data.num_workers)")
    parser.add_argument("--batch-size", type=int, help="videos per batch (default: eval.batch_size)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="top-k classes of video files",
        description="Classify videos with a training checkpoint, using the checkpoint's test "
                    "views. With --out, results are appended to a JSONL file as they come and a "
                    "rerun skips the inputs already there. Unreadable videos are reported one "
                    "line each on stderr; the exit status is 1 when any failed. Several "
                    "--checkpoint options trained on the same backbone answer every video "
                    "together, each task named by its run folder.",
    )
    add_input_arguments(parser)
    parser.add_argument("--checkpoint", action="append", metavar="PATH",
                        help="last.pt / best.pt of a run (--runtime torch); repeat it for "
                             "several tasks trained on one backbone, which then share it (each "
                             "result gets 'tasks': {RUN_FOLDER_NAME: {top}})")
    parser.add_argument("--pretrained", metavar="PATH", help="backbone weights (if moved)")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="onnx: run a file from aim-video export on onnxruntime (CPU)")
    parser.add_argument("--model", metavar="MODEL.onnx",
                        help="the exported file (--runtime onnx); it alone is enough")
    parser.add_argument("--top-k", type=int, default=5, help="classes per video (default 5)")
    parser.add_argument("--out", metavar="RESULTS.jsonl",
                        help="append one JSON object per input (path, ok, top, error)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.outputs import JsonlResults
    from aim_video.predictor import collect_inputs

    predictor = _predictor(args)
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
        print(f"{len(todo) - failed} predicted, {failed} unreadable ({retried} retried), "
              f"{already} already in {args.out}", file=sys.stderr)
        return 1 if failed else 0
    _print(printed, args.json)
    if failed:
        print(f"{failed} of {len(printed)} videos unreadable", file=sys.stderr)
    return 1 if failed else 0


def _predictor(args: argparse.Namespace) -> Predictor:
    """A checkpoint on torch, or an exported file on onnxruntime (--runtime onnx --model)."""
    from aim_video.predictor import Predictor

    if args.runtime == "torch":
        if args.model is not None:
            raise UserError("--model names an exported file, which runs with --runtime onnx")
        if not args.checkpoint:
            raise UserError("--checkpoint is required (or --runtime onnx --model MODEL.onnx)")
        return Predictor.from_checkpoints(args.checkpoint, pretrained=args.pretrained,
                                          device=args.device, views=args.views)
    from aim_video.export import onnx_predictor

    for option, value in (("--checkpoint", args.checkpoint), ("--pretrained", args.pretrained)):
        if value is not None:
            raise UserError(f"{option} is for --runtime torch; --runtime onnx takes --model "
                            "(the exported file holds the weights)")
    if args.model is None:
        raise UserError("--model MODEL.onnx is required with --runtime onnx")
    if args.device not in ("auto", "cpu"):
        raise UserError(f"--device {args.device}: --runtime onnx runs on the CPU")
    return onnx_predictor(args.model, views=args.views)


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
