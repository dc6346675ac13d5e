"""The AIM video model: a CLIP image ViT with adapters."""

from aim_video.model.config import VARIANTS, AIMConfig, ViTConfig, get_variant
from aim_video.model.vit import AIMViT, parameter_group

__all__ = ["VARIANTS", "AIMConfig", "AIMViT", "ViTConfig", "get_variant", "parameter_group"]
