"""The training data path: device augmentation gives exactly the host's clips, repeated
augmentation decodes once per video, the decoder does the short-side scaling, and a run with
device augmentation trains the same weights."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
from test_engine_support import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

from aim_video.data import dataset as dataset_module
from aim_video.data import transforms as transforms_module
from aim_video.data.annotations import Annotations, VideoRecord
from aim_video.data.dataset import (
    DataConfig,
    DeviceAugment,
    VideoDataset,
    build_train_transform,
    collate,
)
from aim_video.engine.checkpoint import read_training_checkpoint
from aim_video.engine.config import load_config
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


# ----------------------------------------------------------------------------- host-device waits


class HostDeviceTraffic(TorchDispatchMode):
    """Counts, for work on a device that is not the CPU, every point where host and device meet.

    On a GPU the host runs ahead of the device, queueing kernels; it only waits for the device
    where it needs something the device holds or must hand the device host memory that may
    change. The ops that do that, seen here on the meta device (which has no data, so every
    one of them would be a real copy or read on a GPU):

    * a copy between the host and the device (`aten._to_copy`, `aten.copy_` with one side on
      the CPU): a transfer. It is also a wait unless it is non-blocking from pinned memory:
      torch makes a blocking copy with `cudaMemcpy` + a stream synchronisation, and CUDA may
      stage pageable memory synchronously;
    * a read of device values on the host (`aten._local_scalar_dense`, behind `.item()` and
      `.tolist()`; ops whose output size depends on values: `nonzero`, `masked_select`,
      `unique`; `aten._linalg_check_errors`, which reads the `info` of `linalg.inv`): a wait;
    * `torch.tensor(data, device=...)`, which copies host data in blocking mode inside torch,
      where a dispatch mode does not see it (the test patches `torch.tensor` to count it):
      a transfer and a wait.
    """

    READS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_linalg_check_errors")

    def __init__(self, pinned: set[int]) -> None:
        super().__init__()
        self.pinned = pinned  # data pointers of host tensors pinned while counting
        self.transfers = self.waits = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        tensors = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        out = func(*args, **kwargs)
        outputs = [o for o in pytree.tree_leaves(out) if isinstance(o, torch.Tensor)]
        devices = {t.device.type for t in tensors + outputs}
        if name in ("_to_copy", "copy_") and "cpu" in devices and len(devices) > 1:
            self.transfers += 1
            source = args[1] if name == "copy_" else args[0]
            from_pinned = source.device.type == "cpu" and source.data_ptr() in self.pinned
            if not (kwargs.get("non_blocking", False) and from_pinned):
                self.waits += 1
        elif name in self.READS and devices - {"cpu"}:
            self.waits += 1
        return out


def count_traffic(run) -> tuple[int, int]:
    """(transfers, waits) of `run()`, with the meta device standing in for a GPU."""
    pinned: set[int] = set()
    real_tensor = torch.tensor
    counter = HostDeviceTraffic(pinned)

    def spying_tensor(data, *args, device=None, **kwargs):
        if device is not None and torch.device(device).type != "cpu":
            counter.transfers += 1
            counter.waits += 1
        return real_tensor(data, *args, device=device, **kwargs)

    def spying_pin(self, *args, **kwargs):  # CPU has no pinned memory: mark the buffer instead
        pinned.add(self.data_ptr())
        return self

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "tensor", spying_tensor)
        patch.setattr(torch.Tensor, "pin_memory", spying_pin)
        # Code that pins for CUDA asks `is_cuda`: the meta device plays the GPU.
        patch.setattr(torch.Tensor, "is_cuda", property(lambda t: t.device.type != "cpu"))
        with counter:
            run()
    return counter.transfers, counter.waits


def recipe_batch(preset: str, size: int) -> tuple[DeviceAugment, torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
    """A preset's device augmentation and a meta batch of `size` clips of its shape."""
    cfg = load_config(preset).data
    video = torch.empty(size, cfg.num_frames, cfg.input_size, cfg.input_size, 3,
                        dtype=torch.uint8, device="meta")
    labels = torch.arange(size) % 174
    states = torch.stack([torch.Generator().manual_seed(i).get_state() for i in range(size)])
    return DeviceAugment(build_train_transform(cfg)), video, labels, states


# ViT-L/14 Kinetics: flip, colour jitter (all four), normalise on the device; SSv2: normalise
# and random erasing (its noise goes to the device too).
@pytest.mark.parametrize("preset", ["k400_vitl14_16f", "ssv2_vitb16_8f"])
def test_device_augmentation_never_waits_for_the_device_whatever_the_batch(preset):
    # Per clip this was 7 blocking copies and a read-back of linalg.inv's error flag with the
    # Kinetics jitter. The first batch on a device may make its constants (mean, std, luma
    # weights); every later batch, of any size, is two non-blocking copies from pinned memory
    # (the drawn parameters, the labels) and no wait.
    first, later = {}, {}
    for size in (1, 8, 32):
        transforms_module._constant.cache_clear()  # a fresh run: no constants on the device yet
        finish, video, labels, states = recipe_batch(preset, size)
        first[size] = count_traffic(lambda: finish(video, labels, states))
        later[size] = count_traffic(lambda: finish(video, labels, states))
    assert later == {1: (2, 0), 8: (2, 0), 32: (2, 0)}
    assert first[1] == first[8] == first[32]
