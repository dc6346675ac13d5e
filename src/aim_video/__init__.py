"""aim-video: adapt a frozen image ViT (CLIP) into a video action recogniser with AIM.

Public API:
    build_model(arch, **aim_fields)  -> AIMViT with a random backbone (load one next)
    AIMConfig, ViTConfig, VARIANTS   -> model descriptions
    load_pretrained(model, path)     -> load CLIP weights (OpenAI, open_clip, HF, timm), strict
    load_aim_checkpoint(path)        -> a released AIM checkpoint as a ready model
    Predictor.from_checkpoint(path)  -> a trained model: predict, timeline, features
"""

from __future__ import annotations

from aim_video.model import VARIANTS, AIMConfig, AIMViT, ViTConfig, get_variant
from aim_video.weights import CheckpointError, LoadReport, load_aim_checkpoint, load_pretrained

__version__ = "0.1.0"


def build_model(arch: str | ViTConfig = "ViT-B/16", **fields) -> AIMViT:
    """An AIM model on a named (or given) backbone; `fields` are `AIMConfig` fields.

    The backbone is random until weights are loaded (`load_pretrained`), and training refuses a
    random frozen backbone unless asked explicitly.
    """
    vit = get_variant(arch) if isinstance(arch, str) else arch
    return AIMViT(AIMConfig(vit=vit, **fields))


def __getattr__(name: str):
    # The predictor pulls in the engine and the data loaders: imported when first used.
    if name == "Predictor":
        from aim_video.predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "VARIANTS",
    "AIMConfig",
    "AIMViT",
    "CheckpointError",
    "LoadReport",
    "Predictor",
    "ViTConfig",
    "__version__",
    "build_model",
    "load_aim_checkpoint",
    "load_pretrained",
]
