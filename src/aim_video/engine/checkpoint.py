"""Training checkpoints: small (only what was trained), atomic, safe to load, and tied to the
frozen backbone they were trained on.

A checkpoint holds the trainable state (`model.trainable_state_dict()`; the whole model when
fine-tuning), optimiser, scheduler, grad scaler and every process's RNG state, the position in
the run, the resolved config, the class names, and the backbone's source and fingerprint. The
frozen backbone itself is not stored: it is re-loaded from `model.pretrained` and its
fingerprint must match, so adapters are never silently evaluated on other weights.

Everything stored is tensors, containers and primitives, so loading uses
`torch.load(weights_only=True)`: a checkpoint file cannot run code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
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
from aim_video.model.vit import RANDOM_SOURCE
from aim_video.weights import CheckpointError, backbone_fingerprint, load_pretrained

log = logging.getLogger(__name__)

FORMAT = "aim-video-checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


class RandomBackboneError(UserError, RuntimeError):
    """Training would adapt a frozen backbone that was never loaded."""


# ------------------------------------------------------------------------------------ RNG state
def rng_state(device: torch.device) -> dict[str, Any]:
    """Python, NumPy, torch and (when `device` is a GPU) that GPU's generator states, as
    tensors and primitives only.

    Only the GPU this process computes on: a run resumed on fewer GPUs, or on other ones,
    restores each process's own state to the GPU it now uses (`set_rng_state`).
    """
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
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    assert kind == "MT19937"
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restores what `rng_state()` captured; its GPU state goes to `device`.

    Earlier checkpoints hold a list, every GPU's state that the process saw: the one at
    `device`'s index was its own when the GPUs are mapped as they were.
    """
    random.setstate(
        (state["python_version"], tuple(state["python_state"].tolist()), state["python_gauss"])
    )
    np.random.set_state((
        "MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
        state["numpy_has_gauss"], state["numpy_gauss"],
    ))
    torch.set_rng_state(state["torch"])
    gpu = state["cuda"]
    if isinstance(gpu, list):  # every GPU's state, in index order
        gpu = gpu[device.index] if device.type == "cuda" and device.index < len(gpu) else None
    if gpu is not None and device.type == "cuda":
        torch.cuda.set_rng_state(gpu, device)


# ------------------------------------------------------------------------------------ files
def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Writes `state` atomically (`aim_video.files.write_atomic`), creating the folder.

    A crash mid-write leaves the previous checkpoint intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda temp: torch.save(state, temp))


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a training checkpoint written by `save_checkpoint`, on the CPU: its state dict
    (trained weights, class names, config, progress; see `checkpoint_state`), no model.

    A model from it: `aim_video.Predictor.from_checkpoint` (ready for inference); a whole-model
    weights file (a released AIM model): `aim_video.load_aim_checkpoint`.

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
    return as_training_checkpoint(state, path)


def as_training_checkpoint(state: object, path: Path) -> dict[str, Any]:
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

    The engine's own step behind evaluation, export and `Predictor.from_checkpoint` (the way a
    user loads a trained model).

    Args:
        state: `read_training_checkpoint(path)`.
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
