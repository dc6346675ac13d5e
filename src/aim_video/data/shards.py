"""Video data sets kept as tar shards and streamed: local files, HTTP(S), object stores.

Layout (WebDataset's): each shard is a tar of samples, each sample two members beside each
other, ``KEY.mp4`` (a prepared video) and ``KEY.json`` (label, class name, original path, frame
count and rate). One index, ``NAME.shards.json``, names the shards (relative to itself, or as
URLs), the keys and labels of each shard's samples and the class names, so no reader scans the
shards to count them. `aim-video prepare --shards SIZE` writes both (`write_shards`).

A data set is named by the index (a local path or anything fsspec opens: ``file://``,
``http(s)://``, ``s3://``, ``gs://``, ``memory://``) or by a brace pattern of shards
(``.../train-{000000..000127}.tar``), which is read through once to list its samples.
Credentials come from each store's own places (environment, profiles, instance roles) through
its fsspec back-end, never from the config or a checkpoint, which hold the address only.

Reading streams each shard once, front to back (tar members through webdataset's iterator):

* training (`ShardTrainSet`): the shards are dealt once, whole, into one share per (rank,
  loader worker) slot, largest shard first, each to the share holding the fewest samples so
  far; every epoch gives the shares to the slots in a seeded order, and each slot reads its
  share's shards in a seeded order through a seeded shuffle buffer (`data.shuffle_buffer`
  encoded videos: memory is bounded by it, not by a shard), collating its own batches. Every
  slot yields the same number of samples, the largest share's, the others starting their
  stream again for the few they lack (as `EpochSampler` pads a share): every rank runs the same
  number of steps, the same in every epoch, and the loader's round robin over its workers is a
  fixed order (batch i is worker i % workers' batch i // workers), so a resumed epoch knows
  which samples each worker had delivered and passes over them without decoding them. A
  sample's augmentation comes from (data.seed, epoch, sample id) as for local files, so the
  worker count does not change it. Shares are fixed across epochs (their sizes fix the steps
  of an epoch): a batch mixes one share's videos, the ranks' batches of a step all shares'.
* evaluation (`ShardViewsSet`): shard i is evaluated by rank i % world size, and within a rank
  its shards are dealt to the loader workers: every video once, none repeated.

Faults: a sample that does not decode, or the samples missing from a truncated shard, are bad
files (named ``SHARD#KEY`` or by the shard, with the reason); in training each is replaced by
the worker's next good sample (its last one at the end of its stream), so that batch counts
stay put and a resumed epoch makes the same replacements (unless every sample a worker has
left after the resume point is bad). A shard that cannot be opened or read is retried
`RETRIES` times with doubling waits, then the run stops with one line naming its address.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import tarfile
import tempfile
import time
from contextlib import suppress
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Subset, get_worker_info

from aim_video.data.annotations import Annotations, VideoRecord, load_class_names
from aim_video.data.check import ScanReport
from aim_video.data.dataset import (
    DataConfig,
    DataError,
    Mode,
    TrainBatch,
    TrainItem,
    VideoDataset,
    ViewsItem,
    collate,
)
from aim_video.data.decode import VideoDecodeError
from aim_video.errors import UserError
from aim_video.files import remove_temp_files, write_atomic, write_text_atomic

INDEX_SUFFIX = ".shards.json"
INDEX_FORMAT = "aim-video shards 1"  # the index's "format" field: what wrote it, which version
VIDEO_EXT, META_EXT = "mp4", "json"

# An unreachable shard: tries after the first, and the wait before the first retry (doubling).
RETRIES = 4
RETRY_WAIT_S = 1.0

_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``1GB``, ``500MB``, ``64KiB`` or ``1000000``.

    Raises:
        ValueError: not a positive size.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _SIZE_UNITS or float(match.group(1)) * _SIZE_UNITS[unit] < 1:
        raise ValueError(f"{text!r} is not a size: give e.g. 1GB, 500MB or 64KiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def is_shard_source(path: str | os.PathLike[str] | None) -> bool:
    """Whether `path` names sharded data: an index (``*.shards.json``), a shard or a brace
    pattern of shards (``*.tar``)."""
    if path is None:
        return False
    text = str(path)
    return text.endswith(INDEX_SUFFIX) or text.endswith(".tar")


def expand_pattern(pattern: str) -> list[str]:
    """The shards a WebDataset brace pattern names, in order (``a-{000..002}.tar``: three)."""
    return list(_require("braceexpand").braceexpand(pattern))


def _is_url(path: str) -> bool:
    return "://" in path


def _resolve(index_path: str, name: str) -> str:
    """A shard named in an index: a URL or absolute path as it is, else relative to the index."""
    if _is_url(name) or os.path.isabs(name):
        return name
    if _is_url(index_path):
        return index_path.rsplit("/", 1)[0] + "/" + name
    return os.path.join(os.path.dirname(index_path), name)


# ------------------------------------------------------------------ opening, with retries


class ShardUnreachableError(DataError):
    """A shard (or index) that could not be opened or read after every retry."""


class ShardsUnavailableError(UserError, ImportError):
    """A package that reading shards (or one store) needs is not installed."""


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ShardsUnavailableError(
            f"sharded data needs {module}: pip install 'aim-video[shards]'") from None


class _ReadAhead:
    """A file read in large chunks: the tar reader asks for 10 KB at a time, and each read of
    an fsspec stream crosses to fsspec's event-loop thread and back."""

    CHUNK = 1 << 20

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = self.raw.read(self.CHUNK if size < 0 else max(self.CHUNK, size))
            if not chunk:
                break
            self.buffer += chunk
        size = len(self.buffer) if size < 0 else min(size, len(self.buffer))
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> _ReadAhead:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open(url: str) -> _ReadAhead:
    """A binary file object reading `url` front to back (fsspec; HTTP as one stream)."""
    fsspec = _require("fsspec")
    # HTTP: one streaming GET, not a range request per block (many servers do not do ranges).
    options = {"block_size": 0} if url.startswith(("http://", "https://")) else {}
    try:
        return _ReadAhead(fsspec.open(url, "rb", **options).open())
    except ImportError as err:  # the store's back-end (s3fs, gcsfs, aiohttp) is missing
        raise ShardsUnavailableError(
            f"{url}: {err} (pip install 'aim-video[s3]' or 'aim-video[gcs]' for object "
            "stores, 'aim-video[shards]' for HTTP)") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What opening or reading a store raises when it cannot be reached (not a bad file)."""
    errors: tuple[type[BaseException], ...] = (OSError, TimeoutError)
    try:
        import aiohttp  # fsspec's HTTP back-end: HTTP statuses, broken connections

        errors += (aiohttp.ClientError,)
    except ImportError:
        pass
    return errors


def _with_retries(url: str, action: Callable[[], Any], what: str = "shard") -> Any:
    """`action()`, retried on transport errors with doubling waits; then one line."""
    for attempt in range(RETRIES + 1):
        try:
            return action()
        except _transport_errors() as err:
            if attempt == RETRIES:
                raise ShardUnreachableError(
                    f"{url}: the {what} cannot be read after {RETRIES + 1} tries "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                    "check the address, the network and the store's credentials"
                ) from None
            time.sleep(RETRY_WAIT_S * 2**attempt)
    raise AssertionError("unreachable")


def _read_bytes(url: str, what: str = "shard") -> bytes:
    def read() -> bytes:
        with _open(url) as f:
            return f.read()

    return _with_retries(url, read, what)


# ------------------------------------------------------------------ the index


@dataclass(frozen=True)
class Shard:
    """One shard of an index."""

    url: str  # where it is read from (resolved against the index's address)
    keys: tuple[str, ...]  # its samples' keys, in tar order
    labels: tuple[int, ...]  # their labels
    start: int  # the sample id of its first sample (ids count samples across the shards)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class ShardIndex:
    """A sharded data set: its shards and class names."""

    source: str  # the index's address, or the brace pattern
    shards: tuple[Shard, ...]
    class_names: tuple[str, ...]

    @property
    def num_samples(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def records(self) -> list[VideoRecord]:
        """One record per sample, by sample id; its path is ``SHARD#KEY``."""
        return [VideoRecord(f"{shard.url}#{key}", label)
                for shard in self.shards for key, label in zip(shard.keys, shard.labels)]


def _shards(urls: Sequence[str], entries: Sequence[tuple[Sequence[str], Sequence[int]]]
            ) -> tuple[Shard, ...]:
    shards, start = [], 0
    for url, (keys, labels) in zip(urls, entries, strict=True):
        shards.append(Shard(url, tuple(keys), tuple(int(x) for x in labels), start))
        start += len(keys)
    return tuple(shards)


def read_index(source: str, class_names: str | Sequence[str] | None = None) -> ShardIndex:
    """The shard index at `source`, or the shards of a brace pattern (read through once).

    Args:
        source: a ``*.shards.json`` path or URL, or a pattern of ``.tar`` shards.
        class_names: for a pattern, the class names or a file of them (``classes.txt``);
            an index holds its own and needs none.

    Raises:
        DataError: the index is unreadable or not an index (named), a pattern without class
            names, or a label beyond them.
    """
    source = str(source)
    if re.match(r"^[a-z0-9+.-]+://[^/@]*:[^/@]*@", source, re.IGNORECASE):
        # The address is saved in the run's config and checkpoints.
        raise DataError(f"{source.split('@', 1)[1]}: a password in the address; give the "
                        "store's credentials where its client looks for them (environment, "
                        "profile, netrc), not in the config")
    if source.endswith(INDEX_SUFFIX):
        text = _read_bytes(source, "shard index")
        try:
            data = json.loads(text)
            if data.get("format") != INDEX_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {INDEX_FORMAT!r}")
            names = [str(name) for name in data["classes"]]
            urls = [_resolve(source, entry["url"]) for entry in data["shards"]]
            entries = [(entry["keys"], entry["labels"]) for entry in data["shards"]]
            for entry in data["shards"]:
                if len(entry["keys"]) != len(entry["labels"]) or entry["samples"] != len(
                        entry["keys"]):
                    raise ValueError(f"shard {entry['url']}: samples, keys and labels differ")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{source}: not a readable shard index ({err}); write one with "
                            "`aim-video prepare ... --shards SIZE`") from None
        if class_names is not None and _names(class_names) != names:
            # Labels are indices into the index's own names: others would rename classes.
            raise DataError(f"{source}: its classes differ from data.class_names "
                            f"({class_names if isinstance(class_names, str) else 'a list'}); "
                            "an index names its own classes: drop data.class_names")
    else:
        if class_names is None:
            raise DataError(f"{source}: a pattern of shards needs data.class_names (the "
                            "shards' classes.txt), or give its .shards.json index instead")
        names = _names(class_names)
        urls = expand_pattern(source)
        entries = [_scan(url) for url in urls]
    index = ShardIndex(source, _shards(urls, entries), tuple(names))
    for shard in index.shards:
        bad = [label for label in shard.labels if not 0 <= label < len(names)]
        if bad:
            raise DataError(f"{shard.url}: label {bad[0]} is not one of the "
                            f"{len(names)} classes of {source}")
    if index.num_samples == 0:
        raise DataError(f"{source}: no samples in its shards")
    return index


def _names(class_names: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    if isinstance(class_names, (str, os.PathLike)):
        return load_class_names(class_names)
    return [str(name) for name in class_names]


def _scan(url: str) -> tuple[list[str], list[int]]:
    """Keys and labels of a shard, read from its samples' JSON members."""
    keys, labels = [], []
    try:
        for sample in _samples(url):
            meta = json.loads(sample[META_EXT])
            keys.append(sample["__key__"])
            labels.append(int(meta["label"]))
    except (tarfile.TarError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"{url}: not a readable shard ({type(err).__name__}: {err})") from None
    return keys, labels


def _samples(url: str, fileobj: Any = None) -> Iterator[dict[str, Any]]:
    """The samples of one shard as webdataset groups them: {"__key__", "mp4", "json"}."""
    tariterators = _require("webdataset.tariterators")
    group_by_keys, tar_file_iterator = tariterators.group_by_keys, tariterators.tar_file_iterator
    with (fileobj or _open(url)) as stream:
        files = (dict(entry, __url__=url) for entry in tar_file_iterator(stream))
        yield from group_by_keys(files, lcase=True)


# ------------------------------------------------------------------ streaming one shard


@dataclass
class _Sample:
    """One planned sample as it comes out of a shard."""

    id: int  # its sample id
    name: str  # SHARD#KEY
    label: int
    video: bytes | None  # None: missing or unreadable
    reason: str = ""  # why video is None


def _stream_shard(shard: Shard) -> Iterator[_Sample]:
    """Every sample the index names for `shard`, in order: its bytes, or why there are none.

    Transport errors (opening, or reading mid-way) retry the shard from its start, passing over
    the samples already given; a shard that ends early or is not a tar is a truncated shard:
    its remaining samples come back without bytes.
    """
    done = 0
    position = {key: i for i, key in enumerate(shard.keys)}
    failures = 0
    while True:
        try:
            stream = _with_retries(shard.url, lambda: _open(shard.url))
            for sample in _samples(shard.url, stream):
                i = position.get(sample.get("__key__"), -1)
                if i < done:
                    continue  # given before a retry, or not in the index
                while done < i:  # members of the index missing from the tar
                    yield _missing(shard, done, "not in the shard")
                    done += 1
                video = sample.get(VIDEO_EXT)
                yield _Sample(shard.start + i, f"{shard.url}#{shard.keys[i]}", shard.labels[i],
                              video, "" if video is not None else f"no .{VIDEO_EXT} member")
                done += 1
            break
        except (tarfile.TarError, EOFError) as err:
            # webdataset appends " @ <the file object>" to the message: no use to anyone.
            detail = str(err).split(" @ ", 1)[0]
            reason = f"truncated or corrupt shard ({type(err).__name__}: {detail})"
            while done < len(shard):
                yield _missing(shard, done, reason)
                done += 1
            return
        except ShardUnreachableError:
            raise
        except _transport_errors() as err:
            failures += 1  # broken mid-way: reopen (with retries), pass over what was given
            if failures > RETRIES:
                raise ShardUnreachableError(
                    f"{shard.url}: the shard broke off {failures} times while being read "
                    f"({type(err).__name__}: {err}); check the address and the network"
                ) from None
            time.sleep(RETRY_WAIT_S * 2 ** (failures - 1))
    while done < len(shard):
        yield _missing(shard, done, "the shard ends before this sample (truncated?)")
        done += 1


def _missing(shard: Shard, i: int, reason: str) -> _Sample:
    return _Sample(shard.start + i, shard.url, shard.labels[i], None,
                   f"sample {shard.keys[i]}: {reason}")


def _shuffled(samples: Iterator[_Sample], size: int, rng: np.random.Generator
              ) -> Iterator[_Sample]:
    """A shuffle buffer: hold up to `size` samples; each new one replaces a random held one,
    which comes out; the rest come out in random order at the end."""
    buffer: list[_Sample] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        j = int(rng.integers(size))
        buffer[j], sample = sample, buffer[j]
        yield sample
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


# ------------------------------------------------------------------ decoding


class _Decoder(VideoDataset):
    """The local dataset's decoding and transforms, applied to one sample's bytes at a time
    (written to a scratch file: the decoders read files)."""

    def __init__(self, class_names: Sequence[str], cfg: DataConfig, mode: Mode) -> None:
        super().__init__(Annotations([], list(class_names)), cfg, mode)
        self._scratch: str | None = None
        self._owner = 0  # the process that made the scratch file

    def _file(self, data: bytes) -> str:
        # One file per process: a loader worker forked after this process made its file
        # would otherwise write into the same one.
        if self._scratch is None or self._owner != os.getpid():
            folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
            handle, self._scratch = tempfile.mkstemp(prefix="aim-video-", suffix=f".{VIDEO_EXT}",
                                                     dir=folder)
            os.close(handle)
            self._owner = os.getpid()
        with open(self._scratch, "wb") as f:
            f.write(data)
        return self._scratch

    def __del__(self) -> None:
        if getattr(self, "_scratch", None) and self._owner == os.getpid():
            with suppress(OSError):
                os.unlink(self._scratch)

    def train_item(self, sample: _Sample, epoch: int) -> TrainItem:
        """Raises VideoDecodeError (named by the sample) when it does not decode."""
        if sample.video is None:
            raise VideoDecodeError(sample.name, sample.reason)
        rng = np.random.default_rng([self.cfg.seed, epoch, sample.id])  # as VideoDataset.rng
        num_clips = self.cfg.repeated_aug
        generators = [
            torch.Generator().manual_seed(int(rng.integers(2**63 - 1))) for _ in range(num_clips)
        ]
        record = VideoRecord(self._file(sample.video), sample.label)
        try:
            clips = self._decode(
                record, lambda n: np.stack([self.sampling.train(n, rng) for _ in range(num_clips)]),
                self.train_transform.short_side)
        except VideoDecodeError as err:
            raise VideoDecodeError(sample.name, err.reason) from None
        return self._augment(clips, sample.label, generators, sample.id, [])

    def views_item(self, sample: _Sample) -> ViewsItem:
        record = VideoRecord(self._file(sample.video) if sample.video else "", sample.label)
        self.records = [record]
        item = self._test_item(0) if sample.video else None
        self.records = []
        if item is None or not item["ok"]:
            reason = sample.reason if item is None else item["skipped"][0][1]
            cfg = self.cfg
            video = torch.zeros(cfg.test_clips * cfg.test_crops, 3, self.sampling.clip_len,
                                cfg.input_size, cfg.input_size)
            return ViewsItem(video=video, label=sample.label, index=sample.id, ok=False,
                             skipped=[(sample.name, reason)])
        return ViewsItem(video=item["video"], label=sample.label, index=sample.id, ok=True,
                         skipped=[])


# ------------------------------------------------------------------ the plan of an epoch


def deal(counts: Sequence[int], order: Sequence[int], slots: int) -> list[list[int]]:
    """Shards (indices into `counts`, taken in `order`) dealt to `slots`: each to the slot
    holding the fewest samples so far (the lowest such slot on ties)."""
    dealt: list[list[int]] = [[] for _ in range(slots)]
    totals = [0] * slots
    for shard in order:
        slot = min(range(slots), key=lambda s: (totals[s], s))
        dealt[slot].append(shard)
        totals[slot] += counts[shard]
    return dealt


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ShardTrainSet(IterableDataset):
    """Training batches streamed from shards (see the module docstring).

    Built by `open_shard_dataset`; `configure(...)` fixes the process's place and the batch
    size and gives the object the trainer keeps as its sampler (`set_epoch(epoch, skip)`,
    `per_process`); `batches()` is what its loader reads (batch_size=None): `TrainBatch`es
    collated in the loader's workers.
    """

    def __init__(self, index: ShardIndex, cfg: DataConfig, source: str) -> None:
        self.index = index
        self.cfg = cfg
        self.source = source
        self.decoder = _Decoder(index.class_names, cfg, "train")
        self.class_names = list(index.class_names)
        self.train_transform = self.decoder.train_transform
        # epoch, batches of this rank already consumed; shared so persistent workers see it
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.rank, self.world_size, self.seed, self.batch_size = 0, 1, 0, 1
        self.drop_last = False
        self.workers = max(1, cfg.num_workers)

    def __len__(self) -> int:
        return self.index.num_samples

    def configure(self, rank: int, world_size: int, seed: int, batch_size: int,
                  drop_last: bool) -> ShardSampler:
        """Fixes this process's place and the batching; the trainer's sampler.

        Raises:
            DataError: fewer shards than processes × loader workers (a slot would be empty).
        """
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.__dict__.pop("groups", None)
        self.batch_size, self.drop_last = batch_size, drop_last
        slots = world_size * self.workers
        if len(self.index.shards) < slots:
            raise DataError(
                f"{self.source}: {len(self.index.shards)} shards for {world_size} process(es) "
                f"× {self.workers} loader worker(s): every worker reads whole shards; prepare "
                "smaller shards (--shards) or lower data.num_workers")
        return ShardSampler(self)

    def check_resume(self, checkpoint: str | os.PathLike[str], world_size: int,
                     num_workers: int, step_in_epoch: int) -> None:
        """Refuse to resume mid-epoch with other (process, loader worker) slots than the
        checkpoint's run had: the shares, and so what its first steps trained, would differ.

        Raises:
            DataError: naming the counts to resume with.
        """
        saved = world_size * max(1, num_workers)
        if step_in_epoch > 0 and saved != self.world_size * self.workers:
            raise DataError(
                f"{checkpoint} stopped mid-epoch reading shards with {world_size} process(es) "
                f"x {max(1, num_workers)} loader worker(s); resume with the same counts "
                "(data.num_workers), since each epoch deals the shards to those slots")

    def set_epoch(self, epoch: int) -> None:
        self._state[0] = epoch

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    @functools.cached_property
    def groups(self) -> list[list[int]]:
        """The shards of each slot's share: dealt once, largest first, so that the shares'
        sizes (and with them the steps of an epoch) are the same in every epoch."""
        counts = [len(shard) for shard in self.index.shards]
        largest_first = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
        return deal(counts, largest_first, self.world_size * self.workers)

    def plan(self, epoch: int) -> tuple[list[list[int]], int]:
        """(shards of each slot, in reading order; samples every slot yields) in `epoch`;
        slot = rank × workers + worker. Each epoch gives the shares to other slots and puts
        each share's shards in another order."""
        rng = np.random.default_rng([self.seed, epoch])
        slots = rng.permutation(len(self.groups))
        dealt = [[self.groups[g][i] for i in rng.permutation(len(self.groups[g]))]
                 for g in slots]
        counts = [len(shard) for shard in self.index.shards]
        return dealt, max(sum(counts[s] for s in group) for group in self.groups)

    def batches_per_worker(self) -> int:
        _, target = self.plan(self.epoch)
        return target // self.batch_size if self.drop_last else -(-target // self.batch_size)

    def batches(self) -> _Batches:
        return _Batches(self)

    def _slot_samples(self, shards: list[int], target: int, epoch: int, slot: int
                      ) -> Iterator[_Sample]:
        """The slot's `target` samples: its shards through the shuffle buffer, started again
        for the few it lacks."""
        given, repeat = 0, 0
        while given < target:
            rng = np.random.default_rng([self.seed, epoch, slot, repeat])
            stream = (s for i in shards for s in _stream_shard(self.index.shards[i]))
            for sample in _shuffled(stream, max(1, self.cfg.shuffle_buffer), rng):
                yield sample
                given += 1
                if given == target:
                    return
            repeat += 1

    def __iter__(self) -> Iterator[TrainBatch]:
        worker, workers = _worker()
        assert workers == self.workers, "the loader's workers are not data.num_workers"
        epoch, consumed = int(self._state[0]), int(self._state[1])
        dealt, target = self.plan(epoch)
        # The loader asks its workers in turn from worker 0: after `consumed` batches the next
        # one is the turn of the epoch's worker consumed % workers, whose part this one plays.
        role = (worker + consumed) % workers
        slot = self.rank * self.workers + role
        per_worker = self.batches_per_worker()
        # Batches the loader had taken from that part before the resume.
        mine_done = max(0, -(-(consumed - role) // workers))
        skip = min(mine_done * self.batch_size, target)
        limit = per_worker * self.batch_size
        items: list[TrainItem] = []
        last_good: TrainItem | None = None
        # Bad samples wait for the next good one, which stands in for each of them: a rule
        # that looks forward only, so a resumed epoch replaces them as the first run did.
        pending: list[tuple[str, str]] = []
        for n, sample in enumerate(self._slot_samples(dealt[slot], target, epoch, slot)):
            if n >= limit:
                break
            if n < skip:
                continue
            try:
                item = self.decoder.train_item(sample, epoch)
            except VideoDecodeError as err:
                pending.append((err.path, err.reason))
                continue
            last_good = item
            items.extend(replace(item, skipped=[entry]) for entry in pending)
            pending = []
            items.append(item)
            while len(items) >= self.batch_size:
                yield collate(items[: self.batch_size])
                items = items[self.batch_size :]
        if pending and last_good is None:
            raise DataError(f"{self.source}: no sample of this worker's shards decodes; "
                            f"the first: {pending[0][0]}: {pending[0][1]}")
        # Bad samples at the very end: the last good one stands in for them.
        items.extend(replace(last_good, skipped=[entry]) for entry in pending)
        while len(items) >= self.batch_size:
            yield collate(items[: self.batch_size])
            items = items[self.batch_size :]
        if items and not self.drop_last:
            yield collate(items)


class _Batches(IterableDataset):
    """What the training loader reads: the set's batches, with the batch count as length."""

    def __init__(self, dataset: ShardTrainSet) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return self.dataset.workers * self.dataset.batches_per_worker()

    def __iter__(self) -> Iterator[TrainBatch]:
        return iter(self.dataset)


class ShardSampler:
    """The trainer's sampler for shards: where an epoch starts (the loader reads the set)."""

    def __init__(self, dataset: ShardTrainSet) -> None:
        self.dataset = dataset

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Read `epoch`, passing over the first `skip` videos of this process's share (a
        whole number of batches: what a resumed run had consumed)."""
        self.dataset._state[0] = epoch
        self.dataset._state[1] = skip // self.dataset.batch_size

    @property
    def per_process(self) -> int:
        return self.dataset.plan(self.dataset.epoch)[1] * self.dataset.workers


class ShardViewsSet(IterableDataset):
    """Test-mode items (`ViewsItem`) streamed from shards, each video once.

    `rank_indices(rank, world)` are the sample ids of the shards rank `rank` evaluates (shard i
    by rank i % world); `subset(ids)` streams only the shards holding `ids`, dealt to the loader
    workers, and yields those samples.
    """

    def __init__(self, index: ShardIndex, cfg: DataConfig, source: str,
                 only: frozenset[int] | None = None) -> None:
        self.index = index
        self.cfg = cfg
        self.source = source
        self.class_names = list(index.class_names)
        self.records = index.records()
        self.only = only
        self.decoder = _Decoder(index.class_names, cfg, "test")

    def __len__(self) -> int:
        return self.index.num_samples if self.only is None else len(self.only)

    def rank_indices(self, rank: int, world_size: int) -> list[int]:
        return [shard.start + i for shard in self.index.shards[rank::world_size]
                for i in range(len(shard))]

    def subset(self, indices: Sequence[int]) -> ShardViewsSet:
        return ShardViewsSet(self.index, self.cfg, self.source, frozenset(indices))

    def __iter__(self) -> Iterator[ViewsItem]:
        worker, workers = _worker()
        wanted = [shard for shard in self.index.shards if self.only is None
                  or any(shard.start + i in self.only for i in range(len(shard)))]
        for shard in wanted[worker::workers]:
            for sample in _stream_shard(shard):
                if self.only is None or sample.id in self.only:
                    yield self.decoder.views_item(sample)


def rank_subset(dataset: VideoDataset | ShardViewsSet, indices: Sequence[int]
                ) -> Dataset | ShardViewsSet:
    """The items `indices` of a test-mode dataset of either kind, for a loader."""
    if isinstance(dataset, ShardViewsSet):
        return dataset.subset(indices)
    return Subset(dataset, indices)


def open_shard_dataset(cfg: DataConfig, source: str, mode: Mode, key: str
                       ) -> ShardTrainSet | ShardViewsSet:
    """The sharded data set at `source` (`key` names the config key in messages)."""
    index = read_index(source, cfg.class_names)
    label = f"{key} ({source})"
    if mode == "train":
        return ShardTrainSet(index, cfg, label)
    return ShardViewsSet(index, cfg, label)


# ------------------------------------------------------------------ checking shards


def _check_shard(shard: Shard) -> list[tuple[str, str | None]]:
    """(sample name, why it cannot be read or None) of every sample of `shard`."""
    from aim_video.data.check import check_entry

    scratch = _Decoder((), DataConfig(), "test")
    results = []
    for sample in _stream_shard(shard):
        if sample.video is None:
            results.append((sample.name, sample.reason))
            continue
        record = VideoRecord(scratch._file(sample.video), sample.label)
        results.append((sample.name, check_entry(record)))
    return results


def scan_shards(source: str, class_names: str | Sequence[str] | None = None,
                workers: int | None = None, progress: bool = True) -> ScanReport:
    """`aim-video check-data` for sharded data: every sample of every shard opened and its
    first and last frames decoded; a truncated shard's missing samples are bad entries.

    Args:
        source: the index or brace pattern, as `read_index` takes it.
        class_names: for a pattern.
        workers: processes, each reading whole shards (default: one per CPU); 0 or 1: here.
        progress: a progress bar (shards) on stderr.
    """
    import sys

    from tqdm import tqdm

    from aim_video.data.check import BadEntry
    from aim_video.data.pool import process_pool, usable_cpus

    index = read_index(source, class_names)
    workers = usable_cpus() if workers is None else workers
    report = ScanReport()
    with tqdm(total=len(index.shards), desc="check-data", unit="shard", disable=not progress,
              file=sys.stderr) as bar:
        def add(results: Iterable[list[tuple[str, str | None]]]) -> None:
            for shard_results in results:
                for name, reason in shard_results:
                    if reason is None:
                        report.good += 1
                    else:
                        report.bad.append(BadEntry(name, reason))
                bar.update()

        if workers <= 1 or len(index.shards) <= 1:
            add(map(_check_shard, index.shards))
        else:
            with process_pool(min(workers, len(index.shards))) as pool:
                add(pool.map(_check_shard, index.shards))
    return report


# ------------------------------------------------------------------ writing shards


def write_shard(path: str | os.PathLike[str],
                samples: Iterable[tuple[str, bytes, dict[str, Any]]]) -> None:
    """A tar shard of (key, video bytes, metadata) samples, written atomically; `samples` is
    consumed one at a time, so a shard never sits in memory whole."""
    TarWriter = _require("webdataset").TarWriter  # noqa: N806 (a class)

    def write(temp: Path) -> None:
        # mtime fixed: the same samples make the same bytes.
        with TarWriter(str(temp), mtime=0.0, compress=False) as sink:
            for key, video, meta in samples:
                sink.write({"__key__": key, VIDEO_EXT: video,
                            META_EXT: json.dumps(meta, sort_keys=True).encode()})

    write_atomic(Path(path), write)


def _members(path: Path) -> list[str] | None:
    """The member names of a local shard, or None when it is missing or unreadable."""
    try:
        with tarfile.open(path, "r:") as tar:
            return tar.getnames()
    except (OSError, tarfile.TarError):
        return None


def plan_shards(sizes: Sequence[int], limit: int) -> list[range]:
    """Consecutive samples grouped into shards of about `limit` bytes: a shard is closed before
    the sample that would take it past `limit` (a sample larger than it is a shard alone)."""
    groups, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            groups.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        groups.append(range(start, len(sizes)))
    return groups


# Per sample in a shard beyond its video: two 512-byte tar headers, the JSON and padding.
SAMPLE_OVERHEAD = 2048


@dataclass
class ShardsReport:
    """What `write_shards` did."""

    index_file: Path
    shards: int = 0  # shards in the index
    written: int = 0  # shards written by this run (the others were already there, the same)
    samples: int = 0
    bytes: int = 0  # size of the shards


def write_shards(
    samples: Sequence[tuple[str, str, int]],
    class_names: Sequence[str],
    out_dir: str | os.PathLike[str],
    name: str,
    limit: int,
    *,
    seed: int = 0,
) -> ShardsReport:
    """Pack prepared videos into ``NAME-000000.tar``... of about `limit` bytes and write the
    index ``NAME.shards.json`` beside them.

    The samples go in a seeded random order (lists are often sorted by class, and a shard is
    read front to back, so the shuffle buffer alone would see one class at a time); sample
    keys are their positions in `samples`. Resumable: a shard already holding exactly the
    samples it should is kept; other shards of NAME beyond the new count are removed.

    Args:
        samples: (prepared video file, original path, label) of each video.
        class_names: the classes the labels index.
        out_dir: the folder (the prepared videos' own, usually).
        name: the shards' and index's name (the split: ``train``).
        limit: bytes per shard, about.
        seed: the packing order's seed.
    """
    from aim_video.data.decode import open_video

    out = Path(out_dir)
    order = np.random.default_rng(seed).permutation(len(samples)).tolist()
    width = max(6, len(str(len(samples))))
    keys = {i: f"{i:0{width}d}" for i in range(len(samples))}
    groups = plan_shards([os.path.getsize(samples[i][0]) + SAMPLE_OVERHEAD for i in order],
                         limit)
    report = ShardsReport(out / f"{name}{INDEX_SUFFIX}", len(groups), samples=len(samples))

    def contents(members: range) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
        for j in members:
            path, original, label = samples[order[j]]
            with open_video(path) as reader:
                frames, fps = reader.num_frames, reader.fps
            meta = {"label": int(label), "class": class_names[label], "path": original,
                    "frames": frames, "fps": fps}
            yield keys[order[j]], Path(path).read_bytes(), meta

    entries = []
    for k, members in enumerate(groups):
        shard = out / f"{name}-{k:06d}.tar"
        shard_keys = [keys[order[j]] for j in members]
        wanted = sorted(f"{key}.{ext}" for key in shard_keys for ext in (META_EXT, VIDEO_EXT))
        if sorted(_members(shard) or []) != wanted:
            remove_temp_files(out, shard.name)  # what a killed run left of it
            write_shard(shard, contents(members))
            report.written += 1
        size = shard.stat().st_size
        report.bytes += size
        entries.append({"url": shard.name, "samples": len(shard_keys), "bytes": size,
                        "keys": shard_keys, "labels": [int(samples[order[j]][2]) for j in members]})
    stale = re.compile(rf"{re.escape(name)}-(\d{{6}})\.tar")
    for path in out.iterdir():
        match = stale.fullmatch(path.name)
        if match and int(match.group(1)) >= len(groups):
            path.unlink()
    document = {"format": INDEX_FORMAT, "classes": list(class_names),
                "samples": len(samples), "shards": entries}
    # One line: an index of a million samples stays a few tens of MB to parse.
    write_text_atomic(report.index_file, json.dumps(document, separators=(",", ":")) + "\n")
    return report
