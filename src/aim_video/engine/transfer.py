"""Starting a new run's trained parts from another run's checkpoint, or a released AIM model,
on the same frozen backbone: `transfer_weights` (`train.init_from`).

Strict as every load here: each key of the source is copied or refused by name, and the
source's backbone must be the run's (by fingerprint), so adapters never start from weights
trained on another backbone.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aim_video.engine.checkpoint import as_training_checkpoint
from aim_video.model import AIMViT
from aim_video.model.vit import parameter_group
from aim_video.weights import (
    CheckpointError,
    backbone_fingerprint,
    resize_temporal_embedding,
    tensors_fingerprint,
)
from aim_video.weights.formats import convert_video_checkpoint


@dataclass
class Transfer:
    """What `transfer_weights` did; `lines()` is what training logs."""

    path: str  # the file read
    kind: str  # "aim-video checkpoint", or the weights format of a whole-model file ("aim")
    loaded: list[str] = field(default_factory=list)  # our names copied into the model
    new: list[str] = field(default_factory=list)  # model keys kept at their initialisation
    head: str = ""  # kept, reordered or re-initialised, and why
    notes: list[str] = field(default_factory=list)  # the backbone check, resized embeddings

    def lines(self) -> list[str]:
        """Two log lines: what was loaded and checked, and what became of the head."""
        groups = sorted({parameter_group(k) for k in self.new if not k.startswith("head.")})
        new = f" ({', '.join(groups)})" if groups else ""
        return [
            f"init_from {self.path} ({self.kind}): {len(self.loaded)} tensors loaded, "
            f"{len(self.new)} new by design{new}; " + "; ".join(self.notes),
            f"init_from head: {self.head}",
        ]


@dataclass
class _Source:
    """A transfer source's tensors under our names, and what the file says about them."""

    tensors: dict[str, torch.Tensor]
    file_keys: dict[str, str]  # our name -> the file's name, for messages
    class_names: list[str] | None  # None: the file does not store them (released AIM files)
    fingerprint: str | None  # the recorded backbone fingerprint (aim-video checkpoints)
    kind: str


def _transfer_source(path: Path, trust: bool) -> _Source:
    """Reads an aim-video training checkpoint, or a whole-model file (`weights.VIDEO_FORMATS`)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (train.init_from)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.load's note on TorchScript archives
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - read_checkpoint below tells what the file is
        state = None  # e.g. a released AIM file, whose `meta` needs the full unpickler
    if isinstance(state, dict) and "format" in state:
        state = as_training_checkpoint(state, path)
        return _Source(dict(state["model"]), {k: k for k in state["model"]},
                       list(state["class_names"]), state["backbone_fingerprint"],
                       "aim-video checkpoint")
    _, fmt, converted = convert_video_checkpoint(
        path, trust=trust, image_hint="train.init_from takes an aim-video last.pt / best.pt "
        "or a released AIM checkpoint (image weights go to --pretrained)")
    if converted.unknown:
        raise CheckpointError(
            f"{path}: keys that are not part of an AIM model, refused: "
            f"{', '.join(converted.unknown)}"
        )
    return _Source(converted.tensors, dict(converted.sources), None, None, f"{fmt} checkpoint")


def _check_source_backbone(source: _Source, path: Path, model: AIMViT, fingerprint: str) -> str:
    """The source's backbone must be the run's; returns what was compared, for the log.

    Raises:
        CheckpointError: the fingerprints differ (names both, and what was compared).
    """
    held = {k: v for k, v in source.tensors.items() if parameter_group(k) == "backbone"}
    if held:  # a released AIM file or a fine-tuned run: the file holds its backbone
        theirs = tensors_fingerprint(held)
        what = f"the fingerprint of the file's {len(held)} backbone tensors"
    elif source.fingerprint is not None:
        theirs, what = source.fingerprint, "the backbone fingerprint the checkpoint records"
    else:
        raise CheckpointError(f"{path}: holds neither a backbone nor its fingerprint, so its "
                              "adapters cannot be checked against this run's backbone")
    if theirs != fingerprint:
        raise CheckpointError(
            f"{path}: backbone mismatch: its adapters were trained on backbone {theirs} ({what}), "
            f"but this run's backbone is {fingerprint} from {model.backbone_source}. Give the "
            "backbone the source was trained on with --pretrained PATH."
        )
    return f"backbone {fingerprint} checked ({what})"


def _transfer_head(
    source: _Source, path: Path, class_names: list[str], tensors: dict[str, torch.Tensor]
) -> str:
    """Keeps, reorders or drops the source's head in `tensors` (in place); says which."""
    theirs = source.class_names
    if "head.weight" not in tensors:
        return "re-initialised (the source has none)"
    if theirs == class_names:
        return f"kept (the same {len(class_names)} classes in the same order)"
    if theirs is not None and len(set(theirs)) == len(theirs) and set(theirs) == set(class_names):
        rows = [theirs.index(name) for name in class_names]
        for key in ("head.weight", "head.bias"):
            if key in tensors:
                tensors[key] = tensors[key][rows]
        return (f"kept, rows reordered to this run's class order (the same {len(class_names)} "
                "classes)")
    for key in [k for k in tensors if k.startswith("head.")]:
        del tensors[key]
    if theirs is None:
        return (f"re-initialised for {len(class_names)} classes ({path} stores no class "
                f"names; its head has {source.tensors['head.weight'].shape[0]} rows)")
    only_theirs = [n for n in theirs if n not in set(class_names)]
    only_ours = [n for n in class_names if n not in set(theirs)]
    return (f"re-initialised: the classes differ by name ({len(theirs)} in the source, "
            f"{len(class_names)} here; only in the source: {_few(only_theirs)}; only here: "
            f"{_few(only_ours)})")


def _few(names: list[str], limit: int = 5) -> str:
    """The first `limit` names for a log line, and how many more."""
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "-"


def transfer_weights(
    model: AIMViT,
    path: str | Path,
    class_names: list[str],
    *,
    trust: bool = False,
    fingerprint: str | None = None,
) -> Transfer:
    """Starts a fresh run's trained parts from another run's checkpoint or a released AIM model.

    The adapters, temporal embedding and `ln_post` are copied; the temporal embedding is
    interpolated when the frame count differs (`weights.resize_temporal_embedding`). The head
    is kept when the classes match by name (rows permuted when the same names come in another
    order) and re-initialised otherwise. Strict: every key of the source is loaded, or refused
    by name; a part of this model that the source lacks altogether (e.g. `T_Adapter_in`, or
    the head) keeps its initialisation, while a part the source has only in some blocks is
    refused as missing. The source's backbone must be this run's (by fingerprint).

    Args:
        model: the new run's model, its backbone loaded.
        path: an aim-video `last.pt` / `best.pt`, or a whole-model `aim` / `ours` weights file.
        class_names: the new run's classes (label index -> name).
        trust: unpickle a file that the safe loader refuses (released AIM files keep numpy
            objects in `meta`); trusted files only.
        fingerprint: `backbone_fingerprint(model)` if already known.

    Raises:
        CheckpointError: unreadable or image-only file, another backbone, or keys that do not
            fit (the message names them).
    """
    path = Path(path)
    source = _transfer_source(path, trust)
    report = Transfer(str(path), source.kind)
    everything = model.state_dict()
    # Keys this model has no place for are refused first: a stray backbone-looking name would
    # otherwise surface as a backbone mismatch.
    _refuse(path, source, {"not in this model": [
        source.file_keys.get(k, k) for k in source.tensors if k not in everything]})
    fingerprint = fingerprint or backbone_fingerprint(model)
    report.notes.append(_check_source_backbone(source, path, model, fingerprint))

    own = {k: v for k, v in everything.items() if parameter_group(k) != "backbone"}
    tensors = {k: v for k, v in source.tensors.items() if parameter_group(k) != "backbone"}
    report.head = _transfer_head(source, path, class_names, tensors)
    te, want = tensors.get("temporal_embedding"), own.get("temporal_embedding")
    if te is not None and want is not None and te.ndim == 3 and te.shape[2] == want.shape[2]:
        if te.shape[1] != want.shape[1]:
            tensors["temporal_embedding"] = resize_temporal_embedding(te, want.shape[1])
            report.notes.append(f"temporal_embedding {te.shape[1]} -> {want.shape[1]} frames "
                                "(linear)")
    # A part the source has in some blocks but not in others is another adapter layout; a part
    # it lacks altogether (or the head it does not pass on) is new by design.
    parts = {parameter_group(k) for k in tensors}
    absent = [k for k in own if k not in tensors]
    _refuse(path, source, {
        "wrong shape": [f"{source.file_keys.get(k, k)} {tuple(v.shape)} != model "
                        f"{tuple(own[k].shape)}"
                        for k, v in tensors.items() if v.shape != own[k].shape],
        "missing from the source": [
            k for k in absent if parameter_group(k) in parts and not k.startswith("head.")],
    })

    # Checked above: every source key fits; what it lacks is new by design and keeps its init.
    model.load_state_dict({**everything, **tensors}, strict=True)
    report.loaded, report.new = sorted(tensors), sorted(absent)
    return report


def _refuse(path: Path, source: _Source, refused: dict[str, list[str]]) -> None:
    """Raises a CheckpointError listing each kind of key that does not fit, if any."""
    if not any(refused.values()):
        return
    lines = [f"{path}: the {source.kind} does not fit this run's model (train.init_from):"]
    lines += [f"  {label} ({len(keys)}): {', '.join(keys)}" for label, keys in refused.items()
              if keys]
    raise CheckpointError("\n".join(lines))
