"""Small building blocks of the AIM ViT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """CLIP's activation, x * sigmoid(1.702 x); the frozen MLP must keep it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Adapter(nn.Module):
    """fc2(GELU(fc1(x))), optionally plus x.

    Parameter names (`D_fc1`, `D_fc2`) follow the released AIM checkpoints so they load as is.
    `fc2` starts at zero, so a fresh adapter adds nothing (skip variant: it is the identity).
    """

    def __init__(self, width: int, ratio: float, skip: bool) -> None:
        super().__init__()
        hidden = int(width * ratio)
        self.skip = skip
        self.D_fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()  # exact GELU, unlike the frozen MLP's QuickGELU
        self.D_fc2 = nn.Linear(hidden, width)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.D_fc1.weight, std=0.02)
        nn.init.zeros_(self.D_fc1.bias)
        nn.init.zeros_(self.D_fc2.weight)
        nn.init.zeros_(self.D_fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.D_fc2(self.act(self.D_fc1(x)))
        return x + out if self.skip else out


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    """Multi-head self-attention from a fused `in_proj_weight`, through SDPA.

    Keeps `nn.MultiheadAttention`'s parameter names (as CLIP does) but not its sequence-first
    layout: inputs are batch-first. One module serves both AIM attentions: the spatial one over
    the tokens of a frame, and the temporal one over the frames of a token position.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.in_proj_weight, std=0.02)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.trunc_normal_(self.out_proj.weight, std=0.02)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial attention: x (N, L, D) attends over L."""
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # (N, L, 3D) -> (3, N, heads, L, D/heads)
        q, k, v = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        # (N, heads, L, D/heads) -> (N, L, D)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))

    def forward_temporal(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Temporal attention: x (B·T, L, D) frame-major; each token position attends over T.

        Equivalent to regrouping to (B·L, T, D) and calling `forward`, without copying x: the
        projection is per token, so only q, k, v are viewed in the temporal grouping.
        """
        bt, length, width = x.shape
        b = bt // frames
        head_dim = width // self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # (B·T, L, 3D) -> (3, B, L, heads, T, D/heads)
        qkv = qkv.view(b, frames, length, 3, self.heads, head_dim).permute(3, 0, 2, 4, 1, 5)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        # (B, L, heads, T, D/heads) -> (B, T, L, heads, D/heads) -> (B·T, L, D)
        out = out.permute(0, 3, 1, 2, 4).reshape(bt, length, width)
        return self.out_proj(out)
