"""CPU training speed against torch's thread count beside the data workers.

Trains the demo's AIM variant (width 64, 4 blocks, 4-frame clips of 32 px synthetic H.264
videos, batch 16, a random frozen backbone: speed does not depend on the weights) for one
epoch per setting, all in this process, and prints JSON lines: the machine, then per setting
the training clips/s and its ratio against the baseline, torch's default thread count (every
core computing while the loader workers decode beside it). The setting under test is
`train.cpu_threads` left at its default (the usable cores less one per data worker).

    python benchmarks/cpu_threads.py                  # 2 workers, 2400 videos (the demo's)
    python benchmarks/cpu_threads.py --videos 320 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from aim_video.data.pool import usable_cpus
from aim_video.data.synthetic import make_synthetic
from aim_video.engine.config import load_config
from aim_video.engine.distributed import cpu_threads
from aim_video.engine.train import train


def epoch_clips_per_s(data: Path, out_dir: Path, workers: int, threads: int | None,
                      videos: int) -> float:
    """Training clips/s of one epoch of the demo's AIM variant with `threads` torch threads
    (None: `train.cpu_threads`' default) beside `workers` loader processes."""
    overrides = [
        "model.width=64", "model.layers=4", "model.heads=4", "model.patch_size=8",
        "model.image_size=32", "model.temporal_in=true", "model.allow_random_backbone=true",
        f"data.root={data}", f"data.train={data / 'train.txt'}", "data.val=null",
        f"data.class_names={data / 'classes.txt'}", "data.num_frames=4",
        f"data.num_workers={workers}", "optim.epochs=1", "optim.batch_size=16",
        f"train.out_dir={out_dir}", "train.device=cpu", "train.plots=false",
        "train.tensorboard=false", "train.log_every=1000", "eval.splits=[]",
    ]
    if threads is not None:
        overrides.append(f"train.cpu_threads={threads}")
    result = train(load_config("synthetic_cpu", overrides), progress=False)
    return videos / result.history[0]["seconds"]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=2400, help="training videos (one epoch)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="loader processes")
    parser.add_argument("--cache", default=None, help="folder for the videos (default: temp)")
    args = parser.parse_args(argv)

    records: list[dict[str, Any]] = []
    cores = usable_cpus()
    emit(records, {"cores": cores, "torch_threads": torch.get_num_threads(),
                   "load_average": os.getloadavg()[0], "videos": args.videos})
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.cache or tmp) / "synthetic"
        make_synthetic(data, num_train=args.videos, num_val=8, frames=16, size=32, seed=0,
                       progress=False)
        runs = Path(tmp) / "runs"
        for workers in args.workers:
            baseline = epoch_clips_per_s(data, runs / f"w{workers}-all", workers,
                                         torch.get_num_threads(), args.videos)
            emit(records, {"workers": workers, "threads": torch.get_num_threads(),
                           "setting": "baseline: torch's default threads",
                           "clips_per_s": round(baseline, 1)})
            chosen = epoch_clips_per_s(data, runs / f"w{workers}-auto", workers, None,
                                       args.videos)
            emit(records, {"workers": workers, "threads": cpu_threads(workers),
                           "setting": "train.cpu_threads default",
                           "clips_per_s": round(chosen, 1),
                           "ratio_vs_baseline": round(chosen / baseline, 2)})
    return records


def emit(records: list[dict[str, Any]], record: dict[str, Any]) -> None:
    records.append(record)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
