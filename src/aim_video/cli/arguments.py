"""The command line's one grammar: every flag that several sub-commands share, defined once.

A flag means the same thing, with the same default and help, in every sub-command that has it
(`tests/test_cli.py` compares the parsers). A sub-command adds a shared flag with
`add(parser, "device", "views", ...)` and defines only the flags that are its own. Every
number is checked here, when the command line is read: a bad one is one line and exit status 2,
before any model is loaded. `predictor_from_args` builds the `Predictor` of predict, timeline
and extract from these flags, on PyTorch or on onnxruntime.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aim_video.errors import UserError

if TYPE_CHECKING:
    from aim_video.predictor import Predictor


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


def float_in(low: float, high: float = math.inf, *, low_open: bool = False,
             unit: str = "") -> Callable[[str], float]:
    """An argument type: a finite number in [low, high] ((low, high] with `low_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (low_open and value == low):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}{unit}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}{unit}, got {text}")
        return value

    return parse


positive_float = float_in(0, low_open=True)
# A stride below a millisecond asks for more windows than frames (a 10-minute video at 1 ns
# would be 6e11 windows): no frame rate makes it useful.
MIN_STRIDE = 1e-3


def views(text: str) -> str:
    """CLIPSxCROPS, e.g. 3x1, checked when the command line is read."""
    from aim_video.engine.config import ConfigError, parse_views

    try:
        parse_views(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not of the form CLIPSxCROPS, e.g. 3x1 or 1x3") from None
    return text


# name -> (flags, add_argument keywords). Help texts name the command where one differs.
SHARED: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "checkpoint": (("--checkpoint",), dict(
        action="append", metavar="PATH",
        help="last.pt / best.pt of a run. predict, timeline and watch take it repeated, for "
             "several tasks trained on one backbone: the backbone is loaded once and every input "
             "decoded once, each task named by its run folder; eval, export and extract (each "
             "task's adapters give their own features) take one")),
    "pretrained": (("--pretrained",), dict(
        metavar="PATH",
        help="image backbone weights, e.g. OpenAI CLIP ViT-B-16.pt; with a checkpoint, only "
             "where its backbone has moved since training")),
    "runtime": (("--runtime",), dict(
        choices=("torch", "onnx"), default="torch",
        help="torch: a checkpoint (--checkpoint); onnx: a file from aim-video export (--model) "
             "on onnxruntime, CPU")),
    "model": (("--model",), dict(
        metavar="MODEL.onnx", help="the exported file (--runtime onnx); it alone is enough")),
    "device": (("--device",), dict(
        default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N")),
    "views": (("--views",), dict(
        type=views, metavar="CLIPSxCROPS",
        help="test views, e.g. 3x1 or 1x3 (default: the checkpoint's); timeline, watch: "
             "1xCROPS, as a window is one clip")),
    "window": (("--window",), dict(
        type=float_in(0, low_open=True, unit=" s"), metavar="SECONDS",
        help="window length, uniform-sampling checkpoints only (default: data.num_frames x "
             "data.frame_interval frames)")),
    "stride": (("--stride",), dict(
        type=float_in(MIN_STRIDE, unit=" s"), metavar="SECONDS",
        help="time between window starts (default: the window's length)")),
    "json": (("--json",), dict(
        action="store_true",
        help="print one JSON object instead of the summary (watch: one JSON line a record)")),
    "top_k": (("--top-k",), dict(
        type=positive_int, default=5, metavar="K",
        help="classes listed per video (timeline, watch: per window)")),
    "threshold": (("--threshold",), dict(
        type=float_in(0, 1), default=0.5, metavar="P",
        help="least top-class probability of a window in a segment (0..1)")),
    "batch_size": (("--batch-size",), dict(
        type=positive_int, metavar="N",
        help="videos (timeline, extract --windows: windows) per model call "
             "(default: eval.batch_size)")),
    "workers": (("--workers",), dict(
        type=non_negative_int, metavar="N",
        help="worker processes; 0: work in this process (default: predict, extract: the "
             "checkpoint's data.num_workers; demo: 2; the others: the CPUs this process may "
             "use)")),
    "no_progress": (("--no-progress",), dict(action="store_true", help="no progress bar")),
    "set": (("--set",), dict(
        dest="overrides", action="extend", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
        help="override config values (eval, extract: the checkpoint's config), e.g. --set "
             "data.val=other.txt eval.batch_size=8")),
    "root": (("--root",), dict(
        metavar="DIR",
        help="folder that a list file's relative entries are under (default: the list "
             "file's own folder)")),
    "config": (("--config",), dict(
        help="a preset name (e.g. k400_vitb16_8f, synthetic_cpu) or a YAML file (extract "
             "with --pretrained alone: its model.arch and data settings; default "
             "k400_vitb16_8f)")),
    "format": (("--format",), dict(
        default="auto", help="annotation format (auto: by the file)")),
    "backend": (("--backend",), dict(default="pyav", help="video reader")),
    "class_names": (("--class-names",), dict(help="class names file, if the format needs one")),
    "frame_template": (("--frame-template",), dict(
        default="img_{:05d}.jpg", help="frame folders' file names")),
}


def add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str,
        **changes: Any) -> None:
    """Adds the shared flags `names` (keys of `SHARED`) to `parser`.

    `changes` may only make a flag required (`required=True`) or limit its choices: a default
    or help of its own would be another dialect.
    """
    if set(changes) - {"required", "choices"}:
        raise ValueError(f"a shared flag's {sorted(changes)} are defined once, in SHARED")
    for name in names:
        flags, kwargs = SHARED[name]
        parser.add_argument(*flags, **{**kwargs, **changes})


def add_inputs(parser: argparse.ArgumentParser) -> None:
    """INPUT... and --root, as predict and extract read them."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders of videos, or list files (any annotation "
                             "format aim-video reads; labels are ignored)")
    add(parser, "root")


def add_model(parser: argparse.ArgumentParser) -> None:
    """The model flags of predict, timeline and extract (see `predictor_from_args`)."""
    add(parser, "checkpoint", "pretrained", "runtime", "model", "device", "views")


def one_checkpoint(args: argparse.Namespace) -> str:
    """The single --checkpoint of eval, export and extract (repeatable in predict, timeline)."""
    given = args.checkpoint or []
    if len(given) != 1:
        raise UserError(f"--checkpoint: give exactly one (got {len(given)})")
    return given[0]


def check_out(path: str | os.PathLike[str] | None, kind: str) -> None:
    """Refuses an --out of the wrong kind before any work: `kind` is "file" or "folder"."""
    if path is None:
        return
    out = Path(path)
    if kind == "file" and out.is_dir():
        raise UserError(f"--out {path}: is a folder; give a file name")
    if kind == "folder" and out.exists() and not out.is_dir():
        raise UserError(f"--out {path}: is a file; give a folder (it is created)")


def predictor_from_args(args: argparse.Namespace, *, backbone_only: bool = False) -> Predictor:
    """The Predictor that predict, timeline and extract run, from `add_model`'s flags.

    --runtime torch loads the --checkpoint(s) (several: tasks on one backbone); --runtime onnx
    the exported --model. With `backbone_only` (extract), --pretrained without a checkpoint is
    the frozen image model alone, configured by --config.

    Raises:
        UserError: flags that do not go together, named in one line.
    """
    overrides = list(getattr(args, "overrides", None) or ())
    if args.runtime == "onnx":
        for flag, value in (("--checkpoint", args.checkpoint), ("--pretrained", args.pretrained),
                            ("--set", overrides), ("--config", getattr(args, "config", None))):
            if value:
                raise UserError(f"{flag} is for --runtime torch; --runtime onnx takes --model "
                                "(the exported file holds the weights and settings)")
        if args.model is None:
            raise UserError("--model MODEL.onnx is required with --runtime onnx")
        if args.device not in ("auto", "cpu"):
            raise UserError(f"--device {args.device}: --runtime onnx runs on the CPU")
        from aim_video.export import onnx_predictor

        return onnx_predictor(args.model, views=args.views)
    if args.model is not None:
        raise UserError("--model names an exported file, which runs with --runtime onnx")
    from aim_video.predictor import Predictor

    if args.checkpoint:
        if getattr(args, "config", None):
            raise UserError("--config is for --pretrained alone; a checkpoint holds its config "
                            "(change it with --set)")
        return Predictor.from_checkpoints(args.checkpoint, pretrained=args.pretrained,
                                          device=args.device, views=args.views,
                                          overrides=overrides)
    if backbone_only and args.pretrained:
        from aim_video.engine.config import load_config, with_views

        cfg = with_views(load_config(args.config or "k400_vitb16_8f", overrides), args.views)
        return Predictor.from_backbone(args.pretrained, cfg, device=args.device)
    also = " or --pretrained (the frozen image model's features)" if backbone_only else ""
    raise UserError(f"--checkpoint is required (or --runtime onnx --model MODEL.onnx{also})")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it says nothing (None, a flag, an empty list) or the help
    already names it. A description or epilog line indented by two spaces (a table row, such
    as the exit statuses) is kept as written; other lines are filled to the terminal."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line if line.startswith("  ")
                         else super(HelpFormatter, self)._fill_text(line, width, indent)
                         for line in text.splitlines())

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if (default is None or isinstance(default, bool) or default == []
                or "default" in (action.help or "")):
            return action.help
        return super()._get_help_string(action)
