"""The video dataset: annotation records -> decoded, sampled, augmented clips.

One item is one video. Its frames are decoded once (all clips' frames in one reader
call), split into clips, and transformed:

* train: a `TrainItem` of K clips of the video, K = `repeated_aug` (1 by default), each with its
  own frames and augmentation, decoded in one reader call (the frames of all K clips are sorted
  and read in one pass, so K clips cost one open and one seek per keyframe span rather than K).
  An epoch still visits each video once: it holds K clips per video, a loader batch of B items
  holds B * K clips, and an epoch has as many optimiser steps as with K = 1 but K times the clips
  (and K times fewer distinct videos per step). Each clip has its own label (K,): a flip with
  `flip_label_map` may change it. The clips run the host's part of the training pipeline
  (`TrainTransform.split`): all of it, giving float `(K, C, T, S, S)`; with `device_augment`
  the part up to where clips can be batched, giving uint8 `(K, T, S, S, 3)` and each clip's
  generator state, from which `DeviceAugment` runs the rest on the training device and gives
  exactly what the host would have;
* test: a `ViewsItem`, the `V = test_clips * test_crops` views of the video `(V, C, T, S, S)`,
  clip-major (clip 0 crop 0, clip 0 crop 1, ...). Views items and batches are typed dicts: the
  evaluator, the predictor and the report read them by key.

`collate` stacks either kind into its batch (`TrainBatch`, `ViewsBatch`).

Randomness comes only from `(cfg.seed, epoch, index)`, never from global state or the
worker, so a resumed run, a different worker count or a re-run draws the same samples. Each
clip of an item has its own `torch.Generator`, seeded from that, for its augmentation.

Bad files. Decoding fails on missing, empty, truncated or corrupt videos. In training such
an item is replaced by another index (drawn from the same seeded generator, so the
replacement is reproducible too; the item's `index` is then the replacement's), reported
in `skipped` as `(path, reason)` and logged once per file per process; after `MAX_CONSECUTIVE_FAILURES` bad draws in a row the item
raises. In testing an item is never replaced: it comes back with `ok=False`, a zero video of
the right shape and the reason in `skipped`, so the evaluator can count it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypedDict, cast, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from aim_video.data.annotations import (
    FORMATS,
    Annotations,
    Format,
    VideoRecord,
    load_annotations,
)
from aim_video.data.decode import (
    BACKENDS,
    Backend,
    VideoDecodeError,
    is_decode_error,
    open_video,
    template_regex,
)
from aim_video.data.sampling import DenseSampling, Sampling, UniformSampling
from aim_video.data.sources import list_root
from aim_video.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchStep,
    ColorJitter,
    EvalTransform,
    Normalize,
    RandAugment,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    TrainTransform,
)
from aim_video.errors import UserError

logger = logging.getLogger(__name__)

# A training item gives up after this many unreadable videos in a row: by then the data set
# (or its root path) is wrong, not a few files.
MAX_CONSECUTIVE_FAILURES = 50

# Videos of a list that `build_dataset` looks for before training: enough to tell a wrong
# `data.root` from a few missing files, few enough to cost nothing on a network file system.
ROOT_PROBES = 16

# Bad files named in the "too many unreadable videos" message.
REASONS_SHOWN = 3


class DataError(UserError):
    """A data set that cannot be used as configured: a missing list or root, or a list whose
    videos cannot be read. The message names the config key or the annotation file."""

    def __init__(self, message: str) -> None:
        # A DataLoader worker's exception comes back as `type(text)`, the text being the
        # worker's traceback ending in "DataError: <message>": keep the one-line message.
        marker = f"{type(self).__name__}: "
        if "Original Traceback" in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "clip": (CLIP_MEAN, CLIP_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}

Mode = Literal["train", "test"]
SamplingName = Literal["dense", "uniform"]
NormalizationName = Literal["clip", "imagenet"]


@dataclass
class DataConfig:
    """Where the data is and how clips are sampled, augmented and loaded."""

    format: Format = "auto"  # annotation format, see `load_annotations`; "auto" guesses it
    train: str | None = None  # training annotation file
    val: str | None = None  # validation annotation file (evaluated during training)
    test: str | None = None  # test annotation file
    root: str | None = None  # folder that relative video paths are under; None: beside the list
    class_names: str | list[str] | None = None  # class names, or a file of them, one a line
    backend: Backend = "pyav"  # video decoder: "pyav", "decord" or "frames" (image folders)
    frame_template: str = "img_{:05d}.jpg"  # file names inside frame folders
    sampling: SamplingName = "dense"  # "dense" (frames `frame_interval` apart) or "uniform" (TSN)
    num_frames: int = 8  # frames per clip (T)
    frame_interval: int = 16  # distance between sampled frames, dense sampling only
    test_clips: int = 3  # clips per video at test time
    test_crops: int = 1  # crops per clip at test time: 1 centre, 3 along the long side
    input_size: int = 224  # side of the square frames fed to the model
    short_side: int = 256  # training: short side before the random crop
    test_short_side: int | None = None  # test: short side before cropping; None: input_size
    resize_in_decoder: bool = True  # scale frames while decoding (much faster than after)
    area_range: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop relative area
    ratio_range: tuple[float, float] = (0.75, 1.3333333)  # RandomResizedCrop aspect (w/h)
    flip: float = 0.5  # horizontal flip probability (0 for direction-sensitive labels)
    flip_label_map: dict[int, int] | None = None  # label of a flipped clip, e.g. SSv2 pairs
    randaugment_n: int = 0  # RandAugment ops per clip; 0: off (SSv2 recipe: 4)
    randaugment_m: float = 0  # RandAugment magnitude, 0-10 (SSv2 recipe: 7)
    random_erasing: float = 0.0  # random erasing probability (SSv2 recipe: 0.25)
    color_jitter: float = 0.0  # brightness/contrast/saturation strength; hue = this / 5
    normalize: NormalizationName = "clip"  # mean/std: "clip" (CLIP models) or "imagenet"
    num_workers: int = 4  # data loader worker processes per GPU
    repeated_aug: int = 1  # clips drawn from each decoded training video (K)
    # Flip, colour jitter, normalisation and erasing of training clips on the training device
    # (the loader ships uint8 crops, 4x fewer bytes); None: on when training on a GPU.
    device_augment: bool | None = None
    seed: int = 0  # base of every random draw: (seed, epoch, index) fixes a sample
    # Sharded data (data.train=NAME.shards.json): encoded videos each loader worker holds to
    # shuffle within (its memory: this times a video's size)
    shuffle_buffer: int = 64

    def __post_init__(self) -> None:
        # YAML gives lists and string keys; normalise so equal configs compare equal.
        self.area_range = (float(self.area_range[0]), float(self.area_range[1]))
        self.ratio_range = (float(self.ratio_range[0]), float(self.ratio_range[1]))
        if self.flip_label_map is not None:
            self.flip_label_map = {int(k): int(v) for k, v in self.flip_label_map.items()}
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field with an impossible value (the config layer
        reports it as a ConfigError)."""
        for name, choices in (
            ("format", FORMATS),
            ("backend", BACKENDS),
            ("sampling", get_args(SamplingName)),
            ("normalize", get_args(NormalizationName)),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"data.{name} must be one of {', '.join(map(repr, choices))}, "
                    f"got {getattr(self, name)!r}"
                )
        if self.backend == "decord" and importlib.util.find_spec("decord") is None:
            raise ValueError(
                "data.backend is 'decord' but decord is not installed: "
                "pip install 'aim-video[decord]', or use data.backend=pyav"
            )
        try:
            template_regex(self.frame_template)
        except ValueError as err:
            raise ValueError(f"data.frame_template: {err}") from None
        if self.test_crops not in (1, 3):
            raise ValueError(f"data.test_crops must be 1 or 3, got {self.test_crops}")
        for name in ("num_frames", "frame_interval", "test_clips", "input_size", "repeated_aug"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.short_side < self.input_size:
            raise ValueError(
                f"data.short_side ({self.short_side}) must be >= data.input_size "
                f"({self.input_size})"
            )
        if self.test_short_side is not None and self.test_short_side < self.input_size:
            raise ValueError(
                f"data.test_short_side ({self.test_short_side}) must be >= data.input_size "
                f"({self.input_size})"
            )
        for name in ("flip", "random_erasing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be a probability, got {getattr(self, name)}")
        low, high = self.area_range
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"data.area_range must be 0 < min <= max <= 1, got {self.area_range}")
        low, high = self.ratio_range
        if not 0.0 < low <= high:
            raise ValueError(f"data.ratio_range must be 0 < min <= max, got {self.ratio_range}")
        if self.shuffle_buffer < 1:
            raise ValueError(f"data.shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        for name in ("randaugment_n", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.randaugment_m <= 10:
            raise ValueError(f"data.randaugment_m must be in 0-10, got {self.randaugment_m}")
        if self.color_jitter < 0:
            raise ValueError(f"data.color_jitter must be >= 0, got {self.color_jitter}")


def build_sampling(cfg: DataConfig) -> Sampling:
    """The frame sampling policy `cfg` describes."""
    if cfg.sampling == "uniform":
        return UniformSampling(cfg.num_frames)
    return DenseSampling(cfg.num_frames, cfg.frame_interval)


def build_train_transform(cfg: DataConfig) -> TrainTransform:
    """The training augmentation pipeline `cfg` describes."""
    mean, std = NORMALIZATIONS[cfg.normalize]
    jitter = cfg.color_jitter
    return TrainTransform(
        short_side=cfg.short_side,
        crop=RandomResizedCrop(cfg.input_size, cfg.area_range, cfg.ratio_range),
        flip=RandomHorizontalFlip(cfg.flip, cfg.flip_label_map),
        randaugment=RandAugment(cfg.randaugment_n, cfg.randaugment_m)
        if cfg.randaugment_n > 0
        else None,
        # hue = strength / 5: 0.5 gives MMAction2's ColorJitter defaults (0.5, 0.5, 0.5, 0.1).
        jitter=ColorJitter(jitter, jitter, jitter, jitter / 5) if jitter > 0 else None,
        normalize=Normalize(mean, std),
        erasing=RandomErasing(cfg.random_erasing) if cfg.random_erasing > 0 else None,
    )


def build_eval_transform(cfg: DataConfig) -> EvalTransform:
    """The test-time pipeline `cfg` describes: resize, centre or three crops, normalise."""
    mean, std = NORMALIZATIONS[cfg.normalize]
    return EvalTransform(
        size=cfg.input_size,
        short_side=cfg.test_short_side or cfg.input_size,
        num_crops=cfg.test_crops,
        normalize=Normalize(mean, std),
    )


def _restore_generator(state: Tensor) -> torch.Generator:
    generator = torch.Generator()
    # A copy: `set_state` crashes on a view into a batch (a row past the first, torch 2.x).
    generator.set_state(state.clone())
    return generator


class DeviceAugment:
    """The device's part of a training transform (`TrainTransform.split`), on a batch where it
    is trained.

    Flip (unless RandAugment follows it), colour jitter, normalisation and random erasing:
    per-pixel work on uint8 clips that are 4x smaller than the float clips it makes, so the
    loader's workers and the host-to-device copy are spared the float clips. Each clip's
    generator is restored from the state the host shipped, so every draw is the one the whole
    pipeline would have made next on the host: on the CPU the result is the host's bit for
    bit; on a GPU jitter and normalisation may differ by float rounding.

    The host draws every clip's parameters first, sends them in one copy, and then each step
    runs once over the whole batch (`BatchStep`). Nothing is read back from the device and
    every copy to it is non-blocking from pinned memory, so the host never waits for the
    device here: the batch is queued behind the previous training step instead of stalling
    until it ends.

    Args:
        transform: the training transform the dataset was built with
            (`VideoDataset.train_transform`).
    """

    def __init__(self, transform: TrainTransform) -> None:
        _, self.pipeline = transform.split(device=True)
        # `split` gives the device only `on_device` steps, each a `BatchStep`.
        self.steps = cast(tuple[BatchStep, ...], self.pipeline.steps)

    def __call__(self, video: Tensor, labels: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
        """Augment a batch of clips.

        Args:
            video: uint8 (N, T, S, S, 3), on the device.
            labels: int64 (N,) on the CPU, as the loader gives them (a flip may map them).
            states: uint8 (N, 5056) on the CPU, each clip's generator state, as the loader
                gives them.

        Returns:
            float (N, 3, T, S, S) and int64 labels (N,), both on `video`'s device.
        """
        frame = (video.shape[-3], video.shape[-2], video.shape[-1])  # (S, S, 3)
        drawn: list[list] = [[] for _ in self.steps]  # per step, per clip
        new_labels = []
        for label, state in zip(labels.tolist(), states):
            generator = _restore_generator(state)
            for step, column in zip(self.steps, drawn):
                params, label = step.draw(frame, label, generator)
                column.append(params)
            new_labels.append(label)
        if video.device.type == "cpu":
            # Nothing to wait for on the CPU, and there a batch's float temporaries are fresh
            # memory each time (too big for the allocator to keep), which costs more than the
            # arithmetic: clip by clip is faster (and gives the same clips).
            groups = [slice(i, i + 1) for i in range(len(video))]
        else:
            groups = [slice(None)]
        outs = [self._run(video[group], [column[group] for column in drawn]) for group in groups]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)  # (N, 3, T, S, S)
        return out, _send(torch.tensor(new_labels, dtype=torch.int64), video)

    def _run(self, video: Tensor, drawn: list[list]) -> Tensor:
        """Every step on the clips `video`, drawn `drawn` (per step, per clip)."""
        params = [step.params(column) for step, column in zip(self.steps, drawn)]
        on_device = _send(torch.cat(params), video).split([len(p) for p in params])
        for step, column, step_params in zip(self.steps, drawn, on_device):
            video = step.run(video, column, step_params)
        return video


def _send(host: Tensor, like: Tensor) -> Tensor:
    """The CPU tensor `host` on `like`'s device, copied without making the host wait.

    A copy to a GPU from pageable memory may wait for the device (CUDA stages it
    synchronously); from pinned memory a non-blocking copy is only queued.
    """
    if like.is_cuda:
        host = host.pin_memory()
    return host.to(like.device, non_blocking=True)


@dataclass
class TrainItem:
    """A training item: K clips of one video (K = `DataConfig.repeated_aug`)."""

    video: Tensor  # float (K, C, T, S, S); with device augmentation uint8 (K, T, S, S, 3)
    labels: Tensor  # int64 (K,): each clip's label after the host's steps
    index: int  # the video's index in the list (a replacement's, after bad files)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) replaced
    aug_state: Tensor | None = None  # uint8 (K, 5056): generator states, device augmentation


@dataclass
class TrainBatch:
    """B training items stacked; `clips` flattens their clips into one batch axis."""

    video: Tensor  # (B, K, C, T, S, S), or uint8 (B, K, T, S, S, 3)
    labels: Tensor  # int64 (B, K)
    index: Tensor  # int64 (B,)
    skipped: list[tuple[str, str]]  # every (path, reason) replaced in the batch
    aug_state: Tensor | None  # uint8 (B, K, 5056), device augmentation only

    @classmethod
    def collate(cls, items: Sequence[TrainItem]) -> TrainBatch:
        """Stack `items` into a batch."""
        # default_collate stacks straight into shared memory in a loader worker, saving the
        # copy that sending a batch to the main process would make.
        states = [item.aug_state for item in items]
        return cls(
            video=default_collate([item.video for item in items]),
            labels=default_collate([item.labels for item in items]),
            index=torch.tensor([item.index for item in items], dtype=torch.int64),
            skipped=[entry for item in items for entry in item.skipped],
            aug_state=None if states[0] is None else default_collate(states),
        )

    def clips(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """(video, labels, aug_state) with one axis of B * K clips, item-major: (B·K, ...),
        (B·K,), (B·K, 5056) or None."""
        states = None if self.aug_state is None else self.aug_state.flatten(0, 1)
        return self.video.flatten(0, 1), self.labels.flatten(), states

    def pin_memory(self) -> TrainBatch:
        """A copy in pinned memory (the DataLoader calls this with `pin_memory=True`)."""
        states = None if self.aug_state is None else self.aug_state.pin_memory()
        return replace(self, video=self.video.pin_memory(), labels=self.labels.pin_memory(),
                       index=self.index.pin_memory(), aug_state=states)


class ViewsItem(TypedDict):
    """A test item: every view of one video."""

    video: Tensor  # float (V, C, T, S, S), V = test_clips * test_crops; zeros when not ok
    label: int  # the video's label
    index: int  # the video's index in the list
    ok: bool  # False: the video could not be decoded
    skipped: list[tuple[str, str]]  # [(path, reason)] when not ok


class ViewsBatch(TypedDict):
    """B test items stacked."""

    video: Tensor  # float (B, V, C, T, S, S)
    label: Tensor  # int64 (B,)
    index: Tensor  # int64 (B,)
    ok: Tensor  # bool (B,)
    skipped: list[tuple[str, str]]  # every (path, reason) in the batch


# Files already warned about in this process: a bad file is drawn again every epoch.
_warned_paths: set[str] = set()


def _warn_once(path: str, reason: str) -> None:
    if path not in _warned_paths:
        _warned_paths.add(path)
        logger.warning("skipping unreadable video %s: %s", path, reason)


class VideoDataset(Dataset):
    """Clips of the videos listed in `annotations` (see the module docstring).

    Args:
        annotations: the videos and their labels.
        cfg: sampling, augmentation and decoding settings; `cfg.device_augment` None counts as
            off here (the trainer decides it by the device).
        mode: "train" (random clips, bad files replaced) or "test" (all views, bad files
            flagged).
        source: the annotation file, named when too many videos cannot be read.
    """

    def __init__(
        self,
        annotations: Annotations,
        cfg: DataConfig,
        mode: Mode = "train",
        *,
        source: str | None = None,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        cfg.validate()
        self.records: list[VideoRecord] = list(annotations.records)
        self.class_names: list[str] = list(annotations.class_names)
        self.cfg = cfg
        self.mode = mode
        self.source = source
        self.sampling = build_sampling(cfg)
        self.train_transform = build_train_transform(cfg)
        self.eval_transform = build_eval_transform(cfg)
        self.device_augment = bool(cfg.device_augment) and mode == "train"
        # The loader's part of the training pipeline; `DeviceAugment` runs the rest.
        self.host_pipeline, _ = self.train_transform.split(device=self.device_augment)
        # In shared memory so that `set_epoch` also reaches persistent loader workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def epoch(self) -> int:
        """The epoch that seeds the random draws."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw the samples of `epoch`: call before iterating over each epoch."""
        self._epoch.fill_(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item `index` in the current epoch."""
        return np.random.default_rng([self.cfg.seed, self.epoch, index])

    def __getitem__(self, index: int) -> TrainItem | ViewsItem:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} videos")
        if self.mode == "train":
            return self._train_item(index)
        return self._test_item(index)

    def _train_item(self, index: int) -> TrainItem:
        rng = self.rng(index)
        num_clips = self.cfg.repeated_aug
        generators = [
            torch.Generator().manual_seed(int(rng.integers(2**63 - 1))) for _ in range(num_clips)
        ]
        skipped: list[tuple[str, str]] = []
        requested = index
        for _ in range(MAX_CONSECUTIVE_FAILURES):
            record = self.records[index]
            try:
                clips = self._decode(
                    record,
                    lambda n: np.stack([self.sampling.train(n, rng) for _ in range(num_clips)]),
                    self.train_transform.short_side,
                )
            except VideoDecodeError as err:
                _warn_once(err.path, err.reason)
                skipped.append((record.path, err.reason))
                index = int(rng.integers(len(self.records)))
                continue
            return self._augment(clips, record.label, generators, index, skipped)
        first = "; ".join(f"{path}: {reason}" for path, reason in skipped[:REASONS_SHOWN])
        raise DataError(
            f"{self.source or 'the training list'}: too many unreadable videos "
            f"({MAX_CONSECUTIVE_FAILURES} in a row, drawing for item {requested}); the first: "
            f"{first}. Is data.root ({self.cfg.root}) right? `aim-video check-data` lists "
            "every unreadable video"
        )

    def _augment(
        self,
        clips: Tensor,
        label: int,
        generators: list[torch.Generator],
        index: int,
        skipped: list[tuple[str, str]],
    ) -> TrainItem:
        """The item of uint8 clips (K, T, H, W, 3), clip k augmented with `generators[k]`."""
        videos, labels = zip(*(
            self.host_pipeline(clip, label, g) for clip, g in zip(clips, generators)
        ))
        states = None
        if self.device_augment:
            states = torch.stack([g.get_state() for g in generators])  # (K, 5056)
        return TrainItem(
            video=torch.stack(videos),  # (K, C, T, S, S), or uint8 (K, T, S, S, 3)
            labels=torch.tensor(labels, dtype=torch.int64),  # (K,)
            index=index,
            skipped=skipped,
            aug_state=states,
        )

    def _test_item(self, index: int) -> ViewsItem:
        record = self.records[index]
        cfg = self.cfg
        try:
            clips = self._decode(
                record,
                lambda n: self.sampling.test(n, cfg.test_clips),
                self.eval_transform.short_side,
            )
        except VideoDecodeError as err:
            # No warning here: the item carries the reason, and whoever evaluates or predicts
            # reports each unreadable video once.
            num_views = cfg.test_clips * cfg.test_crops
            size = cfg.input_size
            return ViewsItem(
                video=torch.zeros(num_views, 3, self.sampling.clip_len, size, size),
                label=record.label, index=index, ok=False, skipped=[(record.path, err.reason)],
            )
        views = self.eval_transform(clips)  # (clips, crops, C, T, S, S)
        return ViewsItem(
            video=views.flatten(0, 1),  # (clips * crops, C, T, S, S), clip-major
            label=record.label, index=index, ok=True, skipped=[],
        )

    def _decode(
        self,
        record: VideoRecord,
        pick: Callable[[int], np.ndarray],
        short_side: int,
    ) -> Tensor:
        """Decode the frames `pick(num_frames)` chooses, all clips in one reader call.

        Args:
            record: the video.
            pick: maps the video's frame count to indices of shape (clips, clip_len).
            short_side: short side to decode to, when `cfg.resize_in_decoder`.

        Returns:
            uint8 (clips, clip_len, H, W, 3).

        Raises:
            VideoDecodeError: the video cannot be opened or decoded (`is_decode_error`), by
                whichever library; other errors pass through unchanged.
        """
        cfg = self.cfg
        try:
            with open_video(record.path, cfg.backend, cfg.frame_template) as reader:
                if reader.num_frames < 1:
                    raise VideoDecodeError(record.path, "no frames")
                indices = pick(reader.num_frames)  # (clips, clip_len)
                frames = reader.read(
                    indices.reshape(-1).tolist(),  # (clips * clip_len,)
                    short_side=short_side if cfg.resize_in_decoder else None,
                )  # (clips * clip_len, H, W, 3)
        except Exception as err:
            # A decoder library failing in its own way is still a bad file; anything else (a
            # bug, no memory) stops the run with its cause instead of being replaced.
            if isinstance(err, VideoDecodeError) or not is_decode_error(err):
                raise
            raise VideoDecodeError(record.path, f"{type(err).__name__}: {err}") from err
        if frames.shape[0] != indices.size:
            raise VideoDecodeError(
                record.path, f"decoded {frames.shape[0]} frames, expected {indices.size}"
            )
        clips = torch.from_numpy(frames)
        return clips.reshape(*indices.shape, *clips.shape[1:])  # (clips, clip_len, H, W, 3)


def collate(items: Sequence[TrainItem] | Sequence[ViewsItem]) -> TrainBatch | ViewsBatch:
    """The loader's `collate_fn`: training items into a `TrainBatch`, views items into a
    `ViewsBatch` (`video` stacked, `label`/`index` int64, `ok` bool, `skipped` one list)."""
    if isinstance(items[0], TrainItem):
        return TrainBatch.collate(items)
    return ViewsBatch(
        video=default_collate([item["video"] for item in items]),
        label=torch.tensor([item["label"] for item in items], dtype=torch.int64),
        index=torch.tensor([item["index"] for item in items], dtype=torch.int64),
        ok=torch.tensor([item["ok"] for item in items], dtype=torch.bool),
        skipped=[entry for item in items for entry in item["skipped"]],
    )


def build_dataset(cfg: DataConfig, split: Literal["train", "val", "test"]) -> VideoDataset:
    """The dataset of `split`, its annotations loaded from `cfg.<split>`.

    "train" gives a training dataset; "val" and "test" give test-mode datasets. A shard index
    or pattern (`aim_video.data.shards.is_shard_source`) gives the streamed `ShardTrainSet` or
    `ShardViewsSet` instead.

    Raises:
        DataError: the list file or `cfg.root` does not exist, or none of the first videos
            of the list does (a wrong `data.root`), named by config key and path.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    path = getattr(cfg, split)
    if path is None:
        raise DataError(f"no annotation file for the {split} split: set data.{split}")
    mode: Mode = "train" if split == "train" else "test"
    from aim_video.data import shards  # imports this module

    if shards.is_shard_source(path):  # an index of tar shards, local or at a URL
        return shards.open_shard_dataset(cfg, str(path), mode, f"data.{split}")
    if not Path(path).exists():
        raise DataError(f"data.{split}: {path}: no such annotation file")
    if cfg.root is not None and not Path(cfg.root).is_dir():
        raise DataError(f"data.root: {cfg.root}: no such folder")
    annotations = load_annotations(path, cfg.format, list_root(path, cfg.root), cfg.class_names)
    _check_videos_exist(annotations.records, cfg, f"data.{split} ({path})")
    return VideoDataset(annotations, cfg, mode=mode, source=f"data.{split} ({path})")


def _check_videos_exist(records: Sequence[VideoRecord], cfg: DataConfig, source: str) -> None:
    """Raise when none of up to `ROOT_PROBES` videos spread over the list exists.

    Then the list and the files do not meet (a wrong `data.root`, a list for another copy of
    the data set), which training would otherwise find after 50 replacements per item. A few
    missing files are the bad-file policy's job.
    """
    if not records:
        return
    step = max(1, len(records) // ROOT_PROBES)
    probes = records[::step][:ROOT_PROBES]
    if any(Path(record.path).exists() for record in probes):
        return
    root = (f"data.root ({cfg.root})" if cfg.root is not None
            else "data.root (not set: entries are read beside the list)")
    raise DataError(
        f"{source}: none of {len(probes)} videos checked exists (e.g. {probes[0].path}); "
        f"is {root} right?"
    )
