"""The demo's stand-in for CLIP: a small CLIP-architecture image ViT pretrained on still images.

CLIP's weights cannot be downloaded here, so the demo pretrains its own image model on the
synthetic benchmark's stills (`aim_video.demo.stills`), labelled by shape, colour, texture,
position, size and opacity (never by motion), and saves it in OpenAI's layout, so that the runs
load it through `aim_video.weights.load_pretrained` like any CLIP checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from aim_video.data.transforms import CLIP_MEAN, CLIP_STD
from aim_video.demo.plan import Plan
from aim_video.demo.stills import IMAGE_ATTRIBUTES, IMAGE_HEADS, synthetic_images
from aim_video.engine.optim import WarmupCosine
from aim_video.files import read_json, write_atomic, write_json_atomic
from aim_video.model import AIMConfig, AIMViT, ViTConfig
from aim_video.weights import save_state_dict


@dataclass
class Standin:
    """The pretrained stand-in image model on disk and how well it reads single images."""

    path: Path  # OpenAI-layout state dict
    metrics: dict[str, float]  # held-out accuracy per label head, R² per attribute
    seconds: float  # pretraining wall time (0 when reused)
    reused: bool


# The attributes (where the object is, how big, how opaque) are what the motion classes change,
# so their regression gets this weight against the three classification losses.
ATTRIBUTE_WEIGHT = 4.0


def standin_vit(plan: Plan) -> ViTConfig:
    """The stand-in's architecture: CLIP's ViT at the plan's (tiny) sizes."""
    return ViTConfig(width=plan.width, layers=plan.layers, heads=plan.heads,
                     patch_size=plan.patch_size, image_size=plan.size)


def _image_model(vit: ViTConfig, outputs: int) -> AIMViT:
    """A plain image ViT (one frame, nothing AIM adds) whose head has `outputs` units."""
    cfg = AIMConfig(vit=vit, num_frames=1, num_classes=outputs, spatial=False, temporal=False,
                    joint=False, temporal_embedding=False, full_finetune=True, drop_path=0.0,
                    dropout=0.0)
    return AIMViT(cfg)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> CLIP-normalised float (N, 3, 1, H, W), one-frame clips."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((images.float() - mean) / std).unsqueeze(2)


def _standin_losses(
    outputs: torch.Tensor, labels: torch.Tensor, attributes: torch.Tensor,
    head_sizes: list[int], centre: torch.Tensor, scale: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of each label head plus the squared error of the standardised attributes."""
    losses, start = [], 0
    for k, size in enumerate(head_sizes):
        losses.append(F.cross_entropy(outputs[:, start:start + size], labels[:, k]))
        start += size
    targets = (attributes - centre) / scale
    attribute_loss = F.mse_loss(outputs[:, start:], targets, reduction="none").mean(0).sum()
    losses.append(ATTRIBUTE_WEIGHT * attribute_loss)
    return torch.stack(losses).sum()


def _standin_metrics(
    outputs: torch.Tensor, labels: torch.Tensor, attributes: torch.Tensor,
    head_sizes: list[int], centre: torch.Tensor, scale: torch.Tensor,
) -> dict[str, float]:
    metrics, start = {}, 0
    for k, (name, size) in enumerate(zip(IMAGE_HEADS, head_sizes)):
        hits = outputs[:, start:start + size].argmax(1) == labels[:, k]
        metrics[f"{name}_accuracy"] = round(100 * hits.float().mean().item(), 1)
        start += size
    targets = (attributes - centre) / scale
    residual = ((outputs[:, start:] - targets) ** 2).mean(0)
    variance = targets.var(0, unbiased=False)
    for name, r, v in zip(IMAGE_ATTRIBUTES, residual.tolist(), variance.tolist()):
        metrics[f"{name}_r2"] = round(1 - r / v, 3)
    return metrics


def pretrain_standin(folder: Path, plan: Plan, progress: bool = True) -> Standin:
    """Pretrains (or reuses) the stand-in for CLIP on synthetic still images.

    The image model learns to name each still's shape, colour and texture and to read off the
    object's position, size and opacity. The weights go to ``folder/standin_vit.pt`` in OpenAI
    CLIP's layout, with ``standin.json`` recording the settings and held-out metrics; a folder
    with the same settings is reused as it is.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path, meta_path = folder / "standin_vit.pt", folder / "standin.json"
    settings = {k: v for k, v in plan.fingerprint().items()
                if k in ("size", "width", "layers", "heads", "patch_size", "synthetic_version")
                or k.startswith("standin")}
    meta = read_json(meta_path)
    if meta is not None and meta.get("settings") == settings and path.is_file():
        return Standin(path, meta["metrics"], 0.0, reused=True)

    start = time.monotonic()
    held_out = max(500, plan.standin_images // 20)
    data = synthetic_images(plan.standin_images + held_out, plan.size, seed=1)
    images = _normalise(data.images)
    centre = data.attributes[:-held_out].mean(0)
    scale = data.attributes[:-held_out].std(0)
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
        torch.manual_seed(0)
        model = _image_model(standin_vit(plan), sum(data.head_sizes) + len(IMAGE_ATTRIBUTES))
    optimiser = torch.optim.AdamW(model.parameters(), lr=plan.standin_lr, weight_decay=0.05,
                                  fused=True)
    warmup = max(1, plan.standin_steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, WarmupCosine(warmup, plan.standin_steps))
    generator = torch.Generator().manual_seed(0)
    model.train()
    bar = tqdm(range(plan.standin_steps), desc="pretraining the stand-in for CLIP",
               unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        index = torch.randint(0, plan.standin_images, (plan.standin_batch,), generator=generator)
        loss = _standin_losses(model(images[index]), data.labels[index], data.attributes[index],
                               data.head_sizes, centre, scale)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        outputs = model(images[-held_out:])
    metrics = _standin_metrics(outputs, data.labels[-held_out:], data.attributes[-held_out:],
                               data.head_sizes, centre, scale)
    write_atomic(path, lambda temp: save_state_dict(model, temp, format="openai"))
    seconds = time.monotonic() - start
    write_json_atomic(meta_path, {"settings": settings, "metrics": metrics, "seconds": seconds})
    return Standin(path, metrics, seconds, reused=False)


__all__ = ["Standin", "pretrain_standin", "standin_vit"]
