"""`aim-video demo`: AIM's ablation on the synthetic benchmark, end to end on a CPU."""

from __future__ import annotations

import argparse

from aim_video.cli import arguments
from aim_video.demo.plan import FULL, QUICK, VARIANTS, Plan
from aim_video.errors import UserError

# What the demo writes besides the runs (see aim_video.demo).
# Data loader processes per run: compute takes the cores they leave.
DEMO_WORKERS = 2
WRITTEN = ("report.json", "report.html", "results.png", "curves.png", "examples.png")


def _size(plan: Plan) -> str:
    return f"{len(plan.variants)} variants, {plan.epochs} epochs"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="reproduce AIM's ablation on the built-in synthetic benchmark (CPU, minutes)",
        description=(
            "Make the synthetic time-reversal benchmark, pretrain a small stand-in for CLIP on "
            "still images, then train and evaluate a linear probe, spatial-only adaptation, "
            "spatial + temporal adaptation, AIM and full fine-tuning with the ordinary engine "
            f"(the full plan: {_size(FULL)}). Prints a table and writes "
            f"{', '.join(WRITTEN)}; each variant's run, with its checkpoints and evaluation "
            "report, is in OUT/runs/{full,quick}/VARIANT. Every step is cached in OUT: rerunning "
            "resumes."
        ),
    )
    parser.add_argument("--out", default="aim-video-demo", help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help=f"a shorter plan ({_size(QUICK)}) on the same videos and stand-in "
                             "as the full one")
    parser.add_argument("--variants", default=None, metavar="NAME,...",
                        help=f"run only these of {', '.join(VARIANTS)}")
    arguments.add(parser, "workers", "no_progress")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    variants = tuple(args.variants.split(",")) if args.variants else None
    unknown = [name for name in variants or () if name not in VARIANTS]
    if unknown:  # before any work
        raise UserError(f"unknown demo variants {unknown}; choose from {list(VARIANTS)}")
    arguments.check_out(args.out, "folder")
    from aim_video.demo import run_demo

    report = run_demo(args.out, quick=args.quick, progress=not args.no_progress,
                      workers=DEMO_WORKERS if args.workers is None else args.workers,
                      variants=variants)
    standin = report.standin.metrics
    print("\nstand-in for CLIP (held-out stills): "
          + ", ".join(f"{k} {v}" for k, v in standin.items()))
    print(f"\nAIM ablation, {len(report.data.class_names)} classes in time-reversal pairs "
          f"(order-blind ceiling 50%), {report.plan.test_clips}-clip testing:\n")
    print(report.table())
    took = (f"results from the run of {report.seconds:.0f} s; nothing retrained"
            if report.cached else f"{report.seconds:.0f} s")
    print(f"\nwritten to {report.out_dir}: {', '.join(WRITTEN)} ({took})")
    return 0
