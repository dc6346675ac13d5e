"""Multi-view evaluation: softmax averaged over clips x crops, top-1/top-5/mean class accuracy.

Unreadable videos are never dropped silently. Two sets of numbers are reported:

* over **all** videos of the split, an unreadable video counting as an error (`top1`, `top5`,
  `mean_class_accuracy`): the number to compare with published results, since a data set
  with missing files cannot look better than a complete one;
* over the **readable** videos only (`readable_top1`, `readable_top5`): what the model does
  on what it could see.

Under torchrun the videos are sharded by index stride (every video evaluated exactly once, no
padding duplicates as with DistributedSampler) and the per-video results are gathered.

Evaluation returns what it found (`EvalResult`, with every video's `VideoResult`) and, given a
folder, writes it as data files; it draws no page. The report (`aim_video.report`) builds its
page from that folder, and its thumbnails from the decoded views through `on_batch`, the
per-batch observer the caller fills.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from aim_video.data.annotations import load_annotations
from aim_video.data.dataset import DataConfig, VideoDataset, ViewsBatch
from aim_video.data.shards import ShardViewsSet, is_shard_source, open_shard_dataset, rank_subset
from aim_video.data.sources import list_root
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.config import ConfigError, RunConfig, config_to_dict, with_views
from aim_video.engine.distributed import (
    DistEnv,
    all_gather_objects,
    autocast_dtype,
    cleanup,
    compute_threads,
    init_distributed,
    shard_indices,
)
from aim_video.engine.plots import plot_confusion
from aim_video.files import ensure_writable_dir, write_json_atomic, write_text_atomic
from aim_video.inference import ViewsModel, top_answers, views_loader
from aim_video.model import AIMViT

log = logging.getLogger(__name__)

TOP_K = 5

Split = Literal["train", "val", "test"]
# Sees every evaluation batch (on every process) with the data settings that made it, e.g.
# their normalisation: the report's thumbnails (`aim_video.report.ThumbnailWriter`).
BatchObserver = Callable[[ViewsBatch, DataConfig], None]


@dataclass
class VideoResult:
    """One video's outcome."""

    index: int  # position in the split's annotation file
    path: str  # the video, as the annotation file names it (under data.root)
    label: int  # true class
    ok: bool  # False: the video could not be read (counted as an error)
    top: list[int]  # the top_k predicted classes, most probable first ([] when not ok)
    probs: list[float]  # their probabilities (softmax averaged over views)
    reason: str | None = None  # why it could not be read


@dataclass
class EvalResult:
    """Metrics of one split (accuracies in %)."""

    split: str  # which split
    num_videos: int  # videos in the split
    num_bad: int  # unreadable videos (counted as errors in top1/top5/mean_class_accuracy)
    top1: float  # over all videos
    top5: float  # over all videos
    mean_class_accuracy: float  # mean over classes (with videos) of per-class top-1
    readable_top1: float  # over readable videos only
    readable_top5: float  # over readable videos only
    views: str  # CLIPSxCROPS per video
    seconds: float  # wall time
    bad_files: dict[str, str] = field(default_factory=dict)  # path -> reason
    per_class: list[dict[str, Any]] = field(default_factory=list)  # name, videos, bad, top1, top5
    confusion: np.ndarray | None = field(default=None, repr=False)  # [true, predicted] counts
    videos: list[VideoResult] = field(default_factory=list, repr=False)  # by index

    def summary(self) -> dict[str, float]:
        """The scalar metrics."""
        keys = ("num_videos", "num_bad", "top1", "top5", "mean_class_accuracy",
                "readable_top1", "readable_top5", "seconds")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the confusion matrix as nested lists), without the per-video results."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "videos"}
        out["confusion"] = None if self.confusion is None else self.confusion.tolist()
        return out


def _percent(count: float, total: int) -> float:
    return 100.0 * float(count) / total if total else 0.0


def compute_metrics(
    results: list[VideoResult], num_classes: int, split: str = "", views: str = ""
) -> EvalResult:
    """Accuracy numbers and the confusion matrix from per-video results."""
    n = len(results)
    labels = np.array([r.label for r in results], dtype=np.int64)
    ok = np.array([r.ok for r in results], dtype=bool)
    top1 = np.array([r.ok and r.top[0] == r.label for r in results], dtype=bool)
    top5 = np.array([r.ok and r.label in r.top[:TOP_K] for r in results], dtype=bool)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for r in results:
        if r.ok:
            confusion[r.label, r.top[0]] += 1
    per_class, class_acc = [], []
    for c in range(num_classes):
        mask = labels == c
        count = int(mask.sum())
        per_class.append({"class": c, "videos": count, "bad": int((mask & ~ok).sum()),
                          "top1": _percent(top1[mask].sum(), count),
                          "top5": _percent(top5[mask].sum(), count)})
        if count:
            class_acc.append(per_class[-1]["top1"])
    readable = int(ok.sum())
    return EvalResult(
        split=split, num_videos=n, num_bad=n - readable,
        top1=_percent(top1.sum(), n), top5=_percent(top5.sum(), n),
        mean_class_accuracy=float(np.mean(class_acc)) if class_acc else 0.0,
        readable_top1=_percent(top1.sum(), readable), readable_top5=_percent(top5.sum(), readable),
        views=views, seconds=0.0,
        bad_files={r.path: r.reason or "" for r in results if not r.ok},
        per_class=per_class, confusion=confusion, videos=list(results),
    )


def run_model(
    model: torch.nn.Module,
    dataset: VideoDataset,
    indices: list[int],
    cfg: RunConfig,
    dtype: torch.dtype | None,
    progress: bool = False,
    top_k: int = TOP_K,
    on_batch: BatchObserver | None = None,
) -> list[VideoResult]:
    """Per-video results for `indices` of a test-mode dataset, keeping the `top_k` classes.

    The batches, the model's part and the top-k are `aim_video.inference`'s, as for every
    predictor. `on_batch` sees every batch with the data settings that made it (the CLI
    passes the report's thumbnails).
    """
    device = next(model.parameters()).device
    views_model = ViewsModel(model, device, dtype, cfg.eval.views_chunk)
    loader = views_loader(rank_subset(dataset, indices), cfg.eval.batch_size, cfg.data.num_workers,
                          device)
    results: list[VideoResult] = []

    def path_of(index: int) -> str:
        return dataset.records[index].path

    for batch in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
        [probs] = views_model.probabilities(batch["video"]).values()
        if on_batch is not None:
            on_batch(batch, cfg.data)
        for answer, label in zip(top_answers(batch, probs, top_k, path_of),
                                 batch["label"].tolist()):
            results.append(VideoResult(
                index=answer.index, path=path_of(answer.index), label=label, ok=answer.ok,
                top=answer.top, probs=answer.probs, reason=answer.reason))
    return results


def evaluate_model(
    model: AIMViT,
    cfg: RunConfig,
    *,
    split: Split,
    out_dir: str | Path | None = None,
    class_names: list[str] | None = None,
    progress: bool = False,
    on_batch: BatchObserver | None = None,
) -> EvalResult:
    """Evaluates a model as it is (e.g. during training) on one split with `cfg`'s test views.

    Args:
        model: the classifier, on its device; left in the training mode it was in.
        cfg: data, evaluation and precision settings.
        split: "val", "test" or "train" (every split is read with the test views and
            transform).
        out_dir: if given, rank 0 writes `metrics.json`, `per_class.csv`, `confusion.png` and
            `predictions.jsonl` there (`write_results`; `aim_video.report.build_report` makes
            the page from them); it is checked to be writable before the work.
        class_names: the model's classes; default the split's.
        progress: show a progress bar.
        on_batch: called with every batch of this process's videos (see `BatchObserver`).

    Returns:
        The metrics and per-video results; identical on every process.
    """
    return _evaluate(model, cfg, split, out_dir, class_names, progress, time.monotonic(),
                     on_batch=on_batch)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    split: Split = "val",
    out_dir: str | Path | None = None,
    pretrained: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    views: str | None = None,
    device: str | None = None,
    progress: bool = False,
    on_batch: BatchObserver | None = None,
) -> EvalResult:
    """Evaluates a training checkpoint with its own config on one split.

    Args:
        checkpoint: `last.pt` / `best.pt` of a run. Its backbone is re-loaded from the config's
            `model.pretrained` (or `pretrained`) and must have the fingerprint it records.
        split: "val", "test" or "train" (read with the test views and transform).
        out_dir: as in `evaluate_model`; checked before the checkpoint is loaded.
        pretrained: backbone weights overriding the config's.
        overrides: `section.key=value` strings applied to the checkpoint's config.
        views: CLIPSxCROPS overriding the config's test views, e.g. "3x1".
        device: cpu, cuda, cuda:N; default the config's `train.device`.
        progress: show a progress bar.
        on_batch: called with every batch of this process's videos (see `BatchObserver`).

    Returns:
        The metrics and per-video results; identical on every process.
    """
    start = time.monotonic()
    if out_dir is not None:
        ensure_writable_dir(out_dir)
    state = ckpt.read_training_checkpoint(checkpoint)
    overrides = [*overrides, *([f"train.device={device}"] if device else [])]
    cfg = with_views(ckpt.checkpoint_config(state, checkpoint, overrides), views)
    model = ckpt.model_from_checkpoint(state, checkpoint, cfg, pretrained)
    return _evaluate(model, cfg, split, out_dir, list(state["class_names"]), progress, start,
                     move_model=True, checkpoint=checkpoint, on_batch=on_batch)


def _evaluate(
    model: AIMViT, cfg: RunConfig, split: Split, out_dir: str | Path | None,
    class_names: list[str] | None, progress: bool, start: float, move_model: bool = False,
    checkpoint: str | Path | None = None, on_batch: BatchObserver | None = None,
) -> EvalResult:
    """Joins (or starts and ends) the process group, then evaluates this process's shard."""
    if out_dir is not None:
        out_dir = ensure_writable_dir(out_dir)
    joined_before = dist.is_initialized()
    env = init_distributed(cfg.train.device)
    try:
        if move_model:
            model.to(env.device)
        with compute_threads(env.device, cfg.data.num_workers, cfg.train.cpu_threads):
            return _evaluate_shards(model, cfg, split, env, class_names, out_dir, progress, start,
                                    checkpoint, on_batch)
    finally:
        if not joined_before:
            cleanup(env)  # a standalone evaluation under torchrun


def eval_dataset(data: DataConfig, split: Split) -> VideoDataset:
    """The videos of `split` read as for testing (multi-view, no augmentation), whatever the
    split: a training-mode dataset would give one augmented clip per video, not views."""
    path = getattr(data, split)
    if path is None:
        raise ConfigError(f"no annotation file for the {split} split: set data.{split}")
    if is_shard_source(path):  # streamed from tar shards: each rank reads its own shards
        return open_shard_dataset(data, str(path), "test", f"data.{split}")
    annotations = load_annotations(path, data.format, list_root(path, data.root),
                                   data.class_names)
    return VideoDataset(annotations, data, mode="test")


def _evaluate_shards(
    model: AIMViT, cfg: RunConfig, split: Split, env: DistEnv, class_names: list[str] | None,
    out_dir: Path | None, progress: bool, start: float, checkpoint: str | Path | None = None,
    on_batch: BatchObserver | None = None,
) -> EvalResult:
    """This process's shard, gathered, then the metrics (and their files on rank 0)."""
    dataset = eval_dataset(cfg.data, split)
    names = class_names or list(dataset.class_names)
    if len(names) != model.cfg.num_classes:
        raise ConfigError(f"the model has {model.cfg.num_classes} classes but the {split} split "
                          f"(data.{split}={getattr(cfg.data, split)}) has {len(names)}")
    if list(dataset.class_names) != names and env.is_main:
        log.warning("the %s split names its classes differently from the model; labels are "
                    "compared by index", split)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        indices = (dataset.rank_indices(env.rank, env.world_size)
                   if isinstance(dataset, ShardViewsSet) else shard_indices(len(dataset), env))
        mine = run_model(model, dataset, indices, cfg,
                         autocast_dtype(cfg.train.precision, device), progress and env.is_main,
                         on_batch=on_batch)
    finally:
        model.train(was_training)
    results = sorted((r for part in all_gather_objects(env, mine) for r in part),
                     key=lambda r: r.index)
    views = f"{cfg.data.test_clips}x{cfg.data.test_crops}"
    result = compute_metrics(results, len(names), split, views)
    for row in result.per_class:
        row["name"] = names[row["class"]]
    result.seconds = time.monotonic() - start  # before the files, which record it
    if out_dir is not None and env.is_main:
        run = {"checkpoint": None if checkpoint is None else str(checkpoint),
               "config": config_to_dict(cfg)}
        write_results(result, names, out_dir, cfg.train.plots, run)
    return result


def write_results(
    result: EvalResult, names: list[str], out_dir: Path, plots: bool = True,
    run: dict[str, Any] | None = None,
) -> None:
    """An evaluation folder: metrics.json (with `run`: the checkpoint and config),
    per_class.csv, predictions.jsonl (one line per video of `result.videos`) and (if `plots`)
    confusion.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result.summary() | {"split": result.split, "views": result.views,
                                  "bad_files": result.bad_files} | (run or {})
    write_json_atomic(out_dir / "metrics.json", summary)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["class", "name", "videos", "bad", "top1", "top5"])
    writer.writeheader()
    writer.writerows(result.per_class)
    write_text_atomic(out_dir / "per_class.csv", table.getvalue())
    if plots and result.confusion is not None:
        plot_confusion(result.confusion, names, out_dir / "confusion.png")
    write_text_atomic(out_dir / "predictions.jsonl", "".join(
        json.dumps({
            "index": r.index, "path": r.path,
            "label": names[r.label], "ok": r.ok, "reason": r.reason,
            "top": [{"class": names[c], "prob": p} for c, p in zip(r.top, r.probs)],
        }) + "\n"
        for r in result.videos
    ))
