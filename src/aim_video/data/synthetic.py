"""The built-in synthetic benchmark: time-reversal pairs of motion classes, as real H.264 files.

Why it exists: AIM's claim is that a frozen image model needs *temporal* adaptation to recognise
actions defined by motion. This benchmark makes that claim testable on a laptop CPU in minutes.

Motion task (``task="motion"``): the classes come in pairs that are each other's time reversal
(moves left / moves right, grows / shrinks, ...). A clip of the second class of a pair is made by
rendering a clip of the first class and reversing its frame order, so the frames of a "moves right"
clip are, as a multiset, distributed exactly like those of a "moves left" clip. Any order-blind
model (per-frame features pooled without knowing which frame is which) is therefore capped at
chance within a pair, i.e. 50% accuracy overall, while a model that sees the order of frames can
reach ~100%. Shape, colour, texture, position, size and background are random in every clip.
Note that a per-frame model with a learnable embedding of the frame index is *not* order-blind:
the mean over t of f(frame_t, t) can compute "where the object is at the end minus where it is
at the start".

Appearance task (``task="appearance"``): the counterpart. Classes are object identities
(shape x colour) and the motion is random, so a frozen image model alone can solve it.

The demo's still images, for pretraining its stand-in for CLIP, come from the same renderer
(`aim_video.demo.stills`).

`pairs` (in `make_synthetic`, `class_names`, `render_clip`) keeps a subset of the motion pairs, named
by their forward class; the demo leaves out the rotation pair, which a 32-pixel stand-in cannot
read.

Files written by `make_synthetic` (paths in the lists are relative to ``out_dir``)::

    out_dir/videos/{train,val}/<class name>/<index>.mp4
    out_dir/train.txt, out_dir/val.txt     MMAction2 video lists: "videos/train/x/00000.mp4 3"
    out_dir/classes.txt                    one class name per line, in label order
    out_dir/meta.json                      the parameters; "complete": true once all is written
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from aim_video.data.pool import process_pool, usable_cpus
from aim_video.files import read_json, write_atomic, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

Task = Literal["motion", "appearance"]
TASKS: tuple[Task, ...] = ("motion", "appearance")

# Bump whenever rendering or layout changes, so that stale folders get regenerated.
# 2: grows starts bigger and fades_in starts visible.
# 3: lossless H.264 (qp 0): the frames no longer depend on the encoder's choices.
SYNTHETIC_VERSION = 3
FPS = 8
SUPERSAMPLE = 2  # render at 2x per axis and box-filter down: anti-aliased edges and textures
TEXTURE_SHADE = 0.3  # the second colour of a texture is the object colour darkened to this
MIN_CONTRAST = 0.2  # background luminance stays this far from the object's

# Part of every clip's seed, so splits never share clips (the demo's stills use stream 2).
_SPLIT_STREAMS = {"train": 0, "val": 1}


# ----------------------------------------------------------------------------------------------
# Visual vocabulary: shapes, textures, colours, backgrounds
# ----------------------------------------------------------------------------------------------


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int, phase: float) -> np.ndarray:
    """Inside a regular polygon of circumradius 1, one edge normal at angle ``phase``."""
    rho = np.hypot(u, v)
    sector = 2 * math.pi / sides
    # Fold the angle into one edge's sector, measured from that edge's normal.
    folded = np.mod(np.arctan2(v, u) - phase + sector / 2, sector) - sector / 2
    return rho * np.cos(folded) <= math.cos(math.pi / sides)


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Inside a star with outer radius 1 and inner radius ``inner``, a point facing up."""
    rho = np.hypot(u, v)
    sector = 2 * math.pi / points
    # Fold into half a sector: angle 0 is an outer point, sector/2 the next inner vertex.
    folded = np.abs(np.mod(np.arctan2(v, u) + math.pi / 2 + sector / 2, sector) - sector / 2)
    x, y = rho * np.cos(folded), rho * np.sin(folded)
    # Inside when on the origin's side of the edge from (1, 0) to the inner vertex (bx, by).
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    return (bx - 1) * y - by * (x - 1) >= 0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside the classic implicit heart, pointing down, scaled to circumradius 1."""
    # The curve's smallest enclosing circle: centre (0, 0.25), radius 1.25. Image v grows
    # downwards, the curve's y upwards.
    x, y = 1.25 * u, 0.25 - 1.25 * v
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def _cross(u: np.ndarray, v: np.ndarray, arm: float = 0.3) -> np.ndarray:
    """Inside a plus sign whose arms reach the unit circle."""
    au, av_ = np.abs(u), np.abs(v)
    return ((au <= 0.95) & (av_ <= arm)) | ((au <= arm) & (av_ <= 0.95))


@dataclass(frozen=True)
class Shape:
    name: str
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray]  # object coords (unit disc) -> bool
    shows_rotation: bool  # False when rotating it changes nothing (a solid circle)


SHAPES: tuple[Shape, ...] = (
    Shape("circle", lambda u, v: u**2 + v**2 <= 1.0, shows_rotation=False),
    Shape("square", lambda u, v: _regular_polygon(u, v, 4, 0.0), shows_rotation=True),
    Shape("triangle", lambda u, v: _regular_polygon(u, v, 3, math.pi / 2), shows_rotation=True),
    Shape("star", _star, shows_rotation=True),
    Shape("cross", _cross, shows_rotation=True),
    Shape("heart", _heart, shows_rotation=True),
)


def _texture_coords(
    u: np.ndarray, v: np.ndarray, period: np.ndarray, angle: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Object coordinates rotated by the texture angle and measured in texture periods."""
    c, s = np.cos(angle), np.sin(angle)
    return (c * u + s * v) / period, (-s * u + c * v) / period


def _solid(u: np.ndarray, v: np.ndarray, period: np.ndarray, angle: np.ndarray) -> np.ndarray:
    return np.ones_like(u, dtype=bool)


def _stripes(u: np.ndarray, v: np.ndarray, period: np.ndarray, angle: np.ndarray) -> np.ndarray:
    a, _ = _texture_coords(u, v, period, angle)
    return np.mod(a, 1.0) < 0.5


def _checker(u: np.ndarray, v: np.ndarray, period: np.ndarray, angle: np.ndarray) -> np.ndarray:
    a, b = _texture_coords(u, v, period, angle)
    return (np.floor(a) + np.floor(b)) % 2 == 0


def _dots(u: np.ndarray, v: np.ndarray, period: np.ndarray, angle: np.ndarray) -> np.ndarray:
    a, b = _texture_coords(u, v, period, angle)
    # Dark dots on the object colour: inside a dot is the shaded part.
    return (np.mod(a, 1.0) - 0.5) ** 2 + (np.mod(b, 1.0) - 0.5) ** 2 > 0.3**2


@dataclass(frozen=True)
class Texture:
    name: str
    # (u, v, period, angle) -> bool, True where the object colour shows (else its dark shade)
    lit: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


TEXTURES: tuple[Texture, ...] = (
    Texture("solid", _solid),
    Texture("stripes", _stripes),
    Texture("checker", _checker),
    Texture("dots", _dots),
)

# Saturated and bright, so hue stays readable under the dark texture shade and on any background.
COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (0.90, 0.10, 0.10)),
    ("orange", (1.00, 0.55, 0.05)),
    ("yellow", (0.95, 0.90, 0.10)),
    ("green", (0.10, 0.80, 0.20)),
    ("cyan", (0.10, 0.85, 0.90)),
    ("blue", (0.15, 0.30, 0.95)),
    ("purple", (0.60, 0.20, 0.90)),
    ("pink", (1.00, 0.45, 0.75)),
)
COLOUR_JITTER = 0.06

BACKGROUNDS = ("solid", "gradient", "noise")


@dataclass(frozen=True)
class Look:
    """What one object looks like: everything but where it is."""

    shape: int  # index into SHAPES
    colour: int  # index into COLOURS
    rgb: tuple[float, float, float]  # the jittered colour actually drawn, in [0, 1]
    texture: int  # index into TEXTURES
    texture_period: float  # in object radii
    texture_angle: float  # radians, in the object's frame (so it turns with the object)


@dataclass(frozen=True)
class Pose:
    """Where the object is in each of B frames; every field has shape (B,)."""

    cx: np.ndarray  # centre, pixels from the left edge
    cy: np.ndarray  # centre, pixels from the top edge
    radius: np.ndarray  # circumradius, pixels
    angle: np.ndarray  # radians; increasing turns the object clockwise on screen
    alpha: np.ndarray  # opacity in [0, 1]


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _sample_look(
    rng: np.random.Generator,
    shape: int | None = None,
    colour: int | None = None,
    shapes: tuple[int, ...] = tuple(range(len(SHAPES))),
) -> Look:
    """A random object appearance; ``shape``/``colour`` fix those, ``shapes`` limits the choice."""
    shape = shapes[int(rng.integers(len(shapes)))] if shape is None else shape
    colour = int(rng.integers(len(COLOURS))) if colour is None else colour
    base = np.array(COLOURS[colour][1])
    rgb = np.clip(base + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3), 0.0, 1.0)
    return Look(
        shape=shape,
        colour=colour,
        rgb=(float(rgb[0]), float(rgb[1]), float(rgb[2])),
        texture=int(rng.integers(len(TEXTURES))),
        texture_period=float(rng.uniform(0.45, 0.75)),
        texture_angle=float(rng.uniform(0, math.pi)),
    )


def _background_tone(rng: np.random.Generator, avoid: float) -> np.ndarray:
    """A dull colour whose luminance is at least MIN_CONTRAST away from ``avoid``."""
    # Draw the grey level uniformly from [0.05, 0.95] minus the band around ``avoid``.
    low, high = 0.05, 0.95
    below = max(0.0, min(high, avoid - MIN_CONTRAST) - low)
    above = max(0.0, high - max(low, avoid + MIN_CONTRAST))
    x = rng.uniform(0, below + above)
    grey = low + x if x < below else max(low, avoid + MIN_CONTRAST) + (x - below)
    tint = rng.normal(0, 0.05, 3)
    return np.clip(grey + tint - _luminance(tint), 0.0, 1.0)


def _bilinear_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells) weights that linearly interpolate ``cells`` knots onto ``size`` pixels."""
    pos = (np.arange(size) + 0.5) / size * (cells - 1)
    knots = np.arange(cells)
    return np.clip(1 - np.abs(pos[:, None] - knots[None, :]), 0, None)


def _sample_background(rng: np.random.Generator, size: int, look: Look) -> np.ndarray:
    """A static (size, size, 3) float32 background that contrasts with the object."""
    avoid = float(_luminance(np.array(look.rgb)))
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    base = _background_tone(rng, avoid)
    if kind == "solid":
        image = np.broadcast_to(base, (size, size, 3))
    elif kind == "gradient":
        other = _background_tone(rng, avoid)
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (np.arange(size) + 0.5) / size - 0.5
        # Projection of each pixel on the gradient direction, in [0, 1].
        t = np.cos(theta) * ramp[None, :] + np.sin(theta) * ramp[:, None]
        t = (t - t.min()) / (t.max() - t.min())
        image = base + t[..., None] * (other - base)
    else:  # smooth blotchy noise: a few random knots, bilinearly upsampled
        cells = int(rng.integers(3, 9))
        knots = rng.normal(0, 0.08, (cells, cells, 3))
        up = _bilinear_matrix(size, cells)
        noise = up @ knots.transpose(2, 0, 1) @ up.T  # (3, size, size)
        image = base + noise.transpose(1, 2, 0)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _indexed_mask(
    kinds: np.ndarray, fns: list[Callable[..., np.ndarray]], *args: np.ndarray
) -> np.ndarray:
    """Apply ``fns[kinds[b]]`` to frame b of every (B, ...) argument, one call per kind."""
    out = np.zeros(args[0].shape, dtype=bool)
    for kind in np.unique(kinds):
        rows = kinds == kind
        out[rows] = fns[kind](*(a[rows] for a in args))
    return out


def _box_downsample(x: np.ndarray) -> np.ndarray:
    """Average each f x f block, f = SUPERSAMPLE: (B, n * f, n * f) -> (B, n, n)."""
    f = SUPERSAMPLE
    # Strided slices add up faster than a mean over a (B, H, f, W, f) view.
    total = sum(x[:, i::f, j::f] for i in range(f) for j in range(f))
    return total / (f * f)


def _object_window(
    looks: list[Look], pose: Pose, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coverage and texture shading of each object, computed only in a window around it.

    Returns:
        ``(cover, shade, top, left)``: cover and coverage-weighted shade of shape (B, w, w),
        and each window's top-left pixel, shape (B,). One window side ``w`` serves the batch.
    """
    # Every shape lies within its circumradius; +2 pixels of anti-aliasing margin.
    w = min(size, int(math.ceil(2 * float(pose.radius.max()))) + 2)
    top = np.clip(np.floor(pose.cy - w / 2), 0, size - w).astype(np.int64)
    left = np.clip(np.floor(pose.cx - w / 2), 0, size - w).astype(np.int64)
    centres = (np.arange(w * SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    dx = centres[None, None, :] + (left - pose.cx)[:, None, None].astype(np.float32)  # (B, 1, ws)
    dy = centres[None, :, None] + (top - pose.cy)[:, None, None].astype(np.float32)  # (B, ws, 1)
    cos = np.cos(pose.angle)[:, None, None].astype(np.float32)
    sin = np.sin(pose.angle)[:, None, None].astype(np.float32)
    radius = pose.radius[:, None, None].astype(np.float32)
    # Image offsets -> object coordinates: undo the rotation, scale the circumradius to 1.
    u = (cos * dx + sin * dy) / radius  # (B, ws, ws)
    v = (-sin * dx + cos * dy) / radius

    period = np.array([look.texture_period for look in looks], np.float32)[:, None, None]
    tex_angle = np.array([look.texture_angle for look in looks], np.float32)[:, None, None]
    inside = _indexed_mask(
        np.array([look.shape for look in looks]), [s.inside for s in SHAPES], u, v
    )
    lit = _indexed_mask(
        np.array([look.texture for look in looks]),
        [t.lit for t in TEXTURES],
        u,
        v,
        np.broadcast_to(period, u.shape),
        np.broadcast_to(tex_angle, u.shape),
    )
    # Box-filter the supersampled coverage and shading down to pixels.
    cover = _box_downsample(inside.astype(np.float32))  # (B, w, w)
    shade = _box_downsample(inside * np.where(lit, 1.0, TEXTURE_SHADE).astype(np.float32))
    return cover, shade, top, left


def render_frames(looks: list[Look], pose: Pose, backgrounds: np.ndarray, size: int) -> np.ndarray:
    """Draw one object per frame over its background.

    Args:
        looks: one per frame (a clip repeats the same one).
        pose: per-frame placement, fields of shape (B,).
        backgrounds: (B, size, size, 3) or (1, size, size, 3) floats in [0, 1].
        size: frame side in pixels.

    Returns:
        uint8 (B, size, size, 3) frames.
    """
    b = len(looks)
    cover_win, shade_win, top, left = _object_window(looks, pose, size)
    w = cover_win.shape[-1]
    # Paste every window into a full-frame canvas at its own offset.
    frame_index = np.arange(b)[:, None, None]
    rows = (top[:, None] + np.arange(w))[:, :, None]  # (B, w, 1)
    cols = (left[:, None] + np.arange(w))[:, None, :]  # (B, 1, w)
    cover = np.zeros((b, size, size), np.float32)
    shade = np.zeros((b, size, size), np.float32)
    cover[frame_index, rows, cols] = cover_win
    shade[frame_index, rows, cols] = shade_win

    rgb = np.array([look.rgb for look in looks], np.float32)[:, None, None, :]  # (B, 1, 1, 3)
    alpha = pose.alpha[:, None, None, None].astype(np.float32)
    paint = shade[..., None] * rgb  # already weighted by coverage, (B, size, size, 3)
    frames = backgrounds * (1 - alpha * cover[..., None]) + alpha * paint
    return np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Motion classes: each pair's forward trajectory; the backward class is its time reversal
# ----------------------------------------------------------------------------------------------


def _still(value: float, frames: int) -> np.ndarray:
    return np.full(frames, value, dtype=np.float64)


def _translate(axis: int) -> Callable[[np.random.Generator, int, int], Pose]:
    """Move towards smaller x (axis 0: left) or smaller y (axis 1: up) by about half the frame."""

    def trajectory(rng: np.random.Generator, frames: int, size: int) -> Pose:
        radius = rng.uniform(0.10, 0.16) * size
        travel = rng.uniform(0.45, 0.60) * size
        start = rng.uniform(radius + travel, size - radius)
        moving = np.linspace(start, start - travel, frames)
        fixed = _still(rng.uniform(radius, size - radius), frames)
        cx, cy = (moving, fixed) if axis == 0 else (fixed, moving)
        angle = _still(rng.uniform(0, 2 * math.pi), frames)
        return Pose(cx, cy, _still(radius, frames), angle, _still(1.0, frames))

    return trajectory


def _grow(rng: np.random.Generator, frames: int, size: int) -> Pose:
    # It starts as a whole object, not a dot (at 32 px a 2-pixel dot looked like the faint start
    # of a fade: trained models confused grows with fades_in, not with shrinks), and ends inside
    # the sizes the demo's stand-in learns to read (`aim_video.demo.stills.STILL_RADIUS`).
    r0 = rng.uniform(0.09, 0.11) * size
    r1 = r0 * rng.uniform(2.6, 2.9)
    # Geometric growth: the same relative change between any two equally spaced frames.
    radius = r0 * (r1 / r0) ** np.linspace(0, 1, frames)
    cx, cy = rng.uniform(r1, size - r1, 2)
    angle = _still(rng.uniform(0, 2 * math.pi), frames)
    return Pose(_still(cx, frames), _still(cy, frames), radius, angle, _still(1.0, frames))


def _rotate_clockwise(rng: np.random.Generator, frames: int, size: int) -> Pose:
    radius = rng.uniform(0.20, 0.30) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    # 75-105 degrees in all: even 4 frames sampled from 16 turn < 45 degrees per step, so a
    # square (90-degree symmetry) still shows its direction unambiguously.
    turn = math.radians(rng.uniform(75, 105))
    start = rng.uniform(0, 2 * math.pi)
    angle = np.linspace(start, start + turn, frames)
    return Pose(_still(cx, frames), _still(cy, frames), _still(radius, frames), angle,
                _still(1.0, frames))


def _fade_in(rng: np.random.Generator, frames: int, size: int) -> Pose:
    radius = rng.uniform(0.14, 0.22) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    # Faint but never invisible at the start, so its constant size shows in every frame (what
    # tells a fade from a growth).
    alpha = np.linspace(rng.uniform(0.10, 0.20), rng.uniform(0.95, 1.0), frames)
    angle = _still(rng.uniform(0, 2 * math.pi), frames)
    return Pose(_still(cx, frames), _still(cy, frames), _still(radius, frames), angle, alpha)


@dataclass(frozen=True)
class MotionPair:
    forward: str  # the class whose clips `trajectory` generates
    backward: str  # its time reversal: the same clips played backwards
    trajectory: Callable[[np.random.Generator, int, int], Pose]  # (rng, frames, size) -> Pose
    shapes: tuple[int, ...]  # shapes on which this motion is visible


_ALL_SHAPES = tuple(range(len(SHAPES)))
MOTION_PAIRS: tuple[MotionPair, ...] = (
    MotionPair("moves_left", "moves_right", _translate(axis=0), _ALL_SHAPES),
    MotionPair("moves_up", "moves_down", _translate(axis=1), _ALL_SHAPES),
    MotionPair("grows", "shrinks", _grow, _ALL_SHAPES),
    MotionPair(
        "rotates_clockwise",
        "rotates_counterclockwise",
        _rotate_clockwise,
        tuple(i for i, s in enumerate(SHAPES) if s.shows_rotation),
    ),
    MotionPair("fades_in", "fades_out", _fade_in, _ALL_SHAPES),
)

# Appearance classes: shape x colour, so that neither alone decides the class.
APPEARANCE_CLASSES: tuple[tuple[int, int], ...] = tuple(
    (shape, colour) for shape in range(5) for colour in (0, 5)  # red, blue
)


def motion_pairs(pairs: tuple[str, ...] | list[str] | None = None) -> tuple[MotionPair, ...]:
    """The motion pairs named by their forward class (``"moves_left"``, ...), in that order.

    None gives all of ``MOTION_PAIRS``.

    Raises:
        ValueError: an unknown or repeated name.
    """
    if pairs is None:
        return MOTION_PAIRS
    by_name = {pair.forward: pair for pair in MOTION_PAIRS}
    unknown = [name for name in pairs if name not in by_name]
    if unknown or len(set(pairs)) != len(pairs) or not pairs:
        raise ValueError(f"motion pairs must be distinct names among {sorted(by_name)} "
                         f"(each pair's forward class), got {list(pairs)}")
    return tuple(by_name[name] for name in pairs)


def class_names(task: Task = "motion", pairs: tuple[str, ...] | list[str] | None = None
                ) -> list[str]:
    """The class names of a task, in label order.

    For the motion task, class ``2p + 1`` is the time reversal of class ``2p``; ``pairs``
    (forward class names) keeps only those pairs, in that order.
    """
    _check_task(task)
    if task == "motion":
        return [name for pair in motion_pairs(pairs) for name in (pair.forward, pair.backward)]
    if pairs is not None:
        raise ValueError("pairs selects motion classes; the appearance task has none")
    return [f"{COLOURS[c][0]}_{SHAPES[s].name}" for s, c in APPEARANCE_CLASSES]


def reversal_partner(class_index: int) -> int:
    """The motion class whose clips are this class's clips played backwards."""
    return class_index ^ 1


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; expected one of {TASKS}")


def _render_motion(
    pair: MotionPair, rng: np.random.Generator, frames: int, size: int, look: Look
) -> np.ndarray:
    pose = pair.trajectory(rng, frames, size)
    background = _sample_background(rng, size, look)[None]  # (1, H, W, 3), static
    return render_frames([look] * frames, pose, background, size)


def render_clip(
    class_index: int,
    rng: np.random.Generator,
    frames: int = 16,
    size: int = 64,
    task: Task = "motion",
    pairs: tuple[str, ...] | list[str] | None = None,
) -> np.ndarray:
    """Render one random clip of a class.

    For the motion task, ``render_clip(2p + 1, rng)`` is exactly ``render_clip(2p, rng')[::-1]``
    when ``rng`` and ``rng'`` start in the same state.

    Args:
        class_index: label in ``class_names(task, pairs)``.
        rng: consumed; fixes everything random about the clip.
        frames: clip length.
        size: frame side in pixels.
        task: "motion" or "appearance".
        pairs: the motion pairs in use (see `motion_pairs`); None: all.

    Returns:
        uint8 (T, H, W, 3) RGB frames.
    """
    num_classes = len(class_names(task, pairs))
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class index {class_index} out of range for the {task} task "
                         f"({num_classes} classes)")
    if frames < 2 or size < 8:
        raise ValueError(f"need frames >= 2 and size >= 8, got frames={frames}, size={size}")
    if task == "motion":
        pair_index, backwards = divmod(class_index, 2)
        pair = motion_pairs(pairs)[pair_index]
        clip = _render_motion(pair, rng, frames, size, _sample_look(rng, shapes=pair.shapes))
        return np.ascontiguousarray(clip[::-1]) if backwards else clip
    shape, colour = APPEARANCE_CLASSES[class_index]
    pair_index, backwards = divmod(int(rng.integers(2 * len(MOTION_PAIRS))), 2)
    clip = _render_motion(
        MOTION_PAIRS[pair_index], rng, frames, size, _sample_look(rng, shape, colour)
    )
    return np.ascontiguousarray(clip[::-1]) if backwards else clip


# ----------------------------------------------------------------------------------------------
# Writing the data set
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticInfo:
    """Where a generated data set lives and what it holds."""

    root: Path
    train_list: Path
    val_list: Path
    classes_file: Path
    class_names: tuple[str, ...]
    num_train: int
    num_val: int
    frames: int
    size: int
    seed: int
    task: Task
    fps: int
    reused: bool  # True when a complete set with the same parameters was already there


@dataclass(frozen=True)
class _Render:
    """What every clip of a set shares."""

    frames: int
    size: int
    task: Task
    pairs: tuple[str, ...] | None  # motion pairs in use; None: all


@dataclass(frozen=True)
class _Job:
    path: Path  # final location; written through a temporary file and renamed
    label: int
    seed: tuple[int, int, int]  # (seed, split stream, index): independent of worker count
    render: _Render


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as lossless H.264 (yuv420p) in an mp4 file.

    The data set is defined by what its files decode to, and lossless coding makes that the
    YUV frames given to the encoder, whatever the encoder decides. Lossy x264 is not
    reproducible here: its AVX-512 MB-tree path reads memory that its input does not
    determine, so the same frames encoded in two processes could decode up to 25/255 apart.
    (Lossless is constant-QP, which turns the MB-tree off, so the bytes agree too.)

    The file appears at ``path`` only when complete (written beside it, then renamed).
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 (T, H, W, 3) frames, got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sides, got {w}x{h}")
    def encode(temp: Path) -> None:
        converter = VideoReformatter()
        with av.open(str(temp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            codec = stream.codec_context
            codec.width, codec.height, codec.pix_fmt = w, h, "yuv420p"
            # Every thread setting pinned to one, before the codec opens: x264's output depends
            # on its thread counts, and PyAV's default (0) means one per CPU. The set is
            # parallel over processes instead, so a seed gives the same bytes for any pool.
            codec.thread_count, codec.thread_type = 1, "NONE"
            # qp 0 is lossless: the decoder gives back these YUV planes bit for bit (profile
            # High 4:4:4 Predictive, which FFmpeg's decoder, and so PyAV and decord, read).
            stream.options = {"qp": "0", "preset": "fast", "threads": "1",
                              "x264-params": "lookahead-threads=1:sliced-threads=0"}
            for index, rgb in enumerate(frames):
                # RGB -> YUV here, by one swscale thread; encode() would convert with the
                # codec's thread count.
                frame = converter.reformat(
                    av.VideoFrame.from_ndarray(rgb, format="rgb24"), format="yuv420p", threads=1
                )
                frame.pts, frame.time_base = index, Fraction(1, fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())  # flush the encoder's delayed frames

    write_atomic(path, encode)


def _run_job(job: _Job) -> None:
    r = job.render
    clip = render_clip(job.label, np.random.default_rng(job.seed), r.frames, r.size, r.task, r.pairs)
    write_video(job.path, clip)


def _jobs(
    root: Path, split: str, count: int, names: list[str], seed: int, render: _Render
) -> list[_Job]:
    """Balanced labels: index i gets class i mod K, so class counts differ by at most one."""
    return [
        _Job(
            path=root / "videos" / split / names[i % len(names)] / f"{i:05d}.mp4",
            label=i % len(names),
            seed=(seed, _SPLIT_STREAMS[split], i),
            render=render,
        )
        for i in range(count)
    ]


def _write_list(path: Path, root: Path, jobs: list[_Job]) -> None:
    lines = [f"{job.path.relative_to(root).as_posix()} {job.label}\n" for job in jobs]
    write_text_atomic(path, "".join(lines))


def _is_complete(root: Path, params: dict, jobs: list[_Job]) -> bool:
    meta = read_json(root / "meta.json")
    if meta is None or not meta.get("complete") or meta.get("params") != params:
        return False
    required = [root / name for name in ("train.txt", "val.txt", "classes.txt")]
    return all(p.is_file() for p in required) and all(job.path.is_file() for job in jobs)


def _generate(jobs: list[_Job], workers: int, progress: bool) -> None:
    bar = tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not progress)
    with bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                _run_job(job)
                bar.update()
            return
        with process_pool(min(workers, len(jobs))) as pool:
            chunksize = max(1, min(16, len(jobs) // (4 * workers)))
            for _ in pool.map(_run_job, jobs, chunksize=chunksize):
                bar.update()


def make_synthetic(
    out_dir: str | os.PathLike,
    num_train: int = 800,
    num_val: int = 200,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    task: Task = "motion",
    workers: int | None = None,
    progress: bool = True,
    pairs: tuple[str, ...] | list[str] | None = None,
) -> SyntheticInfo:
    """Write the synthetic benchmark as H.264 mp4 files with MMAction2 video lists.

    A folder already holding a complete set with the same parameters is returned untouched. A
    set interrupted with the same parameters is completed (whole videos are kept: each one is
    renamed into place only once written). A set made with other parameters is replaced.

    Args:
        out_dir: target folder, created if missing.
        num_train: training videos (class i mod K for index i, so classes are balanced).
        num_val: validation videos.
        frames: frames per video; motions are monotone over the whole clip, so any in-order
            subset of frames shows the direction.
        size: frame side in pixels (even: yuv420p halves the chroma resolution).
        seed: fixes the content of every video (decoded frames are identical across runs).
        task: "motion" (time-reversal pairs) or "appearance" (shape x colour, random motion).
        workers: processes rendering and encoding; default the CPUs this process may use.
        progress: show a tqdm progress bar.
        pairs: motion task only: keep these pairs, named by their forward class (e.g.
            ``("moves_left", "grows")``), in this label order; None: all five.

    Returns:
        Where the set lives and what it holds.
    """
    _check_task(task)
    if size % 2 or size < 16:
        raise ValueError(f"size must be even and >= 16 (H.264 yuv420p), got {size}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"video counts must be >= 0, got train={num_train}, val={num_val}")
    root = Path(out_dir)
    pairs = None if pairs is None else tuple(pairs)
    names = class_names(task, pairs)
    params = dict(version=SYNTHETIC_VERSION, task=task, seed=seed, num_train=num_train,
                  num_val=num_val, frames=frames, size=size, fps=FPS, qp=0,
                  pairs=None if pairs is None else list(pairs))
    render = _Render(frames, size, task, pairs)
    splits = {
        split: _jobs(root, split, count, names, seed, render)
        for split, count in (("train", num_train), ("val", num_val))
    }
    all_jobs = splits["train"] + splits["val"]
    info = SyntheticInfo(
        root=root, train_list=root / "train.txt", val_list=root / "val.txt",
        classes_file=root / "classes.txt", class_names=tuple(names), num_train=num_train,
        num_val=num_val, frames=frames, size=size, seed=seed, task=task, fps=FPS, reused=False,
    )
    if _is_complete(root, params, all_jobs):
        log.info("synthetic %s set already complete in %s", task, root)
        return dataclasses.replace(info, reused=True)

    meta_path = root / "meta.json"
    old = read_json(meta_path)
    if old is not None and old.get("params") != params and (root / "videos").is_dir():
        # Only a folder that our meta.json marks as ours is cleared: stale videos would
        # otherwise linger beside the new lists.
        log.info("replacing the synthetic set in %s (made with other parameters)", root)
        shutil.rmtree(root / "videos")
    for job in all_jobs:
        job.path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(meta_path, {"params": params, "complete": False})

    missing = [job for job in all_jobs if not job.path.is_file()]
    _generate(missing, workers if workers is not None else usable_cpus(), progress)

    _write_list(info.train_list, root, splits["train"])
    _write_list(info.val_list, root, splits["val"])
    write_text_atomic(info.classes_file, "".join(f"{name}\n" for name in names))
    counts = {split: len(jobs) for split, jobs in splits.items()}
    meta = {"params": params, "complete": True, "class_names": names, "counts": counts}
    write_json_atomic(meta_path, meta)
    return info
