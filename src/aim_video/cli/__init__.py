"""The `aim-video` command line: one small module per sub-command.

Each module in `COMMANDS` defines `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the default. Sub-commands parse and call the library; `main` turns what
goes wrong into one line on stderr and an exit status:

* 2: a `UserError` (a bad argument, config key, file or device) or a missing input file;
* 1: an output that cannot be written (no space, no permission, read-only), naming the file;
* 130: interrupted (Ctrl-C);
* a reader that closed the pipe (`aim-video eval --json | head -c 100`) ends the command
  quietly with status 1.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

from aim_video import __version__
from aim_video.cli.arguments import HelpFormatter
from aim_video.errors import UserError

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
    "watch",
    "extract",
    "export",
    "report",
)

# Failures to write an output that the user fixes by freeing space or choosing another folder.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


class _Parser(argparse.ArgumentParser):
    """Every parser (the sub-commands' too) shows the options' defaults in its help."""

    def __init__(self, *args, formatter_class: type = HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aim-video",
        description="Adapt a frozen image ViT (CLIP) into a video action recogniser (AIM).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than at the interpreter's exit
        return status
    except UserError as err:
        return _fail(args.command, str(err), 2)
    except BrokenPipeError:
        _stdout_to_devnull()
        return 1
    except FileNotFoundError as err:  # an input path the user gave
        return _fail(args.command, _os_message(err), 2)
    except OSError as err:
        if err.errno not in OUTPUT_ERRNOS:
            raise
        return _fail(args.command, _os_message(err), 1)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", 130)


def _fail(command: str, message: str, status: int) -> int:
    print(f"aim-video {command}: error: {message}", file=sys.stderr)
    return status


def _os_message(err: OSError) -> str:
    """`FILE: reason`, or the message of an error raised without a file name."""
    if err.filename is None or err.strerror is None:
        return str(err)
    return f"{err.filename}: {err.strerror}"


def _stdout_to_devnull() -> None:
    """What stdout still buffers goes nowhere: the interpreter's final flush would fail again
    and print a traceback (the recipe in Python's `signal` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (e.g. captured in a test)
        pass


if __name__ == "__main__":
    sys.exit(main())
