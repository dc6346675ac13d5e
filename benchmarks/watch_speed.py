"""Live speed: the shortest stride at which `watch` keeps up with a 25 fps stream.

Writes a 128x96 25 fps H.264 MPEG-TS video (a moving gradient: every frame differs) and, unless
--checkpoint is given, a checkpoint of the demo's model shape (width 128, 4 layers, 32 px,
8 frames 4 apart, random weights: speed does not depend on them). Then plays the video at its
own pace (`watch(..., realtime=True)`, as a camera delivers frames) with shorter and shorter
strides, and prints per stride: windows classified, windows skipped, the lag's median and 95th
percentile (from a window's completion to its result) and the resident memory before and after.
The answer is the shortest stride with no window skipped; it stops at the first stride that
skips (a shorter one skips more).

    python benchmarks/watch_speed.py [--seconds 12] [--strides 1,0.5,0.25,0.16,0.12,0.08]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from timeline_speed import write_video  # noqa: E402  (the same moving gradient)


def rss_mib() -> float:
    line = next(x for x in open("/proc/self/status") if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aim-watch"))
    parser.add_argument("--seconds", type=int, default=12, help="length of the stream")
    parser.add_argument("--strides", default="1,0.5,0.25,0.16,0.12,0.08,0.04")
    parser.add_argument("--checkpoint", help="a checkpoint (default: the demo's shape)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    from video_helpers import write_checkpoint

    from aim_video.live import watch
    from aim_video.predictor import Predictor

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    video = write_video(cache / f"{args.seconds}s_25fps.ts", args.seconds, 25, 128, 96)
    checkpoint = Path(args.checkpoint) if args.checkpoint else cache / "demo_shape.pt"
    if not args.checkpoint:
        write_checkpoint(checkpoint, classes=10, num_frames=8, interval=4, width=128, layers=4,
                         heads=4)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    print(json.dumps({"machine": f"{os.cpu_count()} cores", "loadavg": os.getloadavg(),
                      "stream": "128x96 25 fps", "seconds": args.seconds,
                      "model": args.checkpoint or "demo shape: width 128, 4 layers, 32 px, 8x4",
                      "threads": args.threads}), flush=True)
    keeps_up = None
    for stride in (float(s) for s in args.strides.split(",")):
        before = rss_mib()
        end = list(watch(predictor, str(video), stride=stride, realtime=True))[-1]
        print(json.dumps({"stride": stride, "windows": end["windows"], "skipped": end["skipped"],
                          "lag_median_s": end["lag_median"], "lag_p95_s": end["lag_p95"],
                          "rss_before_mib": round(before, 1), "rss_after_mib": round(rss_mib(), 1),
                          "loadavg_1min": os.getloadavg()[0]}), flush=True)
        if end["skipped"]:
            break
        keeps_up = stride
    print(json.dumps({"shortest_stride_without_skipping_s": keeps_up}))


if __name__ == "__main__":
    main()
