"""The AIM video model: a CLIP image ViT with adapters."""

from aim_video.model.config import VARIANTS, AIMConfig, ViTConfig, get_variant, scaled_adapter_std
from aim_video.model.vit import AIMViT, parameter_group

__all__ = ["VARIANTS", "AIMConfig", "AIMViT", "ViTConfig", "get_variant", "parameter_group",
           "scaled_adapter_std"]
