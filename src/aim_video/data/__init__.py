"""Everything between a folder of videos and a batch of (B, 3, T, H, W) tensors.

annotations -> records (path, label); decode -> uint8 (T, H, W, 3); sampling picks the frame
indices; transforms -> float (C, T, H, W); dataset makes typed items (`TrainItem`, `ViewsItem`)
and batches and applies the bad-file policy; synthetic makes the built-in benchmark; check scans
a data set for unreadable entries.
"""

from aim_video.data.annotations import (
    AnnotationError,
    Annotations,
    VideoRecord,
    load_annotations,
)
from aim_video.data.dataset import (
    DataConfig,
    DataError,
    DeviceAugment,
    TrainBatch,
    TrainItem,
    VideoDataset,
    ViewsBatch,
    ViewsItem,
    build_dataset,
    collate,
)
from aim_video.data.decode import VideoDecodeError, open_video

__all__ = [
    "AnnotationError",
    "Annotations",
    "DataConfig",
    "DataError",
    "DeviceAugment",
    "TrainBatch",
    "TrainItem",
    "VideoDataset",
    "VideoDecodeError",
    "VideoRecord",
    "ViewsBatch",
    "ViewsItem",
    "build_dataset",
    "collate",
    "load_annotations",
    "open_video",
]
