"""Video transforms: geometry, flips, RandAugment ops, normalisation, determinism."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from aim_video.data import transforms as T


def random_clip(t=4, h=40, w=56, seed=0, low=0, high=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (t, h, w, 3), dtype=torch.uint8, generator=g)


def column_clip(t=2, h=32, w=48):
    """Every pixel holds its column index: crops reveal where they were taken."""
    cols = torch.arange(w, dtype=torch.uint8)
    return cols.view(1, 1, w, 1).expand(t, h, w, 3).contiguous()


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "hw, size, expected",
    [((240, 320), 256, (256, 341)), ((320, 240), 256, (341, 256)), ((100, 100), 224, (224, 224))],
)
def test_short_side_size_rounds_the_long_side(hw, size, expected):
    assert T.short_side_size(*hw, size) == expected


def test_resize_short_side_shape_dtype_and_constant_stays_constant():
    clip = torch.full((3, 30, 40, 3), 77, dtype=torch.uint8)
    out = T.resize_short_side(clip, 60)
    assert out.shape == (3, 60, 80, 3) and out.dtype == torch.uint8
    assert torch.all(out == 77)
    same = random_clip(h=32, w=48)
    assert T.resize_short_side(same, 32) is same  # nothing to do, no copy


@pytest.mark.parametrize("size", [(20, 28), (64, 96)])
def test_uint8_and_float_resize_paths_agree_within_one(size):
    clip = random_clip()
    fast = T.resize(clip, size)  # CPU: native uint8
    slow = T._resize_float(clip, size, antialias=True)  # what CUDA runs
    assert fast.shape == slow.shape == (4, *size, 3)
    assert (fast.int() - slow.int()).abs().max() <= 1


def test_random_resized_crop_box_respects_area_ratio_and_bounds():
    height, width = 60, 80
    areas, ratios = [], []
    for seed in range(400):
        box = T.random_resized_crop_box(height, width, (0.08, 1.0), (3 / 4, 4 / 3), gen(seed))
        assert box.top >= 0 and box.left >= 0
        assert box.top + box.height <= height and box.left + box.width <= width
        areas.append(box.height * box.width / (height * width))
        ratios.append(box.width / box.height)
    # Rounding the sides to pixels moves area and ratio a little beyond the ranges.
    assert 0.07 <= min(areas) < 0.15 and 0.9 < max(areas) <= 1.0
    assert min(ratios) > 0.75 * 0.9 and max(ratios) < 4 / 3 * 1.1


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((100, 400), T.CropBox(0, 133, 100, 133)),  # too wide: height kept, ratio 4/3
        ((400, 100), T.CropBox(133, 0, 133, 100)),  # too tall: width kept, ratio 3/4
        ((90, 100), T.CropBox(0, 0, 90, 100)),  # ratio inside the range: whole frame
    ],
)
def test_random_resized_crop_falls_back_to_centre_crop(hw, expected):
    # An area range no crop can satisfy forces torchvision's fallback after 10 attempts.
    box = T.random_resized_crop_box(*hw, (2.0, 3.0), (3 / 4, 4 / 3), gen(0))
    assert box == expected


def test_random_resized_crop_goes_straight_to_input_size():
    out = T.RandomResizedCrop(32)(random_clip(), gen(1))
    assert out.shape == (4, 32, 32, 3) and out.dtype == torch.uint8


def test_center_crop_offsets():
    out = T.center_crop(column_clip(w=48), 32)
    assert out.shape == (2, 32, 32, 3)
    assert out[0, 0, 0, 0] == 8  # (48 - 32) // 2
    assert T.center_crop_box(41, 50, 32) == T.CropBox(4, 9, 32, 32)
    with pytest.raises(ValueError, match="cannot take a 64x64 crop from a 32x48 frame"):
        T.center_crop(column_clip(), 64)


@pytest.mark.parametrize("width, lefts", [(80, [0, 24, 48]), (37, [0, 2, 4])])
def test_three_crop_positions_along_the_long_side(width, lefts):
    crops = T.three_crop(column_clip(h=32, w=width), 32)
    assert crops.shape == (3, 2, 32, 32, 3)
    assert crops[:, 0, 0, 0, 0].tolist() == lefts  # MMAction2: 0, step, 2 * step


def test_three_crop_portrait_moves_down():
    assert [b.top for b in T.three_crop_boxes(80, 32, 32)] == [0, 24, 48]
    assert {b.left for b in T.three_crop_boxes(80, 32, 32)} == {0}


def test_hflip_mirrors_columns():
    out = T.hflip(column_clip(w=48))
    assert out[0, 0, :, 0].tolist() == list(range(47, -1, -1))


def test_flip_applies_label_map_only_when_flipped():
    clip = column_clip()
    flip = T.RandomHorizontalFlip(prob=1.0, label_map={1: 2, 2: 1})
    out, label = flip(clip, 1, gen(0))
    assert label == 2 and torch.equal(out, T.hflip(clip))
    assert flip(clip, 5, gen(0))[1] == 5  # classes outside the map keep their label
    never = T.RandomHorizontalFlip(prob=0.0, label_map={1: 2})
    out, label = never(clip, 1, gen(0))
    assert label == 1 and out is clip


def test_flip_probability_is_about_half():
    flip = T.RandomHorizontalFlip(prob=0.5, label_map={0: 1})
    flips = sum(flip(column_clip(), 0, gen(seed))[1] for seed in range(400))
    assert 160 < flips < 240


# ----------------------------------------------------------------------------- RandAugment


@pytest.mark.parametrize("name", sorted(T.RANDAUGMENT_OPS))
@pytest.mark.parametrize("level", [0.0, 0.7, -1.0])
def test_randaugment_ops_keep_dtype_and_shape(name, level):
    clip = random_clip(t=2, h=24, w=32)
    out = T.RANDAUGMENT_OPS[name](clip, level)
    assert out.dtype == torch.uint8 and out.shape == clip.shape


@pytest.mark.parametrize("name", sorted(set(T.RANDAUGMENT_OPS) - {"autocontrast", "equalize"}))
def test_randaugment_level_zero_is_identity(name):
    clip = random_clip(low=20, high=200)  # leaves autocontrast room to act, if it ran
    assert torch.equal(T.RANDAUGMENT_OPS[name](clip, 0.0), clip)


@pytest.mark.parametrize("name", sorted(set(T.RANDAUGMENT_OPS) - {"identity"}))
def test_randaugment_ops_change_the_clip(name):
    clip = random_clip(low=20, high=200)
    assert not torch.equal(T.RANDAUGMENT_OPS[name](clip, 0.8), clip)


def test_rand_augment_draws_one_op_for_all_frames():
    frame = random_clip(t=1, h=24, w=32)
    clip = frame.expand(4, -1, -1, -1).contiguous()  # four identical frames
    for seed in range(10):
        out = T.rand_augment(clip, num_ops=4, magnitude=9, generator=gen(seed), prob=1.0)
        assert not torch.equal(out, clip)
        assert all(torch.equal(out[0], out[t]) for t in range(1, 4))


def test_rand_augment_zero_ops_is_identity_and_seed_reproduces():
    clip = random_clip()
    assert torch.equal(T.rand_augment(clip, 0, 9, gen(0)), clip)
    a = T.RandAugment(4, 7)(clip, gen(3))
    b = T.RandAugment(4, 7)(clip, gen(3))
    assert torch.equal(a, b)


def test_rotate_90_matches_rot90_and_translate_shifts_with_fill():
    clip = random_clip(h=32, w=32)
    assert torch.equal(T.rotate(clip, 90), torch.rot90(clip, 1, dims=(-3, -2)))
    shifted = T.translate_x(clip, 5)
    assert torch.equal(shifted[:, :, 5:], clip[:, :, :-5])
    assert torch.all(shifted[:, :, :5] == 128)
    down = T.translate_y(clip, -3)  # up by 3
    assert torch.equal(down[:, :-3], clip[:, 3:])


def enhance(enhancer, factor):
    return lambda image: enhancer(image).enhance(factor)


def pil_reference(clip, fn):
    """`fn` applied by PIL to the first frame, as uint8 numpy."""
    return np.asarray(fn(Image.fromarray(clip[0].numpy()))).astype(int)


@pytest.mark.parametrize(
    "ours, pils, tolerance",
    [
        (T.equalize, ImageOps.equalize, 0),
        (lambda c: T.solarize(c, 100), lambda im: ImageOps.solarize(im, 100), 0),
        (lambda c: T.posterize(c, 3), lambda im: ImageOps.posterize(im, 3), 0),
        # PIL truncates where these round: within one grey level.
        (T.autocontrast, ImageOps.autocontrast, 1),
        (lambda c: T.adjust_brightness(c, 1.6), enhance(ImageEnhance.Brightness, 1.6), 1),
        (lambda c: T.adjust_saturation(c, 0.3), enhance(ImageEnhance.Color, 0.3), 1),
        (lambda c: T.adjust_contrast(c, 1.7), enhance(ImageEnhance.Contrast, 1.7), 1),
        (lambda c: T.adjust_sharpness(c, 1.8), enhance(ImageEnhance.Sharpness, 1.8), 1),
    ],
)
def test_colour_ops_match_pil_on_one_frame(ours, pils, tolerance):
    clip = random_clip(t=1, low=30, high=200)
    clip[..., 2] = clip[..., 2] // 3 + 60  # channels with different ranges
    diff = np.abs(ours(clip)[0].numpy().astype(int) - pil_reference(clip, pils))
    assert diff.max() <= tolerance


def test_clip_statistics_span_all_frames():
    # A dark frame and a bright frame: autocontrast stretches the clip, not each frame.
    clip = torch.stack([torch.full((8, 8, 3), 50), torch.full((8, 8, 3), 150)]).to(torch.uint8)
    out = T.autocontrast(clip)
    assert torch.all(out[0] == 0) and torch.all(out[1] == 255)


def test_hue_shift_keeps_grey_and_zero_jitter_is_identity():
    grey = torch.full((2, 8, 8, 3), 90, dtype=torch.uint8)
    assert (T.adjust_hue(grey, 0.3).int() - 90).abs().max() <= 1
    clip = random_clip()
    assert torch.equal(T.color_jitter(clip, 0, 0, 0, 0, gen(0)), clip)
    assert not torch.equal(T.adjust_hue(clip, 0.25), clip)


# ----------------------------------------------------------------------------- float side


def test_normalize_values_and_layout():
    clip = random_clip(t=3, h=5, w=7)
    out = T.normalize(clip, T.CLIP_MEAN, T.CLIP_STD)
    assert out.shape == (3, 3, 5, 7) and out.dtype == torch.float32  # (C, T, H, W)
    for c in range(3):
        expected = (clip[1, 2, 4, c].item() - T.CLIP_MEAN[c]) / T.CLIP_STD[c]
        assert out[c, 1, 2, 4].item() == pytest.approx(expected, abs=1e-5)
    white = torch.full((1, 1, 1, 3), 255, dtype=torch.uint8)
    white = T.normalize(white, T.IMAGENET_MEAN, T.IMAGENET_STD)
    assert white.flatten().tolist() == pytest.approx([2.2489, 2.4286, 2.6400], abs=1e-4)


def test_random_erasing_same_rectangle_in_every_frame():
    video = T.normalize(random_clip(t=4, h=32, w=32), T.CLIP_MEAN, T.CLIP_STD)
    assert T.random_erasing(video, 0.0, gen(0)) is video
    erased = T.random_erasing(video, 1.0, gen(1))
    changed = erased != video  # (C, T, H, W)
    assert changed.any()
    assert all(torch.equal(changed[:, 0], changed[:, t]) for t in range(1, 4))
    noise = [erased[:, t][changed[:, t]] for t in range(4)]
    assert all(torch.equal(noise[0], n) for n in noise[1:])
    rows, cols = changed[0, 0].nonzero().unbind(1)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert changed[0, 0].sum() == height * width  # one filled rectangle


# ----------------------------------------------------------------------------- pipelines


def full_train_transform(size=32):
    return T.TrainTransform(
        short_side=40,
        crop=T.RandomResizedCrop(size),
        flip=T.RandomHorizontalFlip(0.5, {0: 1}),
        randaugment=T.RandAugment(2, 9),
        jitter=T.ColorJitter(0.4, 0.4, 0.4, 0.1),
        erasing=T.RandomErasing(0.5),
    )


def test_train_transform_shape_and_determinism_for_a_seed():
    clip = random_clip(t=4, h=48, w=64)
    transform = full_train_transform()
    video, label = transform(clip, 0, gen(11))
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32
    again, label_again = transform(clip, 0, gen(11))
    assert torch.equal(video, again) and label == label_again
    other, _ = transform(clip, 0, gen(12))
    assert not torch.equal(video, other)


def test_train_steps_are_in_order_and_off_steps_left_out():
    kinds = [type(step) for step in full_train_transform().steps]
    assert kinds == [T.ShortSideResize, T.RandomResizedCrop, T.RandomHorizontalFlip,
                     T.RandAugment, T.ColorJitter, T.Normalize, T.RandomErasing]
    plain = T.TrainTransform(short_side=40, crop=T.RandomResizedCrop(32))
    assert [type(step) for step in plain.steps] == [
        T.ShortSideResize, T.RandomResizedCrop, T.RandomHorizontalFlip, T.Normalize]


@pytest.mark.parametrize("randaugment", [True, False])
def test_split_cuts_where_clips_can_be_batched(randaugment):
    transform = full_train_transform()
    if not randaugment:
        transform = dataclasses.replace(transform, randaugment=None)
    host, device = transform.split(device=False)
    assert host.steps == transform.steps and device.steps == ()
    host, device = transform.split(device=True)
    # RandAugment stays on the host, and with it the flip its geometric ops must follow.
    last_on_host = T.RandAugment if randaugment else T.RandomResizedCrop
    assert type(host.steps[-1]) is last_on_host
    assert host.steps + device.steps == transform.steps
    assert all(step.on_device for step in device.steps)


@pytest.mark.parametrize("randaugment", [True, False])
def test_the_two_parts_draw_what_the_whole_pipeline_draws(randaugment):
    transform = full_train_transform()
    if not randaugment:
        transform = dataclasses.replace(transform, randaugment=None)
    clip = random_clip(t=4, h=48, w=64)
    host, device = transform.split(device=True)
    for seed in range(6):
        whole, whole_label = transform(clip, 0, gen(seed))
        generator = gen(seed)
        crops, label = host(clip, 0, generator)
        assert crops.dtype == torch.uint8 and crops.shape == (4, 32, 32, 3)
        resumed = torch.Generator()
        resumed.set_state(generator.get_state())  # what the loader ships to the device
        video, label = device(crops, label, resumed)
        assert torch.equal(video, whole) and label == whole_label


@pytest.mark.parametrize("num_crops", [1, 3])
def test_eval_transform_views(num_crops):
    clip = random_clip(t=4, h=48, w=64)
    out = T.EvalTransform(size=32, short_side=32, num_crops=num_crops)(clip)
    assert out.shape == (num_crops, 3, 4, 32, 32)
    centre = T.normalize(T.center_crop(T.resize_short_side(clip, 32), 32), T.CLIP_MEAN, T.CLIP_STD)
    assert torch.equal(out[num_crops // 2], centre)  # the (middle) crop is the centre one


def test_eval_transform_rejects_bad_settings():
    with pytest.raises(ValueError, match="num_crops must be 1 or 3"):
        T.EvalTransform(num_crops=2)
    with pytest.raises(ValueError, match="short side 200 is below the crop size 224"):
        T.EvalTransform(size=224, short_side=200)


def test_non_uint8_input_is_rejected():
    with pytest.raises(ValueError, match="uint8 RGB clip"):
        T.resize(torch.zeros(2, 8, 8, 3), (4, 4))


# ----------------------------------------------------------------------------- batches


BATCHABLE = {
    "resize": lambda x: T.resize(x, (20, 30)),
    "center_crop": lambda x: T.center_crop(x, 24),
    "three_crop": lambda x: T.three_crop(x, 24),
    "hflip": T.hflip,
    "rotate": lambda x: T.rotate(x, 17.0),
    "shear_x": lambda x: T.shear_x(x, 0.2),
    "autocontrast": T.autocontrast,
    "equalize": T.equalize,
    "contrast": lambda x: T.adjust_contrast(x, 1.5),
    "sharpness": lambda x: T.adjust_sharpness(x, 1.5),
    "hue": lambda x: T.adjust_hue(x, 0.1),
    "normalize": lambda x: T.normalize(x, T.CLIP_MEAN, T.CLIP_STD),
}


@pytest.mark.parametrize("name", sorted(BATCHABLE))
def test_ops_give_the_same_result_on_a_clip_and_on_a_batch(name):
    clips = [random_clip(t=3, h=28, w=36, seed=s, low=10 * s, high=200 + 10 * s) for s in range(3)]
    batch = torch.stack(clips)  # (B, T, H, W, C)
    op = BATCHABLE[name]
    batched = op(batch)
    for i, clip in enumerate(clips):
        assert torch.equal(batched[i], op(clip))


def test_device_steps_give_each_clip_of_a_batch_what_they_give_it_alone():
    # DeviceAugment draws every clip's parameters, then runs each step once over the batch:
    # a batch step must give clip i exactly what `apply` gives clip i with the same generator,
    # whatever the other clips drew (mirrored or not, erased or not, other jitter factors).
    _, device = dataclasses.replace(full_train_transform(), randaugment=None).split(device=True)
    assert [type(step) for step in device.steps] == [
        T.RandomHorizontalFlip, T.ColorJitter, T.Normalize, T.RandomErasing]
    clips = [random_clip(t=3, h=32, w=32, seed=s, low=5 * s, high=200 + 7 * s) for s in range(8)]
    wanted = [device(clip, 0, gen(100 + i)) for i, clip in enumerate(clips)]
    generators = [gen(100 + i) for i in range(8)]
    video, drawn = torch.stack(clips), []  # (B, T, H, W, C)
    for step in device.steps:
        column = [step.draw((32, 32, 3), 0, g) for g in generators]  # (params, label) per clip
        drawn.append([params for params, _ in column])
    for step, column in zip(device.steps, drawn):
        video = step.run(video, column, step.params(column))
    assert 0 < sum(drawn[0]) < 8  # some clips mirrored, some not
    assert 0 < sum(e is not None for e in drawn[3]) < 8  # some erased, some not
    for i, (clip, label) in enumerate(wanted):
        assert torch.equal(video[i], clip) and label == (1 if drawn[0][i] else 0)
