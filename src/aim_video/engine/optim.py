"""AdamW parameter groups and the per-step cosine schedule with linear warm-up.

Groups are (head | backbone | pretrained) x (decay | no_decay) over the model's trainable
parameters only: frozen weights never reach the optimiser, so its state stays adapter-sized.
"backbone" here is everything trainable except the head, as in MMAction2's
`custom_keys={'backbone': ...}` (the adapters, temporal embedding and ln_post all live under
`backbone.` there); "pretrained" splits off the image model's own weights, which train only in
full fine-tuning and usually want a smaller lr than the freshly initialised adapters; with an
lr factor of its own, the temporal embedding has a group of its own too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from aim_video.engine.config import OptimConfig
from aim_video.model import parameter_group


TEMPORAL_EMBEDDING = "temporal_embedding"  # the parameter's name in `AIMViT`


def head_lr(optimizer: torch.optim.Optimizer) -> float:
    """The head's current lr (what training logs as "lr"): the schedule's reference."""
    heads = [g["lr"] for g in optimizer.param_groups if g.get("name", "").startswith("head.")]
    return heads[0] if heads else optimizer.param_groups[-1]["lr"]


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """AdamW groups of the trainable parameters, `{head|backbone|pretrained}.{decay|no_decay}`.

    No decay on the model's `no_weight_decay()` set (norms, embeddings) and, with
    `cfg.no_decay_bias`, on biases. The backbone groups' lr is `cfg.lr * cfg.backbone_lr_mult`,
    the pretrained groups' (full fine-tuning only) that times `cfg.pretrained_lr_mult`. When
    `cfg.temporal_embedding_lr_mult` is not 1, the temporal embedding leaves `backbone.no_decay`
    for `temporal_embedding.no_decay`, at the backbone's lr times that factor (at 1 the groups
    stay as they were, so earlier checkpoints' optimiser states still load).
    Every group carries `names` (its parameter names) so that membership is inspectable.

    Args:
        model: an `AIMViT` (its `no_weight_decay()` is used when present).
        cfg: learning rate, weight decay and multipliers.
    """
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # parameter_group calls the image model's own weights "backbone": here "pretrained".
        group = parameter_group(name)
        part = {"head": "head", "backbone": "pretrained"}.get(group, "backbone")
        if name == TEMPORAL_EMBEDDING and cfg.temporal_embedding_lr_mult != 1.0:
            part = TEMPORAL_EMBEDDING
        decays = name not in no_decay and not (cfg.no_decay_bias and name.endswith(".bias"))
        key = f"{part}.{'decay' if decays else 'no_decay'}"
        if key not in groups:
            lr_mult = {"head": 1.0, "backbone": cfg.backbone_lr_mult,
                       "pretrained": cfg.backbone_lr_mult * cfg.pretrained_lr_mult,
                       TEMPORAL_EMBEDDING: cfg.backbone_lr_mult
                       * cfg.temporal_embedding_lr_mult}[part]
            groups[key] = {
                "name": key,
                "params": [],
                "names": [],
                "lr": cfg.lr * lr_mult,
                "weight_decay": cfg.weight_decay if decays else 0.0,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return [groups[k] for k in sorted(groups)]


# Devices with a fused AdamW kernel: one pass over every parameter instead of a dozen
# multi-tensor ops, the same update up to rounding (timings in docs/benchmarks.md).
FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, cfg)`, fused where the parameters' device has the kernel."""
    groups = param_groups(model, cfg)
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = devices <= set(FUSED_DEVICES)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


@dataclass
class WarmupCosine:
    """The lr factor after `step` optimiser updates: linear warm-up, then cosine to `floor`.

    factor(s) = (s + 1) / warmup for s < warmup (so the first update is not wasted at lr 0),
    then floor + (1 - floor) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2,
    reaching `floor` at s = total.
    """

    warmup_steps: int  # updates spent warming up
    total_steps: int  # updates in the whole run
    floor: float = 0.0  # final factor (min_lr / lr)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR over `cfg.epochs` epochs, warm-up `cfg.warmup_epochs` in steps.

    Args:
        optimizer: built by `build_optimizer` (group lrs are the peaks).
        cfg: epochs, warm-up and floor.
        steps_per_epoch: optimiser updates per epoch (after gradient accumulation).
    """
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total)
    schedule = WarmupCosine(warmup, total, cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
