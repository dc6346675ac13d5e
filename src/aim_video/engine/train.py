"""The training loop: AIM's recipe on one process or under torchrun.

`train(cfg)` builds the model (refusing a random frozen backbone unless asked), the data, the
optimiser and schedule, then runs epochs of mixed-precision steps with gradient accumulation,
validating and checkpointing as configured. With `data.device_augment` (by default on a
GPU) the loader ships uint8 crops and the flip, colour jitter, normalisation and erasing run on
the device (`DeviceAugment`), drawing what the loader would have. Everything random is seeded,
and a checkpoint stores the position inside the epoch and every process's RNG state, so a run
that is stopped and resumed ends with the same weights as one that ran straight through (on the
CPU; on a GPU with `train.deterministic`). It may resume with another number of processes that
keeps the videos per optimiser step (`optim.accum_steps`): same schedule, same videos. Every
file is written atomically; after a kill (at any moment: `tests/test_faults.py`), `--resume auto`
repairs what the kill left: best.pt, a torn last line of metrics.jsonl, temporary files.

The run folder (`train.out_dir`) receives `config.yaml`, `last.pt`, `best.pt`, `metrics.jsonl`,
`bad_files.json`, `curves.png`, TensorBoard events (`tb/`, when installed) and, after the
last epoch, a full multi-view evaluation of each `eval.splits` split (`eval_<split>/`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from aim_video.data.dataset import DeviceAugment, TrainBatch, build_dataset, collate
from aim_video.data.shards import ShardTrainSet
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.config import (
    ConfigError,
    RunConfig,
    config_to_dict,
    save_config,
    with_absolute_paths,
    with_views,
)
from aim_video.engine.distributed import (
    DistEnv,
    EpochSampler,
    all_gather_objects,
    all_reduce_sum,
    autocast_dtype,
    broadcast_flag,
    cleanup,
    compute_threads,
    deterministic_algorithms,
    init_distributed,
    loader_worker_init,
)
from aim_video.engine.evaluate import BatchObserver, EvalResult, evaluate_model
from aim_video.engine.optim import build_optimizer, build_scheduler, head_lr
from aim_video.engine.plots import plot_curves
from aim_video.engine.transfer import Transfer, transfer_weights
from aim_video.files import (
    ensure_writable_dir,
    output_header,
    read_own_lines,
    remove_temp_files,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)
from aim_video.model import AIMViT
from aim_video.weights import CheckpointError, backbone_fingerprint

log = logging.getLogger(__name__)

TRAINING_LOG = "training log"
# metrics.jsonl's first line: says the file is ours; as a record (kind "header", step 0) it is
# skipped by readers that pick records by kind.
LOG_HEADER = output_header(TRAINING_LOG, format=1, kind="header", step=0).rstrip("\n")

# Under torchrun a save due by `train.save_every_minutes` is noticed within this many optimiser
# steps (seconds to a few minutes), instead of a broadcast and a host wait every step.
CLOCK_CHECK_STEPS = 20


@dataclass
class TrainResult:
    """What a training run produced."""

    history: list[dict[str, Any]]  # one dict per finished epoch (train and val metrics)
    last_checkpoint: Path | None  # out_dir/last.pt
    best_checkpoint: Path | None  # out_dir/best.pt (best val top-1), None without validation
    train_seconds: float  # wall time of this call's training (excluding the final evaluation)
    # The last epoch's entry, updated with the full-view evaluation of each eval.splits split
    # (`<split>_top1`, `<split>_num_bad`, ...; these replace the periodic `val_*` numbers).
    final_metrics: dict[str, float]
    out_dir: Path  # the run folder
    completed: bool  # False when stopped early by train.max_steps
    global_step: int  # optimiser steps done in total


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class _EpochSums:
    """Running sums of this process's training metrics within an epoch (resumable)."""

    loss: float = 0.0  # sum over clips of the per-clip loss
    correct: float = 0.0  # clips whose top-1 prediction is right
    clips: float = 0.0  # clips seen

    def add(self, loss: float, correct: float, clips: int) -> None:
        self.loss += loss
        self.correct += correct
        self.clips += clips


class _DeviceSums:
    """The training loss and top-1 hits summed on the device the logits are on, read back once
    per `take`: reading them every step would stall a GPU. Only device tensors meet here (the
    clip count is known on the host), so the sums run on any device."""

    def __init__(self, device: torch.device | str) -> None:
        self.values = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, hits
        self.clips = 0

    @torch.no_grad()
    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One micro-batch: `loss` its mean loss, `logits` (N, classes), `labels` (N,)."""
        hits = (logits.argmax(dim=1) == labels).sum()
        self.values += torch.stack([loss.detach() * len(labels), hits.to(loss.dtype)])
        self.clips += len(labels)

    def take(self) -> tuple[float, float, int]:
        """(loss sum, hits, clips) since the last take; starts the sums over."""
        loss, hits = self.values.tolist()
        clips, self.clips = self.clips, 0
        self.values.zero_()
        return loss, hits, clips


@dataclass
class _Progress:
    """Where the run is; stored in every checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    step_in_epoch: int = 0  # optimiser steps done in that epoch
    global_step: int = 0  # optimiser steps done in total
    history: list[dict[str, Any]] = field(default_factory=list)
    best_top1: float | None = None  # best validation top-1 so far
    best_epoch: int | None = None  # the epoch (from 1) of best_top1, whose checkpoint is best.pt
    bad_files: dict[str, str] = field(default_factory=dict)  # path -> reason (all processes)


class Trainer:
    """One training run; `train()` is the entry point. Holds the objects the loop shares."""

    def __init__(self, cfg: RunConfig, env: DistEnv, progress: bool,
                 eval_observer: Callable[[Path], BatchObserver] | None = None) -> None:
        self.cfg = cfg
        self.eval_observer = eval_observer
        self.env = env
        self.show_progress = progress and env.is_main
        self.out_dir = Path(cfg.train.out_dir)
        self.state = _Progress()
        self.sums = _EpochSums()
        self._pending = _DeviceSums(env.device)
        self.dtype = autocast_dtype(cfg.train.precision, env.device)
        self._last_save_time = time.monotonic()

        seed_everything(cfg.train.seed + env.rank)
        on_device = cfg.data.device_augment
        if on_device is None:
            on_device = env.device.type == "cuda"
        self.train_set = build_dataset(dataclasses.replace(cfg.data, device_augment=on_device),
                                       "train")
        # With device augmentation the loader ships uint8 crops; this finishes them.
        self.device_augment = DeviceAugment(self.train_set.train_transform) if on_device else None
        self.class_names = list(self.train_set.class_names)
        self.has_val = cfg.data.val is not None
        self.model = self._build_model()
        if isinstance(self.train_set, ShardTrainSet):  # streamed: shards dealt to the workers
            self.sampler = self.train_set.configure(env.rank, env.world_size, cfg.train.seed,
                                                    cfg.optim.batch_size, cfg.train.compile)
        else:
            self.sampler = EpochSampler(len(self.train_set), env, cfg.train.seed)
        self.loader = self._build_loader()
        if len(self.loader) == 0:
            raise ConfigError(
                f"train.compile drops the short last batch, and each process's share of the "
                f"{len(self.train_set)} training videos is {self.sampler.per_process}, less than "
                f"optim.batch_size {cfg.optim.batch_size}: lower it or set train.compile=false")
        self.steps_per_epoch = math.ceil(len(self.loader) / cfg.optim.accum_steps)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.dtype == torch.float16)
        self.forward_model = self._wrap_model()
        self.writer = None
        # Hashing the frozen backbone costs seconds for ViT-L; it cannot change, so hash once.
        self.fingerprint = None if cfg.model.full_finetune else backbone_fingerprint(self.model)

    # ------------------------------------------------------------------ setup
    def _build_model(self) -> AIMViT:
        cfg = self.cfg
        num_classes = cfg.model.num_classes or len(self.class_names)
        if num_classes != len(self.class_names):
            raise ValueError(
                f"model.num_classes is {num_classes} but {cfg.data.train} has "
                f"{len(self.class_names)} classes"
            )
        model = ckpt.model_from_config(cfg, num_classes)  # train.grad_checkpointing included
        ckpt.load_backbone(model, cfg.model, training=True)
        model.to(self.env.device)
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.env.is_main:
            counts = model.parameter_counts()
            log.info("model: %s parameters, %s trainable; backbone from %s",
                     f"{counts['total']:,}", f"{counts['trainable']:,}", model.backbone_source)
        return model

    def _build_loader(self) -> DataLoader:
        workers = self.cfg.data.num_workers
        if isinstance(self.train_set, ShardTrainSet):  # its workers collate their own batches
            return DataLoader(
                self.train_set.batches(), batch_size=None, num_workers=workers,
                pin_memory=self.env.device.type == "cuda", persistent_workers=workers > 0,
                worker_init_fn=functools.partial(loader_worker_init, parent=os.getpid()),
                generator=torch.Generator().manual_seed(self.cfg.train.seed),
            )
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.optim.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.env.device.type == "cuda",
            persistent_workers=workers > 0,
            # A compiled model recompiles for a new batch shape: the short last batch would
            # compile it again mid-epoch (then for a dynamic batch size).
            drop_last=self.cfg.train.compile,
            worker_init_fn=functools.partial(loader_worker_init, parent=os.getpid()),
            # The loader's own generator: creating an iterator must not draw from the global
            # RNG, whose state a resumed run restores from the checkpoint.
            generator=torch.Generator().manual_seed(self.cfg.train.seed),
        )

    def _wrap_model(self) -> torch.nn.Module:
        model: torch.nn.Module = self.model
        if self.env.distributed:
            device_ids = [self.env.device.index] if self.env.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        if self.cfg.train.compile:
            model = torch.compile(model)
        return model

    def _no_sync(self, sync: bool):
        """Skips DDP's gradient all-reduce on accumulation micro-batches."""
        ddp = self.forward_model
        ddp = getattr(ddp, "_orig_mod", ddp)
        if sync or not isinstance(ddp, DistributedDataParallel):
            return contextlib.nullcontext()
        return ddp.no_sync()

    # ------------------------------------------------------------------ resume / save
    def resume(self, path: Path) -> None:
        """Restores weights, optimiser, schedule, RNG and position from a checkpoint."""
        state = ckpt.read_training_checkpoint(path)
        self._warn_config_changes(state["config"], path)
        if state["class_names"] != self.class_names:
            raise CheckpointError(
                f"{path}: the checkpoint's classes differ from those of {self.cfg.data.train}"
            )
        per_process = state["processes"]
        if isinstance(self.train_set, ShardTrainSet):  # its epoch order depends on the slots
            self.train_set.check_resume(path, len(per_process),
                                        state["config"]["data"]["num_workers"],
                                        state["step_in_epoch"] % self.steps_per_epoch)
        if len(per_process) != self.env.world_size:
            self._check_world_change(state, path)
        ckpt.restore_model(self.model, state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.state = _Progress(
            epoch=state["epoch"], step_in_epoch=state["step_in_epoch"],
            global_step=state["global_step"], history=list(state["history"]),
            best_top1=state["best_top1"], best_epoch=state.get("best_epoch"),
            bad_files=dict(state["bad_files"]),
        )
        if len(per_process) == self.env.world_size:
            mine = per_process[self.env.rank]
            ckpt.set_rng_state(mine["rng"], self.env.device)
            self.sums = _EpochSums(**mine["sums"])
        else:
            # The epoch's sums are only ever summed over processes: rank 0 carries them all.
            if self.env.is_main:
                for saved in per_process:
                    self.sums.add(**saved["sums"])
            log.warning("%s was written by %d processes, this run has %d: RNG states are not "
                        "restored, so the rest of the run is not bit-identical", path,
                        len(per_process), self.env.world_size)
        if self.env.is_main:
            self._restore_epoch_end_copies(path)
        if self.state.step_in_epoch >= self.steps_per_epoch and self._epoch_ended():
            # Saved at the end of an epoch (after validation): the next one starts afresh.
            # Saved after the epoch's last step but before its end, the loop runs the end only.
            self.state.epoch += 1
            self.state.step_in_epoch = 0
            self.sums = _EpochSums()
        if self.env.is_main:
            log.info("resumed from %s at epoch %d, step %d", path, self.state.epoch + 1,
                     self.state.global_step)

    def _check_world_change(self, state: dict[str, Any], path: Path) -> None:
        """Refuses a resume with another process count unless the run goes on unchanged.

        Each optimiser step trains the next `batch_size x accum_steps x processes` videos of
        the epoch's shuffled order (process r taking every world_size-th), whatever the number
        of processes: with the same videos per step the schedule's length, and the videos the
        first `step_in_epoch` steps trained, are the saved run's. With other counts neither the
        saved schedule nor the position in the epoch would fit this run.
        """
        saved_world, saved = len(state["processes"]), state["config"]["optim"]
        saved_videos = saved["batch_size"] * saved["accum_steps"] * saved_world
        saved_total = state["scheduler"]["lr_lambdas"][0]["total_steps"]
        per_micro_batch = self.cfg.optim.batch_size * self.env.world_size
        videos = per_micro_batch * self.cfg.optim.accum_steps
        total = self.scheduler.lr_lambdas[0].total_steps
        if (saved_videos, saved_total) == (videos, total):
            return
        hint = (f" (here optim.accum_steps={saved_videos // per_micro_batch})"
                if saved_videos % per_micro_batch == 0 else "")
        raise CheckpointError(
            f"{path} was written by {saved_world} process(es) at {saved_videos} videos per "
            f"optimiser step ({saved_total} steps in all); this run has {self.env.world_size} at "
            f"{videos} ({total} steps): resume with {saved_world} process(es), or keep "
            f"optim.batch_size x optim.accum_steps x processes = {saved_videos}{hint}")

    def init_from(self, path: str | Path) -> Transfer:
        """Starts the trained parts from another run's checkpoint or a released AIM model
        (`transfer.transfer_weights`); a fresh run's first step, before any training."""
        report = transfer_weights(
            self.model, path, self.class_names, trust=self.cfg.model.trust_checkpoint,
            fingerprint=self.fingerprint,
        )
        if self.env.is_main:
            for line in report.lines():
                log.info("%s", line)
        return report

    def _epoch_ended(self) -> bool:
        """Whether the current epoch's end (validation, history entry) is recorded."""
        return any(entry["epoch"] == self.state.epoch + 1 for entry in self.state.history)

    def _restore_epoch_end_copies(self, path: Path) -> None:
        """Rewrites best.pt (and epoch_N.pt) when a kill came between them and last.pt.

        An epoch's end writes last.pt first, then best.pt and epoch_N.pt: copies of the same
        state. A kill in between leaves last.pt naming itself as the best epoch while best.pt
        is missing or an earlier epoch's. Every later write of last.pt comes after these copies
        or after this repair, so a best.pt that differs from the epoch last.pt names as best
        can only be this case, and `path` is then the right content.
        """
        best_epoch = self.state.best_epoch
        ended_here = self.state.step_in_epoch >= self.steps_per_epoch and self._epoch_ended()
        copies = []
        if best_epoch is not None:
            step = next(h["step"] for h in self.state.history if h["epoch"] == best_epoch)
            if _checkpoint_step(self.out_dir / ckpt.BEST) != step:
                if ended_here and best_epoch == self.state.epoch + 1:
                    copies.append(self.out_dir / ckpt.BEST)
                else:
                    log.warning("%s is not the checkpoint of epoch %d, which %s names as the "
                                "best, and cannot be rebuilt from it", self.out_dir / ckpt.BEST,
                                best_epoch, path)
        epoch_file = self.out_dir / f"epoch_{self.state.epoch + 1}.pt"
        if self.cfg.train.keep_epoch_checkpoints and ended_here and not epoch_file.is_file():
            copies.append(epoch_file)
        for copy in copies:
            if copy.resolve() != path.resolve():
                write_atomic(copy, lambda temp: shutil.copyfile(path, temp))
                log.info("rewrote %s from %s (the run was stopped before writing it)", copy, path)

    def _warn_config_changes(self, saved: dict[str, Any], path: Path) -> None:
        now = config_to_dict(self.cfg)
        changed = [
            f"{section}.{key}: {saved[section].get(key)!r} -> {value!r}"
            for section, values in now.items()
            for key, value in values.items()
            if section in saved and saved[section].get(key) != value
            and (section, key) != ("train", "out_dir")
        ]
        if changed and self.env.is_main:
            log.warning("resuming %s with a changed config: %s", path, "; ".join(changed))

    def save(self, *, best: bool = False, epoch_file: bool = False) -> None:
        """Writes last.pt (and best.pt / epoch_N.pt); a collective call in distributed runs."""
        per_process = all_gather_objects(self.env, {
            "rng": ckpt.rng_state(self.env.device), "sums": dataclasses.asdict(self._flush())})
        bad = all_gather_objects(self.env, self.state.bad_files)
        for files in bad:
            self.state.bad_files.update(files)
        if self.env.is_main:
            progress = dataclasses.asdict(self.state) | {"processes": per_process}
            state = ckpt.checkpoint_state(
                self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                scaler=self.scaler, progress=progress, cfg_dict=config_to_dict(self.cfg),
                class_names=self.class_names, fingerprint=self.fingerprint,
            )
            ckpt.save_checkpoint(state, self.out_dir / ckpt.LAST)
            if best:
                ckpt.save_checkpoint(state, self.out_dir / ckpt.BEST)
            if epoch_file:
                ckpt.save_checkpoint(state, self.out_dir / f"epoch_{self.state.epoch + 1}.pt")
            self._write_bad_files()
        self._last_save_time = time.monotonic()

    def _write_bad_files(self) -> None:
        bad = dict(sorted(self.state.bad_files.items()))
        write_json_atomic(self.out_dir / "bad_files.json", bad)

    # ------------------------------------------------------------------ logging
    def _open_logs(self) -> None:
        if not self.env.is_main:
            return
        metrics = self.out_dir / "metrics.jsonl"
        # Ours when it starts with our header; one without (an older version's) is ours when
        # the folder holds the last.pt this run resumes from. Anything else is refused as is.
        own = read_own_lines(metrics, TRAINING_LOG, option="train.out_dir",
                             headerless=(self.out_dir / ckpt.LAST).is_file())
        kept: list[str] = []
        if own is not None:
            # Drop lines logged after the checkpoint we resume from: they will be logged again.
            # A line cut short (a kill or power loss mid-append) cannot be read: drop it too.
            torn = int(own.torn)
            for line in own.lines:
                try:
                    record = json.loads(line) if line.strip() else {}
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    torn += 1
                elif record and record.get("step", 0) <= self.state.global_step:
                    kept.append(line)
            if torn:
                log.warning("%s: dropped %d unreadable line(s), cut short by an interrupted "
                            "write", metrics, torn)
        write_text_atomic(metrics, "".join(f"{line}\n" for line in [LOG_HEADER, *kept]))
        if self.cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed; logging to metrics.jsonl only")
            else:
                self.writer = SummaryWriter(self.out_dir / "tb", purge_step=self.state.global_step)

    def _log(self, kind: str, values: dict[str, Any]) -> None:
        if not self.env.is_main:
            return
        record = {"kind": kind, "epoch": self.state.epoch + 1, "step": self.state.global_step,
                  **values}
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", value, self.state.global_step)

    # ------------------------------------------------------------------ the loop
    def _batch(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(videos, labels) on the device: every item's K clips in one batch axis, device
        augmentation applied."""
        video, labels, states = batch.clips()  # (B·K, ...), (B·K,), (B·K, 5056) or None
        for path, reason in batch.skipped:
            self.state.bad_files.setdefault(path, reason)
        device = self.env.device
        video = video.to(device, non_blocking=True)
        if self.device_augment is not None:
            return self.device_augment(video, labels, states)  # float (B, C, T, S, S), labels
        return video, labels.to(device, non_blocking=True)

    def _micro_step(self, video: torch.Tensor, labels: torch.Tensor, weight: float,
                    sync: bool) -> None:
        """Forward and backward of one micro-batch; `weight` = 1 / micro-batches in the step."""
        autocast = (contextlib.nullcontext() if self.dtype is None
                    else torch.autocast(self.env.device.type, dtype=self.dtype))
        with self._no_sync(sync):
            with autocast:
                logits = self.forward_model(video)
            loss = F.cross_entropy(logits.float(), labels,
                                   label_smoothing=self.cfg.optim.label_smoothing)
            self.scaler.scale(loss * weight).backward()
        self._pending.add(loss, logits, labels)

    def _flush(self) -> _EpochSums:
        """Moves the device-side running sums into `self.sums` (one read-back)."""
        self.sums.add(*self._pending.take())
        return self.sums

    def _optimizer_step(self) -> None:
        cfg = self.cfg.optim
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step_in_epoch += 1
        self.state.global_step += 1

    def _stop_requested(self) -> bool:
        max_steps = self.cfg.train.max_steps
        return max_steps is not None and self.state.global_step >= max_steps

    def _save_due(self) -> bool:
        cfg = self.cfg.train
        by_steps = cfg.save_every_steps > 0 and self.state.global_step % cfg.save_every_steps == 0
        by_time = False
        # Clocks differ, so under torchrun rank 0 decides; sharing its decision is a collective
        # and a wait for the GPU, so it is asked every CLOCK_CHECK_STEPS steps only.
        if cfg.save_every_minutes > 0 and (not self.env.distributed
                                           or self.state.global_step % CLOCK_CHECK_STEPS == 0):
            by_time = time.monotonic() - self._last_save_time >= 60 * cfg.save_every_minutes
            by_time = broadcast_flag(self.env, by_time)
        return by_steps or by_time

    def train_epoch(self) -> bool:
        """Runs the rest of the current epoch; False when stopped early by `max_steps`."""
        epoch, accum = self.state.epoch, self.cfg.optim.accum_steps
        skip = self.state.step_in_epoch * accum * self.cfg.optim.batch_size
        self.sampler.set_epoch(epoch, skip)
        self.train_set.set_epoch(epoch)
        self.model.train()
        num_micro = len(self.loader)
        bar = tqdm(total=self.steps_per_epoch, initial=self.state.step_in_epoch,
                   desc=f"epoch {epoch + 1}/{self.cfg.optim.epochs}", unit="step",
                   disable=not self.show_progress, dynamic_ncols=True, leave=False)
        clips_window, window_start = 0, time.monotonic()
        with bar:
            for i, batch in enumerate(self.loader):
                if i % accum == 0 and self._stop_requested():
                    return False
                group_start = i - i % accum
                group_size = min(accum, num_micro - group_start)
                last_in_group = i == group_start + group_size - 1
                video, labels = self._batch(batch)
                self._micro_step(video, labels, 1.0 / group_size, sync=last_in_group)
                clips_window += len(labels)
                if not last_in_group:
                    continue
                self._optimizer_step()
                bar.update()
                if self.state.global_step % self.cfg.train.log_every == 0:
                    elapsed = time.monotonic() - window_start
                    rate = clips_window * self.env.world_size / max(elapsed, 1e-9)
                    sums = self._flush()
                    # loss: running mean over the epoch so far; lr: the head's
                    values = {"loss": sums.loss / max(sums.clips, 1),
                              "lr": head_lr(self.optimizer), "clips_per_s": rate}
                    bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}",
                                    clips_s=f"{rate:.1f}", eta=self._eta(rate))
                    self._log("step", values)
                    clips_window, window_start = 0, time.monotonic()
                if self._save_due():
                    self.save()
        return True

    def _eta(self, clips_per_s: float) -> str:
        """Time left for the whole run (H:MM:SS) at `clips_per_s`."""
        steps_left = self.cfg.optim.epochs * self.steps_per_epoch - self.state.global_step
        clips_per_step = (self.cfg.optim.batch_size * self.cfg.optim.accum_steps
                          * self.env.world_size * self.cfg.data.repeated_aug)
        seconds = int(min(steps_left * clips_per_step / max(clips_per_s, 1e-9), 3_599_999))
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def end_epoch(self, epoch_seconds: float) -> None:
        """Reduces the epoch's metrics, validates if due, records history, saves."""
        sums = self._flush()
        loss, correct, clips = all_reduce_sum(self.env, [sums.loss, sums.correct, sums.clips])
        epoch = self.state.epoch + 1
        entry: dict[str, Any] = {
            "epoch": epoch, "step": self.state.global_step,
            "train_loss": loss / max(clips, 1), "train_top1": 100.0 * correct / max(clips, 1),
            "lr": head_lr(self.optimizer), "seconds": epoch_seconds,
        }
        every = self.cfg.train.eval_every
        last = epoch == self.cfg.optim.epochs
        improved = False
        if self.has_val and ((every > 0 and epoch % every == 0) or last):
            result = self.validate()
            entry |= {"val_top1": result.top1, "val_top5": result.top5,
                      "val_mean_class_accuracy": result.mean_class_accuracy}
            if self.state.best_top1 is None or result.top1 > self.state.best_top1:
                self.state.best_top1 = result.top1
                self.state.best_epoch = epoch
                improved = True
        self.state.history.append(entry)
        self._log("epoch", {k: v for k, v in entry.items() if k not in ("epoch", "step")})
        if self.env.is_main:
            log.info("epoch %d: %s", epoch, ", ".join(
                f"{k} {v:.4g}" for k, v in entry.items() if k not in ("epoch", "step")))
        self.state.step_in_epoch = self.steps_per_epoch  # the epoch is complete
        self.save(best=improved, epoch_file=self.cfg.train.keep_epoch_checkpoints)
        self.sums = _EpochSums()
        self.state.epoch += 1
        self.state.step_in_epoch = 0

    def validate(self) -> EvalResult:
        """The periodic validation: `eval.periodic_views` views of the val split."""
        cfg = with_views(self.cfg, self.cfg.eval.periodic_views)
        return evaluate_model(self.model, cfg, split="val", class_names=self.class_names)

    def run(self, resume: Path | None) -> TrainResult:
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            removed = remove_temp_files(self.out_dir)  # what killed writes of this run left
            if removed:
                log.info("removed %d temporary file(s) of an interrupted write from %s: %s",
                         len(removed), self.out_dir, ", ".join(p.name for p in removed))
        if resume is not None:
            if self.cfg.train.init_from and self.env.is_main:
                log.info("train.init_from (%s) is ignored: resuming from %s, which holds the "
                         "run's own weights", self.cfg.train.init_from, resume)
            self.resume(resume)
        elif self.cfg.train.init_from:
            self.init_from(self.cfg.train.init_from)
        if self.env.is_main:  # once accepted: a refused resume leaves the run's config as it was
            save_config(self.cfg, self.out_dir / "config.yaml")
        self._open_logs()
        start = time.monotonic()
        completed = True
        try:
            while self.state.epoch < self.cfg.optim.epochs:
                epoch_start = time.monotonic()
                if not self.train_epoch():
                    self.save()
                    completed = False
                    break
                self.end_epoch(time.monotonic() - epoch_start)
                if self._stop_requested() and self.state.epoch < self.cfg.optim.epochs:
                    completed = False
                    break
        finally:
            if self.writer is not None:
                self.writer.close()
        seconds = time.monotonic() - start
        final = dict(self.state.history[-1]) if self.state.history else {}
        if completed:
            final |= self._final_evaluation()
        if self.env.is_main and self.state.history and self.cfg.train.plots:
            plot_curves(self.state.history, self.out_dir / "curves.png")
        if self.env.is_main:
            self._write_bad_files()
        last, best = self.out_dir / ckpt.LAST, self.out_dir / ckpt.BEST
        return TrainResult(
            history=self.state.history,
            last_checkpoint=last if last.is_file() else None,
            best_checkpoint=best if best.is_file() else None,
            train_seconds=seconds,
            final_metrics=final,
            out_dir=self.out_dir,
            completed=completed,
            global_step=self.state.global_step,
        )

    def _final_evaluation(self) -> dict[str, float]:
        """Full-view evaluation of the final model on each of `eval.splits` that is set."""
        metrics: dict[str, float] = {}
        for split in self.cfg.eval.splits:
            if getattr(self.cfg.data, split, None) is None:
                continue
            out_dir = self.out_dir / f"eval_{split}"
            observer = self.eval_observer(out_dir) if self.eval_observer else None
            result = evaluate_model(self.model, self.cfg, split=split, out_dir=out_dir,
                                    class_names=self.class_names, progress=self.show_progress,
                                    on_batch=observer)
            metrics |= {f"{split}_{k}": v for k, v in result.summary().items()}
            self._log("eval", {f"{split}_{k}": v for k, v in result.summary().items()})
        return metrics


def _checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint was saved at; None when it is missing or unreadable."""
    try:
        return ckpt.read_training_checkpoint(path)["global_step"]
    except CheckpointError:
        return None


def train(cfg: RunConfig, resume: str | Path | None = None, progress: bool = True, *,
          eval_observer: Callable[[Path], BatchObserver] | None = None) -> TrainResult:
    """Trains (or resumes) a run described by `cfg`, writing into `cfg.train.out_dir`.

    Under torchrun every process calls this; each returns the same history, and only rank 0
    writes files.

    Args:
        cfg: the resolved run config.
        resume: None (fresh start), `"auto"` (`out_dir/last.pt` when present) or a checkpoint.
            A fresh start with `train.init_from` begins from that checkpoint's trained weights
            (`transfer.transfer_weights`); a resumed run ignores it.
        progress: show a tqdm progress bar (rank 0 only).
        eval_observer: given the folder of a final evaluation (`eval_<split>`), the observer
            of its batches (`aim-video train` passes the report's `ThumbnailWriter`).

    The run's paths are stored absolute (`with_absolute_paths`), so that its config and
    checkpoints work from any folder.

    Raises:
        RandomBackboneError: the backbone is frozen, random and not explicitly allowed.
        CheckpointError: the resume (or `train.init_from`) checkpoint is unreadable, its
            backbone differs, or (init_from) its keys do not fit the model.
        FileExistsError: `out_dir` holds a run already and `resume` is None.
        UserError: `out_dir` cannot be created or written (checked before any other work).
    """
    cfg = with_absolute_paths(cfg)
    with deterministic_algorithms(cfg.train.deterministic):
        return _train(cfg, resume, progress, eval_observer)


def _train(cfg: RunConfig, resume: str | Path | None, progress: bool,
           eval_observer: Callable[[Path], BatchObserver] | None) -> TrainResult:
    joined_before = dist.is_initialized()
    env = init_distributed(cfg.train.device)
    try:
        if env.is_main:
            ensure_writable_dir(cfg.train.out_dir)
        resume_path = ckpt.find_resume(resume, cfg.train.out_dir)
        init_from = cfg.train.init_from
        if resume_path is None and init_from and not Path(init_from).is_file():
            raise CheckpointError(f"{init_from}: no such checkpoint file (train.init_from)")
        if resume_path is None and (Path(cfg.train.out_dir) / ckpt.LAST).is_file():
            raise FileExistsError(
                f"{Path(cfg.train.out_dir) / ckpt.LAST} exists: pass resume='auto' "
                "(--resume auto) to continue that run, or choose another train.out_dir (--out)"
            )
        with compute_threads(env.device, cfg.data.num_workers, cfg.train.cpu_threads) as threads:
            if threads is not None and env.is_main:
                log.info("CPU: %d compute thread(s) beside %d data worker(s)", threads,
                         cfg.data.num_workers)
            return Trainer(cfg, env, progress, eval_observer).run(resume_path)
    finally:
        if not joined_before:
            cleanup(env)
