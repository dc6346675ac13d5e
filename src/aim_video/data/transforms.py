"""Video transforms in plain torch: uint8 clips in, normalised float clips out.

Layout. Every uint8 op takes a clip `(T, H, W, C)` (RGB) and also accepts leading batch
dimensions `(..., T, H, W, C)`, on any device; `normalize` is the one step that turns it
into the model's float `(..., C, T, H, W)`. Random draws are never global: each random op
takes a `torch.Generator` (on the CPU, whatever the clip's device), draws its parameters
once and applies them to every frame, so the frames of a clip stay consistent and a sample
is reproducible from its seed. Ops that need image statistics (autocontrast, equalize,
contrast) compute them over the whole clip, per leading batch entry, for the same reason.

The functional ops are pure; the small classes at the end hold their settings and are the
steps of the training and test pipelines of the AIM recipes. The steps that may run on the
training device are also `BatchStep`s: the host draws a clip's parameters (`draw`) and one
call applies them to a whole batch (`run`), so the device is never waited for.
`TrainTransform.steps` is the one place that orders the training steps (MMAction2's order:
short-side resize -> RandomResizedCrop to the input size -> flip -> RandAugment -> colour
jitter -> normalise -> random erasing); `TrainTransform.split` cuts them into the loader's part
and the training device's part.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

# The decoder's rule, so frames resized while decoding (`DataConfig.resize_in_decoder`) already
# have the size `resize_short_side` gives and are not resized twice.
from aim_video.data.decode import short_side_size

CLIP_MEAN = (122.769, 116.74, 104.04)  # OpenAI CLIP, on 0-255 RGB
CLIP_STD = (68.493, 66.63, 70.321)
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # torchvision ImageNet, on 0-255 RGB
IMAGENET_STD = (58.395, 57.12, 57.375)

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision/PIL
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_FILL = 128.0  # value of pixels uncovered by a geometric op (timm's RandAugment fill)


# --------------------------------------------------------------------------- helpers


def _rand(generator: torch.Generator | None) -> float:
    """One uniform draw in [0, 1) from `generator` (CPU)."""
    return float(torch.rand((), generator=generator))


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * _rand(generator)


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """Uniform integer in [low, high)."""
    return int(torch.randint(low, high, (), generator=generator))


@functools.cache
def _constant(values: tuple[float, ...], device: torch.device) -> Tensor:
    """`values` as float32 on `device`, made once per device and kept.

    Making a tensor from host numbers on a GPU is a blocking copy: the host waits until the
    device has finished everything queued before. Per call of an op that would stall the
    training step's queue several times per batch; kept, it happens once per run.
    """
    # Not an inference tensor even when first asked for under `torch.inference_mode`, so a
    # later call with autograd on may still use it.
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=torch.float32, device=device)


def _per_entry(value: float | Tensor, clip: Tensor) -> float | Tensor:
    """A number as it is; a tensor of one value per leading batch entry of the uint8 `clip`
    (..., T, H, W, C), shaped to broadcast over its (T, H, W, C)."""
    if isinstance(value, Tensor):
        return value.reshape(*clip.shape[:-4], 1, 1, 1, 1)
    return value


def _frames(clip: Tensor) -> Tensor:
    """uint8 (..., T, H, W, C) -> float (N, C, H, W), N = all frames of all clips."""
    h, w, c = clip.shape[-3:]
    return clip.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()  # (N, C, H, W)


def _unframes(frames: Tensor, like: Tensor) -> Tensor:
    """float (N, C, H', W') -> uint8 (..., T, H', W', C) with the leading dims of `like`."""
    h, w = frames.shape[-2:]
    out = frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (N, H', W', C)
    return out.reshape(*like.shape[:-3], h, w, like.shape[-1])  # (..., T, H', W', C)


def _check_uint8(clip: Tensor) -> None:
    if clip.dtype != torch.uint8 or clip.dim() < 4 or clip.shape[-1] != 3:
        raise ValueError(
            f"expected a uint8 RGB clip (..., T, H, W, 3), got {clip.dtype} {tuple(clip.shape)}"
        )


# --------------------------------------------------------------------------- geometry


class CropBox(NamedTuple):
    """A crop in pixels: rows `top:top+height`, columns `left:left+width`."""

    top: int
    left: int
    height: int
    width: int


def resize(clip: Tensor, size: tuple[int, int], antialias: bool = True) -> Tensor:
    """Bilinear resize of every frame to `size` = (height, width).

    Args:
        clip: uint8 (..., T, H, W, C).
        size: output (height, width).
        antialias: low-pass filter when shrinking (PIL-like quality); no effect when growing.

    Returns:
        uint8 (..., T, height, width, C); `clip` itself when the size already matches.
        On the CPU the result is computed in uint8, elsewhere in float32 and rounded; the
        two agree within 1.
    """
    _check_uint8(clip)
    if tuple(clip.shape[-3:-1]) == tuple(size):
        return clip
    if clip.device.type == "cpu":
        # torch resizes uint8 channels-last frames natively on the CPU, ~15x faster than
        # through float (it is the data loader's hot spot); results differ by at most 1.
        height, width, channels = clip.shape[-3:]
        frames = clip.reshape(-1, height, width, channels).permute(0, 3, 1, 2)  # (N, C, H, W)
        out = F.interpolate(
            frames, size=size, mode="bilinear", align_corners=False, antialias=antialias
        )
        out = out.permute(0, 2, 3, 1)  # (N, H', W', C)
        return out.reshape(*clip.shape[:-3], *size, channels)  # (..., T, H', W', C)
    return _resize_float(clip, size, antialias)


def _resize_float(clip: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    """`resize` through float32, for devices without uint8 interpolation (CUDA)."""
    frames = F.interpolate(
        _frames(clip), size=size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return _unframes(frames, clip)


def resize_short_side(clip: Tensor, size: int, antialias: bool = True) -> Tensor:
    """Scale every frame so that its short side is `size` pixels (see `short_side_size`)."""
    height, width = clip.shape[-3:-1]
    return resize(clip, short_side_size(height, width, size), antialias)


def crop(clip: Tensor, box: CropBox) -> Tensor:
    """The `box` region of every frame, a view of `clip` (..., T, H, W, C)."""
    height, width = clip.shape[-3:-1]
    if box.top < 0 or box.left < 0 or box.top + box.height > height or box.left + box.width > width:
        raise ValueError(f"crop {box} does not fit in a {height}x{width} frame")
    return clip[..., box.top : box.top + box.height, box.left : box.left + box.width, :]


def center_crop_box(height: int, width: int, size: int) -> CropBox:
    """The centred `size` x `size` square; odd margins go to the bottom/right (MMAction2)."""
    if size > height or size > width:
        raise ValueError(f"cannot take a {size}x{size} crop from a {height}x{width} frame")
    return CropBox((height - size) // 2, (width - size) // 2, size, size)


def center_crop(clip: Tensor, size: int) -> Tensor:
    """The centred `size` x `size` square of every frame."""
    return crop(clip, center_crop_box(*clip.shape[-3:-1], size))


def three_crop_boxes(height: int, width: int, size: int) -> list[CropBox]:
    """Three `size` squares along the long side: start, middle, end (MMAction2 ThreeCrop).

    The squares sit at offsets 0, `step` and `2 * step` with `step = (long - size) // 2`,
    exactly as MMAction2; across the short side they are centred (MMAction2 requires the
    short side to equal `size`, which is what the test pipeline's resize produces).
    """
    center = center_crop_box(height, width, size)
    if height > width:
        step = (height - size) // 2
        return [center._replace(top=i * step) for i in range(3)]
    step = (width - size) // 2
    return [center._replace(left=i * step) for i in range(3)]


def three_crop(clip: Tensor, size: int) -> Tensor:
    """Three crops along the long side, stacked: (..., 3, T, size, size, C)."""
    boxes = three_crop_boxes(*clip.shape[-3:-1], size)
    return torch.stack([crop(clip, box) for box in boxes], dim=-5)


def random_resized_crop_box(
    height: int,
    width: int,
    area_range: tuple[float, float],
    ratio_range: tuple[float, float],
    generator: torch.Generator | None,
) -> CropBox:
    """A random crop with relative area in `area_range` and aspect (w/h) in `ratio_range`.

    torchvision's `RandomResizedCrop.get_params` algorithm: up to 10 attempts with a
    uniform area and a log-uniform aspect ratio; if none fits, the centred crop of the
    whole frame with the aspect ratio clamped into `ratio_range`.
    """
    area = height * width
    log_low, log_high = math.log(ratio_range[0]), math.log(ratio_range[1])
    for _ in range(10):
        target_area = area * _uniform(generator, *area_range)
        aspect = math.exp(_uniform(generator, log_low, log_high))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = _randint(generator, 0, height - crop_h + 1)
            left = _randint(generator, 0, width - crop_w + 1)
            return CropBox(top, left, crop_h, crop_w)
    in_ratio = width / height
    if in_ratio < min(ratio_range):
        crop_w, crop_h = width, int(round(width / min(ratio_range)))
    elif in_ratio > max(ratio_range):
        crop_w, crop_h = int(round(height * max(ratio_range))), height
    else:
        crop_w, crop_h = width, height
    return CropBox((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)


def hflip(clip: Tensor) -> Tensor:
    """Mirror every frame left-right; works on (..., T, H, W, C) uint8 or any dtype."""
    return clip.flip(-2)


def _affine(clip: Tensor, matrix: Sequence[Sequence[float]]) -> Tensor:
    """Warp every frame with the 2x3 `matrix` that maps output pixels to input pixels.

    Coordinates are in pixels relative to the frame centre (x right, y down), so rotation
    and shear turn about the centre. Pixels from outside the frame get `_FILL`.
    """
    height, width = clip.shape[-3:-1]
    frames = _frames(clip)
    (a, b, tx), (c, d, ty) = matrix
    # affine_grid works in coordinates normalised to [-1, 1] (align_corners=False), i.e.
    # pixel = normalised * size / 2: conjugate the pixel-space matrix by that scaling.
    theta = torch.tensor(
        [[a, b * height / width, 2 * tx / width], [c * width / height, d, 2 * ty / height]],
        dtype=frames.dtype,
        device=frames.device,
    )
    theta = theta.expand(frames.shape[0], 2, 3)  # (N, 2, 3): the same warp for every frame
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    # Warping (frames - fill) with zero padding makes uncovered pixels exactly `fill`.
    warped = F.grid_sample(frames - _FILL, grid, mode="bilinear", align_corners=False) + _FILL
    return _unframes(warped, clip)


def rotate(clip: Tensor, degrees: float) -> Tensor:
    """Rotate every frame by `degrees` about its centre (positive = counter-clockwise)."""
    if degrees == 0:
        return clip
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # Output pixel (x, y) reads input R(-angle)(x, y); with y pointing down a positive
    # angle turns the picture counter-clockwise on screen.
    return _affine(clip, [[cos, -sin, 0.0], [sin, cos, 0.0]])


def shear_x(clip: Tensor, factor: float) -> Tensor:
    """Horizontal shear about the centre: row y moves by `-factor * y` pixels."""
    return clip if factor == 0 else _affine(clip, [[1.0, factor, 0.0], [0.0, 1.0, 0.0]])


def shear_y(clip: Tensor, factor: float) -> Tensor:
    """Vertical shear about the centre: column x moves by `-factor * x` pixels."""
    return clip if factor == 0 else _affine(clip, [[1.0, 0.0, 0.0], [factor, 1.0, 0.0]])


def translate_x(clip: Tensor, pixels: float) -> Tensor:
    """Shift every frame right by `pixels` (left when negative)."""
    return clip if pixels == 0 else _affine(clip, [[1.0, 0.0, -pixels], [0.0, 1.0, 0.0]])


def translate_y(clip: Tensor, pixels: float) -> Tensor:
    """Shift every frame down by `pixels` (up when negative)."""
    return clip if pixels == 0 else _affine(clip, [[1.0, 0.0, 0.0], [0.0, 1.0, -pixels]])


# --------------------------------------------------------------------------- colour


def _per_clip(clip: Tensor) -> Tensor:
    """uint8 (..., T, H, W, C) -> (B, T*H*W, C): pixels of each clip, B = leading entries."""
    leading = clip.shape[:-4].numel()
    return clip.reshape(leading, -1, clip.shape[-1])  # (B, T*H*W, C)


def _blend(clip: Tensor, degenerate: Tensor, factor: float | Tensor) -> Tensor:
    """`degenerate + factor * (clip - degenerate)`, rounded back to uint8 (PIL ImageEnhance).

    `factor` is a number or one per leading batch entry of `clip` (a tensor of shape
    `clip.shape[:-4]`, on its device); a float32 factor gives what the same number does.
    """
    if not isinstance(factor, Tensor) and factor == 1:
        return clip
    # In place on the one float copy: a batch's temporaries are large, and fresh memory costs
    # more than the arithmetic on the CPU. Same operations, same rounding, as written out.
    out = clip.float().sub_(degenerate).mul_(_per_entry(factor, clip)).add_(degenerate)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def grayscale(clip: Tensor) -> Tensor:
    """Float luma of every pixel, (..., T, H, W, 1)."""
    return clip.float().mul_(_constant(_GRAY_WEIGHTS, clip.device)).sum(-1, keepdim=True)


def adjust_brightness(clip: Tensor, factor: float | Tensor) -> Tensor:
    """Scale intensities by `factor` (blend with black); a number or one per leading entry."""
    return _blend(clip, torch.zeros((), device=clip.device), factor)


def adjust_contrast(clip: Tensor, factor: float | Tensor) -> Tensor:
    """Blend with the clip's mean grey level (one mean per clip, not per frame); `factor` a
    number or one per leading entry."""
    # The mean of the luma is the luma of the channel means, and uint8 channel sums are exact
    # in int64: the mean is then the same however the sum is split (threads, a batch, the
    # device), as a float sum over the clip's pixels is not.
    sums = _per_clip(clip).sum(dim=1, dtype=torch.int64)  # (B, C)
    means = sums.float() / (clip.shape[-4:-1].numel())  # (B, C)
    mean = (means * _constant(_GRAY_WEIGHTS, clip.device)).sum(-1)  # (B,)
    mean = mean.reshape(*clip.shape[:-4], 1, 1, 1, 1)  # broadcast over (T, H, W, C)
    return _blend(clip, mean, factor)


def adjust_saturation(clip: Tensor, factor: float | Tensor) -> Tensor:
    """Blend with the grey image: 0 gives grey, 1 the input ("color" in RandAugment);
    `factor` a number or one per leading entry."""
    return _blend(clip, grayscale(clip), factor)


def adjust_sharpness(clip: Tensor, factor: float) -> Tensor:
    """Blend with a 3x3 smoothed copy (PIL's SMOOTH kernel); border pixels are kept."""
    if factor == 1:
        return clip
    frames = _frames(clip)  # (N, C, H, W)
    # SMOOTH = [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 = (3x3 box sum + 4 * centre) / 13;
    # a box filter runs far faster than a depthwise convolution on the CPU.
    box_sum = 9 * F.avg_pool2d(frames, kernel_size=3, stride=1)  # (N, C, H-2, W-2)
    degenerate = frames.clone()
    degenerate[..., 1:-1, 1:-1] = ((box_sum + 4 * frames[..., 1:-1, 1:-1]) / 13).round()
    return _blend(clip, _unframes(degenerate, clip).float(), factor)


def adjust_hue(clip: Tensor, shift: float) -> Tensor:
    """Shift hue by `shift` turns (in [-0.5, 0.5]).

    Simplified: the chroma plane of YIQ space is rotated by `2 * pi * shift`, a linear map
    that keeps luma; torchvision converts to HSV instead, which differs slightly on
    saturated colours but is far slower.
    """
    if shift == 0:
        return clip
    return recolour(clip, hue_matrix(shift).to(clip.device))


def hue_matrix(shift: float) -> Tensor:
    """The RGB -> RGB matrix of `adjust_hue`, float32 (3, 3), computed on the CPU.

    On the host on purpose: `linalg.inv` on a GPU reads its error flag back, a wait.
    """
    rgb_to_yiq = torch.tensor(_RGB_TO_YIQ)
    cos, sin = math.cos(2 * math.pi * shift), math.sin(2 * math.pi * shift)
    rotation = torch.tensor([[1.0, 0, 0], [0, cos, -sin], [0, sin, cos]])
    return torch.linalg.inv(rgb_to_yiq) @ rotation @ rgb_to_yiq


def recolour(clip: Tensor, matrix: Tensor) -> Tensor:
    """Map every RGB pixel through `matrix`: float (3, 3), or (B, 3, 3), one per clip of a batch
    (B, T, H, W, C), on the clip's device; rounded back to uint8."""
    if matrix.dim() == 2:
        out = clip.float() @ matrix.T
    else:
        pixels = clip.reshape(len(clip), -1, clip.shape[-1]).float()  # (B, T*H*W, C)
        # One batched matmul gives each clip what its own (T*H*W, C) @ (C, C) gives.
        out = (pixels @ matrix.mT).reshape(clip.shape)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def autocontrast(clip: Tensor) -> Tensor:
    """Stretch each channel so the clip's darkest pixel is 0 and brightest 255."""
    pixels = _per_clip(clip)  # (B, P, C)
    low = pixels.amin(dim=1, keepdim=True).float()  # (B, 1, C); uint8 reductions are fastest
    high = pixels.amax(dim=1, keepdim=True).float()
    flat = high == low
    # A flat channel has nothing to stretch: keep it as it is.
    scale = torch.where(flat, 1.0, 255.0 / (high - low))
    low = torch.where(flat, 0.0, low)
    out = ((pixels.float() - low) * scale).round().clamp(0, 255).to(torch.uint8)
    return out.reshape(clip.shape)  # (B, P, C) -> (..., T, H, W, C)


def equalize(clip: Tensor) -> Tensor:
    """Histogram equalisation per channel over the whole clip (PIL's algorithm)."""
    pixels = _per_clip(clip)  # (B, P, C)
    b, p, c = pixels.shape
    values = pixels.permute(0, 2, 1).reshape(b * c, p).long()  # (B*C, P)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=clip.device)
    hist.scatter_add_(1, values, torch.ones_like(values))
    # PIL: step = number of pixels outside the highest occupied bin, // 255.
    top_count = hist.gather(1, values.amax(dim=1, keepdim=True))  # (B*C, 1)
    step = (p - top_count) // 255
    safe_step = step.clamp(min=1)
    lut = (hist.cumsum(1) + safe_step // 2) // safe_step
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)  # value v maps to cumulative count below v
    identity = torch.arange(256, device=clip.device).expand_as(lut)
    lut = torch.where(step == 0, identity, lut)  # a (near-)constant channel stays as it is
    out = lut.gather(1, values).to(torch.uint8)  # (B*C, P)
    return out.reshape(b, c, p).permute(0, 2, 1).reshape(clip.shape)  # (..., T, H, W, C)


def solarize(clip: Tensor, threshold: int) -> Tensor:
    """Invert every value >= `threshold` (256 leaves the clip unchanged)."""
    if threshold > 255:
        return clip  # and 256 would wrap around in a uint8 comparison
    return torch.where(clip >= threshold, 255 - clip, clip)


def posterize(clip: Tensor, bits: int) -> Tensor:
    """Keep the `bits` most significant bits of every value (8 leaves it unchanged)."""
    mask = (0xFF << (8 - bits)) & 0xFF
    return clip & mask


# --------------------------------------------------------------------------- RandAugment


def _op_rotate(clip: Tensor, level: float) -> Tensor:
    return rotate(clip, 30.0 * level)


def _op_translate_x(clip: Tensor, level: float) -> Tensor:
    return translate_x(clip, 0.45 * level * clip.shape[-2])


def _op_translate_y(clip: Tensor, level: float) -> Tensor:
    return translate_y(clip, 0.45 * level * clip.shape[-3])


# Each op maps (clip, level) -> clip, level = signed magnitude / max magnitude in [-1, 1].
# Ranges follow timm's "increasing" RandAugment (rand-m*-inc1), so level 0 is the identity
# for every op except autocontrast and equalize, and a larger level is always stronger.
RANDAUGMENT_OPS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "identity": lambda clip, level: clip,
    "autocontrast": lambda clip, level: autocontrast(clip),
    "equalize": lambda clip, level: equalize(clip),
    "rotate": _op_rotate,  # up to +-30 degrees
    "solarize": lambda clip, level: solarize(clip, 256 - int(256 * abs(level))),
    "color": lambda clip, level: adjust_saturation(clip, 1.0 + 0.9 * level),
    "posterize": lambda clip, level: posterize(clip, 8 - int(4 * abs(level))),  # 8..4 bits
    "contrast": lambda clip, level: adjust_contrast(clip, 1.0 + 0.9 * level),
    "brightness": lambda clip, level: adjust_brightness(clip, 1.0 + 0.9 * level),
    "sharpness": lambda clip, level: adjust_sharpness(clip, 1.0 + 0.9 * level),
    "shear_x": lambda clip, level: shear_x(clip, 0.3 * level),
    "shear_y": lambda clip, level: shear_y(clip, 0.3 * level),
    "translate_x": _op_translate_x,  # up to 45% of the width
    "translate_y": _op_translate_y,
}


def rand_augment(
    clip: Tensor,
    num_ops: int,
    magnitude: float,
    generator: torch.Generator | None,
    prob: float = 0.5,
    magnitude_std: float = 0.5,
    max_magnitude: float = 10.0,
) -> Tensor:
    """RandAugment: `num_ops` ops drawn with replacement, each applied with `prob`.

    Every applied op gets the magnitude `magnitude` (plus Gaussian noise of std
    `magnitude_std`, clipped to [0, max_magnitude]) and a random sign; one draw serves all
    frames of the clip. The defaults with `num_ops=4, magnitude=7` are the SSv2 recipe
    (timm "rand-m7-n4-mstd0.5-inc1").

    Args:
        clip: uint8 (..., T, H, W, C).
        num_ops: ops per clip (N).
        magnitude: strength (M) on a 0..`max_magnitude` scale.
        generator: source of every random choice.
        prob: chance that each drawn op is applied.
        magnitude_std: std of the per-op magnitude noise; 0 uses `magnitude` exactly.
        max_magnitude: the magnitude at which ops reach their largest range.

    Returns:
        uint8 clip of the same shape.
    """
    _check_uint8(clip)
    names = list(RANDAUGMENT_OPS)
    for _ in range(num_ops):
        name = names[_randint(generator, 0, len(names))]
        if _rand(generator) >= prob:
            continue
        m = magnitude
        if magnitude_std > 0:
            m += magnitude_std * float(torch.randn((), generator=generator))
        level = min(max(m, 0.0), max_magnitude) / max_magnitude
        if _rand(generator) < 0.5:
            level = -level
        clip = RANDAUGMENT_OPS[name](clip, level)
    return clip


def color_jitter(
    clip: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: torch.Generator | None,
) -> Tensor:
    """Random brightness, contrast, saturation and hue, the same for every frame.

    Factors are uniform in `[max(0, 1 - x), 1 + x]` and the hue shift uniform in
    `[-hue, hue]` turns, as torchvision's ColorJitter; unlike it, the four adjustments
    always run in this fixed order, and hue uses the YIQ rotation of `adjust_hue`.
    """
    *factors, shift = draw_color_jitter(brightness, contrast, saturation, hue, generator)
    for strength, adjust, factor in zip(
        (brightness, contrast, saturation),
        (adjust_brightness, adjust_contrast, adjust_saturation),
        factors,
    ):
        if strength > 0:
            clip = adjust(clip, factor)
    if hue > 0:
        clip = adjust_hue(clip, shift)
    return clip


def draw_color_jitter(
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: torch.Generator | None,
) -> tuple[float, float, float, float]:
    """The brightness, contrast and saturation factors and the hue shift `color_jitter` draws,
    in its order; an adjustment that is off (strength 0) draws nothing and gets 1 (shift 0)."""
    drawn = []
    for strength in (brightness, contrast, saturation):
        low, high = max(0.0, 1.0 - strength), 1.0 + strength
        drawn.append(_uniform(generator, low, high) if strength > 0 else 1.0)
    shift = _uniform(generator, -hue, hue) if hue > 0 else 0.0
    return drawn[0], drawn[1], drawn[2], shift


# --------------------------------------------------------------------------- float side


def normalize(clip: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (..., T, H, W, C) -> float32 (..., C, T, H, W), `(x - mean) / std` per channel.

    `mean` and `std` are on the 0-255 scale (e.g. `CLIP_MEAN`, `CLIP_STD`).
    """
    # (..., T, H, W, C) -> (..., C, T, H, W), a copy of its own: it is normalised in place.
    video = clip.movedim(-1, -4).to(torch.float32, copy=True)
    mean_t = _constant(tuple(mean), video.device).view(-1, 1, 1, 1)  # (C, 1, 1, 1)
    std_t = _constant(tuple(std), video.device).view(-1, 1, 1, 1)
    return video.sub_(mean_t).div_(std_t)


class Erasure(NamedTuple):
    """A rectangle `random_erasing` fills and what it fills it with."""

    box: CropBox  # rows and columns of the rectangle in every frame
    noise: Tensor  # float (C, 1, box height, box width) on the CPU, the same in every frame


def random_erasing(
    video: Tensor,
    prob: float,
    generator: torch.Generator | None,
    area_range: tuple[float, float] = (0.02, 1 / 3),
    ratio_range: tuple[float, float] = (0.3, 1 / 0.3),
) -> Tensor:
    """With probability `prob`, fill one random rectangle with Gaussian noise.

    timm's `RandomErasing(mode="pixel")` on the normalised clip: up to 10 attempts to fit a
    rectangle of relative area in `area_range` and log-uniform aspect in `ratio_range`. The
    rectangle and its noise are the same in every frame (and every leading batch entry),
    so the erased region moves with nothing and cannot be seen through.

    Args:
        video: float (..., C, T, H, W), already normalised.
        prob: chance of erasing.
        generator: source of every random choice, the noise included.
        area_range: relative area of the rectangle.
        ratio_range: aspect ratio (height / width) of the rectangle.

    Returns:
        a new tensor, or `video` itself when nothing was erased.
    """
    channels, _, height, width = video.shape[-4:]
    erasure = draw_erasing(channels, height, width, prob, generator, area_range, ratio_range)
    if erasure is None:
        return video
    out = video.clone()
    _erase(out, erasure.box, erasure.noise.to(video))
    return out


def draw_erasing(
    channels: int,
    height: int,
    width: int,
    prob: float,
    generator: torch.Generator | None,
    area_range: tuple[float, float] = (0.02, 1 / 3),
    ratio_range: tuple[float, float] = (0.3, 1 / 0.3),
) -> Erasure | None:
    """What `random_erasing` draws for a clip of `channels` x `height` x `width` frames, in its
    order: None when nothing is erased."""
    if prob <= 0 or _rand(generator) >= prob:
        return None
    log_low, log_high = math.log(ratio_range[0]), math.log(ratio_range[1])
    for _ in range(10):
        target_area = height * width * _uniform(generator, *area_range)
        aspect = math.exp(_uniform(generator, log_low, log_high))
        box_h = int(round(math.sqrt(target_area * aspect)))
        box_w = int(round(math.sqrt(target_area / aspect)))
        if box_w < width and box_h < height:
            top = _randint(generator, 0, height - box_h + 1)
            left = _randint(generator, 0, width - box_w + 1)
            noise = torch.randn((channels, 1, box_h, box_w), generator=generator)
            return Erasure(CropBox(top, left, box_h, box_w), noise)
    return None


def _erase(video: Tensor, box: CropBox, noise: Tensor) -> None:
    """Fill `box` of every frame of `video` (..., C, T, H, W) with `noise` (C, 1, h, w), in
    place."""
    video[..., box.top : box.top + box.height, box.left : box.left + box.width] = noise


# --------------------------------------------------------------------------- pipelines


class Step(Protocol):
    """One step of the training pipeline, on one clip and its label.

    `apply` draws its random numbers from the clip's own generator, in a fixed order, and
    draws nothing when it is switched off (zero strength or probability).
    """

    # Whether the step may run on the training device (`TrainTransform.split`): per-pixel work
    # on clips that already share a size.
    on_device: ClassVar[bool]

    def apply(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """The clip and label after this step."""
        ...


class BatchStep(Step, Protocol):
    """A step that `DeviceAugment` runs on a whole batch of clips at once (`on_device`).

    The host draws every clip's parameters (`draw`: what `apply` draws, in its order), `params`
    packs those of a batch into the one float tensor the device needs (all steps' go in one
    copy), and `run` applies the step to every clip with them, giving each clip what `apply`
    gives it. Nothing of this reads from the device, so the host never waits for it.
    """

    def draw(
        self, frame: tuple[int, int, int], label: int, generator: torch.Generator | None
    ) -> tuple[Any, int]:
        """This clip's parameters and label after the step; `frame` is the (height, width,
        channels) of its frames, which no batch step changes."""
        ...

    def params(self, drawn: Sequence[Any]) -> Tensor:
        """float32 (n,) on the CPU: what `run` needs on the device for clips drawn `drawn`."""
        ...

    def run(self, video: Tensor, drawn: Sequence[Any], params: Tensor) -> Tensor:
        """The batch `video` (B, ...) after the step, clip i with `drawn[i]`; `params` is
        `self.params(drawn)` on `video`'s device."""
        ...


@dataclass(frozen=True)
class Pipeline:
    """Steps run in order on one clip, all drawing from the clip's generator."""

    steps: tuple[Step, ...]

    def __call__(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        for step in self.steps:
            clip, label = step.apply(clip, label, generator)
        return clip, label


@dataclass(frozen=True)
class ShortSideResize:
    """Resize so that the short side is `size` pixels."""

    size: int  # short side after resizing
    # Clips have their video's aspect ratio until they are cropped: they cannot be batched.
    on_device: ClassVar[bool] = False

    def __call__(self, clip: Tensor) -> Tensor:
        return resize_short_side(clip, self.size)

    def apply(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """Resize; draws nothing (a no-op when the decoder already scaled the frames)."""
        return self(clip), label


@dataclass(frozen=True)
class RandomResizedCrop:
    """torchvision-style random crop, resized straight to `size` x `size`."""

    size: int  # output side
    area_range: tuple[float, float] = (0.08, 1.0)  # relative area of the crop
    ratio_range: tuple[float, float] = (3 / 4, 4 / 3)  # aspect (w/h) of the crop
    on_device: ClassVar[bool] = False  # its input clips have their video's size

    def __call__(self, clip: Tensor, generator: torch.Generator | None) -> Tensor:
        height, width = clip.shape[-3:-1]
        box = random_resized_crop_box(height, width, self.area_range, self.ratio_range, generator)
        return resize(crop(clip, box), (self.size, self.size))

    def apply(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """Crop and resize."""
        return self(clip, generator), label


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Mirror with probability `prob`; `label_map` renames the class of a mirrored clip.

    For direction-sensitive classes (SSv2 "pushing left to right") either disable the flip
    (`prob=0`) or map each class to its mirrored counterpart; classes missing from the map
    keep their label.
    """

    prob: float = 0.5  # chance of mirroring
    label_map: Mapping[int, int] | None = None  # class -> class of the mirrored clip
    on_device: ClassVar[bool] = True

    def __call__(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        flipped, label = self.draw(clip.shape[-3:], label, generator)
        return (hflip(clip) if flipped else clip), label

    def apply(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """Mirror (or not), mapping the label of a mirrored clip."""
        return self(clip, label, generator)

    def draw(
        self, frame: tuple[int, int, int], label: int, generator: torch.Generator | None
    ) -> tuple[bool, int]:
        """Whether the clip is mirrored, and its label then."""
        if self.prob <= 0 or _rand(generator) >= self.prob:
            return False, label
        if self.label_map is not None:
            label = self.label_map.get(label, label)
        return True, label

    def params(self, drawn: Sequence[bool]) -> Tensor:
        """1 for each mirrored clip, 0 for the others: (B,)."""
        return torch.tensor(drawn, dtype=torch.float32)

    def run(self, video: Tensor, drawn: Sequence[bool], params: Tensor) -> Tensor:
        """Mirror the drawn clips of uint8 (B, T, H, W, C)."""
        if not any(drawn):
            return video
        if all(drawn):
            return hflip(video)
        mirrored = params.reshape(-1, 1, 1, 1, 1) != 0  # (B, 1, 1, 1, 1)
        return torch.where(mirrored, hflip(video), video)


@dataclass(frozen=True)
class RandAugment:
    """`rand_augment` with fixed settings."""

    num_ops: int  # ops per clip (N)
    magnitude: float  # strength (M) on a 0..10 scale
    prob: float = 0.5  # chance each drawn op is applied
    magnitude_std: float = 0.5  # per-op magnitude noise
    # Every clip draws other ops, so a batch gains nothing from the device: the loader's
    # workers run it in parallel instead.
    on_device: ClassVar[bool] = False

    def __call__(self, clip: Tensor, generator: torch.Generator | None) -> Tensor:
        return rand_augment(
            clip, self.num_ops, self.magnitude, generator, self.prob, self.magnitude_std
        )

    def apply(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """Apply the drawn ops."""
        return self(clip, generator), label


@dataclass(frozen=True)
class ColorJitter:
    """`color_jitter` with fixed strengths."""

    brightness: float = 0.0  # factor range 1 +- brightness
    contrast: float = 0.0  # factor range 1 +- contrast
    saturation: float = 0.0  # factor range 1 +- saturation
    hue: float = 0.0  # hue shift range +- hue turns
    on_device: ClassVar[bool] = True

    def __call__(self, clip: Tensor, generator: torch.Generator | None) -> Tensor:
        return color_jitter(
            clip, self.brightness, self.contrast, self.saturation, self.hue, generator
        )

    def apply(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """Jitter the colours."""
        return self(clip, generator), label

    def draw(
        self, frame: tuple[int, int, int], label: int, generator: torch.Generator | None
    ) -> tuple[tuple[float, float, float, float], int]:
        """The clip's brightness, contrast and saturation factors and hue shift."""
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        return draw_color_jitter(*strengths, generator), label

    def params(self, drawn: Sequence[tuple[float, float, float, float]]) -> Tensor:
        """Per clip the three factors, then with hue on its RGB matrix: (B * 3) or (B * 12)."""
        table = torch.tensor([factors[:3] for factors in drawn], dtype=torch.float32)  # (B, 3)
        if self.hue > 0:
            # On the host, where `hue_matrix` computes what `adjust_hue` uses bit for bit.
            matrices = torch.stack([hue_matrix(factors[3]) for factors in drawn])  # (B, 3, 3)
            table = torch.cat([table, matrices.flatten(1)], dim=1)  # (B, 12)
        return table.flatten()

    def run(
        self, video: Tensor, drawn: Sequence[tuple[float, float, float, float]], params: Tensor
    ) -> Tensor:
        """Jitter uint8 (B, T, H, W, C), in `color_jitter`'s order."""
        table = params.view(len(drawn), -1)  # (B, 3) or (B, 12)
        for column, (strength, adjust) in enumerate(
            zip(
                (self.brightness, self.contrast, self.saturation),
                (adjust_brightness, adjust_contrast, adjust_saturation),
            )
        ):
            if strength > 0:
                video = adjust(video, table[:, column])
        if self.hue > 0:
            video = recolour(video, table[:, 3:].reshape(-1, 3, 3))
        return video


@dataclass(frozen=True)
class Normalize:
    """uint8 (..., T, H, W, C) -> normalised float (..., C, T, H, W)."""

    mean: tuple[float, float, float] = CLIP_MEAN  # per channel, 0-255 scale
    std: tuple[float, float, float] = CLIP_STD  # per channel, 0-255 scale
    on_device: ClassVar[bool] = True

    def __call__(self, clip: Tensor) -> Tensor:
        return normalize(clip, self.mean, self.std)

    def apply(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """uint8 (T, H, W, C) -> float (C, T, H, W); draws nothing."""
        return self(clip), label

    def draw(
        self, frame: tuple[int, int, int], label: int, generator: torch.Generator | None
    ) -> tuple[None, int]:
        """Nothing to draw."""
        return None, label

    def params(self, drawn: Sequence[None]) -> Tensor:
        """None: the mean and std are made once per device."""
        return torch.empty(0)

    def run(self, video: Tensor, drawn: Sequence[None], params: Tensor) -> Tensor:
        """uint8 (B, T, H, W, C) -> float (B, C, T, H, W)."""
        return self(video)


@dataclass(frozen=True)
class RandomErasing:
    """`random_erasing` with a fixed probability."""

    prob: float = 0.25  # chance of erasing a clip
    on_device: ClassVar[bool] = True

    def __call__(self, video: Tensor, generator: torch.Generator | None) -> Tensor:
        return random_erasing(video, self.prob, generator)

    def apply(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """Erase (or not) a rectangle of the normalised clip."""
        return self(clip, generator), label

    def draw(
        self, frame: tuple[int, int, int], label: int, generator: torch.Generator | None
    ) -> tuple[Erasure | None, int]:
        """The clip's rectangle and noise, or None."""
        height, width, channels = frame
        return draw_erasing(channels, height, width, self.prob, generator), label

    def params(self, drawn: Sequence[Erasure | None]) -> Tensor:
        """The noise of every erased clip, one after the other."""
        return torch.cat([e.noise.flatten() for e in drawn if e is not None] + [torch.empty(0)])

    def run(self, video: Tensor, drawn: Sequence[Erasure | None], params: Tensor) -> Tensor:
        """Erase the drawn rectangles of float (B, C, T, H, W)."""
        erased = [(i, e) for i, e in enumerate(drawn) if e is not None]
        if not erased:
            return video
        out = video.clone()
        noises = params.split([e.noise.numel() for _, e in erased])
        for (i, erasure), noise in zip(erased, noises):
            _erase(out[i], erasure.box, noise.view(erasure.noise.shape))  # (C, 1, h, w)
        return out


@dataclass(frozen=True)
class TrainTransform:
    """The training pipeline: uint8 (T, H, W, C) + label -> float (C, T, S, S) + label.

    The settings of every step; `steps` puts them in order. Steps that are switched off (zero
    strength or probability) draw no random numbers.
    """

    short_side: int = 256  # short side before the random crop
    crop: RandomResizedCrop = field(default_factory=lambda: RandomResizedCrop(224))
    flip: RandomHorizontalFlip = field(default_factory=RandomHorizontalFlip)
    randaugment: RandAugment | None = None  # None: off
    jitter: ColorJitter | None = None  # None: off
    normalize: Normalize = field(default_factory=Normalize)
    erasing: RandomErasing | None = None  # None: off

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps that are on, in the order they run."""
        steps = (
            ShortSideResize(self.short_side),
            self.crop,
            self.flip,
            self.randaugment,
            self.jitter,
            self.normalize,
            self.erasing,
        )
        return tuple(step for step in steps if step is not None)

    def split(self, device: bool) -> tuple[Pipeline, Pipeline]:
        """The host's steps (the loader's workers) and the training device's (`on_device`).

        Without `device` the host runs everything. With it the device takes the longest tail
        of steps that can run there: from the flip on, or from the colour jitter on when
        RandAugment (host only) follows the flip, whose mirrored clip its geometric ops need.
        Run on the same generator one after the other, the two parts draw exactly what the
        whole pipeline draws.
        """
        steps = self.steps
        cut = len(steps)
        while device and cut > 0 and steps[cut - 1].on_device:
            cut -= 1
        return Pipeline(steps[:cut]), Pipeline(steps[cut:])

    def __call__(
        self, clip: Tensor, label: int, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        return Pipeline(self.steps)(clip, label, generator)


@dataclass(frozen=True)
class EvalTransform:
    """The test pipeline: uint8 (T, H, W, C) -> float (num_crops, C, T, S, S).

    Short side to `short_side`, then one centre crop or three crops along the long side
    (the AIM test pipelines resize the short side to the crop size itself).
    """

    size: int = 224  # crop side
    short_side: int = 224  # short side before cropping
    num_crops: int = 1  # 1: centre crop, 3: three crops along the long side
    normalize: Normalize = field(default_factory=Normalize)

    def __post_init__(self) -> None:
        if self.num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {self.num_crops}")
        if self.short_side < self.size:
            raise ValueError(f"short side {self.short_side} is below the crop size {self.size}")

    def __call__(self, clip: Tensor) -> Tensor:
        clip = resize_short_side(clip, self.short_side)
        if self.num_crops == 1:
            crops = center_crop(clip, self.size).unsqueeze(-5)  # (1, T, S, S, C)
        else:
            crops = three_crop(clip, self.size)  # (3, T, S, S, C)
        return self.normalize(crops)
