"""Training checkpoints: small (only what was trained), atomic, safe to load, and tied to the
frozen backbone they were trained on.

A checkpoint holds the trainable state (`model.trainable_state_dict()`; the whole model when
fine-tuning), optimiser, scheduler, grad scaler and every process's RNG state, the position in
the run, the resolved config, the class names, and the backbone's source and fingerprint. The
frozen backbone itself is not stored: it is re-loaded from `model.pretrained` and its
fingerprint must match, so adapters are never silently evaluated on other weights.

`transfer_weights` starts a new run's trained parts from another run's checkpoint (or a
released AIM model) on the same backbone: `train.init_from`.

Everything stored is tensors, containers and primitives, so loading uses
`torch.load(weights_only=True)`: a checkpoint file cannot run code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aim_video.engine.config import (
    PATH_KEYS,
    ConfigError,
    ModelConfig,
    RunConfig,
    config_from_dict,
    parse_override,
    with_paths,
)
from aim_video.errors import UserError
from aim_video.files import write_atomic
from aim_video.model import AIMViT
from aim_video.model.vit import RANDOM_SOURCE, parameter_group
from aim_video.weights import (
    CheckpointError,
    backbone_fingerprint,
    load_pretrained,
    resize_temporal_embedding,
    tensors_fingerprint,
)
from aim_video.weights.formats import convert_video_checkpoint

log = logging.getLogger(__name__)

FORMAT = "aim-video-checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


class RandomBackboneError(UserError, RuntimeError):
    """Training would adapt a frozen backbone that was never loaded."""


# ------------------------------------------------------------------------------------ RNG state
def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states, as tensors and primitives only."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python_version": version,
        "python_state": torch.tensor(mt, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_gauss": float(cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    assert kind == "MT19937"
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state()` captured."""
    random.setstate(
        (state["python_version"], tuple(state["python_state"].tolist()), state["python_gauss"])
    )
    np.random.set_state((
        "MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
        state["numpy_has_gauss"], state["numpy_gauss"],
    ))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------ files
def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Writes `state` atomically (`aim_video.files.write_atomic`), creating the folder.

    A crash mid-write leaves the previous checkpoint intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda temp: torch.save(state, temp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a training checkpoint written by `save_checkpoint`, on the CPU.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file, or not an aim-video
            training checkpoint (e.g. a released MMAction2 AIM file or a CLIP backbone).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint (truncated, corrupt or not a torch file): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    return _checked(state, path)


def _checked(state: object, path: Path) -> dict[str, Any]:
    """`state` if it is an aim-video training checkpoint this version understands."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        hint = ""
        if isinstance(state, dict) and "state_dict" in state:
            hint = (" It looks like a released AIM / MMAction2 checkpoint: load it with "
                    "aim_video.weights.load_aim_checkpoint.")
        raise CheckpointError(
            f"{path}: not an aim-video training checkpoint (no '{FORMAT}' marker).{hint}"
        )
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {state['format_version']} is newer than this "
            f"aim-video understands ({FORMAT_VERSION}); upgrade aim-video"
        )
    return state


def find_resume(resume: str | Path | None, out_dir: str | Path) -> Path | None:
    """`auto` -> `out_dir/last.pt` if it exists (else None); a path -> that path; None -> None."""
    if resume is None:
        return None
    if str(resume) == "auto":
        last = Path(out_dir) / LAST
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file to resume from")
    return path


def checkpoint_config(
    state: dict[str, Any], path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """The run config a checkpoint was trained with, with `overrides` applied.

    The one place that turns a checkpoint's stored config back into a `RunConfig`: evaluation,
    prediction and export all start here.

    Training stores its paths (`PATH_KEYS`) absolute, and the run folder (`train.out_dir`) with
    them. When the run folder has been moved or copied together with its data and backbone
    weights, a stored path that no longer exists is looked for at the same place relative to
    the checkpoint's folder as it was to the run folder; paths given in `overrides` are taken
    as they are.
    """
    cfg = config_from_dict(state["config"], list(overrides))
    given = {".".join(parse_override(text)[:2]) for text in overrides}
    then = state["config"].get("train", {}).get("out_dir")
    if not isinstance(then, str) or not os.path.isabs(then):
        return cfg  # saved before paths were stored absolute: nothing to relocate from
    now = os.path.dirname(os.path.abspath(path))
    moved = {}
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if key in given or not isinstance(value, str) or not os.path.isabs(value):
            continue
        if os.path.exists(value):
            continue
        candidate = os.path.normpath(os.path.join(now, os.path.relpath(value, then)))
        if os.path.exists(candidate):
            moved[key] = candidate
            log.info("%s: %s is not at %s; using %s (the same place relative to the checkpoint)",
                     path, key, value, candidate)
    return with_paths(cfg, moved) if moved else cfg


# ------------------------------------------------------------------------------------ model
def model_from_config(cfg: RunConfig, num_classes: int | None = None) -> AIMViT:
    """The model of a run (as `RunConfig.aim_config` describes it) with a random backbone,
    initialised from `train.seed`.

    The seed makes the random initialisation reproducible, so even a run trained with
    `allow_random_backbone` can be rebuilt for evaluation (its fingerprint then matches).
    """
    aim_cfg = cfg.aim_config(num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = AIMViT(aim_cfg)
    return model


def load_backbone(model: AIMViT, cfg: ModelConfig, *, training: bool) -> None:
    """Loads `cfg.pretrained` into the model's backbone, or checks that a random one is allowed.

    Args:
        model: a freshly built model.
        cfg: where the weights are and whether a random backbone is allowed.
        training: refuse a random *frozen* backbone unless `cfg.allow_random_backbone`.

    Raises:
        RandomBackboneError: training, backbone frozen, nothing loaded, and not allowed.
    """
    if cfg.pretrained:
        if not Path(cfg.pretrained).exists():
            raise CheckpointError(
                f"{cfg.pretrained}: no such backbone weights file (model.pretrained); give the "
                "image backbone's weights with --pretrained PATH"
            )
        report = load_pretrained(
            model, cfg.pretrained, format=cfg.pretrained_format, trust=cfg.trust_checkpoint
        )
        log.info("backbone: %s", report)  # the report names the file
        return
    if training and not model.cfg.full_finetune and not cfg.allow_random_backbone:
        # The reference code trained silently on a random frozen backbone unless a flag was
        # given; users lost whole runs to it.
        raise RandomBackboneError(
            "refusing to train adapters on a random frozen backbone: model.pretrained is not "
            "set, so no image weights were loaded, and adapters on a random frozen backbone "
            "learn next to nothing. Give the "
            "CLIP weights with --pretrained PATH (or --set model.pretrained=PATH), or pass "
            "--allow-random-backbone (model.allow_random_backbone=true) if a random frozen "
            "backbone is really intended."
        )
    log.warning("the backbone is random (no model.pretrained given)")


def checkpoint_state(
    model: AIMViT,
    *,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    progress: dict[str, Any],
    cfg_dict: dict[str, Any],
    class_names: list[str],
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The dict `save_checkpoint` writes (trainable weights moved to the CPU).

    Args:
        model: the unwrapped model (no DDP / compile wrapper).
        optimizer: its optimiser, or None.
        scheduler: its lr scheduler, or None.
        scaler: the fp16 grad scaler, or None.
        progress: the position in the run (epoch, step, history, best metric, bad files) and
            each process's `rng_state()`; tensors, containers and primitives only.
        cfg_dict: `config_to_dict(cfg)`.
        class_names: label index -> class name.
        fingerprint: `backbone_fingerprint(model)` if already known (it is slow for ViT-L).
    """
    weights = {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": weights,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "config": cfg_dict,
        "class_names": list(class_names),
        "backbone_source": model.backbone_source,
        "backbone_fingerprint": fingerprint or backbone_fingerprint(model),
        **progress,
    }


def check_backbone(model: AIMViT, state: dict[str, Any], path: str | Path) -> None:
    """The model's frozen backbone must be the one the checkpoint was trained on.

    Raises:
        CheckpointError: the fingerprints differ (names both, and both sources).
    """
    if model.cfg.full_finetune:
        return  # the checkpoint holds the whole model; nothing frozen to compare
    expected, actual = state["backbone_fingerprint"], backbone_fingerprint(model)
    if expected != actual:
        random_hint = ""
        if state["backbone_source"] == RANDOM_SOURCE:
            random_hint = " (it was trained on a random backbone seeded by train.seed)"
        raise CheckpointError(
            f"{path}: backbone mismatch: the checkpoint was trained on backbone {expected} from "
            f"{state['backbone_source']}{random_hint}, but the loaded backbone is {actual} from "
            f"{model.backbone_source}. Give the original weights with --pretrained PATH."
        )


def restore_model(model: AIMViT, state: dict[str, Any], path: str | Path) -> None:
    """Loads a checkpoint's trained weights into `model` (strict over the trainable set).

    Checks the backbone fingerprint first, then that the checkpoint holds exactly the model's
    trainable keys with matching shapes.
    """
    check_backbone(model, state, path)
    weights = state["model"]
    expected = set(model.trainable_state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the checkpoint's weights do not fit this model: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    own = model.state_dict()
    for name, tensor in weights.items():
        if own[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(tensor.shape)} in the checkpoint but "
                f"{tuple(own[name].shape)} in the model"
            )
    # Checked above: the file holds exactly the trainable set; the rest stays as loaded.
    model.load_state_dict({**model.state_dict(), **weights}, strict=True)


def model_from_checkpoint(
    state: dict[str, Any], path: str | Path, cfg: RunConfig, pretrained: str | None = None
) -> AIMViT:
    """Rebuilds a trained model: config + backbone weights + the checkpoint's trained weights.

    Args:
        state: `load_checkpoint(path)`.
        path: the checkpoint's path (for messages).
        cfg: the run config (usually the checkpoint's own).
        pretrained: backbone weights to use instead of `cfg.model.pretrained`.
    """
    if pretrained is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=pretrained))
    model = model_from_config(cfg, len(state["class_names"]))
    if not cfg.model.full_finetune:
        if not cfg.model.pretrained and state["backbone_source"] != RANDOM_SOURCE:
            raise ConfigError(
                f"{path}: the checkpoint was trained on the backbone from "
                f"{state['backbone_source']}, but no backbone weights are configured; "
                "give them with --pretrained PATH"
            )
        load_backbone(model, cfg.model, training=False)
    restore_model(model, state, path)
    return model


# ------------------------------------------------------------------------------------ transfer
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
        state = _checked(state, path)
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
