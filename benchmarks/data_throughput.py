"""Training clips per second per CPU core: original videos and prepared ones, against decord.

Generates Kinetics-like videos once and caches them (10 s, 25 fps, 340x256, H.264 with x264's
defaults: a keyframe every 250 frames and B-frames; a textured background panning under a moving
object), prepares them as `aim-video prepare` does (one cached folder per GOP setting) and
measures the training data path through a real `torch.utils.data.DataLoader` with 1..N worker
processes, 8-frame clips (dense 8x16 and uniform 8):

- ``decord``: decord's ``get_batch`` (one decoder thread) on the originals, then our host
  augmentation: the baseline;
- ``ours``: our `VideoDataset` on the originals (decoder scaling, RandomResizedCrop to 224,
  flip, CLIP normalisation: float clips);
- ``prepared-gN-crfQ``: the same on the videos prepared with a keyframe every N frames at
  x264 CRF Q;
- with ``--device-augment`` also every ``ours``/``prepared`` loader with
  `DataConfig.device_augment` (the host share only: uint8 crops, the rest runs on the GPU).

Prints JSON lines: the machine (cores, load average at the start), each prepared setting
(size on disk against the originals, PSNR of every frame against the original's, decoded at the
same size), then per measurement the median clips/s, clips/s per worker (``per_core``), CPU ms
per clip (workers and main process, decoder threads included) and ``cpu_per_core`` = 1000 / that
(clips per busy core-second: the steadier figure on a loaded machine), and per loader its ratio
against decord in the same run (>1: faster than decord), with the load average at its end.

    python benchmarks/data_throughput.py --quick
    python benchmarks/data_throughput.py --workers 1 2 --device-augment      # 2-core CPU
    python benchmarks/data_throughput.py --videos 64 --clips 960 --workers 1 4 8 16 \\
        --device-augment --cache /tmp/aim-bench                              # 16-core GPU host
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from aim_video.data.annotations import Annotations, VideoRecord, load_annotations
from aim_video.data.dataset import (
    DataConfig,
    DeviceAugment,
    TrainItem,
    VideoDataset,
    build_sampling,
    collate,
)
from aim_video.data.decode import open_video
from aim_video.data.prepare import EncodeSettings, prepare_dataset

SAMPLINGS = {"dense8x16": {"sampling": "dense"}, "uniform8": {"sampling": "uniform"}}
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


# ---------------------------------------------------------------- prepared videos


def prepare(paths: list[str], cache: Path, settings: EncodeSettings, workers: int) -> list[str]:
    """The prepared copies of `paths` (made once per setting, then reused)."""
    folder = cache / f"prepared_s{settings.short_side}_g{settings.gop}_crf{settings.crf:g}"
    annotations = Annotations([VideoRecord(path, 0) for path in paths], ["video"])
    report = prepare_dataset(annotations, folder, settings, workers=workers, progress=False)
    if report.bad:
        raise RuntimeError(f"could not prepare {report.bad}")
    return [record.path for record in load_annotations(report.annotation_file).records]


def psnr_db(original: str, prepared: str) -> float:
    """PSNR of every frame of `prepared` against `original` decoded at the prepared size."""
    squared, count = 0.0, 0
    with open_video(original) as source, open_video(prepared) as ready:
        size = (ready.height, ready.width)
        for a, b in zip(source.iter_frames(size=size), ready.iter_frames(), strict=True):
            squared += float(np.sum((a.astype(np.float64) - b) ** 2))
            count += a.size
    return 10 * np.log10(255**2 / (squared / count))


# ---------------------------------------------------------------- loaders


class DecordClips(Dataset):
    """decord's ``get_batch`` at the file's size, then our host training transform."""

    def __init__(self, paths: list[str], cfg: DataConfig) -> None:
        self.inner = VideoDataset(Annotations([VideoRecord(p, 0) for p in paths], ["v"]), cfg)
        self.sampling = build_sampling(cfg)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> TrainItem:
        import decord

        rng = self.inner.rng(index)
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        # One decoder thread, as MMAction2's DecordInit and one loader process per core.
        reader = decord.VideoReader(self.inner.records[index].path, num_threads=1)
        indices = self.sampling.train(len(reader), rng)
        clip = torch.from_numpy(reader.get_batch(indices.tolist()).asnumpy())  # (T, H, W, 3)
        video, label = self.inner.train_transform(clip, 0, generator)
        return TrainItem(video[None], torch.tensor([label]), index)  # K = 1 clip


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loader's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(dataset: Dataset, workers: int, clips_per_item: int) -> tuple[float, float]:
    """(clips per second, CPU milliseconds per clip) of one pass of a DataLoader over
    `dataset`; the workers exit at the end, so their CPU time is counted."""
    loader = DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate,
                        persistent_workers=False)
    cpu, start = _cpu_seconds(), time.perf_counter()
    clips = 0
    for batch in loader:
        clips += len(batch.video) * clips_per_item
    wall = time.perf_counter() - start
    return clips / wall, 1000 * (_cpu_seconds() - cpu) / clips


def emit(records: list[dict[str, Any]], **fields: Any) -> None:
    """Print one JSON line and keep it."""
    records.append(fields)
    print(json.dumps(fields), flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- main


def prepare_all(
    records: list[dict[str, Any]], originals: list[str], cache: Path, args: argparse.Namespace,
    short_side: int,
) -> dict[str, list[str]]:
    """Prepare the originals with every GOP:CRF setting; report size and fidelity of each."""
    sources: dict[str, list[str]] = {}
    for setting in args.prepared:
        gop, crf = (float(part) for part in setting.split(":"))
        settings = EncodeSettings(short_side=short_side, gop=int(gop), crf=crf)
        start = time.perf_counter()
        prepared = prepare(originals, cache, settings, max(args.workers))
        seconds = time.perf_counter() - start
        psnr = [psnr_db(a, b) for a, b in zip(originals, prepared, strict=True)]
        prepared_bytes = sum(map(os.path.getsize, prepared))
        name = f"g{settings.gop}-crf{crf:g}"
        emit(records, prepared=name, gop=settings.gop, crf=crf, short_side=short_side,
             prepare_s=round(seconds, 1),
             size_vs_original=round(prepared_bytes / sum(map(os.path.getsize, originals)), 2),
             mb_per_video=round(prepared_bytes / len(prepared) / 1e6, 2),
             psnr_db_min=round(min(psnr), 2), psnr_db_mean=round(statistics.mean(psnr), 2))
        sources[f"prepared-{name}"] = prepared
    return sources


def build_loaders(
    sources: dict[str, list[str]], base: dict[str, Any], args: argparse.Namespace
) -> dict[str, Dataset]:
    """One data set per loader of the module docstring, each of `args.clips` clips."""
    loaders: dict[str, Dataset] = {}
    for name, paths in sources.items():
        repeated = [paths[i % len(paths)] for i in range(args.clips // args.repeated_aug)]
        annotations = Annotations([VideoRecord(p, 0) for p in repeated], ["video"])
        loaders[name] = VideoDataset(annotations, DataConfig(**base))
        if args.device_augment:
            loaders[f"{name}+device"] = VideoDataset(
                annotations, DataConfig(**base, device_augment=True)
            )
    if not args.no_decord:
        repeated = [sources["ours"][i % len(sources["ours"])] for i in range(args.clips)]
        loaders["decord"] = DecordClips(repeated, DataConfig(**(base | {"repeated_aug": 1})))
    return loaders


def measure_all(
    records: list[dict[str, Any]], loaders: dict[str, Dataset], sampling: str,
    workers: int, args: argparse.Namespace,
) -> None:
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    cpu: dict[str, list[float]] = {name: [] for name in loaders}
    # Alternate the loaders so drifting machine load hits all alike.
    for _ in range(args.rounds):
        for name, dataset in loaders.items():
            rate, cpu_ms = measure(dataset, workers, 1 if name == "decord" else args.repeated_aug)
            rates[name].append(rate)
            cpu[name].append(cpu_ms)
    for name in loaders:
        rate, cpu_ms = statistics.median(rates[name]), statistics.median(cpu[name])
        ratios: dict[str, Any] = {}
        if "decord" in loaders and name != "decord":
            ratios = {
                "ratio_vs_decord": round(rate / statistics.median(rates["decord"]), 2),
                "cpu_ratio_vs_decord": round(statistics.median(cpu["decord"]) / cpu_ms, 2),
            }
        emit(records, loader=name, sampling=sampling, workers=workers,
             clips_per_s=round(rate, 2), per_core=round(rate / workers, 2),
             cpu_ms_per_clip=round(cpu_ms, 1), cpu_per_core=round(1000 / cpu_ms, 1),
             runs=[round(v, 2) for v in rates[name]], load_average=load_average(), **ratios)


def measure_device_share(
    records: list[dict[str, Any]], dataset: VideoDataset, sampling: str, batch_size: int = 32
) -> None:
    """Clips per second of `DeviceAugment` on one batch, on the GPU when there is one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = collate([dataset[i % len(dataset)] for i in range(batch_size)])
    video, labels, states = batch.clips()  # (B·K, ...), as the trainer does
    video = video.to(device)
    finish = DeviceAugment(dataset.train_transform)
    seconds = []
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        finish(video, labels, states)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    emit(records, device_share_on=device.type, sampling=sampling, batch=len(video),
         clips_per_s=round(len(video) / statistics.median(seconds), 1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 videos, 32 clips, 1 round")
    parser.add_argument("--cache", type=Path, default=None, help="where generated videos stay")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--clips", type=int, default=96, help="clips per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating passes per loader")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=None, help="default: 340/256 x height")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prepared", nargs="+", default=["4:20", "8:20", "1:14"],
                        metavar="GOP:CRF",
                        help="prepared settings to measure: keyframe interval and x264 CRF")
    parser.add_argument("--device-augment", action="store_true",
                        help="also measure the host share of device augmentation")
    parser.add_argument("--repeated-aug", type=int, default=1, help="clips per decoded video")
    parser.add_argument("--samplings", nargs="+", default=list(SAMPLINGS), choices=SAMPLINGS)
    parser.add_argument("--no-decord", action="store_true", help="skip the decord baseline")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.clips, args.rounds = 4, 32, 1
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the measurements; every printed record, in order."""
    args = parse_args(argv)
    width = args.width or round(args.height * 340 / 256 / 2) * 2
    cache = args.cache or Path(tempfile.gettempdir()) / "aim-video-bench-videos"
    short_side = min(256, args.height - args.height % 2)
    torch.set_num_threads(1)  # as in DataLoader workers
    records: list[dict[str, Any]] = []
    emit(records, cpus=os.cpu_count(), load_average_1_5_15=load_average(),
         torch=torch.__version__, av=av.__version__)

    start = time.perf_counter()
    originals = make_videos(cache, args.videos, args.seconds, args.height, width)
    emit(records, videos=len(originals), size=f"{width}x{args.height}", seconds=args.seconds,
         cache=str(cache), generate_s=round(time.perf_counter() - start, 1))
    sources = {"ours": originals} | prepare_all(records, originals, cache, args, short_side)

    for sampling in args.samplings:
        base = dict(num_frames=8, frame_interval=16, input_size=min(CROP, short_side),
                    short_side=short_side, repeated_aug=args.repeated_aug, **SAMPLINGS[sampling])
        loaders = build_loaders(sources, base, args)
        for workers in args.workers:
            measure_all(records, loaders, sampling, workers, args)
        if args.device_augment:
            measure_device_share(records, loaders["ours+device"], sampling)
    return records


if __name__ == "__main__":
    main()
