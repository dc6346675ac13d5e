"""The `aim-video` command line: one small module per sub-command.

Each module in `COMMANDS` defines `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the default. Sub-commands parse and call the library; nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = (
    "demo",
    "info",
    "make_synthetic",
    "train",
    "evaluate",
    "predict",
    "check_data",
    "prepare",
    "timeline",
    "extract",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aim-video",
        description="Adapt a frozen image ViT (CLIP) into a video action recogniser (AIM).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"aim_video.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
