"""`aim-video predict`: top-k classes of videos with a trained checkpoint."""

from __future__ import annotations

import argparse
import json

from aim_video.cli.train import user_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="top-k classes of video files",
        description="Classify videos (files or folders of them) with a training checkpoint, "
                    "using the checkpoint's test views. Unreadable videos are reported.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO_OR_FOLDER")
    parser.add_argument("--checkpoint", required=True, help="last.pt / best.pt of a run")
    parser.add_argument("--top-k", type=int, default=5, help="classes per video (default 5)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--views", metavar="CLIPSxCROPS", help="test views, e.g. 3x1")
    parser.add_argument("--pretrained", metavar="PATH", help="backbone weights (if moved)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.engine.predict import predict

    status: list[int] = []
    with user_errors("predict", status):
        predictions = predict(args.videos, args.checkpoint, top_k=args.top_k,
                              device=args.device, pretrained=args.pretrained, views=args.views)
    if status:
        return status[0]
    if args.json:
        print(json.dumps({"videos": [
            {"path": p.path, "ok": p.ok, "error": p.error,
             "top": [{"class": name, "prob": prob} for name, prob in p.top]}
            for p in predictions
        ]}))
        return 0
    for p in predictions:
        print(p.path)
        if not p.ok:
            print(f"  unreadable: {p.error}")
            continue
        width = max(len(name) for name, _ in p.top)
        for rank, (name, prob) in enumerate(p.top, 1):
            print(f"  {rank}. {name:<{width}}  {prob:.3f}")
    return 0
