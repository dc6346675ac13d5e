"""`aim-video train`: train AIM adapters from a preset or YAML config."""

from __future__ import annotations

import argparse
import json

from aim_video.cli import arguments
from aim_video.engine.config import load_config


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
    arguments.add(parser, "config", required=True)
    arguments.add(parser, "set")
    parser.add_argument("--out", help="output folder (train.out_dir)")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue a run: 'auto' takes OUT/last.pt when present")
    parser.add_argument("--init-from", metavar="PATH",
                        help="start a fresh run's adapters, temporal embedding and (same classes) "
                             "head from another run's last.pt/best.pt or a released AIM "
                             "checkpoint (train.init_from; ignored when resuming)")
    arguments.add(parser, "pretrained")
    parser.add_argument("--allow-random-backbone", action="store_true",
                        help="train even though no backbone weights are given (rarely wanted)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a --pretrained or --init-from file that needs full pickle "
                             "(trusted files only)")
    arguments.add(parser, "no_progress", "json")
    parser.set_defaults(func=run)


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides plus those that the shorthand flags stand for."""
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    if args.pretrained:
        overrides.append(f"model.pretrained={args.pretrained}")
    if args.init_from:
        overrides.append(f"train.init_from={args.init_from}")
    if args.allow_random_backbone:
        overrides.append("model.allow_random_backbone=true")
    if args.trust_checkpoint:
        overrides.append("model.trust_checkpoint=true")
    return overrides


def run(args: argparse.Namespace) -> int:
    import os

    from aim_video.engine.train import train  # the heavy imports only when training
    from aim_video.report import ThumbnailWriter, build_eval_report

    arguments.check_out(args.out, "folder")
    cfg = load_config(args.config, config_overrides(args))
    # The final evaluations' thumbnails are written while evaluating (every process its
    # shard's), their pages from the folders rank 0 wrote.
    result = train(cfg, resume=args.resume, progress=not args.no_progress,
                   eval_observer=ThumbnailWriter)
    if result.completed and int(os.environ.get("RANK", "0")) == 0:
        for split in cfg.eval.splits:
            if (result.out_dir / f"eval_{split}" / "metrics.json").is_file():
                build_eval_report(result.out_dir / f"eval_{split}")
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
