"""Everything between a folder of videos and a batch of (B, 3, T, H, W) tensors.

annotations -> records (path, label); decode -> uint8 (T, H, W, 3); sampling picks the frame
indices; transforms -> float (C, T, H, W); dataset applies the bad-file policy; synthetic makes
the built-in benchmark; check scans a data set for unreadable entries.
"""

from aim_video.data.annotations import (
    AnnotationError,
    Annotations,
    VideoRecord,
    load_annotations,
)
from aim_video.data.dataset import DataConfig, DataError, VideoDataset, build_dataset, collate
from aim_video.data.decode import VideoDecodeError, open_video

__all__ = [
    "AnnotationError",
    "Annotations",
    "DataConfig",
    "DataError",
    "VideoDataset",
    "VideoDecodeError",
    "VideoRecord",
    "build_dataset",
    "collate",
    "load_annotations",
    "open_video",
]
