"""The released AIM model, transcribed as the original code is written: the ground truth.

A faithful, deliberately unoptimised copy of the reference implementation (the MMAction2 fork
released with the paper: the `ViT_CLIP` backbone inside a `Recognizer3D` with an `I3DHead`).
It keeps the original's choices that `aim_video.model` changes for speed or clarity:

- `nn.MultiheadAttention` on sequence-first (L, N, D) tensors, called with
  `need_weights=False`, for the spatial and the temporal attention alike;
- CLIP's `LayerNorm` subclass that computes in fp32 and casts back;
- einops rearranges (written here with permute/reshape, the pattern in a comment on each);
- the temporal embedding added through a (B·N, T, D) regrouping;
- `ln_post` applied to every token before the CLS tokens are taken;
- timm's `DropPath` applied to sequence-first tensors, so in training it drops per *token
  position* (dim 0), not per clip: a quirk of the original, kept (eval is unaffected);
- the I3D head: global average pool over (T, 1, 1), dropout, `fc_cls`.

Module names reproduce the release's state_dict keys exactly (`backbone.conv1.weight`, ...,
`cls_head.fc_cls.weight`), so a released checkpoint loads with `load_state_dict(strict=True)`.
Used by the tests as the reference for `AIMViT` and by `benchmarks/throughput.py` as the speed
baseline. Input layout: (B, 3, T, H, W).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from aim_video.model.config import AIMConfig


class LayerNorm(nn.LayerNorm):
    """CLIP's LayerNorm: computes in fp32 and casts back, so fp16 weights stay stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class DropPath(nn.Module):
    """timm's DropPath: zeroes whole slices along dim 0 while training (scaled by 1/keep)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        return x * random_tensor.div_(keep_prob)


class Adapter(nn.Module):
    """fc2(act(fc1(x))), plus x when `skip_connect`; hidden width D * mlp_ratio."""

    def __init__(self, D_features: int, mlp_ratio: float = 0.25, skip_connect: bool = True) -> None:
        super().__init__()
        self.skip_connect = skip_connect
        D_hidden_features = int(D_features * mlp_ratio)
        self.act = nn.GELU()
        self.D_fc1 = nn.Linear(D_features, D_hidden_features)
        self.D_fc2 = nn.Linear(D_hidden_features, D_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.D_fc2(self.act(self.D_fc1(x)))
        return x + xs if self.skip_connect else xs


class ResidualAttentionBlock(nn.Module):
    """CLIP's block with AIM's temporal, spatial and joint adaptation (all three, always)."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        scale: float = 1.0,
        num_tadapter: int = 1,
        num_frames: int = 8,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_tadapter = num_tadapter
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, d_model * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(d_model * 4, d_model)),
                ]
            )
        )
        self.ln_2 = LayerNorm(d_model)
        self.MLP_Adapter = Adapter(d_model, skip_connect=False)
        self.S_Adapter = Adapter(d_model)
        self.scale = scale
        self.T_Adapter = Adapter(d_model, skip_connect=False)
        if num_tadapter == 2:
            self.T_Adapter_in = Adapter(d_model)
        self.num_frames = num_frames
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False, attn_mask=None)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N+1, B·T, D), sequence-first
        n, bt, d = x.shape
        t = self.num_frames
        b = bt // t
        # temporal adaptation; 'n (b t) d -> t (b n) d'
        xt = x.reshape(n, b, t, d).permute(2, 1, 0, 3).reshape(t, b * n, d)
        if self.num_tadapter == 2:
            xt = self.T_Adapter(self.attention(self.T_Adapter_in(self.ln_1(xt))))
        else:
            xt = self.T_Adapter(self.attention(self.ln_1(xt)))
        # 't (b n) d -> n (b t) d'
        xt = xt.reshape(t, b, n, d).permute(2, 1, 0, 3).reshape(n, bt, d)
        x = x + self.drop_path(xt)
        # spatial adaptation
        x = x + self.S_Adapter(self.attention(self.ln_1(x)))
        # joint adaptation
        xn = self.ln_2(x)
        x = x + self.mlp(xn) + self.drop_path(self.scale * self.MLP_Adapter(xn))
        return x


class Transformer(nn.Module):
    def __init__(
        self,
        num_frames: int,
        width: int,
        layers: int,
        heads: int,
        num_tadapter: int = 1,
        scale: float = 1.0,
        drop_path: float = 0.1,
    ) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        # device="cpu" so the model can also be built on the meta device (parameter counts)
        dpr = [x.item() for x in torch.linspace(0, drop_path, layers, device="cpu")]
        self.resblocks = nn.Sequential(
            *[
                ResidualAttentionBlock(width, heads, scale, num_tadapter, num_frames, dpr[i])
                for i in range(layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class ViT_CLIP(nn.Module):
    """The AIM backbone: CLIP's image encoder with a temporal embedding and adapted blocks.

    Returns per-frame CLS features shaped for the I3D head: (B, D, T, 1, 1).
    """

    def __init__(
        self,
        input_resolution: int,
        num_frames: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        drop_path_rate: float,
        num_tadapter: int = 1,
        adapter_scale: float = 0.5,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.layers = layers
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width)
        )
        self.ln_pre = LayerNorm(width)
        self.num_frames = num_frames
        self.temporal_embedding = nn.Parameter(torch.zeros(1, num_frames, width))
        self.transformer = Transformer(
            num_frames, width, layers, heads, num_tadapter, adapter_scale, drop_path_rate
        )
        self.ln_post = LayerNorm(width)

    def init_weights(self) -> None:
        """The release's init without pretrained weights: trunc-normal linears, zero adapter fc2."""

        def _init_weights(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        self.apply(_init_weights)
        # The release zeroes D_fc2 of every module whose name holds S_Adapter, T_Adapter
        # (which matches T_Adapter_in too) or MLP_Adapter.
        for name, module in self.transformer.named_modules():
            if "Adapter" in name and name.endswith("D_fc2"):
                nn.init.constant_(module.weight, 0)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        # 'b c t h w -> (b t) c h w'
        x = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
        x = self.conv1(x)
        # (B·T, D, grid, grid) -> (B·T, grid², D)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        x = x.permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(
            x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device
        )
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)

        n, d = x.shape[1], x.shape[2]
        t = self.num_frames
        # '(b t) n d -> (b n) t d'
        x = x.reshape(B, t, n, d).permute(0, 2, 1, 3).reshape(B * n, t, d)
        x = x + self.temporal_embedding
        # '(b n) t d -> (b t) n d'
        x = x.reshape(B, n, t, d).permute(0, 2, 1, 3).reshape(B * t, n, d)

        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_post(x)
        x = x[:, 0]
        # '(b t) d -> b d t', then (B, D, T, 1, 1) for the I3D head
        x = x.reshape(B, T, -1).permute(0, 2, 1)
        return x.unsqueeze(-1).unsqueeze(-1)


class I3DHead(nn.Module):
    """MMAction2's I3DHead: average pool over (T, H, W), dropout, linear `fc_cls`."""

    def __init__(self, num_classes: int, in_channels: int, dropout_ratio: float = 0.5) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.dropout = nn.Dropout(p=dropout_ratio) if dropout_ratio != 0 else None
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def init_weights(self) -> None:
        nn.init.normal_(self.fc_cls.weight, 0, 0.01)
        nn.init.constant_(self.fc_cls.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avg_pool(x)  # (B, D, T, 1, 1) -> (B, D, 1, 1, 1)
        if self.dropout is not None:
            x = self.dropout(x)
        x = x.view(x.shape[0], -1)  # (B, D)
        return self.fc_cls(x)


class ReferenceAIM(nn.Module):
    """The released recogniser: `backbone` (ViT_CLIP) + `cls_head` (I3DHead).

    Args:
        width: token dimension D.
        layers: number of blocks.
        heads: attention heads.
        patch_size: patch side in pixels.
        image_size: input side in pixels.
        num_frames: frames per clip; inputs must have exactly this many.
        num_classes: classifier size.
        adapter_scale: s, the joint adapter's weight.
        temporal_in: add T_Adapter_in (the release's `num_tadapter=2`, SSv2).
        drop_path: stochastic-depth rate of the last block (linear from 0).
        dropout: dropout before `fc_cls`.
    """

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        patch_size: int,
        image_size: int,
        num_frames: int,
        num_classes: int,
        adapter_scale: float = 0.5,
        temporal_in: bool = False,
        drop_path: float = 0.2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.backbone = ViT_CLIP(
            input_resolution=image_size,
            num_frames=num_frames,
            patch_size=patch_size,
            width=width,
            layers=layers,
            heads=heads,
            drop_path_rate=drop_path,
            num_tadapter=2 if temporal_in else 1,
            adapter_scale=adapter_scale,
        )
        self.cls_head = I3DHead(num_classes, width, dropout)
        self.backbone.init_weights()
        self.cls_head.init_weights()

    @classmethod
    def from_config(cls, cfg: AIMConfig) -> ReferenceAIM:
        """The reference counterpart of `AIMViT(cfg)`; only full AIM configs have one."""
        vit = cfg.vit
        unsupported = {
            "spatial": not cfg.spatial,
            "temporal": not cfg.temporal,
            "joint": not cfg.joint,
            "temporal_embedding": not cfg.temporal_embedding,
            "adapter_blocks": cfg.adapter_blocks != "all",
            "bottleneck_ratio": cfg.bottleneck_ratio != 0.25,
            "mlp_ratio": vit.mlp_ratio != 4.0,
        }
        bad = [name for name, differs in unsupported.items() if differs]
        if bad:
            raise ValueError(f"the reference model has no counterpart for these settings: {bad}")
        return cls(
            width=vit.width,
            layers=vit.layers,
            heads=vit.heads,
            patch_size=vit.patch_size,
            image_size=vit.image_size,
            num_frames=cfg.num_frames,
            num_classes=cfg.num_classes,
            adapter_scale=cfg.scale,
            temporal_in=cfg.temporal_in,
            drop_path=cfg.drop_path,
            dropout=cfg.dropout,
        )

    def freeze(self) -> None:
        """The release's trainable set, chosen by substring as its `tools/train.py` does."""
        trainable = ("temporal_embedding", "ln_post", "Adapter", "cls_head")
        for name, param in self.named_parameters():
            param.requires_grad_(any(part in name for part in trainable))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> logits (B, num_classes)."""
        return self.cls_head(self.backbone(x))
