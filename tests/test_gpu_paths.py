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


# ------------------------------------------------------------------------------------ world size
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _record(out: Path, rank: int) -> Iterator[None]:
    """Records, per process, each trained batch's video indices (with the epoch and the lr it
    trained at) and the epoch sums reduced at each epoch's end."""
    batch, reduce = train_module.Trainer._batch, train_module.all_reduce_sum
    log = out / f"record{rank}.jsonl"

    def write(entry: dict) -> None:
        with open(log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def recording_batch(self, b):
        write({"epoch": self.state.epoch, "step": self.state.global_step,
               "lr": head_lr(self.optimizer), "index": b.index.tolist()})
        return batch(self, b)

    def recording_reduce(env, values):
        total = reduce(env, values)
        write({"sums": total})
        return total

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module.Trainer, "_batch", recording_batch)
        patch.setattr(train_module, "all_reduce_sum", recording_reduce)
        yield


def _worker(rank: int, world: int, port: int, cfg, out: Path, resume) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with _record(out, rank):
        train_module.train(cfg, resume=resume, progress=False)


def _two_processes(cfg, out: Path, resume=None) -> None:
    # fork: the children start with torch imported, instead of importing it again.
    mp.start_processes(_worker, args=(2, _free_port(), cfg, out, resume), nprocs=2, join=True,
                       start_method="fork")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(out.glob("record*.jsonl"))
            for line in path.read_text().splitlines()]


def _check_epochs_and_schedule(records: list[dict], cfg) -> None:
    """Each epoch trained every one of the 8 videos once and summed 8 clips; each step's lr is
    the schedule of 2 epochs x 2 steps of 4 videos (warm-up 1 step, then the cosine)."""
    for epoch in (0, 1):
        seen = sorted(i for r in records if r.get("epoch") == epoch for i in r["index"])
        assert seen == list(range(8)), f"epoch {epoch + 1} trained videos {seen}"
    clips = [r["sums"][2] for r in records if "sums" in r]  # per process and epoch end
    assert len(clips) >= 2 and set(clips) == {8}
    floor = cfg.optim.min_lr / cfg.optim.lr
    for r in records:
        if "lr" in r:
            step = r["step"]
            factor = 1.0 if step == 0 else floor + (1 - floor) * 0.5 * (
                1 + math.cos(math.pi * (step - 1) / 3))
            assert r["lr"] == pytest.approx(cfg.optim.lr * factor, rel=1e-12), f"step {step}"


def test_a_two_process_run_resumes_as_one_and_one_as_two(synthetic, backbone, tmp_path):
    def config(out, accum, **extra):
        return tiny_config(synthetic, out, backbone, optim__accum_steps=accum, **FAST, **extra)

    # Two processes of 2 videos a step (4 per step), stopped mid-epoch 2 after 3 of 4 steps.
    two = tmp_path / "two"
    _two_processes(config(two, 1, train__max_steps=3), two)
    last, written = (two / "last.pt").read_bytes(), (two / "config.yaml").read_bytes()
    # Alone at 2 videos a step, the saved schedule and position would not fit: one line.
    with pytest.raises(UserError) as err:
        train_module.train(config(two, 1), resume="auto", progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{two / 'last.pt'} was written by 2 ")
    assert "optim.accum_steps=2" in message and (two / "last.pt").read_bytes() == last
    assert (two / "config.yaml").read_bytes() == written
    # Alone with 2 micro-batches a step (4 videos per step, as before) it goes on.
    with _record(two, 0):
        result = train_module.train(config(two, 2), resume="auto", progress=False)
    assert result.completed and result.global_step == 4
    _check_epochs_and_schedule(_records(two), config(two, 2))

    # One process of 4 videos a step, stopped mid-epoch 1, resumed as two of 2 each.
    one = tmp_path / "one"
    with _record(one, 0):
        train_module.train(config(one, 2, train__max_steps=1), progress=False)
    _two_processes(config(one, 1), one, resume="auto")
    _check_epochs_and_schedule(_records(one), config(one, 2))
