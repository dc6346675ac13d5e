"""Strict loading: a checkpoint's tensors, under our names, copied into a model only when every
key fits (`load_pretrained`, the image backbone; `load_converted`, the one check behind it and
`load_aim_checkpoint`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aim_video.model.vit import AIMViT, parameter_group
from aim_video.weights.formats import (
    CheckpointError,
    Converted,
    RawCheckpoint,
    detect_format,
    is_image_part,
    layout_for,
    listed,
    read_checkpoint,
    to_ours,
)
from aim_video.weights.resize import resize_to_model


# ============================================================================ reports
@dataclass
class LoadReport:
    """What `load_pretrained` did.

    Attributes:
        path: the file read.
        format: its format (one of `FORMATS`).
        auto: whether the format was detected from the keys rather than given.
        loaded: our names of the tensors copied into the model.
        kept_init: model keys not loaded, all new by design (adapters, temporal embedding,
            head; `ln_post` when the file has none), left as initialised. "New by design" is
            `parameter_group(name) != "backbone"` (see `aim_video.model.vit`).
        ignored: file keys not used, by design (text tower, `proj`, ...; the video parts of an
            AIM file when only the backbone is loaded).
        resized: notes on embeddings interpolated to the model's grid or frame count.
    """

    path: str
    format: str
    auto: bool
    loaded: list[str] = field(default_factory=list)
    kept_init: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        how = "detected" if self.auto else "given"
        parts = [
            f"{self.format} ({how}) from {self.path}: {len(self.loaded)} tensors loaded",
            f"{len(self.kept_init)} new by design kept at init",
            f"{len(self.ignored)} file keys ignored by design",
        ]
        parts += [f"resized {note}" for note in self.resized]
        return "; ".join(parts)


# ============================================================================ strict loading
def _named(ours: str, source: str) -> str:
    return ours if ours == source else f"{ours} (file: {source})"


def _misfit(
    model: AIMViT, tensors: Mapping[str, torch.Tensor], converted: Converted, full: bool
) -> dict[str, list[str]]:
    """Missing, unexpected and wrong-shaped keys of `tensors` against the model."""
    expected = model.state_dict()
    # ln_post may be absent (an image model without one); the video parts too, unless `full`.
    required = [k for k in expected if full or parameter_group(k) == "backbone"]
    # Keys the model lacks are named as the file names them.
    unexpected = [converted.sources[k] for k in tensors if k not in expected]
    return {
        "missing": [k for k in required if k not in tensors],
        "unexpected": converted.unknown + unexpected,
        "wrong shape": [
            f"{_named(k, converted.sources[k])} {tuple(v.shape)} != model "
            f"{tuple(expected[k].shape)}"
            for k, v in tensors.items()
            if k in expected and v.shape != expected[k].shape
        ],
    }


def load_converted(
    model: AIMViT, converted: Converted, path: Path, fmt: str, auto: bool, full: bool
) -> LoadReport:
    """The one strict check, then the copy. See `load_pretrained` for the rules."""
    tensors = dict(converted.tensors)
    report = LoadReport(str(path), fmt, auto, ignored=list(converted.ignored))
    if not full:
        video = [k for k in tensors if not is_image_part(k)]
        report.ignored += video  # the adapters / head of a video model: see load_aim_checkpoint
        for k in video:
            del tensors[k]
    report.resized = resize_to_model(tensors, model.state_dict())

    misfit = {k: keys for k, keys in _misfit(model, tensors, converted, full).items() if keys}
    if misfit:
        vit = model.cfg.vit
        lines = [
            f"{path}: the {fmt} checkpoint does not fit the model (width {vit.width}, "
            f"{vit.layers} layers, {vit.image_size} px / patch {vit.patch_size}):"
        ]
        lines += [f"  {label} ({len(keys)}): {listed(keys)}" for label, keys in misfit.items()]
        raise CheckpointError("\n".join(lines))

    # Checked above: what the file lacks is new by design and keeps the model's own values.
    model.load_state_dict({**model.state_dict(), **tensors}, strict=True)
    model.backbone_source = f"{fmt}:{path}"
    report.loaded = list(tensors)
    report.kept_init = [k for k in model.state_dict() if k not in tensors]
    return report


def load_pretrained(
    model: AIMViT,
    path: str | Path,
    *,
    format: str = "auto",
    trust: bool = False,
    full: bool = False,
) -> LoadReport:
    """Loads image-backbone weights (any of `FORMATS`) into `model`, strictly.

    Every backbone weight of the model must be in the file with the model's shape (a different
    patch grid is interpolated first, and reported); every file key must be used or be one of
    the format's keys ignored by design (text tower, `proj`, ...). `ln_post` is loaded when the
    file has it. The parts AIM adds (adapters, temporal embedding, head) keep their
    initialisation; from an `aim`/`ours` file they are ignored unless `full`.

    Args:
        model: the model to fill in place.
        path: the checkpoint file (or a Hugging Face model folder).
        format: one of `FORMATS`, or "auto" to detect it from the keys.
        trust: unpickle files that the safe loader refuses (trusted sources only).
        full: load the whole video model from an `aim`/`ours` file: then every model key must be
            in it (a different frame count is interpolated).

    Returns:
        What was loaded, kept, ignored and resized. Also sets `model.backbone_source`.

    Raises:
        CheckpointError: unreadable file, or keys that do not fit (the message lists them).
    """
    raw = read_checkpoint(path, trust=trust)
    auto = format == "auto"
    fmt = detect_format(raw) if auto else format
    converted = to_ours(raw.state, layout_for(fmt, list(raw.state)))
    try:
        return load_converted(model, converted, raw.path, fmt, auto, full)
    except CheckpointError as err:
        if not auto:
            err.args = (err.args[0] + _detection_hint(raw, fmt),)
        raise


def _detection_hint(raw: RawCheckpoint, given: str) -> str:
    try:
        detected = detect_format(raw)
    except CheckpointError:
        return ""
    if detected == given:
        return ""
    return f"\n  (format {given!r} was given; the keys look like {detected!r})"
