"""One loaded model for using a trained recogniser: top-k per video, timelines, features.

    predictor = Predictor.from_checkpoint("runs/k400/best.pt")
    predictor.predict(["a.mp4", "b.mp4"])          # -> [Prediction]
    predictor.timeline("match.mp4", stride=1.0)    # -> Timeline, one row per window
    predictor.features(["a.mp4"])                  # -> [VideoFeatures], before the head

The backbone and adapters are loaded once. Videos reach the model through the same test-mode
dataset, loader and model path as evaluation (`aim_video.inference`: same sampling, resizing,
crops and normalisation as the checkpoint's config, same chunks and autocast, same softmax
mean over views and top-k), so a prediction here is the one `evaluate` makes for the same
file; a timeline window is the clip the model was trained on (same frame count and interval),
cut from one forward pass over the file (`aim_video.data.stream`).

The model is any callable from a clip batch to logits, (N, 3, T, H, W) float -> (N, K): an
`AIMViT`, or a runtime session wrapped in a function (e.g. an exported ONNX classifier).
Features need the model's `forward_features`. Everything that touches the model goes through
`Predictor.task_probabilities` and `Predictor.clip_features`, both `inference.ViewsModel`.

Many tasks on one backbone:

    predictor = Predictor.from_checkpoints(["runs/k400/best.pt", "runs/ssv2/best.pt"])
    predictor.predict(["a.mp4"])[0].tasks          # {"k400": [...], "ssv2": [...]}
    predictor.timelines("match.mp4")               # {"k400": Timeline, "ssv2": Timeline}

Checkpoints trained on the same frozen backbone (same fingerprint) share one `AIMViT`: the
backbone is in memory once and each task keeps only its trainable tensors (adapters, temporal
embedding, ln_post, head). Before a task's forward pass its tensors are put into the model's
parameters (`Parameter.data`, a pointer swap: no copy), so every decoded clip is answered by
every task.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aim_video.data.annotations import Annotations, VideoRecord
from aim_video.data.dataset import VideoDataset, ViewsBatch, build_eval_transform
from aim_video.data.decode import VideoDecodeError
from aim_video.data.stream import StreamInfo, Window, prefetch, stream_windows
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.config import ConfigError, RunConfig, with_views
from aim_video.engine.distributed import autocast_dtype, resolve_device
from aim_video.errors import UserError
from aim_video.inference import (
    ClipModel,
    Task,
    ViewsModel,
    batch_reasons,
    top_answers,
    views_loader,
)
from aim_video.weights import CheckpointError


TopK = list[tuple[str, float]]  # (class name, probability), most probable first


def _top_dicts(top: TopK) -> list[dict[str, Any]]:
    return [{"class": name, "prob": prob} for name, prob in top]


@dataclass
class Prediction:
    """The classes predicted for one video: `top` with one task, `tasks` with several."""

    path: str  # the video
    ok: bool  # False: the video could not be read
    top: TopK  # the one task's classes; empty with several tasks
    error: str | None = None  # why it could not be read
    tasks: dict[str, TopK] | None = None  # task name -> its top-k, with several tasks

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: path, ok, top [{class, prob}] (or tasks {name: {top}}), error."""
        if self.tasks is None:
            return {"path": self.path, "ok": self.ok, "top": _top_dicts(self.top),
                    "error": self.error}
        return {"path": self.path, "ok": self.ok,
                "tasks": {name: {"top": _top_dicts(top)} for name, top in self.tasks.items()},
                "error": self.error}


@dataclass
class VideoFeatures:
    """The pooled representation of one video, or of each of its windows."""

    path: str  # the video
    ok: bool  # False: the video could not be read (no rows)
    features: np.ndarray  # float32 (D,) per video, or (W, D) per window
    windows: list[tuple[float, float]] | None = None  # (start, end) seconds per row, --windows
    error: str | None = None  # why it could not be read, or where the stream broke


@dataclass
class Timeline:
    """Per-window class probabilities over a whole video."""

    path: str  # the video
    class_names: list[str]  # index -> name
    starts: np.ndarray  # float64 (W,) window starts, seconds since the first frame
    ends: np.ndarray  # float64 (W,) window ends
    probs: np.ndarray  # float32 (W, K) softmax averaged over the window's crops
    fps: float  # the stream's average frame rate
    note: str | None = None  # why windows are missing at the end (a broken stream), if they are

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Each window's `k` most probable classes with their probabilities."""
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return [[(self.class_names[c], float(row[c])) for c in idx]
                for idx, row in zip(order, self.probs)]


def task_name(checkpoint: str | os.PathLike[str]) -> str:
    """A checkpoint's default task name: its run folder's (`runs/k400/best.pt` -> `k400`)."""
    path = Path(os.path.abspath(checkpoint))
    return path.parent.name or path.stem


def unique_names(names: Sequence[str]) -> list[str]:
    """`names` with repeats made unique: `a`, `a` -> `a`, `a-2`."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        candidate, n = name, seen.get(name, 0)
        while candidate in out:
            n += 1
            candidate = f"{name}-{n + 1}"
        seen[name] = n
        out.append(candidate)
    return out


# The data settings that decide which frames are decoded and how they become clips: tasks that
# share the decoded clips must agree on all of them.
DECODE_KEYS = ("backend", "frame_template", "sampling", "num_frames", "frame_interval",
               "test_clips", "test_crops", "input_size", "test_short_side", "resize_in_decoder",
               "normalize")
# The model settings the shared forward pass is built from (the rest are training-only).
SHARED_MODEL_KEYS = ("vit", "num_frames", "spatial", "temporal", "joint", "temporal_in",
                     "temporal_embedding", "adapter_blocks", "bottleneck_ratio", "scale")


class Predictor:
    """A model ready for inference with its data settings (see the module docstring).

    Args:
        model: clip batch -> logits; moved to `device` when it is an `nn.Module`.
        cfg: the run config: data settings (sampling, sizes, test views), eval batch sizes,
            precision.
        class_names: the classes of the model's output (index = logit).
        device: `auto`, `cpu`, `cuda`, `cuda:N`.
        tasks: several classifiers sharing `model` (see `Task`); default one, `class_names`.
    """

    def __init__(self, model: ClipModel, cfg: RunConfig, class_names: Sequence[str],
                 device: str | torch.device = "auto", *,
                 tasks: Sequence[Task] | None = None) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model
        # Paths are used as given: the config's data root is for its annotation files.
        self.cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=None))
        self.tasks = list(tasks) if tasks else [Task("model", list(class_names))]
        for task in self.tasks:
            task.weights = {name: t.to(self.device) for name, t in task.weights.items()}
        self.class_names = self.tasks[0].class_names
        self.dtype = autocast_dtype(cfg.train.precision, self.device)
        self.views_model = ViewsModel(model, self.device, self.dtype, self.cfg.eval.views_chunk,
                                      self.tasks)

    @property
    def multitask(self) -> bool:
        """True when several tasks answer each input (results keyed by task name)."""
        return len(self.tasks) > 1

    # ------------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, pretrained: str | None = None,
        device: str = "auto", views: str | None = None, overrides: Sequence[str] = (),
    ) -> Predictor:
        """The trained model of a checkpoint (`best.pt` / `last.pt`).

        Args:
            path: the training checkpoint.
            pretrained: backbone weights overriding the config's `model.pretrained` (moved).
            device: where to run.
            views: CLIPSxCROPS overriding the config's test views, e.g. "3x1".
            overrides: `section.key=value` changes to the checkpoint's config.
        """
        state = ckpt.read_training_checkpoint(path)
        cfg = with_views(ckpt.checkpoint_config(state, path, tuple(overrides)), views)
        model = ckpt.model_from_checkpoint(state, path, cfg, pretrained)
        task = Task(task_name(path), list(state["class_names"]), os.fspath(path))
        return cls(model, cfg, task.class_names, device, tasks=[task])

    @classmethod
    def from_checkpoints(
        cls, paths: Sequence[str | os.PathLike[str]] | dict[str, str | os.PathLike[str]], *,
        pretrained: str | None = None, device: str = "auto", views: str | None = None,
        overrides: Sequence[str] = (),
    ) -> Predictor:
        """Several checkpoints trained on the same frozen backbone, held as one model.

        The backbone is loaded once (from the first checkpoint's config, or `pretrained`);
        each task keeps its trainable tensors beside it. Every input is decoded once with the
        first checkpoint's test-time data settings and answered by every task.

        Args:
            paths: the checkpoints; or task name -> checkpoint. Default names are the run
                folders' (`runs/k400/best.pt` -> `k400`), repeats numbered (`k400-2`).
            pretrained: backbone weights overriding the configs' `model.pretrained` (moved).
            device: where to run.
            views: CLIPSxCROPS overriding the configs' test views.
            overrides: `section.key=value` changes to every checkpoint's config.

        Raises:
            CheckpointError: the backbone fingerprints differ (names both files and both
                fingerprints), a checkpoint holds a fine-tuned whole model, or its tensors do
                not fit the shared model.
            ConfigError: the checkpoints' data settings for decoding, or their model
                architectures, differ (names the key and both files).
        """
        if isinstance(paths, dict):
            names, files = list(paths), [os.fspath(p) for p in paths.values()]
        else:
            files = [os.fspath(p) for p in paths]
            names = unique_names([task_name(p) for p in files])
        if not files:
            raise UserError("no checkpoint given")
        if len(files) == 1:
            one = cls.from_checkpoint(files[0], pretrained=pretrained, device=device,
                                      views=views, overrides=overrides)
            one.tasks[0].name = names[0]
            return one
        states = [ckpt.read_training_checkpoint(f) for f in files]
        cfgs = [with_views(ckpt.checkpoint_config(s, f, tuple(overrides)), views)
                for s, f in zip(states, files)]
        _check_shareable(files, states, cfgs)
        model = ckpt.model_from_checkpoint(states[0], files[0], cfgs[0], pretrained)
        # On the device first: the first task's tensors are the model's own, not a copy.
        where = resolve_device(device)
        model.to(where).requires_grad_(False)  # inference only; see `ViewsModel.use` for why
        trainable = model.trainable_state_dict()
        own = {name: p for name, p in model.named_parameters() if name in trainable}
        tasks = [Task(names[0], list(states[0]["class_names"]), files[0],
                      {name: p.data for name, p in own.items()})]
        for name, state, path in zip(names[1:], states[1:], files[1:]):
            weights = state["model"]
            missing = sorted(set(own) - set(weights))
            unexpected = sorted(set(weights) - set(own))
            if missing or unexpected:
                raise CheckpointError(
                    f"{path}: its trained tensors do not fit the model of {files[0]}: "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]}")
            for key, tensor in weights.items():
                # Only the head's class count may differ between tasks.
                if tensor.shape != own[key].shape and not (
                        key.startswith("head.") and tensor.shape[1:] == own[key].shape[1:]):
                    raise CheckpointError(
                        f"{path}: {key} has shape {tuple(tensor.shape)}, but "
                        f"{tuple(own[key].shape)} in {files[0]}")
            tasks.append(Task(name, list(state["class_names"]), path,
                              {k: weights[k].to(own[k].dtype) for k in own}))
        return cls(model, cfgs[0], tasks[0].class_names, where, tasks=tasks)

    @classmethod
    def from_backbone(cls, pretrained: str | os.PathLike[str], cfg: RunConfig, *,
                      device: str = "auto") -> Predictor:
        """The frozen image model alone (no adapters, no trained head): features only.

        Each frame goes through the image model and its class tokens are averaged over the
        clip, the linear-probe baseline to compare adapted features with.

        Args:
            pretrained: image backbone weights (any format `load_pretrained` reads).
            cfg: data settings and the backbone's architecture (`model.arch` and sizes).
        """
        model_cfg = dataclasses.replace(
            cfg.model, pretrained=str(pretrained), spatial=False, temporal=False, joint=False,
            temporal_in=False, temporal_embedding=False, full_finetune=False, num_classes=1)
        cfg = dataclasses.replace(cfg, model=model_cfg)
        model = ckpt.model_from_config(cfg)
        ckpt.load_backbone(model, cfg.model, training=False)
        return cls(model, cfg, [], device)

    # ------------------------------------------------------------------------- the model seam
    def task_probabilities(self, views: Tensor) -> dict[str, Tensor]:
        """Each task's softmax averaged over each video's views.

        Args:
            views: (B, V, C, T, H, W) views of B videos (or windows).

        Returns:
            task name -> float32 (B, K_task) on the CPU.
        """
        if not self.class_names:
            raise UserError("this predictor has no classifier (an image backbone alone gives "
                            "features only); load a training checkpoint to classify")
        return self.views_model.probabilities(views)

    def probabilities(self, views: Tensor) -> Tensor:
        """The one task's softmax averaged over each video's views: float32 (B, K), CPU."""
        self._single("probabilities (use task_probabilities)")
        return self.task_probabilities(views)[self.tasks[0].name]

    def clip_features(self, views: Tensor) -> Tensor:
        """The pooled representation before the head, averaged over each video's views.

        The head is linear, so `forward_head` of this average is the average of the views'
        logits (with one view: exactly the logits `probabilities` takes the softmax of).

        Args:
            views: (B, V, C, T, H, W).

        Returns:
            float32 (B, D) on the CPU.
        """
        if getattr(self.model, "forward_features", None) is None:
            raise UserError(f"features need a model with forward_features; "
                            f"{type(self.model).__name__} has none")
        self._single("features (each task's adapters give their own; load one checkpoint)")
        [features] = self.views_model.features(views).values()
        return features

    def _single(self, what: str) -> None:
        if self.multitask:
            raise UserError(f"{what}: this predictor holds {len(self.tasks)} tasks "
                            f"({', '.join(t.name for t in self.tasks)})")

    # ------------------------------------------------------------------------- whole videos
    def _batches(self, videos: Sequence[str], batch_size: int | None,
                 workers: int | None) -> Iterator[ViewsBatch]:
        """Test-mode batches of `videos` (index = position in `videos`), decoded by workers."""
        dataset = VideoDataset(
            Annotations([VideoRecord(os.fspath(p), 0) for p in videos], self.class_names),
            self.cfg.data, mode="test")
        workers = self.cfg.data.num_workers if workers is None else workers
        yield from views_loader(dataset, batch_size or self.cfg.eval.batch_size, workers,
                                self.device)

    def iter_predict(self, videos: Sequence[str], top_k: int = 5, *,
                     batch_size: int | None = None,
                     workers: int | None = None) -> Iterator[list[Prediction]]:
        """Predictions batch by batch, in input order (for writing as they come).

        Args:
            videos: video paths (see `aim_video.data.sources.collect_inputs`).
            top_k: classes per video.
            batch_size: videos per batch; default `eval.batch_size`.
            workers: decoding processes; default `data.num_workers`.
        """
        for batch in self._batches(videos, batch_size, workers):
            probs = self.task_probabilities(batch["video"])
            # task name -> each video's answer (the same readable / unreadable for every task)
            answers = {task.name: top_answers(batch, probs[task.name], top_k, videos.__getitem__)
                       for task in self.tasks}
            out = []
            for j, index in enumerate(batch["index"].tolist()):
                tops = {task.name: [(task.class_names[c], p) for c, p in
                                    zip(answers[task.name][j].top, answers[task.name][j].probs)]
                        for task in self.tasks}
                first = answers[self.tasks[0].name][j]
                if not first.ok:
                    out.append(Prediction(videos[index], False, [], first.reason,
                                          tasks={} if self.multitask else None))
                elif self.multitask:
                    out.append(Prediction(videos[index], True, [], tasks=tops))
                else:
                    out.append(Prediction(videos[index], True, tops[self.tasks[0].name]))
            yield out

    def predict(self, videos: Sequence[str | os.PathLike[str]], top_k: int = 5, *,
                batch_size: int | None = None, workers: int | None = None) -> list[Prediction]:
        """Top-k classes of each video (unreadable ones have `ok=False` and the reason)."""
        paths = [os.fspath(v) for v in videos]
        return [p for part in self.iter_predict(paths, top_k, batch_size=batch_size,
                                                workers=workers) for p in part]

    def iter_features(self, videos: Sequence[str], *, batch_size: int | None = None,
                      workers: int | None = None) -> Iterator[list[VideoFeatures]]:
        """One feature vector per video (mean over its test views), batch by batch."""
        for batch in self._batches(videos, batch_size, workers):
            features = self.clip_features(batch["video"]).numpy()
            out = []
            for j, (index, reason) in enumerate(zip(batch["index"].tolist(),
                                                    batch_reasons(batch, videos.__getitem__))):
                ok = reason is None
                out.append(VideoFeatures(videos[index], ok,
                                         features[j] if ok else features[j][:0], error=reason))
            yield out

    def features(self, videos: Sequence[str | os.PathLike[str]], windows: bool = False,
                 **window_args: Any) -> list[VideoFeatures]:
        """Features of each video: one vector, or one per window (`window_features`)."""
        paths = [os.fspath(v) for v in videos]
        if windows:
            return [self.window_features(p, **window_args) for p in paths]
        return [f for part in self.iter_features(paths) for f in part]

    # ------------------------------------------------------------------------- windows
    def windows(self, video: str | os.PathLike[str], stride: float | None = None,
                window: float | None = None, info: StreamInfo | None = None,
                ) -> Iterator[tuple[Window, Tensor]]:
        """The video's windows, each with its views (crops, C, T, S, S), decoded in a thread.

        Args:
            video: the file.
            stride: seconds between window starts; None: the window's length.
            window: window length in seconds, for uniform (TSN) sampling, whose frames are the
                segments' middles (default `num_frames * frame_interval` frames). Dense sampling
                always takes the trained clip: `num_frames` frames `frame_interval` apart.
            info: filled with the stream's frame rate and an early end's note.
        """
        data = self.cfg.data
        transform = build_eval_transform(data)
        short_side = transform.short_side if data.resize_in_decoder else None
        stream = stream_windows(
            video, sampling=data.sampling, num_frames=data.num_frames,
            interval=data.frame_interval, span=window, stride=stride,
            short_side=short_side, info=info)
        for item in prefetch(stream):
            yield item, transform(torch.from_numpy(item.frames))

    def _window_batches(self, video: str | os.PathLike[str], stride: float | None,
                        window: float | None, info: StreamInfo, batch_size: int | None,
                        ) -> Iterator[tuple[list[Window], Tensor]]:
        size = batch_size or self.cfg.eval.batch_size
        pending: list[tuple[Window, Tensor]] = []
        for item in self.windows(video, stride, window, info):
            pending.append(item)
            if len(pending) == size:
                yield [w for w, _ in pending], torch.stack([v for _, v in pending])
                pending = []
        if pending:
            yield [w for w, _ in pending], torch.stack([v for _, v in pending])

    def timeline(self, video: str | os.PathLike[str], stride: float | None = None,
                 window: float | None = None, *, batch_size: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Timeline:
        """Class probabilities of every window of a video, from one forward decoding pass.

        Args:
            video: the file.
            stride: seconds between window starts; None: the window's length.
            window: window length in seconds (see `windows`).
            batch_size: windows per model call; default `eval.batch_size`.
            progress: called with the number of windows done after each batch.

        Raises:
            VideoDecodeError: not a single window could be decoded.
            UserError: the predictor holds several tasks (use `timelines`).
        """
        self._single("timeline (use timelines)")
        [timeline] = self.timelines(video, stride, window, batch_size=batch_size,
                                    progress=progress).values()
        return timeline

    def timelines(self, video: str | os.PathLike[str], stride: float | None = None,
                  window: float | None = None, *, batch_size: int | None = None,
                  progress: Callable[[int], None] | None = None) -> dict[str, Timeline]:
        """Every task's `timeline` of a video, from one decoding pass: task name -> Timeline."""
        info = StreamInfo()
        starts: list[float] = []
        ends: list[float] = []
        probs: dict[str, list[np.ndarray]] = {task.name: [] for task in self.tasks}
        for windows, views in self._window_batches(video, stride, window, info, batch_size):
            for name, p in self.task_probabilities(views).items():
                probs[name].append(p.numpy())
            starts += [w.start for w in windows]
            ends += [w.end for w in windows]
            if progress is not None:
                progress(len(windows))
        return {task.name: Timeline(
            path=os.fspath(video), class_names=task.class_names,
            starts=np.array(starts, dtype=np.float64), ends=np.array(ends, dtype=np.float64),
            probs=(np.concatenate(probs[task.name]) if probs[task.name]
                   else np.zeros((0, len(task.class_names)), np.float32)),
            fps=info.fps, note=info.note) for task in self.tasks}

    def window_features(self, video: str | os.PathLike[str], stride: float | None = None,
                        window: float | None = None, *,
                        batch_size: int | None = None) -> VideoFeatures:
        """One feature vector per window of a video (mean over the window's crops)."""
        info = StreamInfo()
        rows, spans = [], []
        try:
            for windows, views in self._window_batches(video, stride, window, info, batch_size):
                rows.append(self.clip_features(views).numpy())
                spans += [(w.start, w.end) for w in windows]
        except VideoDecodeError as err:
            return VideoFeatures(os.fspath(video), False, np.zeros((0, 0), np.float32),
                                 error=err.reason)
        return VideoFeatures(os.fspath(video), True, np.concatenate(rows), spans, info.note)


def _check_shareable(files: Sequence[str], states: Sequence[dict[str, Any]],
                     cfgs: Sequence[RunConfig]) -> None:
    """Checkpoints can share one backbone and one decoding: same backbone fingerprint, same
    shared-model architecture, same test-time data settings (each against the first)."""
    first, first_cfg = files[0], cfgs[0]
    for path, state, cfg in zip(files, states, cfgs):
        if cfg.model.full_finetune:
            raise CheckpointError(f"{path}: a fine-tuned whole model (model.full_finetune) "
                                  "shares no frozen backbone with other tasks; load it alone")
    fingerprint = states[0]["backbone_fingerprint"]
    for path, state, cfg in zip(files[1:], states[1:], cfgs[1:]):
        if state["backbone_fingerprint"] != fingerprint:
            raise CheckpointError(
                f"{path} was trained on backbone {state['backbone_fingerprint']} "
                f"({state['backbone_source']}), {first} on backbone {fingerprint} "
                f"({states[0]['backbone_source']}): tasks on one backbone need checkpoints "
                "trained on the same frozen weights; predict with them separately")
        ours = first_cfg.aim_config(1)
        theirs = cfg.aim_config(1)
        for key in SHARED_MODEL_KEYS:
            if getattr(theirs, key) != getattr(ours, key):
                raise ConfigError(
                    f"{path}: model.{key} is {getattr(theirs, key)!r}, but "
                    f"{getattr(ours, key)!r} in {first}: tasks on one backbone need the same "
                    "model architecture")
        for key in DECODE_KEYS:
            if getattr(cfg.data, key) != getattr(first_cfg.data, key):
                raise ConfigError(
                    f"{path}: data.{key} is {getattr(cfg.data, key)!r}, but "
                    f"{getattr(first_cfg.data, key)!r} in {first}: tasks on one backbone share "
                    f"the decoded clips, so their test-time data settings must agree "
                    f"(predict with them separately)")

