"""`aim-video train`: train AIM adapters from a preset or YAML config."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator

from aim_video.engine.checkpoint import RandomBackboneError
from aim_video.engine.config import ConfigError, load_config
from aim_video.weights import CheckpointError

# Errors a user fixes by changing an argument, a file or the config: a one-line message, no
# traceback (ValueError covers bad annotation lines and impossible data settings).
USER_ERRORS = (ConfigError, CheckpointError, RandomBackboneError, FileNotFoundError,
               FileExistsError, ValueError)


@contextlib.contextmanager
def user_errors(command: str, status: list[int]) -> Iterator[None]:
    """Turns `USER_ERRORS` into `aim-video COMMAND: error: ...` and exit status 2."""
    try:
        yield
    except USER_ERRORS as err:
        print(f"aim-video {command}: error: {err}", file=sys.stderr)
        status.append(2)


def add_config_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """--config and --set, shared by train and eval."""
    parser.add_argument("--config", required=required,
                        help="a preset name (e.g. k400_vitb16_8f, synthetic_cpu) or a YAML file")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override config values, e.g. --set optim.lr=1e-4 data.num_workers=8")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train AIM adapters on a video data set",
        description=(
            "Train the adapters of a frozen image backbone. Writes config.yaml, last.pt, best.pt, "
            "metrics.jsonl, bad_files.json and curves.png into the output folder. Multi-GPU: "
            "torchrun --nproc_per_node N $(which aim-video) train ..."
        ),
    )
    add_config_arguments(parser, required=True)
    parser.add_argument("--out", help="output folder (train.out_dir)")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue a run: 'auto' takes OUT/last.pt when present")
    parser.add_argument("--pretrained", metavar="PATH",
                        help="image backbone weights, e.g. OpenAI CLIP ViT-B-16.pt")
    parser.add_argument("--allow-random-backbone", action="store_true",
                        help="train even though no backbone weights are given (rarely wanted)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a --pretrained file that needs full pickle (trusted files only)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=run)


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides plus those that the shorthand flags stand for."""
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    if args.pretrained:
        overrides.append(f"model.pretrained={args.pretrained}")
    if args.allow_random_backbone:
        overrides.append("model.allow_random_backbone=true")
    if args.trust_checkpoint:
        overrides.append("model.trust_checkpoint=true")
    return overrides


def run(args: argparse.Namespace) -> int:
    from aim_video.engine.train import train  # the heavy imports only when training

    status: list[int] = []
    with user_errors("train", status):
        result = train(load_config(args.config, config_overrides(args)), resume=args.resume,
                       progress=not args.no_progress)
    if status:
        return status[0]
    if args.json:
        print(json.dumps({
            "out_dir": str(result.out_dir), "completed": result.completed,
            "global_step": result.global_step, "train_seconds": result.train_seconds,
            "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "final_metrics": result.final_metrics, "history": result.history,
        }))
        return 0
    state = "finished" if result.completed else "stopped early (train.max_steps)"
    print(f"training {state} after {result.global_step} steps in {result.train_seconds:.1f} s")
    for key, value in result.final_metrics.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"  run folder: {result.out_dir}")
    if result.best_checkpoint:
        print(f"  best checkpoint: {result.best_checkpoint}")
    return 0
