"""The ablation's runs: one training run per variant through the ordinary engine, each
evaluated; `run_demo` is the whole demo (see `aim_video.demo`), its report written by `page`."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import torch

from aim_video.data.synthetic import SyntheticInfo, make_synthetic
from aim_video.demo.plan import FULL, PRESET, QUICK, VARIANTS, Plan
from aim_video.demo.page import write_report
from aim_video.demo.results import DemoReport, VariantResult
from aim_video.demo.standin import pretrain_standin
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.config import RunConfig, load_config
from aim_video.engine.train import TrainResult, train
from aim_video.files import read_json, write_json_atomic
from aim_video.model import AIMViT, scaled_adapter_std

log = logging.getLogger(__name__)


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


def run_demo(out_dir: str | Path = "aim-video-demo", quick: bool = False, progress: bool = True,
             workers: int = 2, variants: tuple[str, ...] | None = None) -> DemoReport:
    """Runs the whole demo into `out_dir` (the steps: `aim_video.demo`); resumable.

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
    report = DemoReport(plan, data, standin, results, seconds, out, cached=reused)
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


__all__ = ["run_demo", "run_variant", "variant_config"]
