"""Model descriptions: the image ViT's architecture and how AIM adapts it to video.

Named backbones are data (`ARCHS`); a tiny model for a CPU test is just another `ViTConfig`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class ViTConfig:
    """A CLIP-architecture image ViT (pre-norm, QuickGELU MLP, OpenAI parameter names)."""

    width: int = 768  # token dimension D
    layers: int = 12  # number of transformer blocks
    heads: int = 12  # attention heads; CLIP uses width / 64
    patch_size: int = 16  # square patch side in pixels (conv1 kernel and stride)
    image_size: int = 224  # square input side in pixels; tokens = (image_size / patch_size)^2 + 1
    mlp_ratio: float = 4.0  # MLP hidden width / width

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens per frame: patches plus the class token."""
        return self.grid**2 + 1


# The published CLIP image towers, by the names `arch` takes.
ARCHS: dict[str, ViTConfig] = {
    "ViT-B/32": ViTConfig(width=768, layers=12, heads=12, patch_size=32, image_size=224),
    "ViT-B/16": ViTConfig(width=768, layers=12, heads=12, patch_size=16, image_size=224),
    "ViT-L/14": ViTConfig(width=1024, layers=24, heads=16, patch_size=14, image_size=224),
    "ViT-L/14-336": ViTConfig(width=1024, layers=24, heads=16, patch_size=14, image_size=336),
}


def get_arch(name: str) -> ViTConfig:
    """Looks up a named backbone, with an error that lists the known names."""
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown arch {name!r}; known: {', '.join(ARCHS)}") from None


ADAPTER_BLOCKS_HELP = "all | top:K | bottom:K | every_other"


def scaled_adapter_std(width: int) -> float:
    """The paper's adapter init (fc1 std 0.02 at CLIP B/16's width 768) rescaled to `width`,
    so that the hidden pre-activations of a narrow model's adapters spread as much as B/16's.

    With 0.02 at width 64 they are 3.5x smaller and the adapters start slowly (figures in
    docs/demo.md).
    """
    return 0.02 * (768 / width) ** 0.5


# How the temporal attention (T frames per sequence) is computed: "sdpa" (PyTorch's fused
# kernels) or "matmul" (two batched matmuls, softmax in fp32), for kernels whose tiles are mostly
# padding at T = 8. The same numbers either way; which is faster is per device.
AttentionKernel = Literal["sdpa", "matmul"]
ATTENTION_KERNELS: tuple[str, ...] = typing.get_args(AttentionKernel)

# The names of `aim_video.model.vit.Recompute`'s policies (what each keeps is documented there).
RecomputePolicy = Literal["nothing", "mlp", "attention_mlp", "blocks"]


@dataclass(frozen=True)
class Adaptation:
    """How AIM adapts the frozen image model, and what is trained.

    These are the `AIMConfig` fields that a run config's `model` section sets under the same
    names (`model.scale`, ...): `aim_video.engine.config.ModelConfig` inherits them.
    """

    spatial: bool = True  # S_Adapter (with skip) after the spatial attention
    temporal: bool = True  # temporal attention re-using the frozen attention + T_Adapter
    joint: bool = True  # MLP_Adapter parallel to the frozen MLP, scaled by `scale`
    temporal_in: bool = False  # T_Adapter_in (with skip) before the temporal attention (SSv2)
    temporal_embedding: bool = True  # learned (1, T, D) embedding added to every token of frame t
    full_finetune: bool = False  # train every parameter, the backbone included
    adapter_blocks: str = "all"  # which blocks get adapters: all | top:K | bottom:K | every_other
    bottleneck_ratio: float = 0.25  # adapter hidden width / width
    # Trunc-normal std of each adapter's fc1 (fc2 starts at zero). The paper's 0.02 is sized
    # for CLIP's widths (768, 1024); see `scaled_adapter_std` for narrow models.
    adapter_init_std: float = 0.02
    scale: float = 0.5  # s: the joint adapter's weight (0.5 Kinetics/Diving-48, 1.0 SSv2)
    drop_path: float = 0.2  # stochastic depth on temporal and joint branches, linear over depth
    dropout: float = 0.5  # dropout before the linear head
    temporal_attention: AttentionKernel = "sdpa"  # the temporal attention's kernel, see above

    def __post_init__(self) -> None:
        if self.temporal_in and not self.temporal:
            raise ValueError("temporal_in needs temporal adaptation")
        if self.temporal_attention not in ATTENTION_KERNELS:
            raise ValueError(f"temporal_attention must be one of {ATTENTION_KERNELS}, "
                             f"got {self.temporal_attention!r}")


@dataclass(frozen=True)
class AIMConfig(Adaptation):
    """How the frozen image model becomes a video classifier, and what is trained.

    The default is the paper's AIM (spatial + temporal + joint adaptation on every block).
    Setting `spatial`, `temporal` and `joint` all to False gives the frozen backbone with a
    linear head; `full_finetune` makes every parameter trainable. The adaptation's fields are
    `Adaptation`'s; these are the rest.
    """

    vit: ViTConfig = field(default_factory=ViTConfig)  # the image backbone
    num_frames: int = 8  # frames per clip T; the temporal embedding has this length
    num_classes: int = 400  # size of the linear head
    # What backward recomputes to save memory: False, True (whole blocks) or a `Recompute` name
    # ("mlp", "attention_mlp", ...); `AIMViT.set_grad_checkpointing` changes it.
    grad_checkpointing: bool | RecomputePolicy = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.adapted_blocks()  # validates adapter_blocks early

    def replace(self, **changes) -> AIMConfig:
        """A copy with some fields changed (`vit` may be a variant name)."""
        if isinstance(changes.get("vit"), str):
            changes["vit"] = get_arch(changes["vit"])
        return dataclasses.replace(self, **changes)

    def adapted_blocks(self) -> list[bool]:
        """For each block, whether it gets adapters."""
        n = self.vit.layers
        spec = self.adapter_blocks
        if spec == "all":
            return [True] * n
        if spec == "every_other":
            return [i % 2 == 1 for i in range(n)]
        where, _, count = spec.partition(":")
        if where in ("top", "bottom") and count.isdigit() and 0 <= int(count) <= n:
            k = int(count)
            return [i >= n - k for i in range(n)] if where == "top" else [i < k for i in range(n)]
        raise ValueError(f"adapter_blocks {spec!r} is not one of {ADAPTER_BLOCKS_HELP} (K <= {n})")
