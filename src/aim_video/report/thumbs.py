"""Thumbnail strips of the frames the model saw, written while evaluating."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

THUMBS = "thumbs"  # folder of the strips, beside the evaluation's reports


class ThumbnailWriter:
    """Writes each readable video's first test view as one JPEG strip, its frames side by side.

    Called with every evaluation batch (`aim_video.engine.evaluate.run_model`'s `on_batch`);
    the strip of the video at annotation index ``i`` goes to ``folder/i.jpg``.

    Args:
        folder: where the strips go (created).
        mean: the normalisation's per-channel mean, 0-255 scale.
        std: its per-channel std, 0-255 scale.
        height: strip height in pixels (frames smaller than this are kept at their size).
        quality: JPEG quality.
    """

    def __init__(self, folder: Path, mean: Sequence[float], std: Sequence[float],
                 height: int = 64, quality: int = 85) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.height = height
        self.quality = quality

    def __call__(self, batch: dict[str, Any]) -> None:
        keep = batch["ok"].bool()
        if not keep.any():
            return
        video = batch["video"][keep, 0].float()  # view 0: (B, C, T, H, W)
        pixels = (video * self.std + self.mean).clamp(0, 255)
        b, c, t, h, w = pixels.shape
        height = min(self.height, h)
        width = max(1, round(w * height / h))
        frames = pixels.transpose(1, 2).flatten(0, 1)  # (B·T, C, H, W)
        if height != h:
            frames = F.interpolate(frames, size=(height, width), mode="bilinear",
                                   antialias=True, align_corners=False)
        # (B·T, C, h, w) -> (B, h, T·w, C): the frames of each video side by side
        strips = (frames.view(b, t, c, height, width).permute(0, 3, 1, 4, 2)
                  .reshape(b, height, t * width, c).round().to(torch.uint8).numpy())
        for index, strip in zip(batch["index"][keep].tolist(), strips):
            Image.fromarray(strip).save(self.folder / f"{index}.jpg", quality=self.quality)
