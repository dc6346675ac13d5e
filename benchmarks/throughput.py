"""Model throughput: training steps and inference in clips/s, peak memory, FLOPs, MFU, and the
speed-up over the reference implementation (same weights, same process, same settings).

Prints one JSON line per result (and writes it to `--out`):
    {"kind": "env", ...}       torch, device, threads, clock
    {"kind": "peak", ...}      measured matmul TFLOP/s per dtype (the MFU denominator is bf16's)
    {"kind": "check", ...}     ours vs reference logits on the same weights (same dtype)
    {"kind": "result", ...}    one (impl, arch, frames, batch, dtype, mode, compiled, recompute)
    {"kind": "speedup", ...}   ours / reference for the same case (recompute "nothing")
    {"kind": "profile", ...}   with --profile N: the N ops that took most time in one step
    {"kind": "estimate", ...}  with --estimate: device-free peak memory and eager op counts
    {"kind": "skipped", ...}   a case left out (time budget, out of memory)

Examples:
    python benchmarks/throughput.py --quick              # CPU, tiny configs, about a minute
    python benchmarks/throughput.py --device cuda --archs ViT-B/16 --frames 8 \\
        --batch-sizes 32 --dtypes bf16 --compile eager default
    python benchmarks/throughput.py --estimate --archs ViT-B/16 --frames 8 \\
        --batch-sizes 32 64 --modes train --recompute nothing mlp attention_mlp blocks

A training step is forward + cross-entropy + backward + AdamW on the trainable set (frozen
backbone), under autocast for bf16/fp16 (fp16 with a GradScaler); inference is a forward pass
under `torch.inference_mode`. Inputs are fixed random clips already on the device: this measures
the model, not data loading. Both implementations get identical steps, weights and inputs.

`--estimate` runs the same steps on fake tensors (no memory, no arithmetic) and reports the
peak of live tensor bytes, what the eager caching allocator would hold less its rounding: for
the reference it gives 6.8 / 25.0 / 49.4 GiB at batch 8 / 32 / 64 (ViT-B/16, 8 frames, fp16),
against the 6.9 / 25.1 / 49.5 GiB measured on an H100 (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from aim_video.engine.optim import FUSED_DEVICES
from aim_video.model import AIMConfig, AIMViT, ViTConfig, get_arch
from aim_video.model.config import ATTENTION_KERNELS
from aim_video.model.flops import forward_flops
from aim_video.model.layers import matmul_attention
from aim_video.model.vit import Recompute
from aim_video.weights import load_aim_checkpoint

# The reference model is test code (the ground truth the tests compare AIMViT with), not part of
# the package: it lives in the repository's tests folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import ReferenceAIM  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COMPILE_MODES = ("eager", "default", "reduce-overhead", "max-autotune")
# CLIP-shaped backbones small enough for a CPU; cpu-micro is for this script's tests.
CPU_ARCHS = {
    "cpu-micro": ViTConfig(width=64, layers=2, heads=2, patch_size=8, image_size=32),
    "cpu-tiny": ViTConfig(width=192, layers=4, heads=3, patch_size=16, image_size=112),
    "cpu-small": ViTConfig(width=384, layers=6, heads=6, patch_size=16, image_size=112),
}
NUM_CLASSES = 400
GIB = 2**30
# Ops that return views: no kernel, no bytes written (for the eager op counts of --estimate).
VIEW_OPS = frozenset(
    "view _unsafe_view t transpose permute expand as_strided unsqueeze squeeze select slice "
    "detach alias split split_with_sizes unbind chunk unflatten _reshape_alias".split()
)


@dataclass(frozen=True)
class Case:
    """One measured configuration."""

    impl: str  # "ours" | "reference"
    arch: str
    frames: int
    batch: int
    dtype: str
    mode: str  # "train" | "infer"
    compiled: str  # "eager" or a torch.compile mode
    recompute: str  # a Recompute value (ours only; the reference has none)
    temporal_attention: str = "sdpa"  # the temporal attention's kernel (ours only)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--archs", nargs="+", default=["ViT-B/16", "ViT-L/14"],
                   help=f"variant names or CPU configs ({', '.join(CPU_ARCHS)})")
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32])
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["bf16"])
    p.add_argument("--compile", nargs="+", choices=COMPILE_MODES, default=["eager", "default"],
                   help="eager and/or torch.compile modes (reduce-overhead = CUDA graphs)")
    p.add_argument("--modes", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    p.add_argument("--recompute", nargs="+", choices=[r.value for r in Recompute],
                   default=["nothing"], help="gradient checkpointing policies (ours, training)")
    p.add_argument("--temporal-attention", nargs="+", choices=ATTENTION_KERNELS,
                   default=["sdpa"], help="kernels of our temporal attention (the speed-up "
                                          "uses the first)")
    p.add_argument("--reference", choices=["all", "eager", "none"], default="all",
                   help="which cases also run the reference model")
    p.add_argument("--steps", type=int, default=10, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: process CPU time, fairer on a shared CPU (CPU runs only)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no new case after this many seconds (the grid runs in order)")
    p.add_argument("--paired", action="store_true",
                   help="speed-ups from alternating ours/reference steps (for a shared machine)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile one step and report its N most costly ops")
    p.add_argument("--attention-kernels", action="store_true",
                   help="no model: time the spatial and temporal attention calls alone at each "
                        "case's shapes, with each SDPA kernel and plain matmuls")
    p.add_argument("--estimate", action="store_true",
                   help="no timing: device-free peak memory and eager op counts of each case")
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke run on a tiny config (overrides the grid options)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON lines here")
    args = p.parse_args(argv)
    if args.quick:
        args.device, args.archs, args.frames, args.batch_sizes = "cpu", ["cpu-tiny"], [8], [2]
        # fp32 only: CPUs without bf16 units emulate bf16 matmuls (orders of magnitude slower).
        args.dtypes, args.compile, args.modes = ["fp32"], ["eager"], ["train", "infer"]
        args.recompute = [r.value for r in Recompute]
        args.steps, args.warmup, args.threads, args.clock, args.paired = 5, 1, 1, "cpu", True
    if args.clock == "cpu" and args.device != "cpu":
        p.error("--clock cpu measures CPU runs only")
    return args


# ============================================================================ measuring
class Recorder:
    """Prints JSON lines and mirrors them into a file."""

    def __init__(self, path: Path | None) -> None:
        self.file = path.open("w") if path else None

    def __call__(self, kind: str, **fields: object) -> dict:
        record = {"kind": kind, **fields}
        line = json.dumps(record)
        print(line, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()
        return record


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], object], steps: int, warmup: int, device: torch.device, clock: str = "wall"
) -> tuple[float, float]:
    """(median seconds per step, seconds of the warm-up, which includes any compilation).

    Each step is timed on its own (synchronised), and the median taken: a step slowed by
    something else on the machine does not move it.
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    start = now()
    for _ in range(warmup):
        fn()
    synchronize(device)
    warm = now() - start
    times = []
    for _ in range(steps):
        start = now()
        fn()
        synchronize(device)
        times.append(now() - start)
    return statistics.median(times), warm


def paired_speedup(
    pair: tuple[Case, Case], cfg: AIMConfig, weights: tuple[dict, dict], args: argparse.Namespace,
    device: torch.device,
) -> float:
    """Median over rounds of (reference step time / ours step time), the two stepping in turn.

    On a machine shared with other work the load changes between two separate measurements;
    alternating single steps exposes both models to the same load.
    """
    steps = []
    for case, state in zip(pair, weights):
        model = build(case, cfg, state, device)
        steps.append(make_step(model, case, random_clip(case, cfg, device),
                               fused_optimizer=device.type in FUSED_DEVICES, loss_scaling=True))
    for step in steps:
        for _ in range(args.warmup):
            step()
    ratios = []
    for _ in range(args.steps):
        ours, reference = (timed(step, 1, 0, device, args.clock)[0] for step in steps)
        ratios.append(reference / ours)
    torch._dynamo.reset()
    return statistics.median(ratios)


class PeakMemory:
    """Peak memory of a region: the CUDA allocator's peak (GiB), or on the CPU the growth of the
    resident set over its size at the start (GiB; Linux only, and only indicative)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.value = float("nan")

    @property
    def field(self) -> str:
        return "peak_mem_gib" if self.device.type == "cuda" else "rss_delta_gib"

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _return_free_heap()
            self.start = _proc_status_kib("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS (Linux >= 4.0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.value = torch.cuda.max_memory_allocated(self.device) / GIB
        else:
            self.value = (_proc_status_kib("VmHWM") - self.start) * 1024 / GIB


def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _return_free_heap() -> None:
    # glibc keeps freed memory mapped; without this a case would reuse the previous case's
    # pages and show no growth.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class LiveMemory(TorchDispatchMode):
    """Live bytes of the tensor storages made under it, their peak, and the ops that ran.

    Used on fake tensors (`FakeTensorMode`), which keep their Python objects as long as autograd
    holds them, so a storage is live exactly while some tensor on it is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}  # storage -> tensors alive on it
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0
        self.ops = self.written = 0  # non-view ops (eager kernels) and bytes they output

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if func.overloadpacket.__name__ not in VIEW_OPS:
            self.ops += 1
            self.written += sum(t.numel() * t.element_size() for t in tensors)
        for t in tensors:
            self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in self.refs:
            self.refs[key], self.sizes[key] = 0, storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self.refs[key] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.live -= self.sizes.pop(key)


def top_ops(step: Callable[[], None], device: torch.device, count: int) -> list[list]:
    """[op, milliseconds] of the `count` ops with the most self time (device time on CUDA)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        synchronize(device)
    field = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, field), reverse=True)
    return [[e.key, round(getattr(e, field) / 1e3, 3)] for e in events[:count]]


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, clock: str) -> float:
    """Measured dense matmul throughput: the MFU denominator, taken in the same run."""
    # CPU: small; half-precision matmuls are emulated on CPUs without bf16/fp16 units (slow).
    n = 8192 if device.type == "cuda" else 512 if dtype == torch.float32 else 256
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    steps = 20 if device.type == "cuda" else 3
    seconds, _ = timed(lambda: torch.mm(a, b), steps, 2, device, clock)
    return 2 * n**3 / seconds / 1e12


def train_flops(cfg: AIMConfig) -> int:
    """FLOPs of one training forward + backward for one clip, counted on the meta device.

    Backward through the frozen backbone computes input gradients only (no weight gradients),
    so this is about twice the forward, not the 3x of full training.
    """
    with torch.device("meta"):
        model = AIMViT(cfg).train()
        clip = torch.empty(1, 3, cfg.num_frames, cfg.vit.image_size, cfg.vit.image_size)
    with FlopCounterMode(display=False) as counter:
        model(clip).sum().backward()
    return int(counter.get_total_flops())


# ============================================================================ models and steps
def arch_config(name: str) -> ViTConfig:
    return CPU_ARCHS[name] if name in CPU_ARCHS else get_arch(name)


def shared_weights(cfg: AIMConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One random AIM model as (reference state dict, ours), both on the CPU.

    Adapters and the temporal embedding are drawn away from their zero init, so that every
    branch contributes to the logits check. Ours comes through `load_aim_checkpoint` from the
    reference's release-format file, as users load released checkpoints.
    """
    ref = ReferenceAIM.from_config(cfg)
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if "D_fc2" in name or name.endswith("temporal_embedding"):
                param.normal_(0, 0.02)
    ref_state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "aim.pth"
        torch.save({"state_dict": ref_state}, path)
        ours = load_aim_checkpoint(path, scale=cfg.scale, heads=cfg.vit.heads)
    return ref_state, ours.state_dict()


def new_model(case: Case, cfg: AIMConfig) -> nn.Module:
    """An untrained model of the case, on the current default device, trainable set applied."""
    if case.impl == "ours":
        model = AIMViT(cfg.replace(temporal_attention=case.temporal_attention))
        model.set_grad_checkpointing(Recompute(case.recompute))
        return model
    model = ReferenceAIM.from_config(cfg)
    model.freeze()
    return model


def build(case: Case, cfg: AIMConfig, weights: dict[str, torch.Tensor], device: torch.device) -> nn.Module:
    """A fresh model for one case, on the device, with the shared weights."""
    with torch.device(device):
        model = new_model(case, cfg)
    model.load_state_dict(weights, strict=True)
    return model


def compiled(model: nn.Module, mode: str) -> nn.Module:
    if mode == "eager":
        return model
    return torch.compile(model, mode=None if mode == "default" else mode)


def autocast(device_type: str, dtype: str):
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[dtype])


def make_step(
    model: nn.Module, case: Case, clip: torch.Tensor, *, fused_optimizer: bool, loss_scaling: bool
) -> Callable[[], None]:
    """One training step or one inference pass of `case` on a fixed clip."""
    device_type = clip.device.type
    # CUDA graphs (reduce-overhead) reuse output buffers; each step must be marked.
    mark = torch.compiler.cudagraph_mark_step_begin if case.compiled == "reduce-overhead" else None
    if case.mode == "infer":
        runner = compiled(model.eval(), case.compiled)

        def infer() -> None:
            if mark:
                mark()
            with torch.inference_mode(), autocast(device_type, case.dtype):
                runner(clip)

        return infer

    params = [p for p in model.parameters() if p.requires_grad]
    if fused_optimizer:
        optimizer = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.05, fused=True)
    else:
        optimizer = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.05, foreach=True)
    scaler = torch.amp.GradScaler(device_type, enabled=loss_scaling and case.dtype == "fp16")
    labels = torch.randint(0, NUM_CLASSES, (clip.shape[0],), device=clip.device)
    runner = compiled(model.train(), case.compiled)

    def train() -> None:
        if mark:
            mark()
        with autocast(device_type, case.dtype):
            loss = F.cross_entropy(runner(clip), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return train


def random_clip(case: Case, cfg: AIMConfig, device: torch.device | str) -> torch.Tensor:
    size = cfg.vit.image_size
    return torch.randn(case.batch, 3, case.frames, size, size, device=device)


def check_same_results(
    cfg: AIMConfig, weights: tuple[dict, dict], dtype: str, device: torch.device
) -> dict[str, float]:
    """Largest logit difference, ours vs reference, eval mode, same weights and clip."""
    base = Case("reference", "", cfg.num_frames, 2, dtype, "infer", "eager", "nothing")
    clip = random_clip(base, cfg, device)
    logits = []
    for impl, state in zip(("reference", "ours"), weights):
        model = build(replace(base, impl=impl), cfg, state, device).eval()
        with torch.no_grad(), autocast(device.type, dtype):
            logits.append(model(clip).float())
        del model
    return {
        "max_abs_diff": float((logits[0] - logits[1]).abs().max()),
        "max_abs_logit": float(logits[0].abs().max()),
    }


def estimate(case: Case, cfg: AIMConfig, steps: int = 2) -> dict[str, float]:
    """Peak memory and eager op counts of a case, on fake tensors: no device, no arithmetic.

    Peak is over `steps` steps (the optimizer's state appears in the first); ops and bytes
    written are per step. Autocast follows the CPU's op lists, which match CUDA's for the ops
    of these models.
    """
    with torch.device("meta"):
        model = new_model(case, cfg)
    with FakeTensorMode(allow_non_fake_inputs=True):
        tracker = LiveMemory()
        with tracker:
            model = model.to_empty(device="cpu")
            step = make_step(model, case, random_clip(case, cfg, "cpu"),
                             fused_optimizer=False, loss_scaling=False)
            for _ in range(steps):
                step()
    return {
        "est_peak_mem_gib": float(f"{tracker.peak / GIB:.4g}"),
        "eager_ops_per_step": tracker.ops // steps,
        "eager_written_gib_per_step": round(tracker.written / steps / GIB, 2),
    }


# ============================================================================ the grid
def cases(args: argparse.Namespace) -> Iterator[tuple[Case, ...]]:
    """Groups of cases in run order: ours (each recompute policy), then the reference."""
    grid = itertools.product(args.archs, args.frames, args.batch_sizes, args.dtypes,
                             args.compile, args.modes)
    for arch, frames, batch, dtype, compile_mode, mode in grid:
        policies = args.recompute if mode == "train" else ["nothing"]
        group = [Case("ours", arch, frames, batch, dtype, mode, compile_mode, r, kernel)
                 for kernel in args.temporal_attention for r in policies]
        if args.reference == "all" or (args.reference == "eager" and compile_mode == "eager"):
            group.append(Case("reference", arch, frames, batch, dtype, mode, compile_mode, "nothing"))
        yield tuple(group)


def case_config(case: Case) -> AIMConfig:
    return AIMConfig(vit=arch_config(case.arch), num_frames=case.frames, num_classes=NUM_CLASSES)


def run_case(
    case: Case, cfg: AIMConfig, weights: dict[str, torch.Tensor], args: argparse.Namespace,
    device: torch.device,
) -> tuple[float, float, float, list[list]]:
    """(clips/s, peak memory, warm-up seconds, top ops if profiling) of one case."""
    model = build(case, cfg, weights, device)
    clip = random_clip(case, cfg, device)
    try:
        with PeakMemory(device) as memory:
            step = make_step(model, case, clip, fused_optimizer=device.type in FUSED_DEVICES,
                             loss_scaling=True)
            seconds, warm = timed(step, args.steps, args.warmup, device, args.clock)
        ops = top_ops(step, device, args.profile) if args.profile else []
    finally:
        del model, clip
        torch._dynamo.reset()  # compiled graphs hold on to the model; the next case collects
    return case.batch / seconds, memory.value, warm, ops


SDPA_KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH,
}


def attention_shapes(cfg: AIMConfig, batch: int) -> dict[str, tuple[int, int, int, int]]:
    """(sequences, heads, length, head dim) of one block's spatial and temporal attention."""
    vit = cfg.vit
    head_dim = vit.width // vit.heads
    return {
        "spatial": (batch * cfg.num_frames, vit.heads, vit.num_tokens, head_dim),
        "temporal": (batch * vit.num_tokens, vit.heads, cfg.num_frames, head_dim),
    }


def attention_call(kernel: str) -> Callable[..., torch.Tensor]:
    if kernel == "matmul":
        return matmul_attention

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPA_KERNELS[kernel]):
            return F.scaled_dot_product_attention(q, k, v)

    return sdpa


def run_attention_kernels(args: argparse.Namespace, record: Recorder,
                          device: torch.device) -> None:
    """Milliseconds per call (forward, and forward + backward) of the spatial and temporal
    attention at each case's shapes, per kernel; `per_step_ms` is that times the blocks."""
    grid = itertools.product(args.archs, args.frames, args.batch_sizes, args.dtypes)
    for arch, frames, batch, dtype in grid:
        cfg = AIMConfig(vit=arch_config(arch), num_frames=frames, num_classes=NUM_CLASSES)
        for call, shape in attention_shapes(cfg, batch).items():
            q, k, v = (torch.randn(shape, device=device, dtype=DTYPES[dtype], requires_grad=True)
                       for _ in range(3))
            grad = torch.randn_like(q)
            reference = matmul_attention(q, k, v).float()
            for kernel in [*SDPA_KERNELS, "matmul"]:
                attend = attention_call(kernel)
                fields = dict(arch=arch, frames=frames, batch=batch, dtype=dtype, call=call,
                              shape=list(shape), kernel=kernel)
                try:
                    with torch.no_grad():
                        error = (attend(q, k, v).float() - reference).abs().max().item()
                        forward, _ = timed(lambda: attend(q, k, v), args.steps, args.warmup,
                                           device, args.clock)
                    both, _ = timed(lambda: attend(q, k, v).backward(grad), args.steps,
                                    args.warmup, device, args.clock)
                except RuntimeError as err:  # no such kernel for these inputs on this device
                    record("skipped", **fields, reason=str(err).splitlines()[0][:200])
                    continue
                record("attention", **fields, forward_ms=round(forward * 1e3, 4),
                       forward_backward_ms=round(both * 1e3, 4),
                       per_step_ms=round(both * 1e3 * cfg.vit.layers, 3),
                       max_abs_diff_vs_matmul=float(f"{error:.3g}"))
            del q, k, v, grad


def run_estimates(args: argparse.Namespace, record: Recorder) -> None:
    for group in cases(args):
        for case in group:
            if case.compiled == "eager":
                record("estimate", **asdict(case), **estimate(case, case_config(case)))


def run_timings(args: argparse.Namespace, record: Recorder, device: torch.device) -> None:
    started = time.perf_counter()
    peaks = {d: matmul_peak_tflops(device, DTYPES[d], args.clock)
             for d in sorted({"bf16", *args.dtypes})}
    for dtype, tflops in peaks.items():
        record("peak", dtype=dtype, matmul_tflops=float(f"{tflops:.4g}"))

    weights: dict[tuple[str, int], tuple[dict, dict]] = {}
    flops: dict[tuple[str, int, str], float] = {}

    def budget_spent(case: Case) -> bool:
        """Whether the time budget is spent; if so the case is reported as skipped."""
        if args.budget_s is None or time.perf_counter() - started <= args.budget_s:
            return False
        record("skipped", **asdict(case), reason=f"time budget of {args.budget_s:.0f} s spent")
        return True

    for group in cases(args):
        if budget_spent(group[0]):
            for case in group[1:]:
                budget_spent(case)
            continue
        first = group[0]
        cfg = case_config(first)
        key = (first.arch, first.frames)
        if key not in weights:
            weights[key] = shared_weights(cfg)
            for dtype in args.dtypes:
                record("check", arch=first.arch, frames=first.frames, dtype=dtype,
                       **check_same_results(cfg, weights[key], dtype, device))
        if (*key, first.mode) not in flops:
            count = train_flops(cfg) if first.mode == "train" else forward_flops(cfg)
            flops[(*key, first.mode)] = count / 1e9
        gflops = flops[(*key, first.mode)]

        speeds: dict[str, float] = {}
        for case in group:
            fields = asdict(case)
            if budget_spent(case):
                continue
            state = weights[key][case.impl == "ours"]
            try:
                clips_per_s, memory, warm, ops = run_case(case, cfg, state, args, device)
            except torch.OutOfMemoryError:
                record("skipped", **fields, reason="out of memory")
                continue
            tflops = clips_per_s * gflops / 1e3
            record("result", **fields, clips_per_s=round(clips_per_s, 3),
                   step_ms=round(case.batch / clips_per_s * 1e3, 2),
                   **{PeakMemory(device).field: round(memory, 3)},
                   gflops_per_clip=round(gflops, 3), tflops=round(tflops, 4),
                   mfu=round(tflops / peaks["bf16"], 4),
                   mfu_vs_dtype_peak=round(tflops / peaks[case.dtype], 4),
                   warmup_s=round(warm, 2))
            if ops:
                record("profile", **fields, top_ops_ms=ops)
            # The speed-up compares ours without recomputation, first kernel, to the reference.
            first_kernel = case.temporal_attention == first.temporal_attention
            if case.recompute == "nothing" and (case.impl == "reference" or first_kernel):
                speeds[case.impl] = clips_per_s
        if {"ours", "reference"} <= set(speeds):
            fields = {k: v for k, v in asdict(first).items() if k not in ("impl", "recompute")}
            ratio = speeds["ours"] / speeds["reference"]
            if args.paired:
                pair = (replace(first, recompute="nothing"), group[-1])  # the reference is last
                ratio = paired_speedup(pair, cfg, (weights[key][1], weights[key][0]), args, device)
            record("speedup", **fields, ours_clips_per_s=round(speeds["ours"], 3),
                   reference_clips_per_s=round(speeds["reference"], 3),
                   speedup=round(ratio, 3), method="paired" if args.paired else "separate")


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the grid; returns the records it printed."""
    args = parse_args(argv)
    device = torch.device(args.device)
    records: list[dict] = []
    recorder = Recorder(args.out)

    def record(kind: str, **fields: object) -> None:
        records.append(recorder(kind, **fields))

    started = time.perf_counter()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "clock": args.clock, "cpus": os.cpu_count()}
    if device.type == "cuda":
        env |= {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    record("env", **env, argv=sys.argv[1:] if argv is None else argv)
    if args.estimate:
        run_estimates(args, record)
    elif args.attention_kernels:
        run_attention_kernels(args, record, device)
    else:
        run_timings(args, record, device)
    record("done", seconds=round(time.perf_counter() - started, 1))
    return records


if __name__ == "__main__":
    main()
