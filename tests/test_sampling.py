"""Frame sampling: exact indices for seeds and edge cases, dense and uniform."""

import numpy as np
import pytest

from aim_video.data.sampling import (
    DenseSampling,
    UniformSampling,
    dense_test_indices,
    dense_train_indices,
    uniform_test_indices,
    uniform_train_indices,
)

STEPS_16 = 16 * np.arange(8)


def test_dense_train_starts_cover_exactly_the_valid_range():
    # 300 frames, window 8 x 16 = 128: starts in [0, 300 - 128] = [0, 172], as MMAction2.
    starts = set()
    for seed in range(3000):
        indices = dense_train_indices(300, 8, 16, np.random.default_rng(seed))
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(indices, indices[0] + STEPS_16)
        starts.add(int(indices[0]))
    assert min(starts) == 0 and max(starts) == 172
    assert len(starts) > 150  # uniform over the 173 starts, not a handful


def test_dense_train_is_a_pure_function_of_the_generator():
    first = dense_train_indices(300, 8, 16, np.random.default_rng(7))
    again = dense_train_indices(300, 8, 16, np.random.default_rng(7))
    expected_start = np.random.default_rng(7).integers(173)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, expected_start + STEPS_16)


def test_dense_test_clips_are_evenly_spaced_and_centred():
    # (300 - 128 + 1) / 3 = 57.67 per part; starts int(57.67 k + 28.83) = 28, 86, 144.
    indices = dense_test_indices(300, 8, 16, num_clips=3)
    np.testing.assert_array_equal(indices, np.array([28, 86, 144])[:, None] + STEPS_16)
    np.testing.assert_array_equal(dense_test_indices(300, 8, 16, 1), [86 + STEPS_16])


def test_dense_window_exactly_the_video_length():
    rng = np.random.default_rng(0)
    for _ in range(20):
        np.testing.assert_array_equal(dense_train_indices(128, 8, 16, rng), STEPS_16)
    np.testing.assert_array_equal(dense_test_indices(128, 8, 16, 3), np.tile(STEPS_16, (3, 1)))


def test_dense_short_video_loops_modulo_num_frames():
    looped = [0, 16, 32, 48, 14, 30, 46, 12]  # 64 % 50, 80 % 50, ...
    np.testing.assert_array_equal(dense_train_indices(50, 8, 16, np.random.default_rng(3)), looped)
    np.testing.assert_array_equal(dense_test_indices(50, 8, 16, 2), [looped, looped])


def test_dense_single_frame_video():
    np.testing.assert_array_equal(dense_train_indices(1, 8, 16, np.random.default_rng(0)), [0] * 8)
    np.testing.assert_array_equal(dense_test_indices(1, 8, 16, 3), np.zeros((3, 8)))


def test_uniform_test_takes_segment_middles():
    np.testing.assert_array_equal(uniform_test_indices(80, 8, 1), [[5, 15, 25, 35, 45, 55, 65, 75]])
    # Segments of 10.5 frames: middles at 5.25, 15.75, ... -> floor.
    np.testing.assert_array_equal(uniform_test_indices(84, 8, 1), [[5, 15, 26, 36, 47, 57, 68, 78]])


def test_uniform_extra_test_clips_shift_inside_segments():
    np.testing.assert_array_equal(
        uniform_test_indices(80, 8, 2),
        [[2, 12, 22, 32, 42, 52, 62, 72], [7, 17, 27, 37, 47, 57, 67, 77]],
    )


def test_uniform_train_stays_inside_its_segment_and_reaches_both_ends():
    seen = [set() for _ in range(8)]
    for seed in range(500):
        indices = uniform_train_indices(80, 8, np.random.default_rng(seed))
        assert indices.dtype == np.int64
        for segment, index in enumerate(indices):
            seen[segment].add(int(index))
    for segment, frames in enumerate(seen):
        assert frames == set(range(10 * segment, 10 * segment + 10))


def test_uniform_frames_equal_to_segments_take_every_frame_once():
    np.testing.assert_array_equal(uniform_test_indices(8, 8, 1), [np.arange(8)])
    for seed in range(20):
        np.testing.assert_array_equal(
            uniform_train_indices(8, 8, np.random.default_rng(seed)), np.arange(8)
        )


def test_uniform_fewer_frames_than_segments_repeats_in_order():
    np.testing.assert_array_equal(uniform_test_indices(3, 8, 1), [[0, 0, 0, 1, 1, 2, 2, 2]])
    for seed in range(50):
        indices = uniform_train_indices(3, 8, np.random.default_rng(seed))
        assert np.all(np.diff(indices) >= 0)
        assert indices.min() >= 0 and indices.max() <= 2


def test_uniform_single_frame_video():
    np.testing.assert_array_equal(uniform_test_indices(1, 8, 2), np.zeros((2, 8)))
    np.testing.assert_array_equal(uniform_train_indices(1, 8, np.random.default_rng(0)), [0] * 8)


def test_policy_objects_delegate_and_report_clip_len():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    dense = DenseSampling(clip_len=8, interval=16)
    assert dense.clip_len == 8
    np.testing.assert_array_equal(dense.train(300, rng_a), dense_train_indices(300, 8, 16, rng_b))
    assert dense.test(300, 3).shape == (3, 8)
    uniform = UniformSampling(num_segments=16)
    assert uniform.clip_len == 16
    np.testing.assert_array_equal(uniform.test(64, 1), uniform_test_indices(64, 16, 1))
    assert uniform.train(64, rng_a).shape == (16,)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: dense_test_indices(0, 8, 16, 1), "0 frames"),
        (lambda: uniform_train_indices(0, 8, np.random.default_rng(0)), "0 frames"),
        (lambda: uniform_test_indices(10, 8, 0), "num_clips"),
        (lambda: DenseSampling(0, 16), "clip_len"),
        (lambda: UniformSampling(0), "num_segments"),
    ],
)
def test_invalid_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
