"""`aim-video report`: rebuild report.html from an evaluation, timeline or demo folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="rebuild report.html from an evaluation, timeline or demo folder",
        description=(
            "Write FOLDER/report.html: one self-contained page (open it from disk) with the "
            "headline metrics, per-class accuracy, the confusions and, for each, the videos "
            "with the frames the model saw and their top-5 predictions. FOLDER is the --out "
            "folder of `aim-video eval` (which writes the report itself), of `aim-video "
            "timeline` (the video with its segments and windows), or the demo's output folder "
            "(the ablation page, linking each variant's report)."
        ),
    )
    parser.add_argument("folder", metavar="FOLDER", help="evaluation, timeline or demo folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.report import build_report

    folder = Path(args.folder)
    if (folder / "report.json").is_file() and not (folder / "metrics.json").is_file():
        from aim_video.demo import write_ablation_page

        path = write_ablation_page(folder)
    else:
        path = build_report(folder)
    print(path)
    return 0
