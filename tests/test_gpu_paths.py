"""What runs only on GPUs, checked without one: torch's CUDA functions replaced by a fake of a
few GPUs (`FakeCuda`), and process-count changes with two `gloo` processes on the CPU.

Each test states the GPU setup it stands for: a resume on fewer or other GPUs, a V100 or T4
beside an A100, one GPU per process under SLURM or Kubernetes, a single process on `cuda:1`,
`train.save_every_minutes` under torchrun, `train.deterministic`, `train.compile`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from test_engine_support import tiny_config

from aim_video.engine import checkpoint as ckpt
from aim_video.engine import distributed
from aim_video.engine.config import ConfigError
from aim_video.engine.optim import head_lr
from aim_video.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.py

train_module = importlib.import_module("aim_video.engine.train")  # `train` is also the function

FAST = {"train__plots": False, "eval__splits": []}
CPU = distributed.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class FakeCuda:
    """GPUs of the given compute capabilities as torch.cuda's Python functions see them: the
    current device, each GPU's generator state, and the calls to set_device.

    torch's own `is_bf16_supported`, `torch.cuda.device` and `get_rng_state_all` /
    `set_rng_state_all` run unchanged on top of it.
    """

    def __init__(self, monkeypatch, capabilities: list[tuple[int, int]]) -> None:
        self.capabilities = capabilities
        self.current = 0
        self.set_devices: list[int] = []
        # A distinct generator state per GPU (real ones are byte tensors too).
        self.states = [torch.full((16,), 10 + i, dtype=torch.uint8)
                       for i in range(len(capabilities))]
        cuda, random = torch.cuda, importlib.import_module("torch.cuda.random")
        for module in (cuda, random):
            monkeypatch.setattr(module, "device_count", lambda: len(self.capabilities))
            monkeypatch.setattr(module, "get_rng_state", self.get_rng_state)
            monkeypatch.setattr(module, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(cuda, "set_device", self.set_device)
        monkeypatch.setattr(cuda, "get_device_properties", lambda d=None: SimpleNamespace(
            major=self.capabilities[self._index(d)][0]))
        monkeypatch.setattr(cuda, "get_device_capability",
                            lambda d=None: self.capabilities[self._index(d)])
        monkeypatch.setattr(cuda, "_check_bf16_tensor_supported", lambda d: True)  # emulated
        monkeypatch.setattr(cuda, "_exchange_device", self._exchange)
        monkeypatch.setattr(cuda, "_maybe_exchange_device", self._exchange)

    def _index(self, device) -> int:
        if device is None or device == "cuda":
            return self.current
        if isinstance(device, int):
            return device
        index = torch.device(device).index
        return self.current if index is None else index

    def _exchange(self, index: int) -> int:
        previous, self.current = self.current, (self.current if index < 0 else index)
        return previous

    def set_device(self, device) -> None:
        self.current = self._index(device)
        self.set_devices.append(self.current)

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()  # IndexError past the last GPU, as torch

    def set_rng_state(self, state: torch.Tensor, device="cuda") -> None:
        self.states[self._index(device)] = state.clone()


A100, V100, T4 = (8, 0), (7, 0), (7, 5)


def cuda(index: int) -> torch.device:
    return torch.device("cuda", index)


# ------------------------------------------------------------------------------------ RNG
def test_a_process_restores_its_own_gpus_generator_on_fewer_or_other_gpus(monkeypatch):
    # Rank 1 of a 2-GPU run saves; it resumes alone on a machine showing one GPU.
    two = FakeCuda(monkeypatch, [A100, A100])
    saved = ckpt.rng_state(cuda(1))
    own = two.states[1]
    one = FakeCuda(monkeypatch, [A100])
    ckpt.set_rng_state(saved, cuda(0))  # the old restore of every GPU: an IndexError here
    assert torch.equal(one.states[0], own)

    # The same count of GPUs, mapped otherwise: the process now on GPU 0 gets its own state,
    # not GPU 0's of the saved run, and GPU 1 is left alone.
    other = FakeCuda(monkeypatch, [A100, A100])
    untouched = other.states[1].clone()
    ckpt.set_rng_state(saved, cuda(0))
    assert torch.equal(other.states[0], own) and torch.equal(other.states[1], untouched)

    # A CPU run on a GPU machine neither saves nor restores a GPU's state.
    assert ckpt.rng_state(torch.device("cpu"))["cuda"] is None


# ------------------------------------------------------------------------------------ precision
def test_auto_precision_is_bf16_only_where_the_runs_own_gpu_computes_it(monkeypatch):
    # torch's is_bf16_supported() says yes to a V100 (emulation) and asks the current GPU.
    FakeCuda(monkeypatch, [A100, V100])
    assert distributed.autocast_dtype("auto", cuda(1)) == torch.float16
    assert distributed.autocast_dtype("auto", cuda(0)) == torch.bfloat16
    assert torch.cuda.current_device() == 0  # asking about GPU 1 left the current one
    FakeCuda(monkeypatch, [T4])
    assert distributed.autocast_dtype("auto", cuda(0)) == torch.float16
    assert distributed.autocast_dtype("auto", torch.device("cpu")) is None


# ------------------------------------------------------------------------------------ devices
@pytest.fixture
def no_process_group(monkeypatch):
    """torchrun's environment without joining a group: the calls are recorded instead."""
    joined: list[tuple] = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: joined.append((backend, kw)))
    return joined


def torchrun_env(monkeypatch, local_rank: int, world: int = 8) -> None:
    for key, value in (("RANK", local_rank), ("WORLD_SIZE", world), ("LOCAL_RANK", local_rank)):
        monkeypatch.setenv(key, str(value))


def test_one_gpu_per_process_runs_on_the_gpu_it_sees(monkeypatch, no_process_group):
    # SLURM --gpus-per-task=1 or one GPU per pod: LOCAL_RANK 3, a single visible GPU.
    fake = FakeCuda(monkeypatch, [A100])
    torchrun_env(monkeypatch, local_rank=3)
    env = distributed.init_distributed("auto")
    assert env.device == cuda(0) and env.local_rank == 3
    assert fake.set_devices == [0] and no_process_group[0][0] == "nccl"


def test_a_node_of_gpus_gives_each_local_rank_its_own(monkeypatch, no_process_group):
    fake = FakeCuda(monkeypatch, [A100] * 8)
    torchrun_env(monkeypatch, local_rank=3)
    assert distributed.init_distributed("cuda").device == cuda(3) and fake.set_devices == [3]
    # More processes than GPUs would put two on one GPU (NCCL refuses): one line says so.
    FakeCuda(monkeypatch, [A100] * 4)
    torchrun_env(monkeypatch, local_rank=5)
    with pytest.raises(ConfigError, match=r"^train.device: .*LOCAL_RANK 5 .* 4 CUDA GPUs") as err:
        distributed.init_distributed("auto")
    assert "\n" not in str(err.value)


def test_a_single_process_on_a_numbered_gpu_makes_it_the_current_one(monkeypatch):
    # The loader's pin-memory thread and the precision check use the current GPU.
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    fake = FakeCuda(monkeypatch, [A100, V100])
    env = distributed.init_distributed("cuda:1")
    assert env.device == cuda(1) and fake.set_devices == [1] and torch.cuda.current_device() == 1


# ------------------------------------------------------------------------------------ cadence
def test_the_clock_save_costs_one_broadcast_per_twenty_steps(synthetic, backbone, tmp_path,
                                                            monkeypatch):
    built = train_module.Trainer(tiny_config(synthetic, tmp_path, backbone,
                                             train__save_every_minutes=10, **FAST), CPU, False)
    built.env = distributed.DistEnv(rank=0, world_size=2, local_rank=0, device=built.env.device)
    broadcasts = []
    monkeypatch.setattr(train_module, "broadcast_flag",
                        lambda env, flag: broadcasts.append(built.state.global_step) or flag)
    built._last_save_time -= 11 * 60  # rank 0's clock: a save is due
    due = []
    for step in range(1, 41):
        built.state.global_step = step
        due.append(built._save_due())
    assert broadcasts == [20, 40]  # was one broadcast (and a host wait) every step
    assert [i + 1 for i, d in enumerate(due) if d] == [20, 40]


# ------------------------------------------------------------------------------------ settings
def test_deterministic_training_sets_torchs_switches_before_cuda_and_restores_them(
        synthetic, backbone, tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # a caller's autotuning
    seen: dict[str, tuple] = {}

    def switches():
        return (torch.are_deterministic_algorithms_enabled(),
                os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.backends.cudnn.benchmark)

    init, epoch = train_module.init_distributed, train_module.Trainer.train_epoch
    monkeypatch.setattr(train_module, "init_distributed",
                        lambda device: seen.setdefault("device", switches()) and init(device))
    monkeypatch.setattr(train_module.Trainer, "train_epoch",
                        lambda self: seen.setdefault("step", switches()) and epoch(self))
    for on, out in ((False, "off"), (True, "on")):
        seen.clear()
        train_module.train(tiny_config(synthetic, tmp_path / out, backbone, train__max_steps=1,
                                       train__deterministic=on, **FAST), progress=False)
        expected = (True, ":4096:8", False) if on else (False, None, True)
        assert seen == {"device": expected, "step": expected}  # set before CUDA could start
        assert switches() == (False, None, True)  # the caller's settings are back


def test_compiled_training_drops_the_short_last_batch(synthetic, backbone, tmp_path):
    # 8 training videos in batches of 3: a last batch of 2 would compile the model again.
    for compiled, steps in ((False, 3), (True, 2)):
        built = train_module.Trainer(tiny_config(synthetic, tmp_path, backbone,
                                                 optim__batch_size=3, train__compile=compiled,
                                                 **FAST), CPU, False)
        assert built.loader.drop_last is compiled and built.steps_per_epoch == steps
        assert {len(batch.index) for batch in built.loader} == ({3} if compiled else {3, 2})
    with pytest.raises(ConfigError, match="train.compile drops the short last batch"):
        train_module.Trainer(tiny_config(synthetic, tmp_path, backbone, optim__batch_size=9,
                                         train__compile=True, **FAST), CPU, False)
