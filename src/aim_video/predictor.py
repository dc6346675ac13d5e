"""One loaded model for using a trained recogniser: top-k per video, timelines, features.

    predictor = Predictor.from_checkpoint("runs/k400/best.pt")
    predictor.predict(["a.mp4", "b.mp4"])          # -> [Prediction]
    predictor.timeline("match.mp4", stride=1.0)    # -> Timeline, one row per window
    predictor.features(["a.mp4"])                  # -> [VideoFeatures], before the head

The backbone and adapters are loaded once. Videos reach the model through the same test-mode
dataset as evaluation (same sampling, resizing, crops and normalisation as the checkpoint's
config), so a prediction here equals the one `evaluate` makes for the same file; a timeline
window is the clip the model was trained on (same frame count and interval), cut from one
forward pass over the file (`aim_video.data.stream`).

The model is any callable from a clip batch to logits, (N, 3, T, H, W) float -> (N, K): an
`AIMViT`, or a runtime session wrapped in a function (e.g. an exported ONNX classifier).
Features need the model's `forward_features` (and `forward_head` to turn them into logits).
Everything that touches the model goes through `Predictor.probabilities` and
`Predictor.clip_features`, so a predictor holding several adapter sets on one backbone (one
result per task) replaces just those two.
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
from torch.utils.data import DataLoader

from aim_video.data.annotations import VIDEO_EXTENSIONS, Annotations, VideoRecord, load_annotations
from aim_video.data.dataset import VideoDataset, build_eval_transform, collate
from aim_video.data.decode import VideoDecodeError
from aim_video.data.stream import StreamInfo, Window, prefetch, stream_windows
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.config import RunConfig, with_views
from aim_video.engine.distributed import autocast_dtype, resolve_device
from aim_video.errors import UserError

ClipModel = Callable[[Tensor], Tensor]  # (N, 3, T, H, W) normalised floats -> (N, K) logits


class InputError(UserError, FileNotFoundError):
    """An input to predict / extract / timeline that names nothing usable."""


@dataclass
class Prediction:
    """The classes predicted for one video."""

    path: str  # the video
    ok: bool  # False: the video could not be read
    top: list[tuple[str, float]]  # (class name, probability), most probable first
    error: str | None = None  # why it could not be read

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: path, ok, top [{class, prob}], error."""
        return {"path": self.path, "ok": self.ok,
                "top": [{"class": name, "prob": prob} for name, prob in self.top],
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


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, root: str | None = None,
    frame_folders: bool = False,
) -> list[str]:
    """Video paths from files, folders of videos and list files, in the order given.

    A file with a video extension is a video; a folder is searched recursively for videos (or
    is itself a video with `frame_folders`); any other file is an annotation list in a format
    `load_annotations` reads (its labels are ignored). Missing files stay in the list, to be
    reported as unreadable.

    Raises:
        InputError: a folder without videos.
    """
    videos: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir() and not frame_folders:
            found = sorted(p for p in item.rglob("*")
                           if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise InputError(f"{item}: no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})")
            videos += [str(p) for p in found]
        elif item.is_file() and item.suffix.lower() not in VIDEO_EXTENSIONS and not frame_folders:
            videos += [r.path for r in load_annotations(item, root=root).records]
        else:
            videos.append(str(item))
    return videos


class Predictor:
    """A model ready for inference with its data settings (see the module docstring).

    Args:
        model: clip batch -> logits; moved to `device` when it is an `nn.Module`.
        cfg: the run config: data settings (sampling, sizes, test views), eval batch sizes,
            precision.
        class_names: the classes of the model's output (index = logit).
        device: `auto`, `cpu`, `cuda`, `cuda:N`.
    """

    def __init__(self, model: ClipModel, cfg: RunConfig, class_names: Sequence[str],
                 device: str | torch.device = "auto") -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model
        # Paths are used as given: the config's data root is for its annotation files.
        self.cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=None))
        self.class_names = list(class_names)
        self.dtype = autocast_dtype(cfg.train.precision, self.device)

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
        state = ckpt.load_checkpoint(path)
        cfg = with_views(ckpt.checkpoint_config(state, path, tuple(overrides)), views)
        model = ckpt.model_from_checkpoint(state, path, cfg, pretrained)
        return cls(model, cfg, state["class_names"], device)

    @classmethod
    def from_pretrained(cls, pretrained: str | os.PathLike[str], cfg: RunConfig, *,
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
    @torch.no_grad()
    def probabilities(self, views: Tensor) -> Tensor:
        """Softmax averaged over each video's views.

        Args:
            views: (B, V, C, T, H, W) views of B videos (or windows).

        Returns:
            float32 (B, K) on the CPU.
        """
        if not self.class_names:
            raise UserError("this predictor has no classifier (an image backbone alone gives "
                            "features only); load a training checkpoint to classify")
        logits = self._per_clip(self.model, views)
        return logits.float().softmax(dim=-1).view(*views.shape[:2], -1).mean(dim=1).cpu()

    @torch.no_grad()
    def clip_features(self, views: Tensor) -> Tensor:
        """The pooled representation before the head, averaged over each video's views.

        The head is linear, so `forward_head` of this average is the average of the views'
        logits (with one view: exactly the logits `probabilities` takes the softmax of).

        Args:
            views: (B, V, C, T, H, W).

        Returns:
            float32 (B, D) on the CPU.
        """
        forward_features = getattr(self.model, "forward_features", None)
        if forward_features is None:
            raise UserError(f"features need a model with forward_features; "
                            f"{type(self.model).__name__} has none")
        features = self._per_clip(forward_features, views).float()
        return features.view(*views.shape[:2], -1).mean(dim=1).cpu()

    def _per_clip(self, fn: ClipModel, views: Tensor) -> Tensor:
        """`fn` over the B·V clips in chunks of `eval.views_chunk`: (B·V, ...) outputs."""
        clips = views.flatten(0, 1)  # (B·V, C, T, H, W)
        out = []
        for part in clips.split(self.cfg.eval.views_chunk):
            with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                enabled=self.dtype is not None):
                out.append(fn(part.to(self.device, non_blocking=True)))
        return torch.cat(out)

    # ------------------------------------------------------------------------- whole videos
    def _batches(self, videos: Sequence[str], batch_size: int | None,
                 workers: int | None) -> Iterator[dict[str, Any]]:
        """Test-mode batches of `videos` (index = position in `videos`), decoded by workers."""
        dataset = VideoDataset(
            Annotations([VideoRecord(os.fspath(p), 0) for p in videos], self.class_names),
            self.cfg.data, mode="test")
        workers = self.cfg.data.num_workers if workers is None else workers
        loader = DataLoader(
            dataset, batch_size=batch_size or self.cfg.eval.batch_size, num_workers=workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda",
            generator=torch.Generator(), persistent_workers=False,
        )
        yield from loader

    def iter_predict(self, videos: Sequence[str], top_k: int = 5, *,
                     batch_size: int | None = None,
                     workers: int | None = None) -> Iterator[list[Prediction]]:
        """Predictions batch by batch, in input order (for writing as they come).

        Args:
            videos: video paths (see `collect_inputs`).
            top_k: classes per video.
            batch_size: videos per batch; default `eval.batch_size`.
            workers: decoding processes; default `data.num_workers`.
        """
        k = min(top_k, len(self.class_names))
        for batch in self._batches(videos, batch_size, workers):
            probs = self.probabilities(batch["video"])
            top_p, top_i = probs.topk(k, dim=1)
            reasons = dict(batch["skipped"])
            out = []
            for j, index in enumerate(batch["index"].tolist()):
                path = videos[index]
                if batch["ok"][j]:
                    top = [(self.class_names[c], p) for c, p in zip(top_i[j].tolist(),
                                                                    top_p[j].tolist())]
                    out.append(Prediction(path, True, top))
                else:
                    out.append(Prediction(path, False, [], reasons.get(path, "unreadable")))
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
            reasons = dict(batch["skipped"])
            out = []
            for j, index in enumerate(batch["index"].tolist()):
                path = videos[index]
                ok = bool(batch["ok"][j])
                out.append(VideoFeatures(path, ok, features[j] if ok else features[j][:0],
                                         error=None if ok else reasons.get(path, "unreadable")))
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
        """
        info = StreamInfo()
        starts, ends, probs = [], [], []
        for windows, views in self._window_batches(video, stride, window, info, batch_size):
            probs.append(self.probabilities(views).numpy())
            starts += [w.start for w in windows]
            ends += [w.end for w in windows]
            if progress is not None:
                progress(len(windows))
        return Timeline(
            path=os.fspath(video), class_names=self.class_names,
            starts=np.array(starts, dtype=np.float64), ends=np.array(ends, dtype=np.float64),
            probs=np.concatenate(probs) if probs else np.zeros((0, len(self.class_names)),
                                                               np.float32),
            fps=info.fps, note=info.note)

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


def predict(inputs: Sequence[str | os.PathLike[str]], checkpoint: str | os.PathLike[str],
            top_k: int = 5, device: str = "auto", pretrained: str | None = None,
            views: str | None = None) -> list[Prediction]:
    """Top-k classes of each video (files, folders, list files) with a checkpoint."""
    predictor = Predictor.from_checkpoint(checkpoint, pretrained=pretrained, device=device,
                                          views=views)
    frames = predictor.cfg.data.backend == "frames"
    return predictor.predict(collect_inputs(inputs, frame_folders=frames), top_k)
