"""Embeddings resized to another patch grid or frame count (bicubic in space, linear in time)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F


def resize_positional_embedding(
    pos: torch.Tensor, new_grid: int | tuple[int, int]
) -> torch.Tensor:
    """Bicubic resize of a square patch grid's positional embedding; the CLS row is kept.

    Args:
        pos: (N+1, D), CLS first, then the patches row-major.
        new_grid: patches per side (or (rows, cols)) of the target.

    Returns:
        (rows·cols + 1, D) in `pos`'s dtype.
    """
    rows, cols = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
    cls, patches = pos[:1], pos[1:]
    old = math.isqrt(patches.shape[0])
    if old * old != patches.shape[0]:
        raise ValueError(f"a positional embedding of {patches.shape[0]} patches is not square")
    if (old, old) == (rows, cols):
        return pos
    width = pos.shape[1]
    # (N, D) -> (1, D, old, old): interpolate in float32 for fp16 checkpoints
    grid = patches.float().reshape(old, old, width).permute(2, 0, 1).unsqueeze(0)
    # antialias: when shrinking, average instead of sampling (as timm does)
    grid = F.interpolate(
        grid, size=(rows, cols), mode="bicubic", align_corners=False, antialias=True
    )
    # (1, D, rows, cols) -> (rows·cols, D)
    patches = grid.squeeze(0).permute(1, 2, 0).reshape(rows * cols, width)
    return torch.cat([cls, patches.to(pos.dtype)])


def resize_temporal_embedding(te: torch.Tensor, new_frames: int) -> torch.Tensor:
    """Linear interpolation of a (1, T, D) temporal embedding to (1, new_frames, D).

    Frames are treated as equal cells of the clip (align_corners=False), so 8 -> 16 frames
    spreads the same time span over twice the frames; a constant embedding stays constant.
    """
    if te.shape[1] == new_frames:
        return te
    # (1, T, D) -> (1, D, T) for interpolate, and back
    out = F.interpolate(
        te.float().transpose(1, 2), size=new_frames, mode="linear", align_corners=False
    )
    return out.transpose(1, 2).to(te.dtype)


def grid_of(pos: torch.Tensor) -> int | None:
    """Patches per side of a (side² + 1, D) positional embedding; None if not square."""
    side = math.isqrt(pos.shape[0] - 1)
    return side if side * side == pos.shape[0] - 1 else None


def resize_to_model(
    tensors: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> list[str]:
    """Interpolates positional / temporal embeddings whose length differs from the model's."""
    notes = []
    pos, want = tensors.get("positional_embedding"), expected["positional_embedding"]
    if pos is not None and pos.ndim == 2 and pos.shape[1] == want.shape[1]:
        old, new = grid_of(pos), grid_of(want)
        if old is not None and new is not None and old != new:
            tensors["positional_embedding"] = resize_positional_embedding(pos, new)
            notes.append(f"positional_embedding: grid {old}x{old} -> {new}x{new} (bicubic)")
    te, want = tensors.get("temporal_embedding"), expected.get("temporal_embedding")
    if te is not None and want is not None and te.ndim == 3 and te.shape[2] == want.shape[2]:
        if te.shape[1] != want.shape[1]:
            tensors["temporal_embedding"] = resize_temporal_embedding(te, want.shape[1])
            notes.append(f"temporal_embedding: {te.shape[1]} -> {want.shape[1]} frames (linear)")
    return notes
