"""The synthetic benchmark: exact time reversal, order-blindness, files on disk."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from aim_video.cli import COMMANDS
from aim_video.cli import make_synthetic as make_synthetic_cli
from aim_video.data import synthetic
from aim_video.data.synthetic import (
    COLOURS,
    MOTION_PAIRS,
    SHAPES,
    Look,
    Pose,
    class_names,
    make_synthetic,
    render_clip,
    render_frames,
    reversal_partner,
)
from aim_video.errors import UserError
from aim_video.files import temp_files

SMALL = dict(num_train=20, num_val=10, frames=8, size=32, seed=3, progress=False)


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        # One conversion thread: PyAV's default (one per CPU) is not what is under test.
        frames = container.decode(video=0)
        return np.stack([f.to_ndarray(format="rgb24", threads=1) for f in frames])


def _read_list(path: Path) -> list[tuple[str, int]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(rel, int(label)) for rel, label in rows]


def _mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _object_colour(frames: np.ndarray) -> str:
    """Palette name nearest to the most saturated pixels (objects are vivid, backgrounds dull)."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255
    saturation = pixels.max(1) - pixels.min(1)
    top = pixels[np.argsort(saturation)[-8:]].mean(0)
    return min(COLOURS, key=lambda c: np.sum((np.array(c[1]) - top) ** 2))[0]


# ----------------------------------------------------------------------------------------------
# The classes and the time-reversal construction
# ----------------------------------------------------------------------------------------------


def test_class_names_come_in_reversal_pairs():
    names = class_names("motion")
    assert names[:4] == ["moves_left", "moves_right", "moves_up", "moves_down"]
    assert len(names) == 10 and len(set(names)) == 10
    assert [reversal_partner(i) for i in range(4)] == [1, 0, 3, 2]
    appearance = class_names("appearance")
    assert len(appearance) == 10 and appearance[:2] == ["red_circle", "blue_circle"]
    with pytest.raises(ValueError, match="unknown synthetic task 'colour'"):
        class_names("colour")


@pytest.mark.parametrize("pair", range(len(MOTION_PAIRS)))
def test_second_class_of_a_pair_is_the_first_played_backwards(pair):
    for seed in range(3):
        forward = render_clip(2 * pair, np.random.default_rng(seed), frames=8, size=32)
        backward = render_clip(2 * pair + 1, np.random.default_rng(seed), frames=8, size=32)
        assert forward.dtype == np.uint8 and forward.shape == (8, 32, 32, 3)
        np.testing.assert_array_equal(backward, forward[::-1])
        assert not np.array_equal(forward[0], forward[-1])  # the clip does change


def test_motions_stay_readable_from_single_frames():
    """No object is invisible in any frame: a growth starts as a whole object, a fade starts
    faint but visible (a dot or an empty frame made grows and fades_in look alike at 32 px).
    (That the sizes stay within what the demo's stand-in reads: test_demo_stills.)"""
    for pair in MOTION_PAIRS:
        for seed in range(50):
            pose = pair.trajectory(np.random.default_rng(seed), 16, 32)
            assert pose.alpha.min() >= 0.1, pair.forward
    (grow,) = synthetic.motion_pairs(["grows"])
    pose = grow.trajectory(np.random.default_rng(0), 16, 32)
    assert pose.radius[0] >= 0.09 * 32 and pose.radius[-1] / pose.radius[0] >= 2.6


def test_render_clip_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="class index 10 out of range for the motion task"):
        render_clip(10, rng)
    with pytest.raises(ValueError, match="need frames >= 2"):
        render_clip(0, rng, frames=1)


def _order_statistics(clip: np.ndarray) -> dict[str, float]:
    """Direction read from pixels, blind to object/background colours (both signs cancel).

    x, y: global optical flow (least squares on the brightness-constancy equation).
    spin: rotational flow about the centre of temporal variation (> 0: clockwise on screen).
    edges: relative change in edge energy from the first to the last frame (> 0: the object
    grows or appears).
    """
    grey = clip.astype(np.float64).mean(-1)  # (T, H, W)
    dt = grey[1:] - grey[:-1]
    gy, gx = np.gradient((grey[1:] + grey[:-1]) / 2, axis=(1, 2))
    variation = grey.std(0)
    ys, xs = np.mgrid[: grey.shape[1], : grey.shape[2]].astype(np.float64)
    cy = (variation * ys).sum() / variation.sum()
    cx = (variation * xs).sum() / variation.sum()
    turn = gx * -(ys - cy) + gy * (xs - cx)  # gradient along the clockwise flow field
    ey, ex = np.gradient(grey, axis=(1, 2))
    edges = np.hypot(ex, ey).sum((1, 2))
    return {
        "x": -(dt * gx).sum() / (gx * gx).sum(),
        "y": -(dt * gy).sum() / (gy * gy).sum(),
        "spin": -(dt * turn).sum() / (turn * turn).sum(),
        "edges": (edges[-1] - edges[0]) / edges.mean(),
    }


# For each pair: the statistic that shows its direction, and its sign for the first class.
_DIRECTION = {
    "moves_left": ("x", -1),
    "moves_up": ("y", -1),
    "grows": ("edges", 1),
    "rotates_clockwise": ("spin", 1),
    "fades_in": ("edges", 1),
}


def _nearest_centroid_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Fit class means on the first half of each class, score the second half."""
    half = len(a) // 2
    ca, cb = a[:half].mean(0), b[:half].mean(0)
    tests = [(x, 0) for x in a[half:]] + [(x, 1) for x in b[half:]]
    hits = [int(np.sum((x - cb) ** 2) < np.sum((x - ca) ** 2)) == y for x, y in tests]
    return float(np.mean(hits))


@pytest.mark.parametrize("pair", range(len(MOTION_PAIRS)))
def test_order_separates_a_pair_but_order_blind_pooling_does_not(pair):
    n = 40  # clips per class, each from its own seed (not reversals of each other)
    clips = {
        k: [render_clip(k, np.random.default_rng([11, k, i]), frames=16, size=32) for i in range(n)]
        for k in (2 * pair, 2 * pair + 1)
    }
    key, sign = _DIRECTION[MOTION_PAIRS[pair].forward]
    forward = [sign * _order_statistics(c)[key] for c in clips[2 * pair]]
    backward = [sign * _order_statistics(c)[key] for c in clips[2 * pair + 1]]
    order_accuracy = (np.mean(np.array(forward) > 0) + np.mean(np.array(backward) < 0)) / 2
    assert order_accuracy >= 0.95

    # Mean over frames: the order-blind pooling of a frame-wise model. Same distribution for
    # both classes, so a classifier on it is at chance.
    pooled = {k: np.stack([c.mean(0).ravel() for c in v]) for k, v in clips.items()}
    blind_accuracy = _nearest_centroid_accuracy(pooled[2 * pair], pooled[2 * pair + 1])
    assert 0.25 <= blind_accuracy <= 0.75


def test_appearance_classes_fix_shape_and_colour():
    names = class_names("appearance")
    for k in range(len(names)):
        clip = render_clip(k, np.random.default_rng([4, k]), frames=8, size=32, task="appearance")
        assert _object_colour(clip) == names[k].split("_")[0]


# ----------------------------------------------------------------------------------------------
# The renderer's shapes
# ----------------------------------------------------------------------------------------------

_AREAS = {  # area in units of circumradius squared
    "circle": math.pi,
    "square": 2.0,
    "triangle": 3 * math.sqrt(3) / 4,
    "star": 5 * 0.45 * math.sin(math.pi / 5),
    "cross": 2 * 1.9 * 0.6 - 0.6**2,
}


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_shapes_have_their_area_and_stay_in_their_circle(shape):
    size, radius = 64, 24.0
    look = Look(shape=shape, colour=0, rgb=(1.0, 1.0, 1.0), texture=0, texture_period=0.5,
                texture_angle=0.0)
    one = np.ones(1)
    pose = Pose(cx=32 * one, cy=32 * one, radius=radius * one, angle=0 * one, alpha=one)
    frame = render_frames([look], pose, np.zeros((1, size, size, 3), np.float32), size)[0]
    cover = frame[..., 0].astype(np.float64) / 255
    name = SHAPES[shape].name
    if name in _AREAS:
        assert cover.sum() == pytest.approx(_AREAS[name] * radius**2, rel=0.03)
    ys, xs = np.nonzero(cover)
    assert np.hypot(xs + 0.5 - 32, ys + 0.5 - 32).max() <= radius + 1
    assert cover.sum() > radius**2  # not empty


# ----------------------------------------------------------------------------------------------
# Files on disk
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(root, workers=1, **SMALL)


def test_written_set_is_complete_balanced_and_decodes(small_set):
    root = small_set.root
    names = (root / "classes.txt").read_text().splitlines()
    assert names == class_names("motion") == list(small_set.class_names)
    train, val = _read_list(root / "train.txt"), _read_list(root / "val.txt")
    assert len(train) == 20 and len(val) == 10
    assert Counter(label for _, label in train) == {k: 2 for k in range(10)}
    assert Counter(label for _, label in val) == {k: 1 for k in range(10)}
    assert len(list((root / "videos").rglob("*.mp4"))) == 30
    folders = [root, *(path for path in root.rglob("*") if path.is_dir())]
    assert not [temp for folder in folders for temp in temp_files(folder)]  # no torn writes
    for rel, label in train + val:
        path = root / rel
        assert not Path(rel).is_absolute() and path.is_file()
        assert path.parent.name == names[label]
    meta = json.loads((root / "meta.json").read_text())
    assert meta["complete"] is True and meta["params"]["seed"] == 3
    assert meta["counts"] == {"train": 20, "val": 10}

    # The file holds the clip of its class: decoded frames match the renderer's, up to yuv420p.
    rel, label = train[7]
    frames = _decode(root / rel)
    assert frames.shape == (8, 32, 32, 3)
    with av.open(str(root / rel)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
    expected = render_clip(label, np.random.default_rng((3, 0, 7)), frames=8, size=32)
    error = np.abs(frames.astype(int) - expected).mean()  # chroma is halved at 32 px
    other = render_clip(label, np.random.default_rng((3, 0, 8)), frames=8, size=32)
    assert error < 6 and np.abs(frames.astype(int) - other).mean() > 3 * error


def test_counts_that_do_not_divide_stay_balanced_within_one(tmp_path):
    info = make_synthetic(tmp_path, **{**SMALL, "num_train": 13, "num_val": 0})
    counts = Counter(label for _, label in _read_list(info.train_list))
    assert counts == {k: 2 if k < 3 else 1 for k in range(10)}
    assert info.val_list.read_text() == ""


def test_rerun_on_a_complete_set_rewrites_nothing(small_set):
    before = _mtimes(small_set.root)
    again = make_synthetic(small_set.root, workers=1, **SMALL)
    assert again.reused and not small_set.reused
    assert _mtimes(small_set.root) == before


def test_interrupted_set_is_completed_keeping_finished_videos(tmp_path):
    make_synthetic(tmp_path, workers=1, **SMALL)
    # What an interruption leaves: meta not complete, a video missing, the lists not yet there.
    meta_path = tmp_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({"params": meta["params"], "complete": False}))
    lost = tmp_path / "videos/train/grows/00004.mp4"
    lost.unlink()
    (tmp_path / "train.txt").unlink()
    kept = {p: t for p, t in _mtimes(tmp_path / "videos").items()}

    info = make_synthetic(tmp_path, workers=1, **SMALL)
    assert not info.reused and lost.is_file() and info.train_list.is_file()
    assert json.loads(meta_path.read_text())["complete"] is True
    assert {p: t for p, t in _mtimes(tmp_path / "videos").items() if p != lost} == kept


def test_other_parameters_replace_the_set(tmp_path):
    make_synthetic(tmp_path, workers=1, **SMALL)
    info = make_synthetic(tmp_path, workers=1, **{**SMALL, "num_train": 10, "seed": 4})
    assert not info.reused
    assert len(list((tmp_path / "videos" / "train").rglob("*.mp4"))) == 10  # stale ones gone
    assert json.loads((tmp_path / "meta.json").read_text())["params"]["seed"] == 4


# The set each process writes: more clips than SMALL, as each clip is a chance to differ.
FRESH = dict(num_train=40, num_val=20, frames=8, size=32, seed=3, progress=False)
_WRITE_IN_A_FRESH_PROCESS = (
    "import json, sys\n"
    "from aim_video.data.synthetic import make_synthetic\n"
    "make_synthetic(sys.argv[1], workers=int(sys.argv[2]), **json.loads(sys.argv[3]))\n"
)


def _yuv420p_round_trip(clip: np.ndarray) -> np.ndarray:
    """What a lossless yuv420p file of ``clip`` decodes to: the RGB -> YUV -> RGB conversions."""
    converter = VideoReformatter()
    yuv = [converter.reformat(av.VideoFrame.from_ndarray(rgb, format="rgb24"), format="yuv420p",
                              threads=1) for rgb in clip]
    return np.stack([frame.to_ndarray(format="rgb24", threads=1) for frame in yuv])


def test_same_seed_gives_the_same_frames_with_any_worker_count(tmp_path):
    """Two fresh processes, one writing alone and one through a pool of 2, and this one (torch
    and pytest loaded) write the same bytes, and every file decodes to exactly the rendered clip
    as yuv420p: a reference that needs no encoder.

    Why this catches a defect that shows in one process of two: lossy x264 (CRF 18, as before)
    read memory that its input does not determine, so a process's heap history could flip a clip
    to another bitstream. On this project's loaded 2-core machine, 10 of 10 pairs of fresh
    processes (pools of 1 and 2) writing these 60 clips with that encoder disagreed, and the old
    in-process comparison failed in about half its runs. Four processes encode here (this one,
    the lone writer, the pool's two workers), and each is held to the reference: one clip that
    decodes otherwise, in any of them, fails the test. Not more fresh processes: each imports
    torch (with aim_video), and this test must stay well inside the project's 15 s check.
    """
    # The pool first: its workers import aim_video after it does, the longest chain here.
    runs = [(tmp_path / f"fresh{i}", workers) for i, workers in enumerate((2, 1))]
    children = [
        subprocess.Popen([sys.executable, "-c", _WRITE_IN_A_FRESH_PROCESS, str(root),
                          str(workers), json.dumps(FRESH)])
        for root, workers in runs
    ]
    # Meanwhile this process writes the set too, under the load of the other two.
    here = make_synthetic(tmp_path / "here", workers=1, **FRESH).root
    listed = _read_list(here / "train.txt") + _read_list(here / "val.txt")
    assert len(listed) == FRESH["num_train"] + FRESH["num_val"]
    for index, (rel, label) in enumerate(listed):
        split, i = (0, index) if index < FRESH["num_train"] else (1, index - FRESH["num_train"])
        clip = render_clip(label, np.random.default_rng((3, split, i)), frames=8, size=32)
        np.testing.assert_array_equal(_decode(here / rel), _yuv420p_round_trip(clip),
                                      err_msg=rel)
    assert [child.wait(timeout=120) for child in children] == [0] * len(runs)
    for rel, _ in listed:
        data = (here / rel).read_bytes()
        for root, workers in runs:
            assert (root / rel).read_bytes() == data, f"{rel}: workers={workers} wrote other bytes"
    # x264 records its settings in the stream: lossless (qp 0) and one thread everywhere.
    assert b"qp=0" in data and b"threads=1 lookahead_threads=1 sliced_threads=0" in data
    changed = render_clip(0, np.random.default_rng((4, 0, 0)), frames=8, size=32)
    assert not np.array_equal(changed, render_clip(0, np.random.default_rng((3, 0, 0)), 8, 32))


def test_a_subset_of_pairs_keeps_their_clips_and_relabels_them(tmp_path):
    pairs = ["grows", "moves_up"]
    assert class_names("motion", pairs) == ["grows", "shrinks", "moves_up", "moves_down"]
    # Label 2 of the subset renders what label 2 of the full set (moves_up) renders.
    for label, full in ((0, 4), (1, 5), (2, 2), (3, 3)):
        np.testing.assert_array_equal(
            render_clip(label, np.random.default_rng(1), 8, 32, pairs=pairs),
            render_clip(full, np.random.default_rng(1), 8, 32))
    info = _cli_then_call(tmp_path, pairs)  # written by the CLI, reused by the call
    assert info.reused
    assert info.class_names == ("grows", "shrinks", "moves_up", "moves_down")
    assert (tmp_path / "classes.txt").read_text().splitlines() == list(info.class_names)
    assert Counter(label for _, label in _read_list(info.train_list)) == {k: 2 for k in range(4)}
    assert json.loads((tmp_path / "meta.json").read_text())["params"]["pairs"] == pairs
    with pytest.raises(ValueError, match=r"motion pairs must be distinct names among .*'grows'"):
        class_names("motion", ["grows", "spins"])
    with pytest.raises(ValueError, match="motion pairs must be distinct"):
        class_names("motion", ["grows", "grows"])
    with pytest.raises(ValueError, match="the appearance task has none"):
        class_names("appearance", ["grows"])


def _cli_then_call(root: Path, pairs: list[str]):
    assert _cli(["make-synthetic", str(root), "--num-train", "8", "--num-val", "4", "--frames",
                 "4", "--size", "16", "--workers", "1", "--no-progress",
                 "--pairs", ",".join(pairs)]) == 0
    return make_synthetic(root, num_train=8, num_val=4, frames=4, size=16, workers=1,
                          progress=False, pairs=pairs)


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="size must be even"):
        make_synthetic(tmp_path, **{**SMALL, "size": 33})
    with pytest.raises(ValueError, match="unknown synthetic task"):
        make_synthetic(tmp_path, **{**SMALL, "task": "colour"})
    assert not list(tmp_path.iterdir())  # refused before writing anything


def _cli(argv: list[str]) -> int:
    """Run the sub-command through its own parser: independent of the other sub-commands.
    Exit statuses as `aim_video.cli.main` gives them: argparse's 2, a UserError's 2."""
    parser = argparse.ArgumentParser(prog="aim-video")
    make_synthetic_cli.register(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except SystemExit as exit:
        return int(exit.code or 0)
    except UserError as err:
        print(f"aim-video {argv[0]}: error: {err}", file=sys.stderr)
        return 2


def test_cli_writes_then_reuses(tmp_path, capsys):
    assert "make_synthetic" in COMMANDS
    argv = ["make-synthetic", str(tmp_path), "--num-train", "10", "--num-val", "10",
            "--frames", "4", "--size", "16", "--task", "appearance", "--workers", "1",
            "--no-progress"]
    assert _cli(argv) == 0
    out = capsys.readouterr().out
    assert f"synthetic appearance set written: {tmp_path}" in out
    assert "10 train + 10 val videos, 4 frames of 16x16" in out
    assert "red_circle, blue_circle" in out
    assert _decode(tmp_path / _read_list(tmp_path / "val.txt")[0][0]).shape == (4, 16, 16, 3)
    assert _cli(argv) == 0
    assert "already complete, left as is" in capsys.readouterr().out
    assert _cli(["make-synthetic", str(tmp_path / "odd"), "--size", "31"]) == 2
    assert "must be even" in capsys.readouterr().err


def test_write_video_refuses_frames_it_cannot_encode(tmp_path):
    with pytest.raises(ValueError, match=r"odd\.mp4: yuv420p needs even frame sides, got 31x32"):
        synthetic.write_video(tmp_path / "odd.mp4", np.zeros((2, 32, 31, 3), np.uint8))
    with pytest.raises(ValueError, match=r"float\.mp4: expected uint8 \(T, H, W, 3\) frames"):
        synthetic.write_video(tmp_path / "float.mp4", np.zeros((2, 32, 32, 3), np.float32))
    assert not list(tmp_path.iterdir())
