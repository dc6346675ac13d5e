"""Optimiser parameter groups and the learning-rate schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from aim_video.engine.config import OptimConfig
from aim_video.engine.optim import build_optimizer, build_scheduler, head_lr, param_groups
from aim_video.model import AIMConfig, AIMViT, ViTConfig

TINY = ViTConfig(width=32, layers=2, heads=2, patch_size=8, image_size=16)


def _groups(model, **optim):
    return {g["name"]: g for g in param_groups(model, OptimConfig(**optim))}


def test_groups_hold_exactly_the_trainable_parameters_split_by_decay_and_head():
    model = AIMViT(AIMConfig(vit=TINY, num_frames=2, num_classes=3))
    groups = _groups(model, lr=1e-3, backbone_lr_mult=0.1, weight_decay=0.05)
    adapters = [f"transformer.resblocks.{i}.{a}.{fc}" for i in range(2)
                for a in ("T_Adapter", "S_Adapter", "MLP_Adapter") for fc in ("D_fc1", "D_fc2")]
    assert set(groups) == {"head.decay", "head.no_decay", "backbone.decay", "backbone.no_decay"}
    assert groups["head.decay"]["names"] == ["head.weight"]
    assert groups["head.no_decay"]["names"] == ["head.bias"]
    assert sorted(groups["backbone.decay"]["names"]) == sorted(f"{a}.weight" for a in adapters)
    assert sorted(groups["backbone.no_decay"]["names"]) == sorted(
        ["temporal_embedding", "ln_post.weight", "ln_post.bias"] + [f"{a}.bias" for a in adapters]
    )
    assert [groups[k]["lr"] for k in sorted(groups)] == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])
    assert [groups[k]["weight_decay"] for k in sorted(groups)] == [0.05, 0.0, 0.05, 0.0]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for g in groups.values() for n in g["names"]} == trainable


def test_biases_decay_when_asked_and_full_finetune_groups_the_frozen_norms_as_no_decay():
    model = AIMViT(AIMConfig(vit=TINY, num_frames=2, num_classes=3, full_finetune=True))
    groups = _groups(model, no_decay_bias=False, lr=1e-3, backbone_lr_mult=0.5,
                     pretrained_lr_mult=0.2)
    no_decay = set(groups["pretrained.no_decay"]["names"])
    assert {"class_embedding", "positional_embedding", "ln_pre.weight",
            "transformer.resblocks.0.ln_1.bias"} <= no_decay
    assert "transformer.resblocks.0.attn.in_proj_bias" in groups["pretrained.decay"]["names"]
    assert "conv1.weight" in groups["pretrained.decay"]["names"]
    assert groups["head.decay"]["names"] == ["head.weight", "head.bias"]
    # The image model's own weights get their own lr; adapters and ln_post keep the backbone's.
    assert "transformer.resblocks.0.T_Adapter.D_fc1.weight" in groups["backbone.decay"]["names"]
    assert {"temporal_embedding", "ln_post.weight"} <= set(groups["backbone.no_decay"]["names"])
    lrs = {name: g["lr"] for name, g in groups.items()}
    assert lrs == pytest.approx({"head.decay": 1e-3, "backbone.decay": 5e-4,
                                 "backbone.no_decay": 5e-4, "pretrained.decay": 1e-4,
                                 "pretrained.no_decay": 1e-4})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for g in groups.values() for n in g["names"]} == trainable


def test_schedule_warms_up_linearly_then_follows_the_cosine_to_the_floor():
    model = AIMViT(AIMConfig(vit=TINY, num_frames=2, num_classes=3))
    cfg = OptimConfig(lr=1e-3, min_lr=1e-5, epochs=3, warmup_epochs=0.5, backbone_lr_mult=0.5)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)  # 30 steps, 5 warm-up
    head = [g for g in optimizer.param_groups if g["name"] == "head.decay"][0]
    backbone = [g for g in optimizer.param_groups if g["name"] == "backbone.decay"][0]
    lrs = []
    for _ in range(31):
        lrs.append((head["lr"], backbone["lr"]))
        optimizer.step()
        scheduler.step()
    assert lrs[0][0] == pytest.approx(1e-3 / 5)  # first update already moves
    assert lrs[4][0] == pytest.approx(1e-3)  # warm-up ends at the peak
    assert lrs[5][0] == pytest.approx(1e-3)  # cosine starts at the peak
    mid = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 10 / 25))
    assert lrs[15][0] == pytest.approx(mid)
    assert lrs[30][0] == pytest.approx(1e-5)  # the floor at the end
    assert all(b == pytest.approx(0.5 * h) for h, b in lrs)  # backbone groups scale along
    assert all(a >= b for (a, _), (b, _) in zip(lrs[5:], lrs[6:]))


def test_schedule_state_round_trips():
    model = AIMViT(AIMConfig(vit=TINY, num_frames=2, num_classes=3))
    cfg = OptimConfig(epochs=2, warmup_epochs=1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    for _ in range(3):
        opt.step()
        sched.step()
    opt2 = build_optimizer(model, cfg)
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=4)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]


def test_cpu_optimiser_is_fused_and_steps_as_the_default_adamw():
    torch.manual_seed(0)
    model = AIMViT(AIMConfig(vit=TINY, num_frames=2, num_classes=3))
    reference = copy.deepcopy(model)
    cfg = OptimConfig(lr=1e-2, weight_decay=0.05, backbone_lr_mult=0.5)
    fused = build_optimizer(model, cfg)
    plain = torch.optim.AdamW(param_groups(reference, cfg), lr=cfg.lr, betas=tuple(cfg.betas))
    assert all(g["fused"] for g in fused.param_groups)
    for _ in range(3):
        for net in (model, reference):
            for name, param in net.named_parameters():
                if param.requires_grad:  # the same made-up gradient for both copies
                    param.grad = torch.full_like(param, 0.1) * (1 + len(name) % 7)
        fused.step()
        plain.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_temporal_embedding_gets_its_own_group_only_with_its_own_lr_factor():
    model = AIMViT(AIMConfig(vit=TINY, num_frames=2, num_classes=3))
    same = _groups(model, lr=1e-3, backbone_lr_mult=0.5)
    assert "temporal_embedding" in same["backbone.no_decay"]["names"]
    assert not any(name.startswith("temporal_embedding") for name in same)  # old layout kept
    groups = _groups(model, lr=1e-3, backbone_lr_mult=0.5, temporal_embedding_lr_mult=10)
    assert groups["temporal_embedding.no_decay"]["names"] == ["temporal_embedding"]
    assert groups["temporal_embedding.no_decay"]["lr"] == pytest.approx(5e-3)
    assert groups["temporal_embedding.no_decay"]["weight_decay"] == 0.0
    assert "temporal_embedding" not in groups["backbone.no_decay"]["names"]
    assert groups["backbone.no_decay"]["lr"] == pytest.approx(5e-4)
    # Training logs the head's lr whatever the groups' order.
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, temporal_embedding_lr_mult=10))
    assert optimizer.param_groups[-1]["name"] == "temporal_embedding.no_decay"
    assert head_lr(optimizer) == pytest.approx(1e-3)
