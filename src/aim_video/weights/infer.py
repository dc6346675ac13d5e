"""A whole AIM model's configuration read off its tensors, and the model built from a file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from aim_video.model.config import AIMConfig, ViTConfig
from aim_video.model.vit import ADAPTER_NAMES, AIMViT
from aim_video.weights.formats import BLOCK, CheckpointError, convert_video_checkpoint
from aim_video.weights.load import load_converted
from aim_video.weights.resize import grid_of


def _blocks_spec(adapted: list[bool], vit: ViTConfig) -> str:
    """The `adapter_blocks` value whose pattern is `adapted` (the first that fits, in a few
    layers several do: 2 blocks, "top:1" == "every_other")."""
    n = len(adapted)
    ends = [f"{where}:{k}" for k in range(n + 1) for where in ("top", "bottom")]
    specs = ["all", *ends, "every_other"]
    for spec in specs:
        if AIMConfig(vit=vit, adapter_blocks=spec).adapted_blocks() == adapted:
            return spec
    raise ValueError(f"adapters sit in blocks {[i for i, a in enumerate(adapted) if a]}")


def _infer_vit(tensors: Mapping[str, torch.Tensor], heads: int | None) -> ViTConfig:
    """The image backbone's architecture from its tensors' shapes."""
    needed = ["class_embedding", "conv1.weight", "positional_embedding", "head.weight",
              BLOCK.format(i=0) + "mlp.c_fc.weight"]
    absent = [k for k in needed if k not in tensors]
    if absent:
        raise ValueError(f"no {', '.join(absent)}, so the architecture cannot be told")
    width = tensors["class_embedding"].shape[0]
    patch = tensors["conv1.weight"].shape[-1]
    grid = grid_of(tensors["positional_embedding"])
    if grid is None:
        raise ValueError("positional_embedding is not a square patch grid plus CLS")
    block = re.compile(r"transformer\.resblocks\.(\d+)\.")
    layers = 1 + max(int(m.group(1)) for k in tensors if (m := block.match(k)))
    return ViTConfig(
        width=width,
        layers=layers,
        heads=heads or max(width // 64, 1),
        patch_size=patch,
        image_size=grid * patch,
        mlp_ratio=tensors[BLOCK.format(i=0) + "mlp.c_fc.weight"].shape[0] / width,
    )


def infer_config(
    tensors: Mapping[str, torch.Tensor],
    *,
    scale: float = 0.5,
    num_frames: int | None = None,
    heads: int | None = None,
) -> AIMConfig:
    """The `AIMConfig` of a whole AIM model, from its tensors' names and shapes (our names).

    Args:
        tensors: the model's state dict.
        scale: `AIMConfig.scale`, s (not stored in checkpoints).
        num_frames: frame count of the model to build; None keeps the file's.
        heads: attention heads; None -> width // 64 as in CLIP (head count is not stored).

    Raises:
        ValueError: a tensor needed to tell the architecture is missing, or adapters are placed
            in a pattern `adapter_blocks` cannot express.
    """
    vit = _infer_vit(tensors, heads)
    # The adapter kinds each block holds, and the first adapter's fc1 (for the bottleneck).
    kinds = [
        [a for a in ADAPTER_NAMES if f"{BLOCK.format(i=i)}{a}.D_fc1.weight" in tensors]
        for i in range(vit.layers)
    ]
    present = {a for block in kinds for a in block}
    fc1 = [tensors[f"{BLOCK.format(i=i)}{a}.D_fc1.weight"] for i, b in enumerate(kinds) for a in b]
    te = tensors.get("temporal_embedding")
    return AIMConfig(
        vit=vit,
        num_frames=num_frames or (te.shape[1] if te is not None else AIMConfig.num_frames),
        num_classes=tensors["head.weight"].shape[0],
        spatial="S_Adapter" in present,
        temporal="T_Adapter" in present,
        joint="MLP_Adapter" in present,
        temporal_in="T_Adapter_in" in present,
        temporal_embedding=te is not None,
        adapter_blocks=_blocks_spec([bool(k) for k in kinds], vit) if present else "all",
        bottleneck_ratio=fc1[0].shape[0] / vit.width if fc1 else AIMConfig.bottleneck_ratio,
        scale=scale,
    )


def load_aim_checkpoint(
    path: str | Path,
    *,
    scale: float = 0.5,
    num_frames: int | None = None,
    trust: bool = False,
    heads: int | None = None,
) -> AIMViT:
    """Builds the model a whole-AIM checkpoint (released MMAction2 file, or ours) describes.

    The architecture is read off the tensors (see `infer_config`); everything, adapters and
    head included, is then loaded strictly. The result has the AIM trainable set and is in
    eval mode.

    Args:
        path: the checkpoint (released AIM files need `trust=True`: their `meta` is pickled).
        scale: `AIMConfig.scale`, s, which the file does not store (0.5 Kinetics/Diving-48,
            1.0 SSv2).
        num_frames: build for this many frames, interpolating the temporal embedding.
        trust: unpickle files that the safe loader refuses (trusted sources only).
        heads: attention heads if not width // 64.

    Raises:
        CheckpointError: unreadable file, an image-only checkpoint, or keys that do not fit.
    """
    raw, fmt, converted = convert_video_checkpoint(
        path, trust=trust, image_hint="build a model and use load_pretrained for image weights")
    try:
        cfg = infer_config(converted.tensors, scale=scale, num_frames=num_frames, heads=heads)
    except ValueError as err:
        raise CheckpointError(f"{raw.path}: {err}") from err
    # Built on the meta device and then given uninitialised memory: the full strict load below
    # overwrites every state_dict entry (AIMViT has no other buffers), and a random init of
    # ViT-B would cost seconds of CPU for nothing.
    with torch.device("meta"):
        model = AIMViT(cfg)
    model = model.to_empty(device="cpu")
    load_converted(model, converted, raw.path, fmt, auto=True, full=True)
    model.freeze()
    return model.eval()
