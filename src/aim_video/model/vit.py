"""The CLIP ViT with AIM adaptation, and the video classifier around it.

Parameter names follow OpenAI CLIP's visual tower (`conv1`, `class_embedding`,
`transformer.resblocks.{i}.attn.in_proj_weight`, ...) and the released AIM checkpoints
(`temporal_embedding`, `S_Adapter`, `T_Adapter`, `T_Adapter_in`, `MLP_Adapter`), so both load
without renaming. Input layout everywhere: (B, C, T, H, W).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from aim_video.model.config import AIMConfig
from aim_video.model.layers import (
    Adapter,
    Attention,
    AutocastLayerNorm,
    DropPath,
    MLP,
    frames_to_tracks,
    tracks_to_frames,
)

RANDOM_SOURCE = "random"
ADAPTER_NAMES = ("T_Adapter_in", "T_Adapter", "S_Adapter", "MLP_Adapter")
# Parts that AIM adds on top of the image model; trained, and absent from image checkpoints.
NEW_TOP_LEVEL = ("temporal_embedding", "ln_post", "head")


class Recompute(enum.Enum):
    """What backward recomputes instead of keeping (gradient checkpointing: memory for compute).

    Recomputation stops as soon as the tensors backward needs are back (PyTorch's non-reentrant
    checkpoint stops early): under MLP and ATTENTION_MLP the frozen output projections (c_proj,
    out_proj) are not re-run.
    """

    NOTHING = "nothing"  # keep every activation: fastest, most memory
    # Recompute the MLP's hidden activation (c_fc) from its normalised input, which the joint
    # adapter keeps anyway: the largest activation of a block, for one extra c_fc matmul.
    MLP = "mlp"
    # Also recompute both CLIP attentions (in-projection and attention kernel) from their
    # normalised inputs; keep the norms' inputs and the adapters' activations.
    ATTENTION_MLP = "attention_mlp"
    # Keep only each block's input and re-run whole blocks: least memory, most recompute.
    BLOCKS = "blocks"

    @classmethod
    def of(cls, value: bool | str | Recompute) -> Recompute:
        """True/False (the config's switch) mean BLOCKS/NOTHING; names are accepted too."""
        if isinstance(value, bool):
            return cls.BLOCKS if value else cls.NOTHING
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown recompute policy {value!r}; known: {known}") from None


class AIMBlock(nn.Module):
    """A pre-norm CLIP block with AIM's temporal, spatial and joint adaptation.

    With every adapter switched off it is exactly the CLIP block.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float,
        *,
        spatial: bool,
        temporal: bool,
        joint: bool,
        temporal_in: bool,
        bottleneck_ratio: float,
        adapter_init_std: float,
        scale: float,
        drop_path: float,
        temporal_attention: str = "sdpa",
    ) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.temporal_attention = temporal_attention  # the temporal call's kernel
        self.attn = Attention(width, heads)
        self.ln_1 = AutocastLayerNorm(width)
        self.mlp = MLP(width, hidden)
        self.ln_2 = AutocastLayerNorm(width)
        self.scale = scale
        # Which adaptations this block runs. Adapters are created only where switched on, so
        # their keys say what a checkpoint holds.
        self.spatial, self.temporal, self.joint, self.temporal_in = (
            spatial, temporal, joint, temporal_in)
        if temporal_in:
            self.T_Adapter_in = Adapter(width, bottleneck_ratio, True, adapter_init_std)
        if temporal:
            self.T_Adapter = Adapter(width, bottleneck_ratio, False, adapter_init_std)
        if spatial:
            self.S_Adapter = Adapter(width, bottleneck_ratio, True, adapter_init_std)
        if joint:
            self.MLP_Adapter = Adapter(width, bottleneck_ratio, False, adapter_init_std)
        self.drop_path = DropPath(drop_path)
        # Set by Transformer.recompute: which frozen parts backward recomputes.
        self.recompute_attention = False
        self.recompute_mlp = False

    def reset_parameters(self, depth: int) -> None:
        """CLIP's init for the image block (scaled by the model's `depth`); adapters: AIM's."""
        self.attn.reset_parameters(depth)
        self.mlp.reset_parameters(depth)
        for norm in (self.ln_1, self.ln_2):
            norm.reset_parameters()
        for module in self.children():
            if isinstance(module, Adapter):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x: (B·T, L, D), frame-major (all tokens of a frame together)."""
        if self.temporal:
            x = self.temporal_adaptation(x, frames)
        xs = self.recomputed(self.attn, self.ln_1(x), self.recompute_attention)
        if self.spatial:
            xs = self.S_Adapter(xs)
        x = x + xs
        xn = self.ln_2(x)
        x = x + self.recomputed(self.mlp, xn, self.recompute_mlp)
        if self.joint:
            x = self.drop_path.add(x, self.MLP_Adapter(xn), self.scale)
        return x

    def temporal_adaptation(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x + drop_path(T_Adapter(attn over time)): each token position attends over its frames.

        The regrouped tokens are copied once (the normalised ones, in the compute dtype); the
        result goes back frame-major inside the residual add, without a second copy.
        """
        bt, length, width = x.shape
        xt = frames_to_tracks(self.ln_1(x), frames)  # (B·L, T, D)
        if self.temporal_in:
            xt = self.T_Adapter_in(xt)
        attend = functools.partial(self.attn, kernel=self.temporal_attention)
        xt = self.T_Adapter(self.recomputed(attend, xt, self.recompute_attention))
        # Drop-path samples are the B·T frames, i.e. the first two dims of (B, T, L, D).
        frame_major = x.view(bt // frames, frames, length, width)
        x = self.drop_path.add(frame_major, tracks_to_frames(xt, length), sample_dims=2)
        return x.view(bt, length, width)

    @staticmethod
    def recomputed(
        module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, recompute: bool
    ) -> torch.Tensor:
        """module(x); with `recompute`, only x is kept and backward re-runs module."""
        if recompute and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)


class Transformer(nn.Module):
    """The block stack, under CLIP's name `transformer.resblocks`."""

    def __init__(self, cfg: AIMConfig) -> None:
        super().__init__()
        vit = cfg.vit
        depth = vit.layers
        # Drop-path rises linearly over depth, 0 at the first block.
        rates = [cfg.drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.resblocks = nn.ModuleList(
            AIMBlock(
                vit.width,
                vit.heads,
                vit.mlp_ratio,
                spatial=cfg.spatial and adapted,
                temporal=cfg.temporal and adapted,
                joint=cfg.joint and adapted,
                temporal_in=cfg.temporal_in and adapted,
                bottleneck_ratio=cfg.bottleneck_ratio,
                adapter_init_std=cfg.adapter_init_std,
                scale=cfg.scale,
                drop_path=rate,
                temporal_attention=cfg.temporal_attention,
            )
            for rate, adapted in zip(rates, cfg.adapted_blocks())
        )
        self.recompute = Recompute.of(cfg.grad_checkpointing)

    @property
    def recompute(self) -> Recompute:
        """What backward recomputes; see `Recompute`."""
        return self._recompute

    @recompute.setter
    def recompute(self, policy: Recompute) -> None:
        self._recompute = policy
        for block in self.resblocks:
            block.recompute_attention = policy is Recompute.ATTENTION_MLP
            block.recompute_mlp = policy in (Recompute.MLP, Recompute.ATTENTION_MLP)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        whole_blocks = self._recompute is Recompute.BLOCKS and torch.is_grad_enabled()
        for block in self.resblocks:
            if whole_blocks:
                x = checkpoint(block, x, frames, use_reentrant=False)
            else:
                x = block(x, frames)
        return x


class AIMViT(nn.Module):
    """A frozen CLIP image ViT adapted to video with AIM, plus a linear classifier.

    Forward: (B, 3, T, H, W) normalised floats -> logits (B, num_classes). The backbone keeps
    OpenAI CLIP's names at the top level (`conv1`, `transformer`, `ln_post`, ...); the classifier
    is `head`. `backbone_source` records where the frozen weights came from (see
    `aim_video.weights`), so training can refuse a backbone that was never loaded.
    """

    def __init__(self, cfg: AIMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        vit = cfg.vit
        width = vit.width
        self.conv1 = nn.Conv2d(3, width, vit.patch_size, stride=vit.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(vit.num_tokens, width))
        if cfg.temporal_embedding:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, cfg.num_frames, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(cfg)
        self.ln_post = nn.LayerNorm(width)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(width, cfg.num_classes)
        self.backbone_source = RANDOM_SOURCE
        self.reset_parameters()
        self.freeze()

    # ----------------------------------------------------------------- initialisation / freezing
    def reset_parameters(self) -> None:
        """Random backbone, zero adapters' fc2, zero temporal embedding; head normal(0.01)."""
        width = self.cfg.vit.width
        nn.init.trunc_normal_(self.conv1.weight, std=0.02)
        # CLIP's own init for the embeddings.
        nn.init.normal_(self.class_embedding, std=width**-0.5)
        nn.init.normal_(self.positional_embedding, std=width**-0.5)
        if self.cfg.temporal_embedding:
            nn.init.zeros_(self.temporal_embedding)
        for norm in (self.ln_pre, self.ln_post):
            norm.reset_parameters()
        for block in self.transformer.resblocks:
            block.reset_parameters(self.cfg.vit.layers)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.backbone_source = RANDOM_SOURCE

    def is_trainable(self, name: str) -> bool:
        """The trainable set: adapters, temporal embedding, ln_post, head (or all if fine-tuning)."""
        return self.cfg.full_finetune or parameter_group(name) != "backbone"

    def freeze(self) -> None:
        """Sets requires_grad to the trainable set; frozen weights never get gradients."""
        for name, param in self.named_parameters():
            param.requires_grad_(self.is_trainable(name))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: small enough to checkpoint every few minutes."""
        return {
            name: tensor
            for name, tensor in self.state_dict().items()
            if self.is_trainable(name)
        }

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW must not decay: embeddings and norms (biases: see the optimiser)."""
        names = {"class_embedding", "positional_embedding", "temporal_embedding"}
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                names |= {f"{name}.weight", f"{name}.bias"}
        return {n for n, _ in self.named_parameters() if n in names}

    def set_grad_checkpointing(self, enable: bool | str | Recompute = True) -> None:
        """Trades compute for memory in training: True (whole blocks), False, or a `Recompute`
        (or its name). `cfg.grad_checkpointing` follows, so the config describes the model."""
        self.transformer.recompute = Recompute.of(enable)
        value = enable.value if isinstance(enable, Recompute) else enable
        self.cfg = self.cfg.replace(grad_checkpointing=value)

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameter counts, and trainable counts per group."""
        groups: dict[str, int] = {}
        total = trainable = 0
        for name, param in self.named_parameters():
            total += param.numel()
            if param.requires_grad:
                trainable += param.numel()
                group = parameter_group(name)
                groups[group] = groups.get(group, 0) + param.numel()
        return {"total": total, "trainable": trainable, **{f"trainable.{k}": v for k, v in groups.items()}}

    # ----------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> tokens (B·T, N+1, D) after ln_pre."""
        b, c, t, h, w = x.shape
        if self.cfg.temporal_embedding and t != self.temporal_embedding.shape[1]:
            raise ValueError(
                f"clip has {t} frames but the temporal embedding has "
                f"{self.temporal_embedding.shape[1]}; resize it with "
                "aim_video.weights.resize_temporal_embedding"
            )
        # (B, C, T, H, W) -> (B·T, C, H, W)
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        x = self.conv1(frames)
        # (B·T, D, grid, grid) -> (B·T, grid², D)
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(b * t, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if self.cfg.temporal_embedding:
            # (B·T, N+1, D) viewed (B, T, N+1, D): frame t's tokens all get embedding t.
            x = (x.view(b, t, -1, x.shape[-1]) + self.temporal_embedding[:, :, None]).flatten(0, 1)
        return self.ln_pre(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> pooled clip features (B, D): mean over T of each frame's CLS."""
        b, t = x.shape[0], x.shape[2]
        tokens = self.transformer(self.embed(x), t)
        cls = self.ln_post(tokens[:, 0])
        # (B·T, D) -> (B, T, D) -> mean over T
        return cls.view(b, t, -1).mean(dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def parameter_group(name: str) -> str:
    """The group a parameter belongs to: an adapter kind, a trainable top-level part, or backbone."""
    parts = name.split(".")
    for part in parts:
        if part in ADAPTER_NAMES:
            return part
    return parts[0] if parts[0] in NEW_TOP_LEVEL else "backbone"
