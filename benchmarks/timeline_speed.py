"""Timeline speed and memory: one forward stream against decoding each window on its own.

Writes small H.264 videos (default 128x96 at 24 fps, x264 defaults) of 1 and 10 minutes, and a
tiny checkpoint of the demo's model shape (width 128, 4 layers, 32 px, 8 frames 4 apart), then:

- ``streaming``: `Predictor.timeline` on the 1-minute video (one forward decode in a thread);
- ``per_window``: the same windows, each decoded by `open_video(...).read(indices)` (one open
  and one seek per window) and classified by the same model, as a script looping over windows
  would do;
- ``rss``: the peak resident memory (VmHWM) of a child process that runs the timeline on the
  1-minute and on the 10-minute video; streaming keeps only the open windows' frames, so the
  two should be equal.

Prints JSON lines; the ratio lines are what to compare across machines.

    python benchmarks/timeline_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def write_video(path: Path, seconds: int, fps: int, width: int, height: int) -> Path:
    """A moving gradient: cheap to encode, and every frame differs. The container is the one
    `path`'s extension names (.mp4; .ts: MPEG-TS, as a live stream sends it)."""
    if path.exists():
        return path
    partial = path.with_name(path.name + ".partial" + path.suffix)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(partial), "w", format="mpegts" if path.suffix == ".ts" else None) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            image = np.stack([(xx + i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(partial, path)
    return path


def peak_rss_child(checkpoint: Path, video: Path, stride: float) -> dict:
    """Runs the timeline in a fresh process; its VmHWM (peak resident set) in MiB."""
    code = (
        "import sys, torch, json; torch.set_num_threads(1)\n"
        "from aim_video.predictor import Predictor\n"
        "p = Predictor.from_checkpoint(sys.argv[1], device='cpu')\n"
        "t = p.timeline(sys.argv[2], stride=float(sys.argv[3]))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(json.dumps({'windows': len(t.starts), 'peak_rss_mib': int(hwm.split()[1]) / 1024}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(checkpoint), str(video), str(stride)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def per_window(predictor, video: Path, stride: float) -> int:
    """Each window decoded on its own (open + seek + decode), then classified."""
    from aim_video.data.dataset import build_eval_transform
    from aim_video.data.decode import open_video

    data = predictor.cfg.data
    transform = build_eval_transform(data)
    with open_video(video) as reader:
        num_frames, fps = reader.num_frames, reader.fps
    span = data.num_frames * data.frame_interval
    step = stride * fps
    starts = [round(k * step) for k in range(int((num_frames - span) / step) + 1)]
    batch = []
    for start in starts:
        indices = [start + j * data.frame_interval for j in range(data.num_frames)]
        with open_video(video) as reader:
            frames = reader.read(indices, short_side=transform.short_side)
        batch.append(transform(torch.from_numpy(frames)))
        if len(batch) == predictor.cfg.eval.batch_size:
            predictor.probabilities(torch.stack(batch))
            batch = []
    if batch:
        predictor.probabilities(torch.stack(batch))
    return len(starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aim-timeline"))
    parser.add_argument("--stride", type=float, default=0.5)
    parser.add_argument("--size", default="128x96")
    args = parser.parse_args()
    from video_helpers import write_checkpoint

    from aim_video.predictor import Predictor

    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    width, height = map(int, args.size.split("x"))
    short = write_video(cache / f"1min_{args.size}.mp4", 60, 24, width, height)
    long = write_video(cache / f"10min_{args.size}.mp4", 600, 24, width, height)
    checkpoint = cache / "demo_shape.pt"
    write_checkpoint(checkpoint, classes=10, num_frames=8, interval=4, width=128, layers=4,
                     heads=4)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    print(json.dumps({"machine": f"{os.cpu_count()} cores", "loadavg": os.getloadavg()[0],
                      "video": args.size, "model": "width 128, 4 layers, 32 px, 8x4 frames"}))
    start = time.perf_counter()
    timeline = predictor.timeline(short, stride=args.stride)
    streaming = len(timeline.starts) / (time.perf_counter() - start)
    start = time.perf_counter()
    count = per_window(predictor, short, args.stride)
    separate = count / (time.perf_counter() - start)
    print(json.dumps({"windows": len(timeline.starts), "per_window_windows": count,
                      "streaming_windows_per_s": round(streaming, 1),
                      "per_window_windows_per_s": round(separate, 1),
                      "ratio_streaming_over_per_window": round(streaming / separate, 2)}))
    one, ten = (peak_rss_child(checkpoint, v, args.stride) for v in (short, long))
    print(json.dumps({"rss_1min_mib": round(one["peak_rss_mib"], 1),
                      "rss_10min_mib": round(ten["peak_rss_mib"], 1),
                      "windows_1min": one["windows"], "windows_10min": ten["windows"],
                      "ratio_10min_over_1min": round(ten["peak_rss_mib"] / one["peak_rss_mib"], 3)}))


if __name__ == "__main__":
    main()
