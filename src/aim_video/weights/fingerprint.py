"""Fingerprints: a short stable hash of the frozen backbone, to tie trained parts to it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn

from aim_video.model.vit import parameter_group


def backbone_fingerprint(model: nn.Module) -> str:
    """A short stable hash of the frozen backbone: names, shapes and float32 bytes, sorted.

    Covers the parameters AIM keeps frozen (`parameter_group == "backbone"`), so training the
    adapters, temporal embedding, `ln_post` or head never changes it. Independent of device.

    Returns:
        The first 16 hex digits of a SHA-256.
    """
    return tensors_fingerprint(dict(model.named_parameters()))


def tensors_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """`backbone_fingerprint` of a state dict under our names (e.g. a whole-model file's)."""
    digest = hashlib.sha256()
    for name, param in sorted(tensors.items(), key=lambda item: item[0]):
        if parameter_group(name) != "backbone":
            continue
        values = param.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(values.shape)}".encode())
        digest.update(values.numpy().data)
    return digest.hexdigest()[:16]
