"""What a run is: model + data + optimiser + training + evaluation settings.

Typed dataclasses with a one-line comment per field, YAML presets shipped in
`aim_video/configs/`, and `--set section.key=value` overrides. A preset may start from other
presets with `base: [name, ...]`: each base is merged in order, section by section (one level of
plain dict update), then the preset's own sections. Bases cannot have bases themselves, so
every preset reads completely from at most three short files.

The resolved config is saved beside every run (`config.yaml`) and inside every checkpoint, so
a checkpoint alone says how it was trained.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from aim_video.data.dataset import DataConfig
from aim_video.errors import UserError
from aim_video.files import write_text_atomic
from aim_video.model.config import AIMConfig, Adaptation, RecomputePolicy, get_arch

Precision = Literal["auto", "bf16", "fp16", "fp32"]


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be applied; the message names the key or file."""


# The backbone sizes `model` may set instead of the arch's (tiny test models); the input side is
# `data.input_size`.
VIT_SIZES = ("width", "layers", "heads", "patch_size")


@dataclass(frozen=True)
class ModelConfig(Adaptation):
    """The network: a named backbone (or explicit sizes for tiny models), its weights, and
    AIM's adaptation.

    The adaptation's settings (`spatial`, `scale`, `drop_path`, ...) are inherited from
    `aim_video.model.config.Adaptation`, where they are defined once for `AIMConfig` too. The
    rest of `AIMConfig` comes from other sections (see `RunConfig.aim_config`).
    """

    arch: str = "ViT-B/16"  # backbone, a key of aim_video.model.ARCHS
    width: int | None = None  # the token width instead of the arch's (tiny test models)
    layers: int | None = None  # the number of blocks instead of the arch's
    heads: int | None = None  # the attention heads instead of the arch's
    patch_size: int | None = None  # the patch side in pixels instead of the arch's
    num_classes: int | None = None  # head size; None: the number of classes in the train set
    pretrained: str | None = None  # image backbone weights (CLIP .pt, open_clip, HF, ...)
    pretrained_format: str = "auto"  # format of `pretrained`; auto-detected by default
    allow_random_backbone: bool = False  # train a frozen backbone that was never loaded
    # Allow pickle (non-weights-only) loading of `pretrained` and `train.init_from`.
    trust_checkpoint: bool = False


@dataclass
class OptimConfig:
    """AdamW with a per-step cosine schedule and linear warm-up (the AIM recipe)."""

    lr: float = 3e-4  # peak learning rate of the head, for the total batch of the recipe
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on norms, embeddings)
    no_decay_bias: bool = True  # no weight decay on biases either
    backbone_lr_mult: float = 1.0  # lr factor for every trainable parameter except the head
    # Further factor for the image model's own weights when they train (full fine-tuning).
    pretrained_lr_mult: float = 1.0
    # Further factor for the temporal embedding, the only input that tells frames apart: it
    # starts at zero and Adam moves it by about lr per step (`synthetic_cpu`: 10).
    temporal_embedding_lr_mult: float = 1.0
    epochs: int = 30  # training epochs; the schedule spans all of them
    warmup_epochs: float = 2.5  # linear warm-up length, converted to optimiser steps
    min_lr: float = 0.0  # the cosine's floor for the head's lr (other groups scale with it)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    accum_steps: int = 1  # micro-batches accumulated per optimiser step
    batch_size: int = 8  # clips per process per micro-batch (total = x processes x accum)


@dataclass
class TrainConfig:
    """How the training program runs: where it writes, precision, cadence, reproducibility."""

    out_dir: str = "runs/aim"  # run folder: config, checkpoints, metrics, plots
    # auto: bf16 on a CUDA GPU that computes it natively (A100, H100, ...), fp16 with the grad
    # scaler on older GPUs (V100, T4), fp32 on the CPU.
    precision: Precision = "auto"
    eval_every: int = 1  # validate every N epochs (and after the last); 0: only at the end
    save_every_steps: int = 0  # also save last.pt every N optimiser steps; 0: epoch ends only
    # Also save last.pt every N minutes (under torchrun noticed within 20 steps); 0: off.
    save_every_minutes: float = 0.0
    keep_epoch_checkpoints: bool = False  # keep epoch_{N}.pt beside last.pt and best.pt
    log_every: int = 20  # optimiser steps between metrics lines and progress-bar loss updates
    seed: int = 0  # seeds model init, dropout and the sampler (data.seed seeds augmentation)
    max_steps: int | None = None  # stop (and save) after this many optimiser steps in total
    # torch.compile the model; the training loader then drops each epoch's short last batch,
    # whose other shape would compile the model again mid-epoch.
    compile: bool = False
    # Deterministic GPU kernels (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG
    # :4096:8, no cuDNN autotuning), so that a resumed GPU run repeats an uninterrupted one;
    # slower, and an op without such a kernel stops the run. CPU runs are deterministic anyway.
    deterministic: bool = False
    channels_last: bool = False  # channels-last memory format for the patch convolution
    # Recompute activations in backward (memory for compute): false, true (= "blocks"), or a
    # policy: "mlp" (the MLP's hidden activation), "attention_mlp", "blocks" (whole blocks).
    # The model receives it as AIMConfig.grad_checkpointing (RunConfig.aim_config).
    grad_checkpointing: bool | RecomputePolicy = False
    tensorboard: bool = True  # also log to TensorBoard when it is installed
    plots: bool = True  # write curves.png and confusion-matrix PNGs (matplotlib)
    device: str = "auto"  # auto: the local CUDA GPU if any, else cpu; or cpu, cuda, cuda:1
    # Torch threads when computing on the CPU; None: the usable cores less data.num_workers.
    cpu_threads: int | None = None
    # A fresh run starts its adapters, temporal embedding, ln_post (and head, when the classes
    # match) from this aim-video checkpoint or released AIM file; a resumed run ignores it.
    init_from: str | None = None


@dataclass
class EvalConfig:
    """Multi-view evaluation."""

    batch_size: int = 4  # videos per process per batch (each has clips x crops views)
    views_chunk: int = 16  # clips per forward pass, to bound memory with many views
    splits: tuple[str, ...] = ("val",)  # splits evaluated with full views after training
    periodic_views: str | None = "1x1"  # CLIPSxCROPS while training; None: the test views


@dataclass
class RunConfig:
    """Everything a run needs; saved as `config.yaml` and inside each checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def aim_config(self, num_classes: int | None = None) -> AIMConfig:
        """The model description: every `AIMConfig` field comes from one setting.

        `model`'s adaptation settings by name; the backbone from `model.arch` (and
        `model.width`, ... when set) with `data.input_size` as its input side; the clip length
        from `data.num_frames`; `train.grad_checkpointing`; and the head size from
        `model.num_classes`, else `num_classes` (the data set's class count).

        Raises:
            ConfigError: no class count, or settings that make no model (the message names
                the key).
        """
        model = self.model
        classes = model.num_classes if model.num_classes is not None else num_classes
        if classes is None:
            raise ConfigError("model.num_classes is not set and no class count was given")
        try:
            arch = get_arch(model.arch)
        except ValueError as err:
            raise ConfigError(f"model.arch: {err}") from None
        sizes = {name: value for name in VIT_SIZES if (value := getattr(model, name)) is not None}
        try:
            vit = dataclasses.replace(arch, image_size=self.data.input_size, **sizes)
        except ValueError as err:  # e.g. an input side that is not a whole number of patches
            given = [f"model.arch {model.arch}", *(f"model.{k} {v}" for k, v in sizes.items()),
                     f"data.input_size {self.data.input_size}"]
            raise ConfigError(f"the backbone ({', '.join(given)}): {err}") from None
        adaptation = {f.name: getattr(model, f.name) for f in dataclasses.fields(Adaptation)}
        try:
            return AIMConfig(vit=vit, num_frames=self.data.num_frames, num_classes=classes,
                             grad_checkpointing=self.train.grad_checkpointing, **adaptation)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None


_SECTION_TYPES: dict[str, type] = typing.get_type_hints(RunConfig)  # section -> dataclass


# ------------------------------------------------------------------------------------ presets
def _preset_folder() -> Any:
    """`aim_video/configs/`, shipped as package data."""
    return resources.files("aim_video") / "configs"


def preset_names() -> list[str]:
    """Names of the shipped presets (files starting with `_` are bases, not listed)."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in _preset_folder().iterdir()
        if p.name.endswith(".yaml") and not p.name.startswith("_")
    )


def _read_yaml(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """A preset by name or a YAML file by path -> (mapping, where it came from)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text, where = path.read_text(), str(path)
    else:
        preset = _preset_folder() / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"no config file or preset named {str(name_or_path)!r}; presets: "
                + ", ".join(preset_names())
            )
        text, where = preset.read_text(), f"preset {name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
    return data, where


def _merge(into: dict[str, Any], update: dict[str, Any], where: str) -> None:
    """Section-wise dict update: `update`'s keys replace `into`'s within each section."""
    for section, values in update.items():
        if section not in _SECTION_TYPES:
            raise ConfigError(f"{where}: unknown section {section!r}; valid: "
                              + ", ".join(_SECTION_TYPES))
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping")
        into.setdefault(section, {}).update(values)


def read_config_dict(name_or_path: str | Path) -> dict[str, Any]:
    """The raw sections of a preset or YAML file, with its `base:` presets merged in."""
    data, where = _read_yaml(name_or_path)
    bases = data.pop("base", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_data, base_where = _read_yaml(base)
        if "base" in base_data:
            raise ConfigError(f"{base_where}: a base preset cannot have bases itself")
        _merge(merged, base_data, base_where)
    _merge(merged, data, where)
    return merged


# ------------------------------------------------------------------------------------ overrides
def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, value); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: {err}") from None
    return section, name, value


def apply_overrides(sections: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """Applies `section.key=value` strings to a dict of sections in place."""
    for text in overrides:
        section, name, value = parse_override(text)
        _merge(sections, {section: {name: value}}, f"override {text!r}")


# ------------------------------------------------------------------------ dict <-> dataclass
def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Checks (and gently converts) a YAML value against a field's type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        if not errors:
            raise ConfigError(f"{where}: bad value {value!r}")
        # One message naming every accepted form: "key: expected ...; or 'x' is not one of ...".
        rest = [e.removeprefix(f"{where}: ") for e in errors[1:]]
        raise ConfigError("; or ".join([errors[0], *rest]))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_types = args if args and args[-1] is not Ellipsis else (args[0],) * len(value)
        if len(item_types) != len(value):
            raise ConfigError(f"{where}: expected {len(item_types)} values, got {value!r}")
        return tuple(_coerce(v, t, where) for v, t in zip(value, item_types))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value] if args else list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        # YAML 1.1 reads "3e-4" (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value  # Any, dicts and other hints: taken as given


def _section_from_dict(section: str, values: dict[str, Any]) -> Any:
    cls = _SECTION_TYPES[section]
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in hints]
    if unknown:
        raise ConfigError(
            f"unknown key {section}.{unknown[0]}; valid keys of {section}: {', '.join(valid)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"section {section}: {err}") from None


def config_from_dict(
    sections: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """A RunConfig from a dict of sections (as saved), after applying `overrides`."""
    sections = {k: dict(v) for k, v in sections.items()}
    apply_overrides(sections, overrides)
    for section in sections:
        if section not in _SECTION_TYPES:
            raise ConfigError(f"unknown section {section!r}; valid: {', '.join(_SECTION_TYPES)}")
    image_size = sections.get("model", {}).pop("image_size", None)
    cfg = RunConfig(**{s: _section_from_dict(s, v) for s, v in sections.items()})
    if image_size is not None and image_size != cfg.data.input_size:
        # Older configs and presets set the input side twice; it is data.input_size alone now.
        raise ConfigError(
            f"model.image_size {image_size!r} differs from data.input_size "
            f"{cfg.data.input_size}: the model's input side is data.input_size; set that and "
            "drop model.image_size")
    validate(cfg)
    return cfg


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A preset name (see `preset_names()`) or a YAML path, plus `section.key=value` overrides."""
    return config_from_dict(read_config_dict(name_or_path), overrides)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so YAML and torch's weights-only loader accept it."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested dicts/lists/scalars: YAML-safe and checkpoint-safe."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Writes the resolved config as YAML (loadable again with `load_config(path)`), atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# The settings that name files or folders: stored absolute, so that a run works from any folder.
PATH_KEYS = ("data.root", "data.train", "data.val", "data.test", "data.class_names",
             "model.pretrained", "train.out_dir", "train.init_from")


def _get(cfg: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def with_paths(cfg: RunConfig, paths: dict[str, str]) -> RunConfig:
    """A copy with the `section.key -> path` settings of `paths` replaced."""
    sections: dict[str, dict[str, str]] = {}
    for key, value in paths.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    return dataclasses.replace(cfg, **{
        section: dataclasses.replace(getattr(cfg, section), **values)
        for section, values in sections.items()
    })


def with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """A copy whose file and folder settings (`PATH_KEYS`) are absolute paths.

    The saved config then means the same from anywhere: an unset `data.root` stays unset, as
    the lists' relative entries are beside each list (`aim_video.data.sources.list_root`), which
    an absolute list path keeps. Class names given as a list, URLs (sharded data: http://,
    s3://) and unset paths stay as they are.
    """
    paths = {key: os.path.abspath(os.path.expanduser(value)) for key in PATH_KEYS
             if isinstance(value := _get(cfg, key), str) and "://" not in value}  # URLs stay
    return with_paths(cfg, paths)


def validate(cfg: RunConfig) -> None:
    """Cross-section checks that a single section cannot make."""
    cfg.aim_config(num_classes=1)  # the model settings describe a model
    if cfg.optim.epochs < 1:
        raise ConfigError(f"optim.epochs must be >= 1, got {cfg.optim.epochs}")
    check_device_name(cfg.train.device, "train.device")
    if cfg.optim.accum_steps < 1 or cfg.optim.batch_size < 1:
        raise ConfigError("optim.accum_steps and optim.batch_size must be >= 1")
    if cfg.train.cpu_threads is not None and cfg.train.cpu_threads < 1:
        raise ConfigError(f"train.cpu_threads must be >= 1, got {cfg.train.cpu_threads}")
    if cfg.eval.periodic_views is not None:
        parse_views(cfg.eval.periodic_views)
    unknown = [s for s in cfg.eval.splits if s not in ("train", "val", "test")]
    if unknown:
        raise ConfigError(f"eval.splits: {unknown[0]!r} is not one of train, val, test")


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N (N: a GPU index), mps"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def check_device_name(name: str, key: str = "device") -> None:
    """Refuses a device name that training and evaluation cannot run on (`key` names the
    setting in the message)."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"{key}: {name!r} is not a supported device; accepted: {DEVICE_CHOICES}")


def parse_views(text: str) -> tuple[int, int]:
    """`"3x1"` -> (clips, crops)."""
    clips, sep, crops = text.lower().partition("x")
    if not sep or not clips.isdigit() or not crops.isdigit() or int(clips) < 1 or int(crops) < 1:
        raise ConfigError(f"views {text!r} is not of the form CLIPSxCROPS, e.g. 3x1")
    return int(clips), int(crops)


def with_views(cfg: RunConfig, views: str | tuple[int, int] | None) -> RunConfig:
    """A copy whose test views are `views` (CLIPSxCROPS); unchanged when None."""
    if views is None:
        return cfg
    clips, crops = parse_views(views) if isinstance(views, str) else views
    data = dataclasses.replace(cfg.data, test_clips=clips, test_crops=crops)
    return dataclasses.replace(cfg, data=data)


__all__ = [
    "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "OptimConfig",
    "RunConfig", "TrainConfig", "apply_overrides", "check_device_name", "config_from_dict",
    "config_to_dict", "load_config", "parse_views", "preset_names", "read_config_dict",
    "save_config", "with_absolute_paths", "with_paths", "with_views",
]
