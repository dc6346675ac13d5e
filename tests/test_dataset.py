"""VideoDataset: item shapes, seeded determinism, the bad-file policy, loaders, collate."""

import dataclasses
import importlib.util
import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from aim_video.data import dataset as dataset_module
from aim_video.data.annotations import Annotations, VideoRecord
from aim_video.data.dataset import (
    DataConfig,
    DataError,
    TrainBatch,
    TrainItem,
    VideoDataset,
    ViewsItem,
    build_dataset,
    collate,
)
from aim_video.errors import UserError
from aim_video.data.transforms import CLIP_MEAN, CLIP_STD

NUM_FRAMES = 40


def write_mp4(path: Path, frames: np.ndarray, faststart: bool = False) -> None:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast", "threads": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def ramp_frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Frame t is a flat grey 20 + 5 t plus a little texture, so frames can be told apart."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(-6, 7, (1, height, width, 3))
    grey = 20 + 5 * np.arange(num_frames).reshape(-1, 1, 1, 1)
    return np.clip(grey + texture, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("videos")
    paths = {name: root / f"{name}.mp4" for name in
             ("wide", "tall", "short", "missing", "empty", "cut", "cut_fast")}
    write_mp4(paths["wide"], ramp_frames(NUM_FRAMES, 48, 64, 0))
    write_mp4(paths["tall"], ramp_frames(NUM_FRAMES, 64, 48, 1))
    write_mp4(paths["short"], ramp_frames(5, 48, 64, 2))  # shorter than any window
    paths["empty"].write_bytes(b"")
    # Truncated downloads. Without faststart the index (moov) sits at the end and is lost:
    # the file does not open. With faststart it opens and declares 40 frames, but the
    # frame data (mdat) is cut a few bytes in, so no frame decodes.
    whole = root / "whole.mp4"
    write_mp4(whole, ramp_frames(NUM_FRAMES, 48, 64, 3))
    paths["cut"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    write_mp4(whole, ramp_frames(NUM_FRAMES, 48, 64, 3), faststart=True)
    data = whole.read_bytes()
    paths["cut_fast"].write_bytes(data[: data.index(b"mdat") + 64])
    return {name: str(path) for name, path in paths.items()}


GOOD = ("wide", "tall", "short")
BAD = ("missing", "empty", "cut", "cut_fast")


def make_dataset(files, names, mode="train", **overrides) -> VideoDataset:
    records = [VideoRecord(files[name], label) for label, name in enumerate(names)]
    settings = dict(num_frames=4, frame_interval=2, input_size=32, short_side=40,
                    test_clips=2, test_crops=3, num_workers=0)
    settings.update(overrides)
    annotations = Annotations(records, [f"class{i}" for i in range(len(names))])
    return VideoDataset(annotations, DataConfig(**settings), mode=mode)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(dataset_module, "_warned_paths", set())


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("sampling", ["dense", "uniform"])
def test_train_item_shapes(files, sampling):
    data = make_dataset(files, GOOD, sampling=sampling)
    for index in range(len(data)):
        item = data[index]
        assert isinstance(item, TrainItem)
        assert item.video.shape == (1, 3, 4, 32, 32) and item.video.dtype == torch.float32
        assert item.labels.tolist() == [index] and item.index == index
        assert item.skipped == [] and item.aug_state is None


@pytest.mark.parametrize("sampling", ["dense", "uniform"])
@pytest.mark.parametrize("crops", [1, 3])
def test_test_item_holds_every_view(files, sampling, crops):
    data = make_dataset(files, GOOD, mode="test", sampling=sampling, test_crops=crops)
    for index in range(len(data)):
        item = data[index]
        assert item["video"].shape == (2 * crops, 3, 4, 32, 32)
        assert item["ok"] is True and item["label"] == index


def test_repeated_augmentation_stacks_k_clips_of_one_video(files):
    data = make_dataset(files, GOOD, repeated_aug=3, flip_label_map={0: 1})
    item = data[0]
    assert item.video.shape == (3, 3, 4, 32, 32)
    assert item.labels.shape == (3,) and item.labels.dtype == torch.int64
    assert set(item.labels.tolist()) <= {0, 1}
    assert not torch.equal(item.video[0], item.video[1])  # independent draws


def test_resizing_after_decoding_gives_the_same_shapes(files):
    data = make_dataset(files, GOOD, resize_in_decoder=False)
    assert data[1].video.shape == (1, 3, 4, 32, 32)
    data = make_dataset(files, GOOD, mode="test", resize_in_decoder=False)
    assert data[1]["video"].shape == (6, 3, 4, 32, 32)


def frame_levels(video: torch.Tensor) -> np.ndarray:
    """Mean grey level of each frame of a normalised (C, T, H, W) clip."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    return (video * std + mean).mean(dim=(0, 2, 3)).numpy()


def test_test_views_are_the_sampled_frames_in_order(files):
    data = make_dataset(files, ("wide",), mode="test", test_crops=1)
    video = data[0]["video"]  # (2 clips, C, T, H, W)
    # dense_test_indices(40, 4, 2, 2): starts 8 and 24, frames 2 apart; frame t is 20 + 5 t.
    expected = 20 + 5 * np.array([[8, 10, 12, 14], [24, 26, 28, 30]])
    np.testing.assert_allclose([frame_levels(v) for v in video], expected, atol=2.5)


def test_short_video_loops_its_frames(files):
    data = make_dataset(files, ("short",), mode="test", test_crops=1, test_clips=1)
    levels = frame_levels(data[0]["video"][0])
    np.testing.assert_allclose(levels, 20 + 5 * np.array([0, 2, 4, 1]), atol=2.5)  # 6 % 5 = 1


# ----------------------------------------------------------------------------- randomness


def test_item_is_fixed_by_seed_epoch_and_index(files):
    first = make_dataset(files, GOOD)[0].video
    assert torch.equal(make_dataset(files, GOOD)[0].video, first)  # a fresh dataset
    other_seed = make_dataset(files, GOOD, seed=1)[0].video
    assert not torch.equal(other_seed, first)
    data = make_dataset(files, GOOD)
    data.set_epoch(1)
    assert data.epoch == 1
    assert not torch.equal(data[0].video, first)
    data.set_epoch(0)
    assert torch.equal(data[0].video, first)


def test_test_mode_is_deterministic_across_epochs(files):
    data = make_dataset(files, GOOD, mode="test")
    first = data[2]["video"]
    data.set_epoch(5)
    assert torch.equal(data[2]["video"], first)


# ----------------------------------------------------------------------------- bad files


def test_train_mode_replaces_bad_files_and_reports_them(files, caplog):
    names = ("wide",) + BAD + ("tall",)
    data = make_dataset(files, names)
    good_indices = {0, len(names) - 1}
    skipped = []
    with caplog.at_level(logging.WARNING, logger="aim_video.data.dataset"):
        for _ in range(2):  # two passes: each bad file is warned about once only
            for index in range(len(data)):
                item = data[index]
                assert item.index in good_indices
                assert torch.isfinite(item.video).all()
                assert item.labels.tolist() == [item.index]
                skipped += item.skipped
            data.set_epoch(data.epoch + 1)
    reasons = dict(skipped)
    assert set(reasons) == {files[name] for name in BAD}
    assert reasons[files["missing"]] == "file not found"
    assert "0 bytes" in reasons[files["empty"]]
    assert all(isinstance(reason, str) and reason for reason in reasons.values())
    warned = [r.getMessage() for r in caplog.records]
    for name in BAD:
        assert sum(files[name] in message for message in warned) == 1


def test_replacement_is_deterministic(files):
    names = ("wide",) + BAD + ("tall",)
    first = make_dataset(files, names)[2]
    again = make_dataset(files, names)[2]
    assert first.index == again.index and first.skipped == again.skipped
    assert torch.equal(first.video, again.video)


def test_train_mode_gives_up_on_a_data_set_of_bad_files(files):
    data = make_dataset(files, BAD)
    data.source = "data.train (lists/train.txt)"
    with pytest.raises(DataError) as info:
        data[0]
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert message.startswith("data.train (lists/train.txt): too many unreadable videos (50 in")
    # The first few reasons, each with its file, and the likely cause.
    assert message.count(".mp4: ") == dataset_module.REASONS_SHOWN
    assert "Is data.root (None) right?" in message


def test_a_loader_worker_gives_the_same_one_line_data_error(files):
    data = make_dataset(files, BAD)
    loader = DataLoader(data, batch_size=1, num_workers=1, collate_fn=collate)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert str(info.value).startswith("the training list: too many unreadable videos (50 in")
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("a bug in a reader"),
                                   av.error.MemoryError(12, "Cannot allocate memory")])
def test_errors_that_are_not_about_the_file_stop_the_run(files, monkeypatch, error):
    """Only decoding errors make a bad file; anything else propagates with its cause instead of
    being replaced by another video (training would go on, silently, on fewer videos)."""

    class Broken:
        def __init__(self, *args, **kwargs):
            raise error

    monkeypatch.setattr(dataset_module, "open_video", Broken)
    for mode in ("train", "test"):
        with pytest.raises(type(error)) as info:
            make_dataset(files, GOOD, mode=mode)[0]
        assert info.value is error


@pytest.mark.parametrize("error", [av.error.InvalidDataError(1094995529, "Invalid data"),
                                   OSError(5, "Input/output error")])
def test_decoder_errors_of_any_library_make_a_bad_file(files, monkeypatch, error):
    calls = []

    def flaky(path, *args, **kwargs):
        calls.append(path)
        if path == files["wide"]:
            raise error
        return real(path, *args, **kwargs)

    real = dataset_module.open_video
    monkeypatch.setattr(dataset_module, "open_video", flaky)
    item = make_dataset(files, ("wide", "tall"))[0]
    assert item.skipped[0][0] == files["wide"]
    assert type(error).__name__ in item.skipped[0][1]
    assert item.index == 1


def test_test_mode_flags_bad_files_with_a_zero_video(files):
    data = make_dataset(files, ("wide",) + BAD, mode="test")
    for index, name in enumerate(BAD, start=1):
        item = data[index]
        assert item["ok"] is False and item["label"] == index
        assert item["video"].shape == (6, 3, 4, 32, 32) and not item["video"].any()
        assert [path for path, _ in item["skipped"]] == [files[name]]
    assert data[0]["ok"] is True


# ----------------------------------------------------------------------------- loading


def test_collate_stacks_and_concatenates():
    items = [
        ViewsItem(video=torch.ones(2, 3, 2, 4, 4) * i, label=i, index=10 + i, ok=i != 1,
                  skipped=[(f"bad{i}.mp4", "why")] if i else [])
        for i in range(3)
    ]
    batch = collate(items)
    assert batch["video"].shape == (3, 2, 3, 2, 4, 4)
    assert batch["label"].tolist() == [0, 1, 2] and batch["label"].dtype == torch.int64
    assert batch["index"].tolist() == [10, 11, 12]
    assert batch["ok"].tolist() == [True, False, True] and batch["ok"].dtype == torch.bool
    assert batch["skipped"] == [("bad1.mp4", "why"), ("bad2.mp4", "why")]


def test_collate_stacks_training_items_and_flattens_their_clips():
    items = [
        TrainItem(video=torch.ones(2, 3, 2, 4, 4) * i, labels=torch.tensor([i, 5 + i]),
                  index=10 + i, skipped=[(f"bad{i}.mp4", "why")] if i else [])
        for i in range(3)
    ]
    batch = collate(items)
    assert isinstance(batch, TrainBatch) and batch.aug_state is None
    assert batch.video.shape == (3, 2, 3, 2, 4, 4) and batch.labels.shape == (3, 2)
    assert batch.index.tolist() == [10, 11, 12]
    assert batch.skipped == [("bad1.mp4", "why"), ("bad2.mp4", "why")]
    video, labels, states = batch.clips()  # item-major: item 0's clips, then item 1's...
    assert video.shape == (6, 3, 2, 4, 4) and states is None
    assert labels.tolist() == [0, 5, 1, 6, 2, 7]
    assert video[:, 0, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_data_loader_with_workers_end_to_end(files):
    names = ("wide", "missing", "tall", "empty", "short", "cut")
    train = make_dataset(files, names)
    loader = DataLoader(train, batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [b.video.shape for b in batches] == [(3, 1, 3, 4, 32, 32)] * 2
    skipped = {path for b in batches for path, _ in b.skipped}
    assert skipped == {files["missing"], files["empty"], files["cut"]}
    # The workers draw exactly what the main process draws.
    assert torch.equal(batches[0].video[0], train[0].video)

    test = make_dataset(files, names, mode="test", test_crops=1)
    batch = next(iter(DataLoader(test, batch_size=6, num_workers=2, collate_fn=collate)))
    assert batch["video"].shape == (6, 2, 3, 4, 32, 32)
    assert batch["ok"].tolist() == [True, False, True, False, True, False]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a GPU")
def test_a_pinning_loader_pins_training_batches(files):
    data = make_dataset(files, GOOD, repeated_aug=2, device_augment=True)
    batch = next(iter(DataLoader(data, batch_size=3, collate_fn=collate, pin_memory=True)))
    assert isinstance(batch, TrainBatch)
    assert all(t.is_pinned() for t in (batch.video, batch.labels, batch.index, batch.aug_state))


def test_set_epoch_reaches_persistent_workers(files):
    data = make_dataset(files, GOOD)
    loader = DataLoader(data, batch_size=3, num_workers=2, collate_fn=collate,
                        persistent_workers=True)
    epoch0 = next(iter(loader)).video
    data.set_epoch(1)
    epoch1 = next(iter(loader)).video
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch1[0], data[0].video)


# ----------------------------------------------------------------------------- config


def test_build_dataset_reads_the_split_annotation_file(files, tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text(f"{Path(files['wide']).name} 0\n{Path(files['tall']).name} 1\n")
    cfg = DataConfig(train=str(listing), test=str(listing), root=str(Path(files["wide"]).parent),
                     num_frames=4, frame_interval=2, input_size=32, short_side=40)
    train = build_dataset(cfg, "train")
    assert train.mode == "train" and len(train) == 2
    assert train[1].labels.tolist() == [1] and train[1].video.shape == (1, 3, 4, 32, 32)
    assert build_dataset(cfg, "test").mode == "test"
    with pytest.raises(DataError, match="no annotation file for the val split: set data.val"):
        build_dataset(cfg, "val")


def test_a_wrong_root_or_list_is_one_line_naming_the_key(files, tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"{Path(files[n]).name} 0\n" for n in ("wide", "tall", "missing")))
    root = str(Path(files["wide"]).parent)
    good = DataConfig(train=str(listing), root=root, num_frames=4, input_size=32, short_side=40)
    assert len(build_dataset(good, "train")) == 3  # one missing file is the bad-file policy's
    cases = [
        (dict(train=str(tmp_path / "nope.txt")), f"data.train: {tmp_path / 'nope.txt'}: no such "
         "annotation file"),
        (dict(root=str(tmp_path / "elsewhere")), f"data.root: {tmp_path / 'elsewhere'}: no such "
         "folder"),
        (dict(root=str(tmp_path)), f"data.train ({listing}): none of 3 videos checked exists "
         f"(e.g. {tmp_path / 'wide.mp4'}); is data.root ({tmp_path}) right?"),
    ]
    for change, message in cases:
        with pytest.raises(DataError) as info:
            build_dataset(dataclasses.replace(good, **change), "train")
        assert str(info.value) == message


def test_config_normalises_yaml_values_and_rejects_bad_ones():
    cfg = DataConfig(area_range=[0.2, 1], flip_label_map={"3": "4"})
    assert cfg.area_range == (0.2, 1.0) and cfg.flip_label_map == {3: 4}
    with pytest.raises(ValueError, match="data.sampling must be one of 'dense', 'uniform'"):
        DataConfig(sampling="sparse")
    with pytest.raises(ValueError, match="data.test_crops must be 1 or 3"):
        DataConfig(test_crops=2)
    with pytest.raises(ValueError, match=r"data.short_side \(200\) must be >= data.input_size"):
        DataConfig(short_side=200)
    with pytest.raises(ValueError, match="data.normalize must be one of"):
        DataConfig(normalize="kinetics")


@pytest.mark.parametrize(("change", "message"), [
    (dict(backend="pyvav"), "data.backend must be one of 'pyav', 'decord', 'frames', got 'pyvav'"),
    (dict(format="csv"), "data.format must be one of 'auto', 'mmaction', "),
    (dict(frame_template="img.jpg"), "data.frame_template: frame template needs exactly one"),
    (dict(area_range=(0.5, 0.2)), "data.area_range must be 0 < min <= max <= 1"),
    (dict(ratio_range=(0, 1)), "data.ratio_range must be 0 < min <= max"),
    (dict(randaugment_m=11), "data.randaugment_m must be in 0-10"),
    (dict(num_workers=-1), "data.num_workers must be >= 0"),
])
def test_every_choice_is_validated_before_any_video_is_read(change, message):
    with pytest.raises(ValueError) as info:
        DataConfig(**change)
    assert str(info.value).startswith(message)
    # Through the config layer: a one-line ConfigError naming the key, not "too many
    # unreadable videos" after 50 replacements.
    from aim_video.engine.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="data."):
        config_from_dict({"data": dict(change)})


def test_the_decord_backend_needs_decord(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "decord" else real(name, *a))
    with pytest.raises(ValueError, match=r"decord is not installed: pip install 'aim-video\[deco"):
        DataConfig(backend="decord")


# ----------------------------------------------------------------------------- pinned numbers


@pytest.fixture(scope="module")
def png_videos(tmp_path_factory) -> list[str]:
    """Three frame folders of PNGs (lossless: the decoded frames are the same everywhere), each
    a left-to-right ramp with some texture, so that a flip shows."""
    from PIL import Image

    root = tmp_path_factory.mktemp("frames")
    paths = []
    for i, (height, width) in enumerate([(48, 64), (64, 48), (40, 56)]):
        folder = root / f"v{i}"
        folder.mkdir()
        ramp = np.linspace(0, 180, width).reshape(1, width, 1)
        base = ramp + np.random.default_rng(100 + i).integers(0, 60, (height, width, 3))
        for t in range(12):
            frame = np.clip(base + 9 * t, 0, 255).astype(np.uint8)
            Image.fromarray(frame).save(folder / f"img_{t + 1:05d}.png")
        paths.append(str(folder))
    return paths


PINNED = {
    # settings -> per clip of the collated batch: (label, mean, column-weighted mean, one pixel)
    "randaugment, jitter, erasing, 2 clips": (
        {"randaugment_n": 2, "randaugment_m": 9, "color_jitter": 0.4, "random_erasing": 0.5,
         "repeated_aug": 2},
        [(0, 0.918318, 0.31475, -0.171828), (1, 0.142572, -0.074268, 0.105573),
         (0, 1.349201, -0.398415, 1.930577), (0, 1.083019, -0.195932, 0.616574),
         (2, 0.388046, 0.269217, -0.682829), (2, 0.666751, 0.199943, 0.236973)],
    ),
    "flip, jitter": (
        {"color_jitter": 0.3},
        [(0, 0.412086, 0.245167, -0.97483), (0, 1.17267, -0.410584, 1.915977),
         (2, 1.043741, 0.231381, 0.222373)],
    ),
}


def clip_summary(video: torch.Tensor) -> list[tuple[float, float, float]]:
    """Per clip: mean, mean weighted by column (a flip changes it), the first pixel."""
    columns = torch.linspace(-1, 1, video.shape[-1], dtype=torch.float64)
    video = video.double()
    return [
        (float(clip.mean()), float((clip * columns).mean()), float(clip[0, 0, 0, 0]))
        for clip in video
    ]


@pytest.mark.parametrize("name", PINNED)
def test_a_training_batch_is_pinned_by_its_seed(png_videos, name):
    """The numbers of a seeded training batch, recorded once: a refactoring of the pipeline or
    the items must draw the same random numbers in the same order. Tolerance: a resize kernel
    that rounds one uint8 level differently moves a normalised value by 1/66.63 = 0.015 (the
    smallest CLIP std); a different draw (crop, flip, op, factor) moves these by far more."""
    settings, expected = PINNED[name]
    records = [VideoRecord(path, i) for i, path in enumerate(png_videos)]
    config = DataConfig(backend="frames", frame_template="img_{:05d}.png", num_frames=4,
                        frame_interval=2, input_size=32, short_side=40, resize_in_decoder=False,
                        flip_label_map={0: 1, 1: 0}, num_workers=0, seed=7, **settings)
    data = VideoDataset(Annotations(records, ["a", "b", "c"]), config)
    data.set_epoch(2)
    video, labels, _ = collate([data[i] for i in range(len(data))]).clips()  # (B·K, ...)
    summary = clip_summary(video)
    assert labels.tolist() == [label for label, *_ in expected]
    np.testing.assert_allclose(summary, [values for _, *values in expected], atol=0.015)
