"""`aim-video demo`: AIM's ablation on the built-in synthetic benchmark, on a laptop CPU.

What it shows: a frozen image model cannot tell a clip from the same clip played backwards, and
AIM's temporal adaptation fixes that with a small fraction of the parameters of full
fine-tuning. The steps, each cached in the output folder so that a rerun (or an interrupted run)
picks up where it stopped:

1. ``data/``: the synthetic time-reversal benchmark (`aim_video.data.synthetic`), real H.264
   files. Its classes come in pairs that are each other's time reversal, so a model blind to
   frame order is capped at 50% by construction.
2. ``standin/``: a small CLIP-architecture image ViT pretrained on *still images* of the same
   objects, labelled by shape, colour, texture, position, size and opacity (never by motion).
   It stands in for CLIP, whose weights cannot be downloaded here; it is saved in OpenAI's
   layout and loaded through `aim_video.weights.load_pretrained` like any CLIP checkpoint.
3. ``runs/<variant>/``: one training run per variant through the ordinary engine
   (`aim_video.engine.train`, the `synthetic_cpu` preset), each evaluated with multi-view
   testing: a linear probe and spatial-only adaptation (both without a temporal embedding, so
   truly order-blind), spatial + temporal adaptation, full AIM, and full fine-tuning.
4. ``report.json``, ``results.png`` (top-1 and trainable parameters), ``curves.png`` (training
   loss and validation top-1 of every variant), ``examples.png`` (clips with predictions) and
   ``report.html``, the ablation page: the variants side by side, each linking the evaluation
   report of its run (`aim_video.report`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from aim_video.data import synthetic
from aim_video.data.annotations import load_annotations
from aim_video.data.decode import open_video
from aim_video.data.synthetic import IMAGE_ATTRIBUTES, SyntheticInfo, make_synthetic
from aim_video.data.transforms import CLIP_MEAN, CLIP_STD
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.config import RunConfig, config_to_dict, load_config
from aim_video.engine.optim import WarmupCosine
from aim_video.engine.train import TrainResult, train
from aim_video.files import read_json, write_atomic, write_json_atomic
from aim_video.model import AIMConfig, AIMViT, ViTConfig, scaled_adapter_std
from aim_video.report import REPORT, ReportError, build_eval_report, relative_url, write_page
from aim_video.weights import save_state_dict

log = logging.getLogger(__name__)

PRESET = "synthetic_cpu"


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: which parts of the model train."""

    label: str  # how tables and figures name it
    model: dict[str, bool]  # `model.*` switches of the run config
    order_blind: bool  # no temporal path and no temporal embedding: capped at 50% here


VARIANTS: dict[str, Variant] = {
    "linear_probe": Variant(
        "frozen + linear head",
        {"spatial": False, "temporal": False, "joint": False, "temporal_embedding": False}, True),
    "spatial": Variant(
        "spatial adapter only",
        {"spatial": True, "temporal": False, "joint": False, "temporal_embedding": False}, True),
    "spatial_temporal": Variant(
        "spatial + temporal adapters",
        {"spatial": True, "temporal": True, "joint": False, "temporal_embedding": True}, False),
    "aim": Variant(
        "AIM (spatial + temporal + joint)",
        {"spatial": True, "temporal": True, "joint": True, "temporal_embedding": True}, False),
    "full_finetune": Variant(
        "full fine-tuning (space-time)",
        {"spatial": True, "temporal": True, "joint": True, "temporal_embedding": True,
         "full_finetune": True}, False),
}


@dataclass(frozen=True)
class Plan:
    """Sizes and schedules of one demo run (`FULL` or `QUICK`)."""

    name: str
    # The benchmark.
    num_train: int
    num_val: int
    video_frames: int  # frames per video file; clips sample `clip_frames` of them
    size: int  # frame side in pixels (= the model's input)
    pairs: tuple[str, ...]  # motion pairs, by forward class
    # The stand-in image model.
    width: int
    layers: int
    heads: int
    patch_size: int
    standin_images: int
    standin_steps: int
    standin_batch: int
    standin_lr: float
    # The video runs.
    clip_frames: int
    temporal_in: bool  # T_Adapter_in before the temporal attention (the paper's SSv2 recipe)
    epochs: int
    batch_size: int  # videos per step; each gives `clips_per_video` clips
    clips_per_video: int  # repeated augmentation: clips drawn from one decoded video
    warmup_epochs: float
    lr: float  # AdamW peak lr of the adapters and head
    pretrained_lr_mult: float  # lr factor of the image model's weights in full fine-tuning
    # Multi-view testing: clips per video (x 1 crop: frames are already square); 3, as the
    # paper's Kinetics protocol.
    test_clips: int
    eval_every: int  # validate (1 view) every N epochs for the curves; 0: only the final test
    variants: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists), so it compares equal to what was written."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> dict[str, Any]:
        """What the cached stand-in and runs depend on: the plan, the renderer's version (the
        data folder checks its own) and the preset the runs start from; not which variants run
        nor the test views (a finished run is tested again with the views asked for)."""
        kept = {k: v for k, v in self.to_dict().items() if k not in ("variants", "test_clips")}
        preset = json.loads(json.dumps(config_to_dict(load_config(PRESET))))
        return kept | {"synthetic_version": synthetic.SYNTHETIC_VERSION, "preset": preset}


# The two motion pairs that move the object and the two that change its size and opacity. The
# rotation pair is left out: at 32 px a 4-block stand-in does not learn to read an object's
# orientation from one frame (its orientation regression stayed at chance in pretraining), so
# no variant could tell clockwise from counter-clockwise and the pair would only measure that.
DEMO_PAIRS = ("moves_left", "moves_up", "grows", "fades_in")

FULL = Plan(
    name="full", num_train=2400, num_val=400, video_frames=16, size=32, pairs=DEMO_PAIRS,
    width=64, layers=4, heads=4, patch_size=8,
    standin_images=16000, standin_steps=1000, standin_batch=64, standin_lr=3e-3,
    clip_frames=4, temporal_in=True, epochs=5, batch_size=16, clips_per_video=1,
    warmup_epochs=0.3, lr=5e-3, pretrained_lr_mult=0.1, test_clips=3, eval_every=2,
    variants=tuple(VARIANTS),
)
# The same data and stand-in (so either plan reuses what the other made), fewer epochs and the
# three variants that make the point.
QUICK = dataclasses.replace(
    FULL, name="quick", epochs=4, eval_every=0, variants=("linear_probe", "spatial", "aim"),
)


# ------------------------------------------------------------------------------ the stand-in
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
    for k, (name, size) in enumerate(zip(synthetic.IMAGE_HEADS, head_sizes)):
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
    data = synthetic.synthetic_images(plan.standin_images + held_out, plan.size, seed=1)
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


# ------------------------------------------------------------------------------ the video runs
def variant_config(name: str, plan: Plan, data: SyntheticInfo, standin: Path, out_dir: Path,
                   workers: int) -> RunConfig:
    """The run config of one variant: the `synthetic_cpu` preset at the plan's sizes."""
    variant = VARIANTS[name]
    temporal_in = plan.temporal_in and variant.model["temporal"]
    overrides = [
        f"model.width={plan.width}", f"model.layers={plan.layers}", f"model.heads={plan.heads}",
        f"model.patch_size={plan.patch_size}", f"model.image_size={plan.size}",
        f"model.pretrained={standin}", "model.pretrained_format=openai",
        *(f"model.{key}={str(value).lower()}" for key, value in variant.model.items()),
        f"model.temporal_in={str(temporal_in).lower()}",
        # The paper's adapter init, scaled to the narrow width (0.0693 at width 64).
        f"model.adapter_init_std={scaled_adapter_std(plan.width):.3g}",
        f"data.train={data.train_list}", f"data.val={data.val_list}",
        f"data.class_names={data.classes_file}", f"data.root={data.root}",
        f"data.num_frames={plan.clip_frames}", f"data.input_size={plan.size}",
        f"data.short_side={plan.size}", f"data.test_clips={plan.test_clips}",
        f"data.num_workers={workers}",
        f"data.repeated_aug={plan.clips_per_video}",
        f"optim.epochs={plan.epochs}", f"optim.batch_size={plan.batch_size}",
        f"optim.warmup_epochs={plan.warmup_epochs}", f"optim.lr={plan.lr}",
        f"optim.pretrained_lr_mult={plan.pretrained_lr_mult}",
        f"train.out_dir={out_dir}", "train.device=cpu", f"train.eval_every={plan.eval_every}",
    ]
    return load_config(PRESET, overrides)


@dataclass
class VariantResult:
    name: str
    top1: float  # multi-view top-1 on the validation split, %
    top5: float
    trainable_params: int
    total_params: int
    train_seconds: float  # summed over epochs (also across an interruption)
    history: list[dict[str, Any]]
    out_dir: Path
    trained: bool  # this call trained (False: the run was complete already, only re-tested)

    def row(self) -> dict[str, Any]:
        return {"label": VARIANTS[self.name].label, "top1": round(self.top1, 2),
                "top5": round(self.top5, 2), "trainable_params": self.trainable_params,
                "total_params": self.total_params,
                "train_seconds": round(self.train_seconds, 1),
                "order_blind": VARIANTS[self.name].order_blind, "run": str(self.out_dir)}


def run_variant(cfg: RunConfig, name: str, num_classes: int, progress: bool) -> VariantResult:
    """Trains one variant (resuming its run folder when it holds one) and evaluates it."""
    out_dir = Path(cfg.train.out_dir)
    last = out_dir / ckpt.LAST
    before = last.stat().st_mtime_ns if last.is_file() else None
    result: TrainResult = train(cfg, resume=None if before is None else "auto",
                                progress=progress)
    with torch.device("meta"):  # shapes only
        counts = AIMViT(cfg.aim_config(num_classes)).parameter_counts()
    return VariantResult(
        name=name, top1=result.final_metrics["val_top1"], top5=result.final_metrics["val_top5"],
        trainable_params=counts["trainable"], total_params=counts["total"],
        train_seconds=sum(h["seconds"] for h in result.history), history=result.history,
        out_dir=out_dir, trained=before is None or last.stat().st_mtime_ns != before)


# ------------------------------------------------------------------------------ the report
@dataclass
class DemoReport:
    plan: Plan
    data: SyntheticInfo
    standin: Standin
    variants: dict[str, VariantResult]
    # Wall time of the call that made the results: a rerun that trained nothing keeps the
    # figure of the report it found (it only re-tested the finished runs).
    seconds: float
    out_dir: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "classes": list(self.data.class_names),
            "standin": {"path": str(self.standin.path), "metrics": self.standin.metrics},
            "variants": {name: v.row() for name, v in self.variants.items()},
            "seconds": round(self.seconds, 1),
        }

    def table(self) -> str:
        """The results as a fixed-width text table."""
        head = f"{'variant':<18} {'top-1':>6} {'top-5':>6} {'trainable':>10} {'share':>6} {'train s':>8}"
        full = self.variants.get("full_finetune")
        lines = [head, "-" * len(head)]
        for name, v in self.variants.items():
            share = f"{100 * v.trainable_params / full.trainable_params:5.1f}%" if full else ""
            lines.append(f"{name:<18} {v.top1:6.1f} {v.top5:6.1f} {v.trainable_params:>10,} "
                         f"{share:>6} {v.train_seconds:8.0f}")
        return "\n".join(lines)


def run_demo(out_dir: str | Path = "aim-video-demo", quick: bool = False, progress: bool = True,
             workers: int = 2, variants: tuple[str, ...] | None = None) -> DemoReport:
    """Runs the whole demo into `out_dir` (see the module docstring); resumable.

    Args:
        out_dir: the output folder. The quick and full plans share its data and stand-in and
            keep their runs apart (``runs/quick/``, ``runs/full/``); the report files are the
            last plan's.
        quick: the shorter plan (`QUICK`).
        progress: progress bars.
        workers: data loader processes per run.
        variants: a subset of `VARIANTS` to run (default the plan's).
    """
    start = time.monotonic()
    plan = QUICK if quick else FULL
    if variants is not None:
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"unknown demo variants {unknown}; choose from {list(VARIANTS)}")
        plan = dataclasses.replace(plan, variants=tuple(variants))
    out = Path(out_dir)
    runs = _claim(out / "runs" / plan.name, plan)
    data = make_synthetic(out / "data", num_train=plan.num_train, num_val=plan.num_val,
                          frames=plan.video_frames, size=plan.size, seed=0,
                          pairs=plan.pairs, progress=progress)
    standin = pretrain_standin(out / "standin", plan, progress)
    log.info("stand-in for CLIP: %s", ", ".join(f"{k} {v}" for k, v in standin.metrics.items()))
    results: dict[str, VariantResult] = {}
    for i, name in enumerate(plan.variants):
        log.info("variant %d/%d: %s (%s)", i + 1, len(plan.variants), name, VARIANTS[name].label)
        cfg = variant_config(name, plan, data, standin.path, runs / name, workers)
        results[name] = run_variant(cfg, name, len(data.class_names), progress)
        log.info("%s: top-1 %.1f%%", name, results[name].top1)
    seconds = time.monotonic() - start
    previous = read_json(out / "report.json")
    reused = (data.reused and standin.reused and not any(v.trained for v in results.values())
              and isinstance(previous, dict) and previous.get("plan") == plan.to_dict())
    if reused:
        log.info("every step was cached (%.0f s): report.json keeps the %.0f s of the run that "
                 "made it", seconds, previous["seconds"])
        seconds = previous["seconds"]
    report = DemoReport(plan, data, standin, results, seconds, out)
    write_report(report)
    return report


def _claim(runs: Path, plan: Plan) -> Path:
    """Marks the plan's runs folder as made with these settings; runs made with other settings
    (an older version of the plan) are removed, since resuming them would mix the two."""
    marker = runs / "plan.json"
    previous = read_json(marker)
    if previous is not None and previous != plan.fingerprint():
        log.info("%s holds runs made with other settings: starting them over", runs)
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, plan.fingerprint())
    return runs


def write_report(report: DemoReport) -> None:
    """report.json, results.png, curves.png, examples.png and report.html in the demo folder."""
    out = report.out_dir
    write_json_atomic(out / "report.json", report.to_dict())
    plot_results(report, out / "results.png")
    plot_training(report, out / "curves.png")
    plot_examples(report, out / "examples.png")
    write_ablation_page(out)


FIGURES = ("results.png", "curves.png", "examples.png")


def write_ablation_page(out_dir: str | Path) -> Path:
    """The demo folder's ``report.html`` from its ``report.json``: the variants side by side,
    each linking its run's evaluation report (built here for runs evaluated without one)."""
    out = Path(out_dir)
    report = read_json(out / "report.json")
    if not isinstance(report, dict) or "variants" not in report:
        raise ReportError(f"{out / 'report.json'} is missing or not a demo report")
    full = report["variants"].get("full_finetune")
    rows = []
    for name, row in report["variants"].items():
        evaluation = out / "runs" / report["plan"]["name"] / name / "eval_val"
        link = None
        if (evaluation / "metrics.json").is_file():
            if not (evaluation / REPORT).is_file():
                build_eval_report(evaluation)
            link = relative_url(evaluation / REPORT, out)
        share = 100 * row["trainable_params"] / full["trainable_params"] if full else None
        rows.append(row | {"name": name, "report": link, "share": share})
    plan = report["plan"]
    subtitle = (f"{plan['name']} plan: {len(report['classes'])} classes in time-reversal pairs "
                f"(an order-blind model is capped at 50%), {plan['test_clips']}-clip testing, "
                f"{report['seconds']:.0f} s on the CPU")
    return write_page(out / REPORT, "ablation",
                      "AIM ablation on the synthetic time-reversal benchmark",
                      {"subtitle": subtitle, "variants": rows,
                       "figures": [f for f in FIGURES if (out / f).is_file()]})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_results(report: DemoReport, path: Path) -> Path:
    """Bar chart: multi-view top-1 per variant, with its trainable parameters; chance lines."""
    plt = _pyplot()
    names = list(report.variants)
    top1 = [report.variants[n].top1 for n in names]
    colours = ["#9e9e9e" if VARIANTS[n].order_blind else "#1f77b4" for n in names]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bars = ax.bar(range(len(names)), top1, color=colours)
    for bar, name in zip(bars, names):
        v = report.variants[name]
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1.5,
                f"{v.top1:.1f}%\n{v.trainable_params / 1e3:.1f}k params", ha="center", fontsize=8)
    classes = len(report.data.class_names)
    ax.axhline(100 / classes, color="k", lw=0.8, ls=":", label=f"chance ({100 / classes:.1f}%)")
    ax.axhline(50, color="r", lw=0.8, ls="--", label="order-blind ceiling (50%)")
    ax.set_xticks(range(len(names)), [VARIANTS[n].label for n in names], rotation=15,
                  ha="right", fontsize=8)
    ax.set(ylabel="validation top-1 (%)", ylim=(0, 112),
           title=f"AIM ablation on the synthetic time-reversal benchmark ({report.plan.name})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _step_losses(run: Path) -> tuple[list[int], list[float]]:
    """(step, running training loss) from a run's metrics.jsonl."""
    steps, losses = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "step":
            steps.append(record["step"])
            losses.append(record["loss"])
    return steps, losses


def plot_training(report: DemoReport, path: Path) -> Path:
    """Training loss per step and validation top-1 per epoch, every variant on one figure."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, v in report.variants.items():
        style = "--" if VARIANTS[name].order_blind else "-"
        steps, losses = _step_losses(v.out_dir)
        ax_loss.plot(steps, losses, style, label=name)
        points = [(h["epoch"], h["val_top1"]) for h in v.history if "val_top1" in h]
        if points:
            ax_acc.plot(*zip(*points), style, marker="o", label=name)
    ax_loss.set(xlabel="optimiser step", ylabel="training loss (epoch running mean)",
                title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="validation top-1 (%, 1 view)", ylim=(0, 100),
               title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _predictions(run: Path) -> dict[str, str]:
    """Video path -> top-1 class name, from the run's final evaluation."""
    out = {}
    for line in (run / "eval_val" / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["ok"]:
            out[record["path"]] = record["top"][0]["class"]
    return out


def plot_examples(report: DemoReport, path: Path, frames: int = 8,
                  shown: tuple[str, ...] = ("spatial", "aim")) -> Path:
    """One validation clip per class: its frames, and the predictions of the `shown` variants
    (those that ran) for it."""
    plt = _pyplot()
    names = list(report.data.class_names)
    firsts: dict[int, str] = {}  # label -> the path of its first validation video
    for record in load_annotations(report.data.val_list, root=report.data.root).records:
        firsts.setdefault(record.label, record.path)
    predictions = {n: _predictions(report.variants[n].out_dir)
                   for n in shown if n in report.variants}
    fig, axes = plt.subplots(len(firsts), frames, figsize=(frames * 1.0, len(firsts) * 1.25),
                             squeeze=False)
    for row, (label, video) in enumerate(sorted(firsts.items())):
        with open_video(video) as reader:
            index = np.linspace(0, reader.num_frames - 1, frames).round().astype(int)
            clip = reader.read(index.tolist())
        for col in range(frames):
            axes[row, col].imshow(clip[col], interpolation="nearest")
            axes[row, col].axis("off")
        guesses = []
        for name, found in predictions.items():
            guess = found.get(video, "?")
            guesses.append(f"{name}: {guess} ({'right' if guess == names[label] else 'WRONG'})")
        axes[row, 0].set_title(f"{names[label]}  |  " + "  |  ".join(guesses), fontsize=7,
                               loc="left")
    fig.suptitle("validation clips, time running left to right, with predictions", fontsize=9)
    # Titles run across the row, wider than their axes: lay out by hand, not tight_layout.
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93, wspace=0.06, hspace=0.5)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["FULL", "QUICK", "VARIANTS", "DemoReport", "Plan", "Standin", "VariantResult",
           "pretrain_standin", "run_demo", "variant_config", "write_ablation_page",
           "write_report"]
