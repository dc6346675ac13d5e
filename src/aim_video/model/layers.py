"""Small building blocks of the AIM ViT.

Written for speed without changing results: both attentions go through one 4-D SDPA call each,
QuickGELU's constants are folded into the MLP weights, pre-norms hand matmuls their input already
in the autocast dtype, and drop-path is folded into the residual add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QUICK_GELU_ALPHA = 1.702


class MLP(nn.Module):
    """CLIP's MLP, c_proj(QuickGELU(c_fc(x))) with QuickGELU(h) = h * sigmoid(1.702 h).

    The frozen MLP must keep QuickGELU. Since QuickGELU(h) = silu(1.702 h) / 1.702, both
    constants fold into the weights: c_fc scaled by 1.702 yields 1.702 h, and c_proj's weight
    divided by 1.702 absorbs the division. Scaling the weights costs a pass over D x 4D numbers
    per call; the unfolded form costs four passes (two forward, two backward) over the
    (tokens x 4D) hidden activations, the largest tensors of a block. And `silu` keeps one
    tensor for backward where h * sigmoid(1.702 h) keeps two.
    """

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def reset_parameters(self, depth: int) -> None:
        """OpenAI CLIP's initialisation (see `Attention.reset_parameters`)."""
        width = self.c_fc.in_features
        nn.init.normal_(self.c_fc.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(self.c_proj.weight, std=width**-0.5 * (2 * depth) ** -0.5)
        nn.init.zeros_(self.c_fc.bias)
        nn.init.zeros_(self.c_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = QUICK_GELU_ALPHA
        hidden = F.linear(x, self.c_fc.weight * a, self.c_fc.bias * a)  # 1.702 * c_fc(x)
        return F.linear(F.silu(hidden), self.c_proj.weight * (1.0 / a), self.c_proj.bias)


class AutocastLayerNorm(nn.LayerNorm):
    """LayerNorm for the input of matmuls: fp32 statistics, output in the autocast dtype.

    Under autocast a plain LayerNorm runs in fp32 and returns fp32 (autocast's policy), and every
    matmul that reads it then casts its own copy to bf16/fp16: the MLP norm feeds two matmuls
    (the frozen MLP and the joint adapter), and the temporal path regroups it first. Casting once
    here reads the fp32 result once and halves what the regrouping copies. Statistics stay fp32;
    without autocast this is exactly `nn.LayerNorm` (low-precision inputs are normalised with
    fp32 accumulation by PyTorch's kernels). The residual stream is not affected: it stays in
    the dtype autocast gives it (fp32, as in the reference).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        device = x.device.type
        # The meta device (used to count FLOPs) has no autocast. Not asked through
        # `torch.amp.is_autocast_available`: torch.compile (2.11) cannot trace that call and
        # broke the graph in every block here, recompiling each one.
        if device != "meta" and torch.is_autocast_enabled(device):
            out = out.to(torch.get_autocast_dtype(device))
        return out


class Adapter(nn.Module):
    """fc2(GELU(fc1(x))), optionally plus x.

    Parameter names (`D_fc1`, `D_fc2`) follow the released AIM checkpoints so they load as is.
    `fc2` starts at zero, so a fresh adapter adds nothing (skip variant: it is the identity).
    """

    def __init__(self, width: int, ratio: float, skip: bool, init_std: float = 0.02) -> None:
        super().__init__()
        hidden = int(width * ratio)
        self.skip = skip
        self.init_std = init_std
        self.D_fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()  # exact GELU, unlike the frozen MLP's QuickGELU
        self.D_fc2 = nn.Linear(hidden, width)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.D_fc1.weight, std=self.init_std)
        nn.init.zeros_(self.D_fc1.bias)
        nn.init.zeros_(self.D_fc2.weight)
        nn.init.zeros_(self.D_fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.D_fc2(self.act(self.D_fc1(x)))
        return x + out if self.skip else out


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training.

    Applied only inside the residual add (`add`), where it costs no kernel of its own.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def add(
        self, x: torch.Tensor, branch: torch.Tensor, scale: float = 1.0, sample_dims: int = 1
    ) -> torch.Tensor:
        """x + scale * self(branch), with the scale and 1/keep folded into one small mask.

        The residual add is bandwidth-bound; this makes it one kernel in eval and two in
        training, instead of up to four. `branch` may be a strided view (the temporal branch
        arrives token-major); the sum takes x's layout.

        Args:
            x: the residual stream.
            branch: the branch output, broadcastable to x.
            scale: the branch weight (the joint adapter's s).
            sample_dims: how many leading dims of x index the samples that are dropped whole.
        """
        if self.p == 0.0 or not self.training:
            return x + branch if scale == 1.0 else torch.add(x, branch, alpha=scale)
        keep = 1.0 - self.p
        shape = x.shape[:sample_dims] + (1,) * (x.ndim - sample_dims)
        mask = x.new_empty(shape).bernoulli_(keep).mul_(scale / keep)
        return x + branch * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def frames_to_tracks(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B·T, L, D) frame-major -> (B·L, T, D): each token position's T frames side by side.

    One copy; it gives the temporal attention a plain 4-D batch, which SDPA's fused kernels
    need (a 5-D call falls back to the unfused math path).
    """
    bt, length, width = x.shape
    # (B·T, L, D) -> (B, T, L, D) -> (B, L, T, D) -> (B·L, T, D)
    return x.view(bt // frames, frames, length, width).transpose(1, 2).reshape(-1, frames, width)


def tracks_to_frames(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B·L, T, D) -> a (B, T, L, D) view of it, no copy: the consumer writes frame-major."""
    bl, frames, width = x.shape
    # (B·L, T, D) -> (B, L, T, D) -> (B, T, L, D), strided
    return x.view(bl // length, length, frames, width).transpose(1, 2)


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v as two batched matmuls, the softmax in fp32.

    For very short sequences (the temporal attention's T frames), where a fused kernel's tiles
    (64 or 128 positions) are mostly padding; the (L, L) scores are small there.
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    return scores.float().softmax(dim=-1).to(v.dtype) @ v


class Attention(nn.Module):
    """Multi-head self-attention from a fused `in_proj_weight`, through SDPA.

    Keeps `nn.MultiheadAttention`'s parameter names (as CLIP does) but not its sequence-first
    layout: inputs are batch-first. One module serves both AIM attentions: the spatial one over
    the tokens of a frame, and the temporal one over the frames of a token position (after
    `frames_to_tracks`).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def reset_parameters(self, depth: int) -> None:
        """OpenAI CLIP's initialisation, for a backbone trained from scratch.

        A flat std of 0.02 is fine where pretrained weights overwrite it, but at small widths it
        leaves the attention logits near zero and a backbone trained from scratch learns slowly.
        """
        width = self.out_proj.in_features
        nn.init.normal_(self.in_proj_weight, std=width**-0.5)
        nn.init.normal_(self.out_proj.weight, std=width**-0.5 * (2 * depth) ** -0.5)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, kernel: str = "sdpa") -> torch.Tensor:
        """x (N, L, D) attends over L; returns (N, L, D). `kernel`: "sdpa" (PyTorch's fused
        attention) or "matmul" (`matmul_attention`)."""
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # (N, L, 3D) -> (N, L, 3, heads, D/heads) -> 3 x (N, heads, L, D/heads), all views.
        # Splitting on the `3` axis (not a leading one) makes backward stack the q/k/v
        # gradients straight into the (N, L, 3D) layout, so in_proj's backward needs no copy.
        q, k, v = (
            t.transpose(1, 2) for t in qkv.view(n, length, 3, self.heads, -1).unbind(2)
        )
        if kernel == "matmul":
            out = matmul_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        # (N, heads, L, D/heads) -> (N, L, heads, D/heads) -> (N, L, D); a view for the fused
        # kernels, which write heads innermost.
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))
