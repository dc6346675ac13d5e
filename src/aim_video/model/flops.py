"""Forward FLOPs of a model, counted by PyTorch's own flop counter (no weights needed)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from aim_video.model.config import AIMConfig
from aim_video.model.vit import AIMViT


def forward_flops(cfg: AIMConfig, batch: int = 1) -> int:
    """FLOPs (2 x multiply-adds) of one eval-mode forward pass over `batch` clips.

    Built on the meta device, so it costs no memory or weights even for ViT-L.
    """
    with torch.device("meta"):
        model = AIMViT(cfg).eval()
        clip = torch.empty(batch, 3, cfg.num_frames, cfg.vit.image_size, cfg.vit.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(clip)
    return int(counter.get_total_flops())
