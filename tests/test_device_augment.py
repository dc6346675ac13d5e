"""The training data path: device augmentation gives exactly the host's clips, repeated
augmentation decodes once per video, the decoder does the short-side scaling, and a run with
device augmentation trains the same weights."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from test_engine_support import tiny_config

from aim_video.data import dataset as dataset_module
from aim_video.data.annotations import Annotations, VideoRecord
from aim_video.data.dataset import DataConfig, DeviceAugment, VideoDataset, collate
from aim_video.engine.checkpoint import read_training_checkpoint
from aim_video.engine.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.py

FAST = {"train__plots": False, "eval__splits": [], "optim__epochs": 1}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("videos")
    paths = []
    for i, (height, width) in enumerate([(48, 64), (64, 48), (40, 40)]):
        rng = np.random.default_rng(i)
        frames = rng.integers(0, 256, (24, height, width, 3), dtype=np.uint8)
        path = root / f"v{i}.mp4"
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=12)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast", "threads": "1"}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(str(path))
    return paths


def dataset(videos, **overrides) -> VideoDataset:
    settings = dict(num_frames=4, frame_interval=3, input_size=32, short_side=36,
                    num_workers=0, flip_label_map={0: 1, 1: 0})
    settings.update(overrides)
    records = [VideoRecord(path, i % 3) for i, path in enumerate(videos)]
    return VideoDataset(Annotations(records, ["a", "b", "c"]), DataConfig(**settings))


AUGMENTATIONS = {
    "flip": {},
    "jitter+erasing": {"color_jitter": 0.4, "random_erasing": 1.0},
    "randaugment+erasing": {"randaugment_n": 2, "randaugment_m": 9, "random_erasing": 0.5},
    "everything, 3 clips": {"randaugment_n": 2, "randaugment_m": 9, "color_jitter": 0.4,
                            "random_erasing": 0.5, "repeated_aug": 3},
    "no flip, 2 clips": {"flip": 0.0, "color_jitter": 0.2, "repeated_aug": 2},
}


@pytest.mark.parametrize("overrides", AUGMENTATIONS.values(), ids=AUGMENTATIONS.keys())
def test_device_augmentation_equals_the_host_pipeline(videos, overrides):
    host = dataset(videos, **overrides)
    device = dataset(videos, device_augment=True, **overrides)
    finish = DeviceAugment(device.train_transform)
    flipped_labels = 0
    for epoch in range(3):
        host.set_epoch(epoch)
        device.set_epoch(epoch)
        wanted_video, wanted_labels, _ = collate([host[i] for i in range(len(host))]).clips()
        video, labels_in, states = collate([device[i] for i in range(len(device))]).clips()
        assert video.dtype == torch.uint8 and video.shape[1:] == (4, 32, 32, 3)
        out, labels = finish(video, labels_in, states)
        assert out.dtype == torch.float32 and out.shape == wanted_video.shape
        assert torch.equal(out, wanted_video)
        assert torch.equal(labels, wanted_labels)
        flipped_labels += int((labels != labels_in).sum())
    if overrides.get("flip", 0.5) > 0 and "randaugment_n" not in overrides:
        assert flipped_labels > 0  # the label map ran on the device


@pytest.mark.parametrize("overrides", AUGMENTATIONS.values(), ids=AUGMENTATIONS.keys())
def test_device_augmentation_keeps_host_tensors_out_of_device_work(videos, overrides):
    # The meta device refuses host tensors as a GPU does (a host tensor in device work crashed
    # GPU training once): the batch and its labels must come out on the video's device.
    data = dataset(videos, device_augment=True, **overrides)
    video, labels, states = collate([data[i] for i in range(3)]).clips()  # (B·K, ...)
    out, new_labels = DeviceAugment(data.train_transform)(video.to("meta"), labels, states)
    assert out.device.type == new_labels.device.type == "meta"
    assert out.shape == (len(video), 3, 4, 32, 32)


def test_device_items_ship_uint8_crops_and_generator_states(videos):
    item = dataset(videos, device_augment=True)[0]
    assert item.video.dtype == torch.uint8 and item.video.shape == (1, 4, 32, 32, 3)
    assert item.aug_state.dtype == torch.uint8 and item.aug_state.shape == (1, 5056)
    item = dataset(videos, device_augment=True, repeated_aug=2)[1]
    assert item.video.shape == (2, 4, 32, 32, 3) and item.aug_state.shape == (2, 5056)
    batch = collate([item, item])
    assert batch.aug_state.shape == (2, 2, 5056)
    # Test items are never device-augmented: the evaluator wants finished views.
    config = DataConfig(num_frames=4, input_size=32, short_side=36, device_augment=True)
    test = VideoDataset(Annotations([VideoRecord(videos[0], 0)], ["a"]), config, mode="test")
    assert test[0]["video"].dtype == torch.float32 and "aug_state" not in test[0]


class Spy:
    """Counts `open_video` calls and records every `read` call's indices and arguments."""

    def __init__(self, monkeypatch):
        self.opens, self.reads = 0, []
        real = dataset_module.open_video

        def spying_open(*args, **kwargs):
            self.opens += 1
            reader = real(*args, **kwargs)
            read = reader.read

            def spying_read(indices, **kw):
                self.reads.append((list(indices), kw))
                return read(indices, **kw)

            reader.read = spying_read
            return reader

        monkeypatch.setattr(dataset_module, "open_video", spying_open)


def test_repeated_augmentation_decodes_each_video_once(videos, monkeypatch):
    spy = Spy(monkeypatch)
    item = dataset(videos, repeated_aug=4, frame_interval=5)[0]
    assert item.video.shape == (4, 3, 4, 32, 32)
    assert spy.opens == 1 and len(spy.reads) == 1
    indices, _ = spy.reads[0]
    assert len(indices) == 16  # 4 clips x 4 frames in the one call
    assert len({tuple(indices[i : i + 4]) for i in range(0, 16, 4)}) > 1  # different clips


def test_training_clips_are_scaled_in_the_decoder(videos, monkeypatch):
    spy = Spy(monkeypatch)
    dataset(videos)[0]
    dataset(videos, resize_in_decoder=False)[0]
    assert [kw for _, kw in spy.reads] == [{"short_side": 36}, {"short_side": None}]


def test_training_with_device_augmentation_gives_the_same_weights(synthetic, backbone, tmp_path):
    """On the CPU the device path is exact, so the whole run must match bit for bit."""
    noisy = {"data__color_jitter": 0.3, "data__random_erasing": 0.5, **FAST}
    runs = [
        train(tiny_config(synthetic, tmp_path / str(flag), backbone, data__device_augment=flag,
                          **noisy), progress=False)
        for flag in (False, True)
    ]
    host, device = (read_training_checkpoint(run.last_checkpoint)["model"] for run in runs)
    assert host.keys() == device.keys()
    for name, tensor in host.items():
        assert torch.equal(device[name], tensor), name
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]
