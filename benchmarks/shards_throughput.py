"""Training clips per second from tar shards over loopback HTTP against the same prepared videos
as local files, and each loader's peak memory.

Makes a synthetic data set (real H.264 files, `aim_video.data.synthetic`), prepares it once as
`aim-video prepare --shards` does (videos, list, shards and index in one cached folder), serves
that folder over HTTP on 127.0.0.1 from a thread, then reads training epochs through a real
`torch.utils.data.DataLoader` with the same settings both ways:

- ``local``: `VideoDataset` on the prepared list (the files on the local disk), `EpochSampler`;
- ``http``: `ShardTrainSet` on ``http://127.0.0.1:PORT/train.shards.json`` (streamed shards,
  shuffle buffer `--buffer`).

Each loader runs in a process of its own (forked), so its peak resident memory (``rss_mb``, the
largest of the process and its loader workers) is its own. Prints JSON lines: the machine, then
per loader clips/s, CPU ms per clip (workers and main process) and ``cpu_per_core`` = 1000 / that
(clips per busy core-second, the steadier figure on a loaded machine), and the ratio http/local
of both (goal: 0.9 or more).

    python benchmarks/shards_throughput.py --quick
    python benchmarks/shards_throughput.py --videos 256 --epochs 2 --workers 2
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from aim_video.data.annotations import load_annotations
from aim_video.data.dataset import DataConfig, VideoDataset, build_dataset, collate
from aim_video.data.prepare import EncodeSettings, prepare_dataset, target_paths
from aim_video.data.shards import write_shards
from aim_video.data.synthetic import make_synthetic
from aim_video.engine.distributed import DistEnv, EpochSampler


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _data(cache: Path, videos: int, size: int, frames: int, shard_bytes: int) -> Path:
    """The prepared folder (videos, train.txt, classes.txt, shards, index), made once."""
    out = cache / f"prepared-{videos}-{size}-{frames}"
    if (out / "train.shards.json").is_file():
        return out
    source = cache / f"synthetic-{videos}-{size}-{frames}"
    make_synthetic(source, num_train=videos, num_val=1, frames=frames, size=size, seed=0,
                   progress=False)
    annotations = load_annotations(source / "train.txt", root=source,
                                   class_names=source / "classes.txt")
    prepare_dataset(annotations, out, EncodeSettings(short_side=size), list_name="train.txt",
                    progress=False)
    targets = target_paths([r.path for r in annotations.records], out)
    samples = [(str(t), r.path, r.label) for r, t in zip(annotations.records, targets,
                                                          strict=True)]
    write_shards(samples, annotations.class_names, out, "train", shard_bytes)
    return out


def _measure(kind: str, source: str, args: argparse.Namespace, folder: Path, queue) -> None:
    torch.set_num_threads(1)
    cfg = DataConfig(train=source, format="mmaction" if kind == "local" else "auto",
                     class_names=str(folder / "classes.txt"), num_frames=8, frame_interval=2,
                     input_size=args.input_size, short_side=args.input_size,
                     num_workers=args.workers, shuffle_buffer=args.buffer)
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    dataset = build_dataset(cfg, "train")
    if isinstance(dataset, VideoDataset):
        sampler = EpochSampler(len(dataset), env, seed=0)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                            num_workers=args.workers, collate_fn=collate)
    else:
        sampler = dataset.configure(0, 1, 0, args.batch_size, False)
        loader = DataLoader(dataset.batches(), batch_size=None, num_workers=args.workers)
    clips = 0
    start, cpu_start = time.monotonic(), time.process_time()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for batch in loader:
            clips += batch.video.shape[0] * batch.video.shape[1]
    seconds = time.monotonic() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, once they ended
    cpu = time.process_time() - cpu_start + children.ru_utime + children.ru_stime
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, children.ru_maxrss) / 1024
    queue.put({"loader": kind, "clips": clips, "seconds": round(seconds, 2),
               "clips_per_s": round(clips / seconds, 1),
               "cpu_ms_per_clip": round(1000 * cpu / clips, 2),
               "cpu_per_core": round(clips / cpu, 1), "rss_mb": round(rss)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=128)
    parser.add_argument("--size", type=int, default=128, help="prepared short side")
    parser.add_argument("--frames", type=int, default=64, help="frames per video")
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--shard-size", default="4MB")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--buffer", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aim-shards"))
    parser.add_argument("--quick", action="store_true", help="32 videos, one epoch")
    args = parser.parse_args()
    if args.quick:
        args.videos, args.epochs = 32, 1
    from aim_video.data.shards import parse_size

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    folder = _data(cache, args.videos, args.size, args.frames, parse_size(args.shard_size))
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/train.shards.json"
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()[0],
                                  "videos": args.videos, "workers": args.workers,
                                  "shards": len(json.loads(
                                      (folder / "train.shards.json").read_text())["shards"])}}))
    context = multiprocessing.get_context("fork")
    results = {}
    for kind, source in (("local", str(folder / "train.txt")), ("http", url)):
        queue = context.Queue()
        process = context.Process(target=_measure, args=(kind, source, args, folder, queue))
        process.start()
        results[kind] = queue.get()
        process.join()
        print(json.dumps(results[kind]))
    server.shutdown()
    print(json.dumps({"ratio_http_over_local": {
        key: round(results["http"][key] / results["local"][key], 3)
        for key in ("clips_per_s", "cpu_per_core")},
        "rss_mb": {kind: result["rss_mb"] for kind, result in results.items()}}))


if __name__ == "__main__":
    main()
