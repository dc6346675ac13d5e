"""Still images for pretraining the demo's stand-in for CLIP.

The synthetic benchmark's renderer (`aim_video.data.synthetic`: its shapes, colours, textures,
backgrounds and `render_frames`) draws one object per image, labelled by shape, colour and
texture, with the object's position, size and opacity as continuous attributes. The stills share
the videos' visual vocabulary but never their motion labels.

The stand-in's cache is keyed on `synthetic.SYNTHETIC_VERSION` (see `aim_video.demo.plan`):
bump it when the stills change too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from aim_video.data.synthetic import (
    COLOURS,
    SHAPES,
    TEXTURES,
    Look,
    Pose,
    _sample_background,
    _sample_look,
    render_frames,
)

IMAGE_HEADS: tuple[str, ...] = ("shape", "colour", "texture")
# Continuous attributes of each still: centre x and y and circumradius as fractions of the image
# side, and opacity. They span what the motion classes vary (place, size, opacity), so a model
# pretrained to read them off one frame sees what changes between frames; they are properties of
# a single image, never a motion label.
IMAGE_ATTRIBUTES: tuple[str, ...] = ("x", "y", "size", "opacity")
STILL_RADIUS = (0.06, 0.32)  # circumradius / side: the range the motion classes pass through

# Part of every still's seed, after the synthetic videos' split streams (train 0, val 1), so a
# still never repeats a video's first draws.
_IMAGE_STREAM = 2


class SyntheticImages(NamedTuple):
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N, 3): shape, colour and texture ids (IMAGE_HEADS order)
    head_sizes: list[int]  # number of classes of each label column
    attributes: torch.Tensor  # float32 (N, 4): IMAGE_ATTRIBUTES, each in [0, 1]


def _sample_still(
    rng: np.random.Generator, size: int
) -> tuple[Look, np.ndarray, tuple[float, float, float, float, float]]:
    """One still image's object, background and placement ``(cx, cy, radius, angle, alpha)``.

    Half the objects are opaque, the other half have a uniform opacity in [0, 1] (the fading
    classes pass through all of it).
    """
    look = _sample_look(rng)
    background = _sample_background(rng, size, look)
    radius = rng.uniform(*STILL_RADIUS) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    angle = rng.uniform(0, 2 * math.pi)
    alpha = 1.0 if rng.uniform() < 0.5 else rng.uniform(0.0, 1.0)
    return look, background, (cx, cy, radius, angle, alpha)


def synthetic_images(n: int, size: int = 32, seed: int = 0, chunk: int = 256) -> SyntheticImages:
    """Still images of random objects, labelled by shape, colour, texture and placement.

    The same renderer, shapes, colours, textures and backgrounds as the videos; random position,
    size, rotation and opacity. Never labelled by motion.

    Args:
        n: number of images.
        size: image side in pixels.
        seed: fixes the whole set; image i does not depend on ``n`` or ``chunk``.
        chunk: images rendered per vectorised batch (bounds memory).

    Returns:
        ``SyntheticImages(images, labels, head_sizes, attributes)``.
    """
    images = np.zeros((n, size, size, 3), np.uint8)
    looks: list[Look] = []
    places = np.zeros((n, 5))
    # Chunk by chunk, so float backgrounds for large n never sit in memory at once.
    for lo in range(0, n, chunk):
        stills = [_sample_still(np.random.default_rng([seed, _IMAGE_STREAM, i]), size)
                  for i in range(lo, min(n, lo + chunk))]
        part = [look for look, _, _ in stills]
        backgrounds = np.stack([background for _, background, _ in stills])
        places[lo : lo + len(stills)] = [place for _, _, place in stills]
        pose = Pose(*places[lo : lo + len(stills)].T)  # fields of shape (B,)
        images[lo : lo + len(stills)] = render_frames(part, pose, backgrounds, size)
        looks += part
    labels = torch.tensor([[look.shape, look.colour, look.texture] for look in looks],
                          dtype=torch.int64).reshape(n, len(IMAGE_HEADS))
    cx, cy, radius, _, alpha = places.T
    attributes = torch.from_numpy(np.stack([cx / size, cy / size, radius / size, alpha], 1))
    # (N, H, W, 3) -> (N, 3, H, W)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return SyntheticImages(tensor, labels, [len(SHAPES), len(COLOURS), len(TEXTURES)],
                           attributes.float().reshape(n, len(IMAGE_ATTRIBUTES)))


__all__ = ["IMAGE_ATTRIBUTES", "IMAGE_HEADS", "STILL_RADIUS", "SyntheticImages",
           "synthetic_images"]
