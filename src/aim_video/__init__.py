"""aim-video: adapt a frozen image ViT (CLIP) into a video action recogniser with AIM.

Public API:
    create_model(arch, pretrained=PATH)    -> AIMViT on CLIP weights, adapters ready to train
    create_model_and_transform(...)        -> (that model, its test-time transform)
    load_aim_checkpoint(path, scale=s)     -> a whole AIM checkpoint (released or ours), for eval
    load_pretrained(model, path)           -> load CLIP weights (OpenAI, open_clip, HF, timm)
    AIMConfig, ViTConfig, ARCHS            -> model descriptions; `ARCHS` names the backbones
    Predictor.from_checkpoint(path)        -> a trained model: predict, timeline, features

Every flag is keyword-only; `trust=True` (CLI: --trust-checkpoint) is the one switch that lets
a file run code while it loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aim_video.model import ARCHS, AIMConfig, AIMViT, ViTConfig, get_arch
from aim_video.weights import CheckpointError, LoadReport, load_aim_checkpoint, load_pretrained

if TYPE_CHECKING:
    from aim_video.data.transforms import EvalTransform

__version__ = "0.1.0"


def create_model(
    arch: str | ViTConfig = "ViT-B/16",
    *,
    pretrained: str | Path | None = None,
    format: str = "auto",
    num_classes: int = 400,
    num_frames: int = 8,
    trust: bool = False,
    **aim_fields,
) -> AIMViT:
    """An AIM video model on a named (or given) CLIP backbone, like `timm.create_model`.

    Args:
        arch: a key of `ARCHS` ("ViT-B/16", ...) or a `ViTConfig`.
        pretrained: CLIP image weights to load strictly (any format `load_pretrained` reads).
            None leaves the backbone random: only for tests, and training refuses it unless
            told otherwise.
        format: the format of `pretrained`, or "auto" to detect it.
        num_classes: classes of the linear head.
        num_frames: frames per clip (the temporal embedding's length).
        trust: unpickle a `pretrained` file that needs more than the safe loader allows
            (trusted files only).
        **aim_fields: other `AIMConfig` fields (`scale`, `temporal_in`, `adapter_blocks`, ...).

    Returns:
        The model with AIM's trainable set (adapters, temporal embedding, ln_post, head), in
        training mode; the parts AIM adds keep their initialisation.

    Raises:
        CheckpointError: `pretrained` cannot be read or does not fit the backbone.
    """
    vit = get_arch(arch) if isinstance(arch, str) else arch
    model = AIMViT(AIMConfig(vit=vit, num_classes=num_classes, num_frames=num_frames,
                             **aim_fields))
    if pretrained is not None:
        load_pretrained(model, pretrained, format=format, trust=trust)
    return model


def create_model_and_transform(
    arch: str | ViTConfig = "ViT-B/16", *, num_crops: int = 1, **kwargs
) -> tuple[AIMViT, EvalTransform]:
    """`create_model(arch, **kwargs)` and the test-time transform that fits it, like
    `open_clip.create_model_and_transforms`.

    The transform takes a uint8 clip (T, H, W, 3) to normalised (num_crops, 3, T, S, S), a batch
    the model takes as is: short side resized to the model's input size S, then a centre crop
    (`num_crops=1`) or three crops along the long side (3); CLIP's mean and std.
    """
    from aim_video.data.transforms import EvalTransform  # the data stack only when asked for

    model = create_model(arch, **kwargs)
    size = model.cfg.vit.image_size
    return model, EvalTransform(size=size, short_side=size, num_crops=num_crops)


def __getattr__(name: str):
    # The predictor pulls in the engine and the data loaders: imported when first used.
    if name == "Predictor":
        from aim_video.predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHS",
    "AIMConfig",
    "AIMViT",
    "CheckpointError",
    "LoadReport",
    "Predictor",
    "ViTConfig",
    "__version__",
    "create_model",
    "create_model_and_transform",
    "load_aim_checkpoint",
    "load_pretrained",
]
