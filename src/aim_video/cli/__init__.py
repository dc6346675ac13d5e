"""The `aim-video` command line: one small module per sub-command.

Each module in `COMMANDS` defines `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the default; the flags that several commands share are defined once, in
`aim_video.cli.arguments`. Sub-commands parse and call the library; `main` turns what goes
wrong into one line on stderr and an exit status of one meaning (`EXIT_STATUSES`, printed at
the end of every `--help`).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import traceback

from aim_video import __version__
from aim_video.cli.arguments import HelpFormatter
from aim_video.errors import OutputFailed, UserError

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

# The exit statuses, one meaning each, in every command.
EXIT_OK = 0  # all done
EXIT_SOME_INPUTS = 1  # done, but some inputs could not be read (each named on stderr)
EXIT_USER_ERROR = 2  # nothing done: a mistake in the arguments, config or files, in one line
EXIT_OUTPUT_FAILED = 3  # stopped: an output could not be produced (written or verified)
EXIT_INTERNAL = 70  # a bug (EX_SOFTWARE): the traceback is printed
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT) or SIGTERM
EXIT_CLOSED_PIPE = 141  # the reader of stdout closed it (as a shell reports SIGPIPE)

EXIT_STATUSES = (
    (EXIT_OK, "all done"),
    (EXIT_SOME_INPUTS, "done, but some inputs could not be read (each named on stderr)"),
    (EXIT_USER_ERROR, "nothing done: an argument, config or file to fix (one line on stderr)"),
    (EXIT_OUTPUT_FAILED, "stopped: an output could not be written or failed its own check"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C, SIGTERM)"),
    (EXIT_CLOSED_PIPE, "the reader of the output closed the pipe"),
    (EXIT_INTERNAL, "an internal error (a bug; the traceback is printed: please report it)"),
)
EPILOG = "exit status:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_STATUSES)

# Failures to write an output that the user fixes by freeing space or choosing another folder.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


class _Parser(argparse.ArgumentParser):
    """Every parser (the sub-commands' too) shows the options' defaults and the exit statuses
    in its help, and says a bad argument in one line (exit status 2)."""

    def __init__(self, *args, formatter_class: type = HelpFormatter, **kwargs) -> None:
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        """One line naming the command and the argument, instead of usage then the error."""
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    previous = _interrupt_on_sigterm()
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than at the interpreter's exit
        return status
    except UserError as err:
        return _fail(args.command, str(err), EXIT_USER_ERROR)
    except OutputFailed as err:
        return _fail(args.command, str(err), EXIT_OUTPUT_FAILED)
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_CLOSED_PIPE
    except FileNotFoundError as err:  # an input path the user gave
        return _fail(args.command, _os_message(err), EXIT_USER_ERROR)
    except OSError as err:
        if err.errno not in OUTPUT_ERRNOS:
            return _crash(args.command)
        return _fail(args.command, _os_message(err), EXIT_OUTPUT_FAILED)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", EXIT_INTERRUPTED)
    except Exception:  # noqa: BLE001 - a bug: say so with its traceback and a status of its own
        return _crash(args.command)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt_on_sigterm() -> signal.Handlers | None:
    """SIGTERM (a `kill`, a scheduler's stop) ends a command as Ctrl-C does: the same clean-up
    (`finally` blocks, atomic outputs left whole) and status 130. Returns the handler it
    replaced; None where handlers cannot be set (not the main thread)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # signal only works in the main thread
        return None


def _crash(command: str) -> int:
    """A bug: its traceback, then one line saying so; never mistaken for a user's error."""
    traceback.print_exc()
    print(f"aim-video {command}: internal error (a bug; please report it with the traceback "
          "above)", file=sys.stderr)
    return EXIT_INTERNAL


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
