"""The demo's still images (`aim_video.demo.stills`): labelled by what the pixels show, and
spanning the sizes the synthetic benchmark's motions pass through."""

from __future__ import annotations

import numpy as np
import torch
from test_synthetic import _object_colour

from aim_video.data.synthetic import COLOURS, MOTION_PAIRS, SHAPES, TEXTURES
from aim_video.demo.stills import STILL_RADIUS, synthetic_images


def test_motions_pass_only_through_sizes_the_stand_in_reads():
    """Every motion's object stays within STILL_RADIUS, the sizes the stand-in is pretrained
    to read off one still."""
    low, high = STILL_RADIUS
    for pair in MOTION_PAIRS:
        for seed in range(50):
            pose = pair.trajectory(np.random.default_rng(seed), 16, 32)
            assert low * 32 <= pose.radius.min() and pose.radius.max() <= high * 32, pair.forward


def test_synthetic_images_are_labelled_by_shape_colour_texture_and_placement():
    images, labels, head_sizes, attributes = synthetic_images(300, size=32, seed=5, chunk=128)
    assert images.dtype == torch.uint8 and images.shape == (300, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (300, 3)
    assert head_sizes == [len(SHAPES), len(COLOURS), len(TEXTURES)]
    for head, size in enumerate(head_sizes):
        assert set(labels[:, head].tolist()) == set(range(size))  # every class shows up
    assert attributes.dtype == torch.float32 and attributes.shape == (300, 4)
    x, y, radius, opacity = attributes.T
    assert 0 < x.min() and x.max() < 1 and 0 < y.min() and y.max() < 1
    assert STILL_RADIUS[0] <= radius.min() and radius.max() <= STILL_RADIUS[1]
    opaque = opacity == 1.0
    assert 0.4 < opaque.float().mean() < 0.6 and opacity.min() < 0.1  # half opaque, half faded
    frames = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    # The colour label is the colour of the object in the pixels (of the opaque objects).
    hits = [_object_colour(f) == COLOURS[c][0]
            for f, c, o in zip(frames, labels[:, 1].tolist(), opaque.tolist()) if o]
    assert np.mean(hits) >= 0.95
    # The position is where the object is: the centroid of its most saturated pixels.
    checked = 0
    for f, (px, py, r, o) in zip(frames, attributes.tolist(), strict=True):
        if o < 1 or r < 0.15:
            continue
        pixels = f.astype(np.float64) / 255
        saturation = pixels.max(-1) - pixels.min(-1)
        rows, cols = np.nonzero(saturation >= np.quantile(saturation, 0.98))
        assert abs((cols.mean() + 0.5) / 32 - px) < r and abs((rows.mean() + 0.5) / 32 - py) < r
        checked += 1
    assert checked >= 50

    again = synthetic_images(200, size=32, seed=5)  # other n and chunk: the same images
    assert torch.equal(again.images, images[:200]) and torch.equal(again.labels, labels[:200])
    assert torch.equal(again.attributes, attributes[:200])
    assert not torch.equal(synthetic_images(20, size=32, seed=6).images, images[:20])
