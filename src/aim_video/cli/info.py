"""`aim-video info`: parameter counts and FLOPs of a model configuration."""

from __future__ import annotations

import argparse
import json

import torch

from aim_video.cli import arguments
from aim_video.cli.arguments import positive_float, positive_int
from aim_video.model import ARCHS, AIMConfig, AIMViT, get_arch
from aim_video.model.config import ADAPTER_BLOCKS_HELP
from aim_video.model.flops import forward_flops

ADAPTATIONS = ("spatial", "temporal", "joint", "temporal_in")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="parameter counts and forward GFLOPs of a model",
        description="Total and trainable parameters (per group) and forward GFLOPs per clip.",
    )
    p.add_argument("--arch", default="ViT-B/16", choices=list(ARCHS), help="backbone")
    p.add_argument("--frames", type=positive_int, default=8, help="frames per clip")
    p.add_argument("--num-classes", type=positive_int, default=400, help="classes of the head")
    p.add_argument(
        "--adapt",
        nargs="*",
        default=["spatial", "temporal", "joint"],
        choices=ADAPTATIONS,
        help="which adaptations (default: spatial temporal joint = AIM; none = linear probe)",
    )
    p.add_argument("--full-finetune", action="store_true", help="train every parameter")
    p.add_argument("--adapter-blocks", default="all", help=ADAPTER_BLOCKS_HELP)
    p.add_argument("--bottleneck-ratio", type=positive_float, default=0.25,
                   help="adapter width / model width")
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs")
    arguments.add(p, "json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = AIMConfig(
        vit=get_arch(args.arch),
        num_frames=args.frames,
        num_classes=args.num_classes,
        full_finetune=args.full_finetune,
        adapter_blocks=args.adapter_blocks,
        bottleneck_ratio=args.bottleneck_ratio,
        # A frozen backbone with a linear head gets no temporal embedding: it would be trained.
        temporal_embedding="temporal" in args.adapt,
        **{name: name in args.adapt for name in ADAPTATIONS},
    )
    with torch.device("meta"):
        counts = AIMViT(cfg).parameter_counts()
    result = {
        "arch": args.arch,
        "frames": args.frames,
        "num_classes": args.num_classes,
        "adapt": sorted(args.adapt),
        "total_params": counts.pop("total"),
        "trainable_params": counts.pop("trainable"),
        "trainable_by_group": {k.removeprefix("trainable."): v for k, v in counts.items()},
    }
    if not args.no_flops:
        result["gflops_per_clip"] = round(forward_flops(cfg) / 1e9, 2)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.arch}, {args.frames} frames, {args.num_classes} classes, adapt: "
          f"{' '.join(result['adapt']) or 'none (linear probe)'}")
    print(f"  total parameters      {result['total_params']:>14,}")
    print(f"  trainable parameters  {result['trainable_params']:>14,} "
          f"({100 * result['trainable_params'] / result['total_params']:.1f}%)")
    for group, n in result["trainable_by_group"].items():
        print(f"    {group:<20}{n:>14,}")
    if "gflops_per_clip" in result:
        print(f"  forward GFLOPs / clip {result['gflops_per_clip']:>14,.1f}  (2 x multiply-adds)")
    return 0
