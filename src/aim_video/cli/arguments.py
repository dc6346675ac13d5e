"""Argument types and the help formatter that every sub-command shares."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """An argument type: an integer >= `low`, refused by the parser with the bound otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)  # counts of frames, classes, workers, ...
non_negative_int = int_at_least(0)  # counts that may be zero: videos of a split, loader workers


def positive_float(text: str) -> float:
    """A number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it says nothing (None, a flag, an empty list) or the help
    already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if (default is None or isinstance(default, bool) or default == []
                or "default" in (action.help or "")):
            return action.help
        return super()._get_help_string(action)
