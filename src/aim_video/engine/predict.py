"""Top-k classes for individual videos, with a trained checkpoint.

The videos go through the same test-mode dataset as evaluation (same sampling, resizing, crops
and normalisation as the checkpoint's config), so a prediction here equals the one `evaluate`
makes for the same file. An unreadable video is reported in its result, never raised.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from aim_video.data.annotations import Annotations, VideoRecord
from aim_video.data.dataset import VideoDataset
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.config import RunConfig, with_views
from aim_video.engine.distributed import autocast_dtype, resolve_device
from aim_video.engine.evaluate import run_model

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")


@dataclass
class Prediction:
    """The classes predicted for one video."""

    path: str  # the video
    ok: bool  # False: the video could not be read
    top: list[tuple[str, float]]  # (class name, probability), most probable first
    error: str | None = None  # why it could not be read


def collect_videos(inputs: list[str | Path], frame_folders: bool = False) -> list[str]:
    """Files as given; folders expanded to the video files inside them (recursively, sorted).

    Args:
        inputs: video files and folders.
        frame_folders: folders are themselves videos (the `frames` backend).
    """
    videos: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir() and not frame_folders:
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"{item}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
            videos += [str(p) for p in found]
        else:
            videos.append(str(item))  # a missing file becomes an unreadable result
    return videos


def predict(
    inputs: list[str | Path],
    checkpoint: str | Path,
    top_k: int = 5,
    device: str = "auto",
    pretrained: str | None = None,
    views: str | None = None,
    cfg: RunConfig | None = None,
) -> list[Prediction]:
    """Top-k classes for each video.

    Args:
        inputs: video files or folders of them.
        checkpoint: a training checkpoint (`last.pt` / `best.pt`).
        top_k: classes per video.
        device: `auto`, `cpu`, `cuda`, `cuda:N`.
        pretrained: backbone weights overriding the checkpoint config's `model.pretrained`.
        views: CLIPSxCROPS overriding the config's test views.
        cfg: a config overriding the checkpoint's own.

    Returns:
        One prediction per video, in input order.
    """
    state = ckpt.load_checkpoint(checkpoint)
    cfg = with_views(cfg if cfg is not None else ckpt.checkpoint_config(state, checkpoint), views)
    names = list(state["class_names"])
    model = ckpt.model_from_checkpoint(state, checkpoint, cfg, pretrained)
    dev = resolve_device(device)
    model.to(dev)
    # Paths are used as given: the config's data root is for its annotation files.
    data_cfg = dataclasses.replace(cfg.data, root=None)
    paths = collect_videos(inputs, frame_folders=data_cfg.backend == "frames")
    records = [VideoRecord(os.fspath(p), 0) for p in paths]
    dataset = VideoDataset(Annotations(records, names), data_cfg, mode="test")
    model.eval()
    results = run_model(model, dataset, list(range(len(dataset))), cfg,
                        autocast_dtype(cfg.train.precision, dev), top_k=top_k)
    predictions = []
    for r in sorted(results, key=lambda r: r.index):
        predictions.append(Prediction(
            path=paths[r.index], ok=r.ok, error=r.reason,
            top=[(names[c], p) for c, p in zip(r.top[:top_k], r.probs[:top_k])],
        ))
    return predictions
