"""Helpers of the engine tests (this module itself holds no tests): a tiny CLIP-layout
backbone and the overrides that make the `synthetic_cpu` preset a seconds-long CPU run.

The fixtures these runs read (`synthetic`, `backbone`, `one_thread`) are in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aim_video.engine.config import RunConfig, load_config
from aim_video.model import AIMConfig, AIMViT, ViTConfig
from aim_video.weights import save_state_dict

TINY_VIT = ViTConfig(width=64, layers=2, heads=2, patch_size=8, image_size=32)
FRAMES = 4


def write_backbone(path: Path, seed: int) -> Path:
    """A tiny image backbone saved as an OpenAI CLIP state dict (what `--pretrained` reads)."""
    torch.manual_seed(seed)
    model = AIMViT(AIMConfig(vit=TINY_VIT, num_frames=FRAMES, num_classes=10))
    return save_state_dict(model, path, "openai")


def tiny_overrides(data: Path, out_dir: Path, pretrained: Path | None, **extra) -> list[str]:
    """Overrides that turn the synthetic_cpu preset into a seconds-long CPU run."""
    values = {
        "model.width": 64, "model.layers": 2, "model.heads": 2, "model.patch_size": 8,
        "model.image_size": 32, "model.drop_path": 0.2, "model.dropout": 0.5,
        "data.root": data, "data.train": data / "train.txt", "data.val": data / "val.txt",
        "data.class_names": data / "classes.txt", "data.num_frames": FRAMES,
        "data.num_workers": 0, "optim.epochs": 2, "optim.batch_size": 2,
        "optim.warmup_epochs": 0.5, "train.out_dir": out_dir, "train.tensorboard": False,
        "train.log_every": 1, "eval.batch_size": 2,
    }
    if pretrained is not None:
        values["model.pretrained"] = pretrained
    values |= extra
    return [f"{key}={value}" for key, value in values.items()]


def tiny_config(data: Path, out_dir: Path, pretrained: Path | None, **extra) -> RunConfig:
    # Keys use "__" for "." so that they can be Python keyword arguments.
    extra = {key.replace("__", "."): value for key, value in extra.items()}
    return load_config("synthetic_cpu", tiny_overrides(data, out_dir, pretrained, **extra))
