"""The video dataset: annotation records -> decoded, sampled, augmented clips.

One item is one video. Its frames are decoded once (all clips' frames in one reader
call), split into clips, and transformed:

* train: `(C, T, H, W)`, or `(K, C, T, H, W)` with `repeated_aug = K > 1`: K clips of the
  same video, each with its own frames and augmentation, decoded in one reader call (the frames
  of all K clips are sorted and read in one pass, so K clips cost one open and one seek per
  keyframe span rather than K). An epoch still visits each video once: it holds K clips per
  video, a loader batch of B items holds B * K clips, and an epoch has as many optimiser steps
  as with K = 1 but K times the clips (and K times fewer distinct videos per step).
  `label` is the label after augmentation (a flip with `flip_label_map` may change it); with
  K > 1 it is the video's label and `clip_labels` (K,) holds each clip's own;
* train with `device_augment`: the host stops once clips can be batched and ships uint8
  `(T, S, S, 3)` (or `(K, T, S, S, 3)`) with `aug_state` (the state of each clip's generator,
  uint8 `(5056,)` or `(K, 5056)`); `DeviceAugment` then runs the rest on the training device
  (see there) and gives exactly what the host would have. `label`/`clip_labels` are then the
  labels before that part (a device flip may still map them);
* test: `(V, C, T, H, W)`, the `V = test_clips * test_crops` views of the video, clip-major
  (clip 0 crop 0, clip 0 crop 1, ...).

Randomness comes only from `(cfg.seed, epoch, index)`, never from global state or the
worker, so a resumed run, a different worker count or a re-run draws the same samples. Each
clip of an item has its own `torch.Generator`, seeded from that, for its augmentation.

Bad files. Decoding fails on missing, empty, truncated or corrupt videos. In training such
an item is replaced by another index (drawn from the same seeded generator, so the
replacement is reproducible too; the item's `index` is then the replacement's), reported
in `skipped` as `(path, reason)` and logged
once per file per process; after `MAX_CONSECUTIVE_FAILURES` bad draws in a row the item
raises. In testing an item is never replaced: it comes back with `ok=False`, a zero video of
the right shape and the reason in `skipped`, so the evaluator can count it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

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
from aim_video.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    EvalTransform,
    Normalize,
    RandAugment,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    TrainTransform,
    resize_short_side,
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
    root: str | None = None  # folder that relative video paths are relative to
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


def host_augment(
    transform: TrainTransform, clip: Tensor, label: int, generator: torch.Generator
) -> tuple[Tensor, int]:
    """The host's share of `transform` when the device augments (`DataConfig.device_augment`).

    The short-side resize and the random resized crop, which give every clip the size it is
    batched at; with RandAugment also the flip and RandAugment themselves: RandAugment picks
    other ops for every clip, and its geometric ops do not commute with the flip before it.
    Draws from `generator` exactly what `transform` draws in these steps, so `DeviceAugment`
    can continue from the generator's state.

    Args:
        transform: the full training transform.
        clip: uint8 (T, H, W, 3).
        label: the clip's label.
        generator: the clip's generator.

    Returns:
        uint8 (T, S, S, 3), S = the crop size, and the label after these steps.
    """
    clip = resize_short_side(clip, transform.short_side)
    clip = transform.crop(clip, generator)
    if transform.randaugment is not None:
        clip, label = transform.flip(clip, label, generator)
        clip = transform.randaugment(clip, generator)
    return clip, label


def _restore_generator(state: Tensor) -> torch.Generator:
    generator = torch.Generator()
    # A copy: `set_state` crashes on a view into a batch (a row past the first, torch 2.x).
    generator.set_state(state.clone())
    return generator


class DeviceAugment:
    """The device's share of a training transform, on a batch where it is trained.

    Flip (unless RandAugment is on, see `host_augment`), colour jitter, normalisation and
    random erasing: per-pixel work on uint8 clips that are 4x smaller than the float clips it
    makes, so the loader's workers and the host-to-device copy are spared the float clips.
    Each clip's generator is restored from the state the host shipped, so every draw is the
    one `TrainTransform` would have made next on the host: on the CPU the result is the host
    path's bit for bit; on a GPU jitter and normalisation may differ by float rounding.

    Args:
        transform: the training transform the dataset was built with
            (`VideoDataset.train_transform`).
    """

    def __init__(self, transform: TrainTransform) -> None:
        self.transform = transform

    def __call__(self, video: Tensor, labels: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
        """Augment a batch.

        Args:
            video: uint8 (B, T, S, S, 3), on the device.
            labels: int64 (B,) on the CPU, as the loader gives them (a flip may map them).
            states: uint8 (B, 5056), each clip's generator state, as the loader gives them.

        Returns:
            float (B, 3, T, S, S) and int64 labels (B,), both on `video`'s device.
        """
        t = self.transform
        generators = [_restore_generator(state) for state in states]
        new_labels = labels.tolist()
        clips = list(video.unbind(0))  # B x (T, S, S, 3)
        changed = False
        for i, generator in enumerate(generators):
            before = clips[i]
            if t.randaugment is None:
                clips[i], new_labels[i] = t.flip(clips[i], new_labels[i], generator)
            if t.jitter is not None:
                clips[i] = t.jitter(clips[i], generator)
            changed |= clips[i] is not before
        out = t.normalize(torch.stack(clips) if changed else video)  # (B, 3, T, S, S)
        if t.erasing is not None:
            for i, generator in enumerate(generators):
                clip = out[i]  # (3, T, S, S)
                erased = t.erasing(clip, generator)
                if erased is not clip:
                    out[i] = erased
        return out, torch.tensor(new_labels, dtype=torch.int64, device=video.device)


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

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} videos")
        if self.mode == "train":
            return self._train_item(index)
        return self._test_item(index)

    def _train_item(self, index: int) -> dict[str, Any]:
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
                    self.cfg.short_side,
                )
            except VideoDecodeError as err:
                _warn_once(err.path, err.reason)
                skipped.append((record.path, err.reason))
                index = int(rng.integers(len(self.records)))
                continue
            item = self._augment(clips, record.label, generators)
            return item | {"index": index, "ok": True, "skipped": skipped}
        first = "; ".join(f"{path}: {reason}" for path, reason in skipped[:REASONS_SHOWN])
        raise DataError(
            f"{self.source or 'the training list'}: too many unreadable videos "
            f"({MAX_CONSECUTIVE_FAILURES} in a row, drawing for item {requested}); the first: "
            f"{first}. Is data.root ({self.cfg.root}) right? `aim-video check-data` lists "
            "every unreadable video"
        )

    def _augment(
        self, clips: Tensor, label: int, generators: list[torch.Generator]
    ) -> dict[str, Any]:
        """`video` and `label` (and `aug_state`) of a training item from uint8 clips
        (K, T, H, W, 3), clip k augmented with `generators[k]`."""
        augment = host_augment if self.device_augment else TrainTransform.__call__
        videos, labels = zip(*(
            augment(self.train_transform, clip, label, g) for clip, g in zip(clips, generators)
        ))
        item: dict[str, Any]
        if len(videos) == 1:
            # The label after augmentation: a flip with a label map may change it.
            item = {"video": videos[0], "label": labels[0]}  # (C, T, H, W) or uint8 (T, S, S, 3)
        else:
            item = {
                "video": torch.stack(videos),  # (K, C, T, H, W) or uint8 (K, T, S, S, 3)
                "label": label,
                "clip_labels": torch.tensor(labels, dtype=torch.int64),  # (K,)
            }
        if self.device_augment:
            states = [g.get_state() for g in generators]  # K x (5056,)
            item["aug_state"] = states[0] if len(states) == 1 else torch.stack(states)
        return item

    def _test_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        cfg = self.cfg
        item: dict[str, Any] = {"label": record.label, "index": index}
        try:
            clips = self._decode(
                record,
                lambda n: self.sampling.test(n, cfg.test_clips),
                self.eval_transform.short_side,
            )
        except VideoDecodeError as err:
            _warn_once(err.path, err.reason)
            num_views = cfg.test_clips * cfg.test_crops
            size = cfg.input_size
            item["video"] = torch.zeros(num_views, 3, self.sampling.clip_len, size, size)
            return item | {"ok": False, "skipped": [(record.path, err.reason)]}
        views = self.eval_transform(clips)  # (clips, crops, C, T, S, S)
        item["video"] = views.flatten(0, 1)  # (clips * crops, C, T, S, S), clip-major
        return item | {"ok": True, "skipped": []}

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


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch: `video` (B, ...), `label`/`index` int64, `ok` bool (B,).

    `skipped` becomes one list of every `(path, reason)` in the batch; `clip_labels`
    (repeated augmentation) is stacked to (B, K) and `aug_state` (device augmentation) to
    (B, 5056) or (B, K, 5056) when present.
    """
    out: dict[str, Any] = {
        # default_collate stacks straight into shared memory in a loader worker, saving the
        # copy that sending a batch to the main process would make.
        "video": default_collate([item["video"] for item in batch]),
        "label": torch.tensor([item["label"] for item in batch], dtype=torch.int64),
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.int64),
        "ok": torch.tensor([item["ok"] for item in batch], dtype=torch.bool),
        "skipped": [entry for item in batch for entry in item["skipped"]],
    }
    for key in ("clip_labels", "aug_state"):
        if key in batch[0]:
            out[key] = default_collate([item[key] for item in batch])
    return out


def build_dataset(cfg: DataConfig, split: Literal["train", "val", "test"]) -> VideoDataset:
    """The dataset of `split`, its annotations loaded from `cfg.<split>`.

    "train" gives a training dataset; "val" and "test" give test-mode datasets.

    Raises:
        DataError: the list file or `cfg.root` does not exist, or none of the first videos
            of the list does (a wrong `data.root`), named by config key and path.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    path = getattr(cfg, split)
    if path is None:
        raise DataError(f"no annotation file for the {split} split: set data.{split}")
    if not Path(path).exists():
        raise DataError(f"data.{split}: {path}: no such annotation file")
    if cfg.root is not None and not Path(cfg.root).is_dir():
        raise DataError(f"data.root: {cfg.root}: no such folder")
    annotations = load_annotations(path, cfg.format, cfg.root, cfg.class_names)
    _check_videos_exist(annotations.records, cfg, f"data.{split} ({path})")
    mode: Mode = "train" if split == "train" else "test"
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
    root = f"data.root ({cfg.root})" if cfg.root is not None else "data.root (not set)"
    raise DataError(
        f"{source}: none of {len(probes)} videos checked exists (e.g. {probes[0].path}); "
        f"is {root} right?"
    )
