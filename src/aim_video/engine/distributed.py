"""Where computation runs: devices, precision, and torchrun's process group (setup, sharding,
reductions). Single-process is the case of world size 1, so callers never branch on
"distributed or not".

`torchrun --nproc_per_node N -m aim_video.cli train ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
NCCL is used on GPUs and gloo on CPUs. Only rank 0 writes files and logs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from aim_video.data.pool import usable_cpus
from aim_video.engine.config import ConfigError, check_device_name


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int  # global rank
    world_size: int  # processes in the job
    local_rank: int  # rank on this machine (picks the GPU)
    device: torch.device  # where this process computes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0, key: str = "device") -> torch.device:
    """`auto` -> this process's CUDA GPU if there is one, else the CPU.

    `cuda` (and `auto` on a GPU machine) is GPU `local_rank` when the process sees several, and
    GPU 0 when it sees one: the launcher gave each process a GPU of its own (SLURM
    `--gpus-per-task=1`, one GPU per Kubernetes pod), whatever its LOCAL_RANK.

    Raises:
        ConfigError: `name` is not one of `DEVICE_CHOICES`, or names a device this machine
            lacks (`key` names the setting in the message), or several processes would share
            a GPU (NCCL refuses two ranks on one device).
    """
    check_device_name(name, key)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is None and count == 1:
            device = torch.device("cuda", 0)
        elif device.index is None:
            if local_rank >= count > 0:
                raise ConfigError(
                    f"{key}: this process has LOCAL_RANK {local_rank} but torch sees {count} "
                    f"CUDA GPUs here, so processes would share one: start at most {count} "
                    "processes per machine (torchrun --nproc_per_node), or show each process "
                    "one GPU of its own (CUDA_VISIBLE_DEVICES)")
            device = torch.device("cuda", local_rank)
        if device.index >= count:
            raise ConfigError(f"{key}: {name!r} needs CUDA GPU {device.index}, but torch sees "
                              f"{count} CUDA GPU(s) here; use auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}: 'mps' needs an Apple GPU that torch can use; use auto or cpu")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.precision` on `device`; None means plain fp32.

    `auto` is bf16 on a CUDA GPU that computes it natively (compute capability 8.0 on, and
    ROCm GPUs), fp16 on older ones (V100, T4: the caller's grad scaler then runs), and fp32 on
    the CPU. Torch's own `is_bf16_supported()` says yes to older GPUs too, where bf16 is
    emulated (slow matmuls, no fused attention kernel), and asks the current GPU, not `device`.
    """
    if precision == "auto":
        if device.type != "cuda":
            return None
        with torch.cuda.device(device):
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def cpu_threads(data_workers: int, requested: int | None = None) -> int:
    """Torch's intra-op threads for computing on the CPU beside `data_workers` loader processes.

    By default the CPUs this process may use, shared among torchrun's processes on the machine,
    less one per data worker, and never more than torch would use anyway (`OMP_NUM_THREADS`,
    `torch.set_num_threads`): compute threads that contend with the decoding workers for the
    cores cost more than they gain (`benchmarks/cpu_threads.py`, figures in docs/benchmarks.md).
    """
    if requested is not None:
        return requested
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(torch.get_num_threads(), usable_cpus() // local - data_workers))


@contextlib.contextmanager
def compute_threads(device: torch.device, data_workers: int,
                    requested: int | None = None) -> Iterator[int | None]:
    """Runs the block with `cpu_threads(data_workers, requested)` intra-op threads when `device`
    is the CPU, yielding that number, then restores the caller's setting; on other devices it
    changes nothing and yields None."""
    if device.type != "cpu":
        yield None
        return
    previous = torch.get_num_threads()
    threads = cpu_threads(data_workers, requested)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


# cuBLAS's workspace setting for reproducible matmuls (CUDA 10.2 on); torch refuses cuBLAS calls
# under deterministic algorithms without it, and cuBLAS reads it when it starts.
CUBLAS_DETERMINISTIC = ":4096:8"


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Runs the block with deterministic GPU kernels when `enabled` (`train.deterministic`),
    then restores the caller's settings; enter it before anything initialises CUDA.

    Sets CUBLAS_WORKSPACE_CONFIG (unless the caller chose a value), turns on
    torch.use_deterministic_algorithms (an op without a deterministic kernel then raises) and
    turns off cuDNN's autotuning, which may pick another kernel in each run.
    """
    if not enabled:
        yield
        return
    env_before = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    algorithms_before = torch.are_deterministic_algorithms_enabled()
    benchmark_before = torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark_before
        torch.use_deterministic_algorithms(algorithms_before)
        if env_before is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def loader_worker_init(worker_id: int, parent: int) -> None:
    """A DataLoader `worker_init_fn` (bind `parent=os.getpid()` with functools.partial): the
    worker dies with the process that started it, without a traceback.

    A worker hands each batch's shared memory to the main process over a socket (a thread of
    the worker's, from multiprocessing's resource sharer). When the main process is killed in
    the middle of that exchange (likely on a GPU, where the pin-memory thread receives batches
    all the time), that thread prints a `ConnectionResetError` traceback into the run's log,
    and the orphaned worker lives on for seconds. Here such connection errors are not printed
    (the receiving side reports its own), and on Linux the kernel kills the worker when its
    parent thread ends (loaders are iterated from the thread that lives as long as the run).
    """
    del worker_id
    hook = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not issubclass(kind, (ConnectionError, EOFError)):
            hook(kind, value, tb)

    sys.excepthook = excepthook
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)


def init_distributed(device: str = "auto") -> DistEnv:
    """Joins the torchrun job described by the environment (or a job of one).

    A process computing on a GPU makes it the current one (torch.cuda.set_device), as the
    loader's pin-memory thread and anything else that asks for "the" GPU use that.

    Args:
        device: `auto`, `cpu`, `cuda` or `cuda:N` (N is ignored under torchrun: LOCAL_RANK wins).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and device not in ("auto", "cpu", "cuda"):
        device = "cuda"  # one GPU per process, chosen by LOCAL_RANK
    dev = resolve_device(device, local_rank, key="train.device")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup(env: DistEnv) -> None:
    """Leaves the process group (when this process joined one)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(env: DistEnv, values: list[float]) -> list[float]:
    """Sums a few numbers over all processes (float64, on the compute device)."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_flag(env: DistEnv, flag: bool) -> bool:
    """Rank 0's decision, shared with every process (e.g. a time-based checkpoint)."""
    if not env.distributed:
        return flag
    t = torch.tensor([int(flag)], device=env.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (picklable Python objects)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_indices(length: int, env: DistEnv) -> list[int]:
    """Indices this process evaluates: every `world_size`-th from `rank`.

    Unlike DistributedSampler no index is repeated to even out the shards, so after a gather
    every video is counted exactly once.
    """
    return list(range(env.rank, length, env.world_size))


class EpochSampler(Sampler[int]):
    """A resumable, shardable training sampler: a fresh permutation per (seed, epoch).

    Like DistributedSampler, the permutation is padded to a multiple of the world size and
    process r takes every world_size-th index from r. `set_epoch(epoch, skip)` drops the first
    `skip` indices of this process's share, so a run resumed mid-epoch sees exactly the
    batches it had not consumed, without decoding the others.
    """

    def __init__(self, length: int, env: DistEnv, seed: int, shuffle: bool = True) -> None:
        if length < 1:
            raise ValueError("cannot sample from an empty data set")
        self.length = length
        self.rank = env.rank
        self.world_size = env.world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    @property
    def per_process(self) -> int:
        """Indices each process gets per epoch (before skipping)."""
        return -(-self.length // self.world_size)

    def _share(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        padded = self.per_process * self.world_size
        order = (order * -(-padded // self.length))[:padded]  # repeats when length < world
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._share()[self.skip :])

    def __len__(self) -> int:
        return max(self.per_process - self.skip, 0)
