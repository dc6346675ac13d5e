"""Weights in and out: every foreign checkpoint format mapped to our names, strictly.

One room per concern:
    formats      the formats (`FORMATS`), their name tables (`Layout`), files read safely
                 (`read_checkpoint`, `detect_format`) and written (`save_state_dict`)
    load         the strict load into a model (`load_pretrained`, `LoadReport`)
    resize       positional / temporal embeddings interpolated to another grid or frame count
    infer        a whole AIM model's config read off its tensors (`infer_config`), and the model
                 built from a released or whole-model file (`load_aim_checkpoint`)
    fingerprint  the frozen backbone's short hash, which ties trained parts to it
"""

from aim_video.weights.fingerprint import backbone_fingerprint, tensors_fingerprint
from aim_video.weights.formats import (
    FORMATS,
    VIDEO_FORMATS,
    CheckpointError,
    Converted,
    Layout,
    RawCheckpoint,
    Swap,
    detect_format,
    export_state_dict,
    from_ours,
    layout_for,
    read_checkpoint,
    save_state_dict,
    swap,
    to_ours,
)
from aim_video.weights.infer import infer_config, load_aim_checkpoint
from aim_video.weights.load import LoadReport, load_pretrained
from aim_video.weights.resize import resize_positional_embedding, resize_temporal_embedding

__all__ = [
    "FORMATS", "VIDEO_FORMATS", "CheckpointError", "Converted", "Layout", "LoadReport",
    "RawCheckpoint", "Swap", "backbone_fingerprint", "detect_format", "export_state_dict",
    "from_ours", "infer_config", "layout_for", "load_aim_checkpoint", "load_pretrained",
    "read_checkpoint", "resize_positional_embedding", "resize_temporal_embedding",
    "save_state_dict", "swap", "tensors_fingerprint", "to_ours",
]
