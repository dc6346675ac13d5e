"""Many tasks on one backbone: resident memory and per-input time against separate models.

Builds N training checkpoints of the ViT-B/16 shape (random frozen backbone seeded by
`train.seed`, so all share one fingerprint; 400 classes, 8 frames at 224 px, one test view),
each with its own random trainable tensors, in a temporary folder. Then, each case in a fresh
child process:

- ``memory``: the resident set (VmRSS, after `gc.collect` and `malloc_trim`, so freed loading
  buffers do not count) of `Predictor.from_checkpoints` with 1, 4 and 16 tasks and of 16
  separate `Predictor.from_checkpoint` models, minus the same process's RSS before loading
  (torch and aim_video imported). Target: 16 tasks within backbone + 16 x trainable bytes
  + 10%. VmHWM (the peak, loading included) is printed beside it.
- ``time``: one input (1 clip, 8 x 224 x 224) answered by K tasks on one backbone against the
  same K tasks as separate models, alternating, best of `--iterations`; the same work, so the
  ratio should be close to 1. Decoding is not timed (the shared predictor decodes once for all tasks,
  separate models once each).
- ``swap``: the cost of putting one task's tensors into the model (`Predictor._use`: a
  `Parameter.data` assignment per trainable tensor), averaged over many swaps.

Prints JSON lines.

    python benchmarks/multitask_memory.py [--tasks 1 4 16] [--time-tasks 2] [--iterations 2]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ARCH_OVERRIDES = [
    "model.arch=ViT-B/16", "model.num_classes=400", "model.allow_random_backbone=true",
    "data.num_frames=8", "data.input_size=224", "data.test_clips=1", "data.test_crops=1",
    "data.num_workers=0", "eval.batch_size=1", "train.device=cpu", "train.precision=fp32",
    "train.seed=0",
]


def build_checkpoints(folder: Path, count: int) -> list[Path]:
    """`count` checkpoints on one seeded random ViT-B/16 backbone, each with its own tensors."""
    from aim_video.engine.checkpoint import checkpoint_state, model_from_config, save_checkpoint
    from aim_video.engine.config import config_to_dict, load_config
    from aim_video.weights import backbone_fingerprint

    cfg = load_config("k400_vitb16_8f", ARCH_OVERRIDES)
    model = model_from_config(cfg)
    fingerprint = backbone_fingerprint(model)
    generator = torch.Generator().manual_seed(1)
    paths = []
    for i in range(count):
        with torch.no_grad():
            for tensor in model.trainable_state_dict().values():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
        state = checkpoint_state(model, optimizer=None, scheduler=None, scaler=None,
                                 progress={}, cfg_dict=config_to_dict(cfg),
                                 class_names=[f"task{i}_class_{c}" for c in range(400)],
                                 fingerprint=fingerprint)
        path = folder / f"task{i:02d}" / "best.pt"
        path.parent.mkdir(parents=True)
        paths.append(save_checkpoint(state, path))
    return paths


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def live_rss_mib() -> float:
    """VmRSS once freed memory is given back (garbage collected, malloc's free lists trimmed)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_mib()


def child_memory(paths: list[str], mode: str) -> dict:
    from aim_video.predictor import Predictor

    before = live_rss_mib()
    if mode == "shared":
        predictors = [Predictor.from_checkpoints(paths, device="cpu")]
    else:
        predictors = [Predictor.from_checkpoint(p, device="cpu") for p in paths]
    after = live_rss_mib()
    model = predictors[0].model
    trainable = set(model.trainable_state_dict())
    backbone_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                         if n not in trainable)
    trainable_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                          if n in trainable)
    held = {t.data_ptr(): t.numel() * t.element_size() for pred in predictors
            for t in [*pred.model.parameters(), *(w for task in pred.tasks
                                                 for w in task.weights.values())]}
    return {"mode": mode, "tasks": len(paths), "rss_before_mib": round(before, 1),
            "rss_after_mib": round(after, 1), "rss_added_mib": round(after - before, 1),
            "peak_mib": round(rss_mib("VmHWM"), 1),
            "tensor_mib": round(sum(held.values()) / 2**20, 1),
            "backbone_mib": round(backbone_bytes / 2**20, 1),
            "trainable_mib": round(trainable_bytes / 2**20, 1)}


def child_time(paths: list[str], iterations: int) -> dict:
    from aim_video.predictor import Predictor

    shared = Predictor.from_checkpoints(paths, device="cpu")
    separate = [Predictor.from_checkpoint(p, device="cpu") for p in paths]
    views = torch.randn(1, 1, 3, 8, 224, 224)  # one input, one view

    def run_shared() -> None:
        shared.task_probabilities(views)

    def run_separate() -> None:
        for predictor in separate:
            predictor.probabilities(views)

    times: dict[str, list[float]] = {"shared": [], "separate": []}
    # Alternating, so a change of load hits both alike; the best of each is kept (the first
    # iteration is also the warm-up: a ViT-B/16 forward is tens of seconds on a loaded CPU).
    for _ in range(iterations):
        for name, fn in (("shared", run_shared), ("separate", run_separate)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    # The swap alone: alternate between two tasks' tensors many times.
    swaps = 2000
    start = time.perf_counter()
    for i in range(swaps):
        shared.views_model.use(shared.tasks[i % 2])
    swap_s = (time.perf_counter() - start) / swaps
    per_input = {name: min(t) for name, t in times.items()}
    return {"tasks": len(paths), "threads": torch.get_num_threads(),
            "shared_s_per_input": round(per_input["shared"], 3),
            "separate_s_per_input": round(per_input["separate"], 3),
            "ratio_shared_over_separate": round(per_input["shared"] / per_input["separate"], 3),
            "all_times_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "swap_us": round(swap_s * 1e6, 1),
            "swapped_tensors": len(shared.tasks[0].weights),
            "swap_share_of_one_forward": f"{swap_s / (per_input['separate'] / len(paths)):.1e}"}


def in_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--separate", type=int, default=16, help="separate models to compare")
    parser.add_argument("--time-tasks", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "memory":
            result = child_memory(rest[1:], rest[0])
        else:
            result = child_time(rest[1:], int(rest[0]))
        print(json.dumps(result))
        return
    count = max(*args.tasks, args.separate, args.time_tasks)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = [str(p) for p in build_checkpoints(Path(tmp), count)]
        print(json.dumps({"built_checkpoints": count, "seconds": round(time.perf_counter() - start),
                          "mib_each": round(Path(paths[0]).stat().st_size / 2**20, 1)}),
              flush=True)
        results = {}
        for k in args.tasks:
            results[k] = in_child("memory", "shared", *paths[:k])
            print(json.dumps(results[k]), flush=True)
        separate = in_child("memory", "separate", *paths[:args.separate])
        print(json.dumps(separate), flush=True)
        k = max(args.tasks)
        r = results[k]
        budget = (r["backbone_mib"] + k * r["trainable_mib"]) * 1.1
        print(json.dumps({"tasks": k, "shared_added_mib": r["rss_added_mib"],
                          "target_mib": round(budget, 1), "within_target":
                          r["rss_added_mib"] <= budget,
                          "separate_added_mib": separate["rss_added_mib"],
                          "separate_tasks": args.separate}), flush=True)
        if args.time_tasks:
            print(json.dumps(in_child("time", str(args.iterations),
                                      *paths[:args.time_tasks])), flush=True)


if __name__ == "__main__":
    main()
