"""The AIM video model: a CLIP image ViT with adapters."""

from aim_video.model.config import ARCHS, AIMConfig, ViTConfig, get_arch, scaled_adapter_std
from aim_video.model.vit import AIMViT, Recompute, parameter_group

__all__ = ["ARCHS", "AIMConfig", "AIMViT", "Recompute", "ViTConfig", "get_arch",
           "parameter_group", "scaled_adapter_std"]
