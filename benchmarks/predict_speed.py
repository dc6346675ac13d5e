"""Batch prediction clips/s with N decoding worker processes against decoding in the main one.

`Predictor.predict` over the same videos with `workers=0` (decode, then compute, in turn) and
`workers=N` (DataLoader processes decode while the model computes), on two model shapes with
random weights: the demo's (width 128, 4 layers, 32 px, 8 frames) and ViT-B/16 (224 px,
8 frames; a few clips only on a CPU). The videos are 10 s, 340x256, 25 fps H.264 (x264
defaults), one 1x1 view each. Prints JSON lines with the ratio workers/0 per shape.

    python benchmarks/predict_speed.py --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

SHAPES = {
    "demo": dict(width=128, layers=4, heads=4, patch_size=8, size=32),
    "ViT-B/16": dict(width=768, layers=12, heads=12, patch_size=16, size=224),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aim-predict"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--videos", type=int, default=24, help="videos for the demo shape")
    parser.add_argument("--vit-videos", type=int, default=4, help="videos for ViT-B/16")
    args = parser.parse_args()
    from timeline_speed import write_video
    from video_helpers import write_checkpoint

    from aim_video.predictor import Predictor

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    videos = [str(write_video(cache / f"v{i}.mp4", 10, 25, 340, 256))
              for i in range(max(args.videos, args.vit_videos))]
    print(json.dumps({"machine": f"{os.cpu_count()} cores", "loadavg": os.getloadavg()[0]}))
    for name, shape in SHAPES.items():
        checkpoint = write_checkpoint(cache / f"{name.replace('/', '')}.pt", classes=400,
                                      sampling="dense", num_frames=8, interval=16, **shape)
        predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
        todo = videos[: args.videos if name == "demo" else args.vit_videos]
        rates = {}
        for workers in (0, args.workers):
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
            predictor.predict(todo[:2], batch_size=2, workers=workers)  # warm-up
            start = time.perf_counter()
            predictor.predict(todo, batch_size=2, workers=workers)
            rates[workers] = len(todo) / (time.perf_counter() - start)
        print(json.dumps({"shape": name, "videos": len(todo),
                          **{f"clips_per_s_workers_{w}": round(r, 2) for w, r in rates.items()},
                          "ratio": round(rates[args.workers] / rates[0], 2)}))


if __name__ == "__main__":
    main()
