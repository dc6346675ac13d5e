"""Clips per second of video loading: our PyAV reader against decord's ``get_batch``.

Generates Kinetics-like videos once (10 s, 25 fps, 340x256, H.264 with x264's default
keyframe interval of 250, a textured background panning under a moving object) and caches them.
Each clip is sampled (dense 8x16 or uniform 8), decoded, and given the usual train augment:
short side 256, random 224 crop, random flip, float (C, T, H, W). Our reader scales to the short
side inside FFmpeg's converter; decord decodes at full size and the resize follows (a no-op for
340x256 sources, real work for larger ones). Worker processes mimic DataLoader workers.

Prints one JSON line per measurement (median clips/s and CPU ms per clip over alternating
rounds) and one per ratio, both >1 when ours is better: clips/s ours/decord, CPU decord/ours.
``--backends ours ours-threads`` compares our reader with FFmpeg threads on and off.

    python benchmarks/data_throughput.py --quick
    python benchmarks/data_throughput.py --cache ~/.cache/aim-video-bench --height 720
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from aim_video.data.decode import open_video

CLIP_LEN = 8
DENSE_STRIDE = 16
SHORT_SIDE = 256
CROP = 224


# ---------------------------------------------------------------- videos


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth multi-scale noise in [0, 1], (H, W, 3): detail for the encoder to spend bits on."""
    out = np.zeros((height, width, 3), dtype=np.float32)
    for cell, weight in ((2, 0.15), (8, 0.25), (32, 0.6)):
        small = rng.random((height // cell + 1, width // cell + 1, 3), dtype=np.float32)
        out += weight * np.repeat(np.repeat(small, cell, 0), cell, 1)[:height, :width]
    return out


def write_video(path: Path, seconds: float, fps: int, height: int, width: int, seed: int) -> None:
    """A panning texture with a moving square, H.264 with x264's defaults (GOP 250)."""
    rng = np.random.default_rng(seed)
    texture = _texture(2 * height, 2 * width, rng)
    colour = rng.random(3, dtype=np.float32)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(round(seconds * fps)):
            y = int(height / 2 * (1 + np.sin(t / 40 + seed)))
            x = int(t * 1.5 + 7 * seed) % width
            frame = texture[y : y + height, x : x + width].copy()  # (H, W, 3)
            cy = int(height / 2 + height / 3 * np.sin(t / 7))
            cx = int(width / 2 + width / 3 * np.cos(t / 11))
            frame[max(0, cy - 24) : cy + 24, max(0, cx - 24) : cx + 24] = colour
            rgb = av.VideoFrame.from_ndarray((frame * 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(rgb):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)  # complete files only, so an interrupted run never caches a broken one


def make_videos(cache: Path, count: int, seconds: float, height: int, width: int) -> list[str]:
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        path = cache / f"kinetics_like_{width}x{height}_{seconds:g}s_{seed:03d}.mp4"
        if not path.exists():
            write_video(path, seconds, 25, height, width, seed)
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------- sampling and augment


def dense_indices(num_frames: int, rng: np.random.Generator) -> list[int]:
    span = (CLIP_LEN - 1) * DENSE_STRIDE + 1
    start = int(rng.integers(0, max(1, num_frames - span + 1)))
    return [min(start + i * DENSE_STRIDE, num_frames - 1) for i in range(CLIP_LEN)]


def uniform_indices(num_frames: int, rng: np.random.Generator) -> list[int]:
    segment = num_frames / CLIP_LEN
    return [int(segment * i + rng.random() * segment) for i in range(CLIP_LEN)]


SAMPLERS: dict[str, Callable[[int, np.random.Generator], list[int]]] = {
    "dense8x16": dense_indices,
    "uniform8": uniform_indices,
}


def augment(frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, 224, 224): short side 256, random crop, random flip."""
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
    height, width = clip.shape[-2:]
    if min(height, width) != SHORT_SIDE:
        scale = SHORT_SIDE / min(height, width)
        size = (round(height * scale), round(width * scale))
        clip = F.interpolate(clip.float(), size=size, mode="bilinear", antialias=True)
        height, width = size
    top = int(rng.integers(0, height - CROP + 1))
    left = int(rng.integers(0, width - CROP + 1))
    clip = clip[..., top : top + CROP, left : left + CROP]
    if rng.random() < 0.5:
        clip = clip.flip(-1)
    return clip.float().div_(255).permute(1, 0, 2, 3).contiguous()  # (3, T, 224, 224)


def load_ours(
    path: str, sampler: str, rng: np.random.Generator, threads: bool = False
) -> torch.Tensor:
    with open_video(path, threads=threads) as reader:
        frames = reader.read(SAMPLERS[sampler](reader.num_frames, rng), short_side=SHORT_SIDE)
    return augment(frames, rng)


def load_ours_threaded(path: str, sampler: str, rng: np.random.Generator) -> torch.Tensor:
    return load_ours(path, sampler, rng, threads=True)


def load_decord(path: str, sampler: str, rng: np.random.Generator) -> torch.Tensor:
    import decord

    reader = decord.VideoReader(path)
    frames = reader.get_batch(SAMPLERS[sampler](len(reader), rng)).asnumpy()  # (T, H, W, 3)
    return augment(frames, rng)


LOADERS = {"ours": load_ours, "decord": load_decord, "ours-threads": load_ours_threaded}


def _load(task: tuple[str, str, str, int]) -> tuple[tuple[int, ...], float]:
    """(clip shape, CPU seconds of this worker process, decoder threads included)."""
    backend, path, sampler, seed = task
    torch.set_num_threads(1)  # as in DataLoader workers
    start = time.process_time()
    clip = LOADERS[backend](path, sampler, np.random.default_rng(seed))
    return tuple(clip.shape), time.process_time() - start


# ---------------------------------------------------------------- measurement


def measure(
    pool: mp.pool.Pool, backend: str, sampler: str, paths: list[str], clips: int
) -> tuple[float, float]:
    """(clips per second, CPU milliseconds per clip) of one pass over `clips` clips.

    CPU time is the steadier figure on a shared machine: other load slows the wall clock.
    """
    tasks = [(backend, paths[i % len(paths)], sampler, i) for i in range(clips)]
    start = time.perf_counter()
    results = pool.map(_load, tasks, chunksize=1)
    wall = time.perf_counter() - start
    assert all(shape == (3, CLIP_LEN, CROP, CROP) for shape, _ in results), results
    return clips / wall, 1000 * sum(cpu for _, cpu in results) / clips


def ratio(numerator: list[float], denominator: list[float]) -> float:
    return round(statistics.median(numerator) / statistics.median(denominator), 2)


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 videos, 24 clips, 2 rounds")
    parser.add_argument("--cache", type=Path, default=None, help="where generated videos stay")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--clips", type=int, default=96, help="clips per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating passes per backend")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=None, help="default: 340/256 x height")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["ours", "decord"], choices=LOADERS)
    args = parser.parse_args()
    if args.quick:
        args.videos, args.clips, args.rounds = 4, 24, 2
    width = args.width or round(args.height * 340 / 256 / 2) * 2
    cache = args.cache or Path(tempfile.gettempdir()) / "aim-video-bench-videos"

    start = time.perf_counter()
    paths = make_videos(cache, args.videos, args.seconds, args.height, width)
    emit(
        videos=len(paths),
        size=f"{width}x{args.height}",
        cache=str(cache),
        prepare_s=round(time.perf_counter() - start, 1),
    )

    context = mp.get_context("fork" if os.name == "posix" else "spawn")
    for workers in args.workers:
        with context.Pool(workers) as pool:
            pool.map(_load, [("ours", paths[0], "uniform8", 0)] * workers)  # warm the workers
            for sampler in SAMPLERS:
                rates: dict[str, list[float]] = {backend: [] for backend in args.backends}
                cpu: dict[str, list[float]] = {backend: [] for backend in args.backends}
                # Alternate the backends so drifting machine load hits both alike.
                for _ in range(args.rounds):
                    for backend in args.backends:
                        rate, cpu_ms = measure(pool, backend, sampler, paths, args.clips)
                        rates[backend].append(rate)
                        cpu[backend].append(cpu_ms)
                for backend in args.backends:
                    emit(
                        backend=backend,
                        sampling=sampler,
                        workers=workers,
                        clips_per_s=round(statistics.median(rates[backend]), 2),
                        cpu_ms_per_clip=round(statistics.median(cpu[backend]), 1),
                        runs=[round(v, 2) for v in rates[backend]],
                    )
                if {"ours", "decord"} <= rates.keys():
                    emit(
                        sampling=sampler,
                        workers=workers,
                        ratio_ours_over_decord=ratio(rates["ours"], rates["decord"]),
                        cpu_ratio_decord_over_ours=ratio(cpu["decord"], cpu["ours"]),
                    )


if __name__ == "__main__":
    main()
