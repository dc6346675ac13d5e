"""Which frames of a video make a clip: dense and uniform (TSN) sampling.

Every function here is pure: it maps a frame count (and, for training, a
`np.random.Generator`) to int64 frame indices, so a sample is reproducible from its seed
and the policies can be tested without a video.

Two policies, both matching the reference implementation (an MMAction2 0.x fork) so that
released checkpoints are evaluated on the frames they were trained for:

* Dense (Kinetics): `clip_len` frames `interval` apart, MMAction2 `SampleFrames`.
  The window spans `clip_len * interval` frames. Training picks its start uniformly in
  `[0, num_frames - clip_len * interval]`; testing places `num_clips` windows with evenly
  spaced, centred starts. A video shorter than the window starts at 0 and its indices
  wrap around modulo `num_frames` (MMAction2's default `out_of_bound_opt="loop"`), so a
  short clip replays the video from the start rather than freezing on its last frame.
* Uniform (TSN; SSv2, Diving-48): the video is cut into `num_segments` equal segments and
  one frame is taken from each. Training takes a random frame per segment, testing the
  middle one (TSN, and MMAction2 `SampleFrames(clip_len=1, num_clips=S)` when S divides
  the frame count). Extra test clips shift the position inside every segment. A video with
  fewer frames than segments repeats frames in order. The reference implementation's
  `frame_uniform` rule (from SlowFast) rounds its segment bounds differently: its frames
  differ from these by at most one, and at `num_frames == num_segments` it repeats a frame
  and drops the last one, which this rule does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


def _check_num_frames(num_frames: int, num_clips: int = 1) -> None:
    if num_frames < 1:
        raise ValueError(f"cannot sample frames from a video with {num_frames} frames")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")


def dense_train_indices(
    num_frames: int, clip_len: int, interval: int, rng: np.random.Generator
) -> np.ndarray:
    """Frame indices of one training clip: `clip_len` frames `interval` apart.

    Args:
        num_frames: frames in the video.
        clip_len: frames in the clip.
        interval: distance between consecutive sampled frames.
        rng: source of the random start.

    Returns:
        int64 indices of shape (clip_len,), wrapped modulo `num_frames` when the video is
        shorter than the window.
    """
    _check_num_frames(num_frames)
    num_starts = num_frames - clip_len * interval + 1
    start = int(rng.integers(num_starts)) if num_starts > 0 else 0
    return _dense_window(start, num_frames, clip_len, interval)


def dense_test_indices(num_frames: int, clip_len: int, interval: int, num_clips: int) -> np.ndarray:
    """Frame indices of `num_clips` test clips with evenly spaced, centred starts.

    The valid starts `[0, num_frames - clip_len * interval]` are cut into `num_clips` equal
    parts and each clip starts in the middle of its part (MMAction2 `SampleFrames`
    `test_mode=True`).

    Args:
        num_frames: frames in the video.
        clip_len: frames per clip.
        interval: distance between consecutive sampled frames.
        num_clips: clips per video.

    Returns:
        int64 indices of shape (num_clips, clip_len).
    """
    _check_num_frames(num_frames, num_clips)
    part = (num_frames - clip_len * interval + 1) / num_clips
    if part > 0:
        starts = (np.arange(num_clips) * part + part / 2).astype(np.int64)
    else:
        starts = np.zeros(num_clips, dtype=np.int64)
    return np.stack([_dense_window(int(s), num_frames, clip_len, interval) for s in starts])


def _dense_window(start: int, num_frames: int, clip_len: int, interval: int) -> np.ndarray:
    indices = start + np.arange(clip_len, dtype=np.int64) * interval
    return np.mod(indices, num_frames)  # loop, as MMAction2 out_of_bound_opt="loop"


def _segment_positions(num_frames: int, num_segments: int, fractions: np.ndarray) -> np.ndarray:
    """Frame at fraction `fractions[..., i]` of segment `i`, segment i = [i, i+1) * N / S.

    The video's frames cover [0, N) and segment `i` the equal part [i * N / S, (i + 1) * N / S);
    the frame under a point of that span is its floor. Indices never decrease along the
    segments, every segment has its own frame when N >= S, and with N < S neighbouring
    segments fall on the same frame, which repeats frames in order.
    """
    positions = (np.arange(num_segments) + fractions) * (num_frames / num_segments)
    return np.minimum(np.floor(positions), num_frames - 1).astype(np.int64)


def uniform_train_indices(
    num_frames: int, num_segments: int, rng: np.random.Generator
) -> np.ndarray:
    """One random frame from each of `num_segments` equal segments of the video.

    The point in each segment is uniform, so over many draws every frame of the video is
    equally likely.

    Args:
        num_frames: frames in the video.
        num_segments: segments, i.e. frames in the clip.
        rng: source of the position inside every segment.

    Returns:
        non-decreasing int64 indices of shape (num_segments,).
    """
    _check_num_frames(num_frames)
    return _segment_positions(num_frames, num_segments, rng.random(num_segments))


def uniform_test_indices(num_frames: int, num_segments: int, num_clips: int) -> np.ndarray:
    """Fixed frames from each segment: the middle one, or `num_clips` shifted positions.

    Clip `k` of `K` takes the frame at fraction `(k + 0.5) / K` of every segment, so one
    clip takes the middle frames (TSN's test rule) and more clips spread evenly inside
    each segment.

    Args:
        num_frames: frames in the video.
        num_segments: segments, i.e. frames per clip.
        num_clips: clips per video.

    Returns:
        int64 indices of shape (num_clips, num_segments).
    """
    _check_num_frames(num_frames, num_clips)
    fractions = (np.arange(num_clips) + 0.5) / num_clips
    return _segment_positions(num_frames, num_segments, fractions[:, None])  # (K, S)


class Sampling(Protocol):
    """What the dataset needs from a sampling policy."""

    @property
    def clip_len(self) -> int:
        """Frames per clip."""
        ...

    def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of one random training clip, shape (clip_len,)."""
        ...

    def test(self, num_frames: int, num_clips: int) -> np.ndarray:
        """Indices of the fixed test clips, shape (num_clips, clip_len)."""
        ...


@dataclass(frozen=True)
class DenseSampling:
    """`clip_len` frames `interval` apart (Kinetics recipes: 8x16, 16x8, 32x4)."""

    clip_len: int  # frames per clip
    interval: int  # distance between consecutive sampled frames

    def __post_init__(self) -> None:
        if self.clip_len < 1 or self.interval < 1:
            raise ValueError(f"clip_len and interval must be >= 1, got {self}")

    def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """See `dense_train_indices`."""
        return dense_train_indices(num_frames, self.clip_len, self.interval, rng)

    def test(self, num_frames: int, num_clips: int) -> np.ndarray:
        """See `dense_test_indices`."""
        return dense_test_indices(num_frames, self.clip_len, self.interval, num_clips)


@dataclass(frozen=True)
class UniformSampling:
    """One frame from each of `num_segments` equal segments (TSN; SSv2, Diving-48)."""

    num_segments: int  # segments, i.e. frames per clip

    def __post_init__(self) -> None:
        if self.num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {self.num_segments}")

    @property
    def clip_len(self) -> int:
        """Frames per clip: one per segment."""
        return self.num_segments

    def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """See `uniform_train_indices`."""
        return uniform_train_indices(num_frames, self.num_segments, rng)

    def test(self, num_frames: int, num_clips: int) -> np.ndarray:
        """See `uniform_test_indices`."""
        return uniform_test_indices(num_frames, self.num_segments, num_clips)
