"""Thumbnail strips of the frames the model saw, written while evaluating."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from aim_video.data.dataset import NORMALIZATIONS, DataConfig, ViewsBatch

THUMBS = "thumbs"  # folder of the strips, beside the evaluation's reports


class ThumbnailWriter:
    """Writes each readable video's first test view as one JPEG strip, its frames side by side.

    An evaluation's per-batch observer (`aim_video.engine.evaluate.BatchObserver`): called
    with every batch and the data settings that made it (their normalisation is undone); the
    strip of the video at annotation index ``i`` goes to ``folder/thumbs/i.jpg``, where the
    page (`build_eval_report`) finds it. The folder is made on the first strip, so a writer can
    be handed to an evaluation that checks its output folder first.

    Args:
        folder: the evaluation folder (the strips go to its `THUMBS` subfolder).
        height: strip height in pixels (frames smaller than this are kept at their size).
        quality: JPEG quality.
    """

    def __init__(self, folder: str | Path, height: int = 64, quality: int = 85) -> None:
        self.folder = Path(folder) / THUMBS
        self.height = height
        self.quality = quality

    def __call__(self, batch: ViewsBatch, data: DataConfig) -> None:
        keep = batch["ok"].bool()
        if not keep.any():
            return
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1, 1)
                     for v in NORMALIZATIONS[data.normalize])
        video = batch["video"][keep, 0].float()  # view 0: (B, C, T, H, W)
        pixels = (video * std + mean).clamp(0, 255)
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
        self.folder.mkdir(parents=True, exist_ok=True)
        for index, strip in zip(batch["index"][keep].tolist(), strips):
            Image.fromarray(strip).save(self.folder / f"{index}.jpg", quality=self.quality)
