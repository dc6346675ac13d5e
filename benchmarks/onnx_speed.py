"""CPU inference speed of an exported classifier: onnxruntime against PyTorch eager.

For each model shape, builds the run's model with a random backbone (speed does not depend on
the weights), exports it as `aim-video export` does, checks onnxruntime's logits against
PyTorch's, then times batch-1 clips on both, fp32, with the same number of threads, in
alternating blocks (so a neighbour's load on a shared machine hits both alike), and prints JSON
lines: the machine, then per shape and onnxruntime graph-optimisation level the median clips/s
of each runtime and their ratio.

Shapes: `vit_b16_8x224` (the k400_vitb16_8f preset: ViT-B/16, 8 frames of 224 px, 400
classes) and `demo` (the demo's AIM variant: width 64, 4 blocks, 4 heads, 4 frames of 32 px,
8 classes).

    python benchmarks/onnx_speed.py
    python benchmarks/onnx_speed.py --cases demo --iterations 20 --opt-levels ORT_ENABLE_ALL
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aim_video.engine.checkpoint import model_from_config
from aim_video.engine.config import load_config
from aim_video.export import (
    OnnxClassifier,
    export_metadata,
    export_onnx,
    max_differences,
    verification_clip,
)

DEMO = ["model.width=64", "model.layers=4", "model.heads=4", "model.patch_size=8",
        "model.image_size=32", "model.temporal_in=true", "data.num_frames=4",
        "data.input_size=32", "data.short_side=32"]
# name -> (preset, overrides, classes, timed calls per runtime by default)
CASES: dict[str, tuple[str, list[str], int, int]] = {
    "vit_b16_8x224": ("k400_vitb16_8f", [], 400, 6),
    "demo": ("synthetic_cpu", DEMO, 8, 300),
}
BLOCKS = 3
OPT_LEVELS = ("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC")


def timed_blocks(runs: dict[str, Any], inputs: dict[str, Any], per_block: int) -> dict[str, float]:
    """Median seconds per call of each runtime, over `BLOCKS * per_block` calls each.

    The calls come in `BLOCKS` alternating blocks, each opened by an untimed call: a runtime's
    thread pool keeps spinning for a while after its last call (onnxruntime's and OpenMP's
    both), which would tax the other runtime's next call if single calls alternated.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(BLOCKS):
        for name, run in runs.items():
            run(inputs[name])
            for _ in range(per_block):
                start = time.perf_counter()
                run(inputs[name])
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_case(name: str, folder: Path, threads: int, iterations: int | None,
               opt_levels: list[str]) -> list[dict[str, Any]]:
    """Records for one shape: the export, then one per onnxruntime optimisation level."""
    preset, overrides, classes, default_calls = CASES[name]
    per_block = max(1, (iterations or default_calls) // BLOCKS)
    cfg = load_config(preset, overrides)
    model = model_from_config(cfg, classes).eval()
    path = folder / f"{name}.onnx"
    start = time.perf_counter()
    export_onnx(model, path, export_metadata(cfg, [f"class_{i}" for i in range(classes)], model))
    records = [{"case": name, "export_s": round(time.perf_counter() - start, 1),
                "onnx_mib": round(path.stat().st_size / 2**20, 1)}]
    print(json.dumps(records[0]), flush=True)
    clip = verification_clip(model.cfg, batch=1)
    array = clip.numpy()

    def eager(x: torch.Tensor) -> None:
        with torch.inference_mode():
            model(x)

    for level in opt_levels:
        onnx_model = OnnxClassifier(path, threads=threads, optimization=level)
        diff, _ = max_differences(model, onnx_model, clip)
        seconds = timed_blocks({"eager": eager, "ort": onnx_model},
                               {"eager": clip, "ort": array}, per_block)
        eager_rate, ort_rate = 1 / seconds["eager"], 1 / seconds["ort"]
        records.append({
            "case": name, "opt_level": level, "batch": 1, "timed_calls": BLOCKS * per_block,
            "max_abs_logit_diff": float(f"{diff:.3g}"),
            "eager_clips_per_s": round(eager_rate, 3), "ort_clips_per_s": round(ort_rate, 3),
            "ratio_ort_vs_eager": round(ort_rate / eager_rate, 2),
        })
        print(json.dumps(records[-1]), flush=True)
        del onnx_model
    return records


def cpu_name() -> str:
    """The CPU's model name where Linux says it, else the architecture."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.machine()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads = onnxruntime intra-op threads")
    parser.add_argument("--iterations", type=int, help="timed calls per runtime "
                        "(default: 6 for ViT-B/16, 300 for the demo's model)")
    parser.add_argument("--opt-levels", nargs="+", default=list(OPT_LEVELS), choices=OPT_LEVELS,
                        help="onnxruntime graph optimisation levels to time")
    args = parser.parse_args(argv)

    import onnxruntime

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(),
               "threads": args.threads, "torch": torch.__version__,
               "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
               "load_average": round(os.getloadavg()[0], 2)}
    print(json.dumps(machine), flush=True)
    records = [machine]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.cases:
                records += bench_case(name, Path(tmp), args.threads, args.iterations,
                                      args.opt_levels)
    finally:
        torch.set_num_threads(threads_before)
    return records


if __name__ == "__main__":
    main()
