"""Sharded, streamed data (`aim_video.data.shards`): `prepare --shards` writes WebDataset tar
shards and their index (bad inputs left out, reruns keep finished shards); the index reads the
same from a local path, file://, HTTP (a server on 127.0.0.1 started here), fsspec's memory
filesystem and a local S3 server (moto), and a brace pattern gives the same samples; evaluation
over HTTP shards counts every video once across ranks and gives the local files' predictions;
training reads every sample once per epoch across ranks and loader workers, the same steps on
every rank, equal over HTTP and from local shards, resumes mid-epoch (after SIGKILL too) to the
uninterrupted run's tensors; corrupt samples and truncated shards are bad files, unreachable
shards are retried with doubling waits, then one line."""

from __future__ import annotations

import functools
import http.server
import json
import signal
import tarfile
import threading
from pathlib import Path

import fsspec
import pytest
import torch
from test_engine_support import tiny_config, tiny_overrides

from aim_video.cli import main
from aim_video.data import shards as shards_module
from aim_video.data.annotations import load_annotations
from aim_video.data.dataset import DataConfig, DataError, build_dataset
from aim_video.data.shards import (
    deal,
    expand_pattern,
    parse_size,
    plan_shards,
    read_index,
    write_shard,
)
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.evaluate import evaluate_model

pytestmark = pytest.mark.usefixtures("one_thread")

SHARD_SIZE = "9KB"  # two 32-px synthetic videos (~2.3 KB each + 2 KB overhead) per shard


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def sharded(synthetic, tmp_path_factory) -> dict:
    """The synthetic training videos plus one broken file, prepared into shards by the CLI."""
    work = tmp_path_factory.mktemp("sharded")
    broken = work / "broken.mp4"
    broken.write_bytes(b"not a video")
    listed = (synthetic / "train.txt").read_text().splitlines()
    lines = [f"{synthetic / line.split()[0]} {line.split()[1]}" for line in listed]
    (work / "train.txt").write_text("\n".join([*lines[:3], f"{broken} 1", *lines[3:]]) + "\n")
    out = work / "prepared"
    argv = ["prepare", str(work / "train.txt"), "--out", str(out), "--short-side", "32",
            "--workers", "0", "--class-names", str(synthetic / "classes.txt"),
            "--shards", SHARD_SIZE, "--no-progress"]
    assert main(argv) == 1  # done, with the broken file left out (exit status 1)
    return {"out": out, "index": out / "train.shards.json", "argv": argv, "broken": broken,
            "sources": [line.split()[0] for line in lines],
            "labels": [int(line.split()[1]) for line in lines]}


@pytest.fixture(scope="module")
def http_root(sharded):
    """The prepared folder served over HTTP on 127.0.0.1 (a free port)."""
    handler = functools.partial(_QuietHandler, directory=str(sharded["out"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_parse_size():
    assert parse_size("1GB") == 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("64KiB") == 65536
    assert parse_size("1000") == 1000
    for bad in ("", "1XB", "-1GB", "0"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)


def test_prepare_refuses_a_bad_shard_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(tmp_path / "list.txt"), "--out", str(tmp_path), "--shards", "1XB"])
    assert exit_info.value.code == 2
    assert "--shards: '1XB' is not a size: give e.g. 1GB" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_plan_and_deal():
    assert plan_shards([4, 4, 4, 9, 1], 8) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    # Each shard to the slot holding fewest samples (ties: lowest slot).
    assert deal([5, 3, 3, 2], [0, 1, 2, 3], 2) == [[0, 3], [1, 2]]
    assert expand_pattern("x/t-{000..002}.tar") == ["x/t-000.tar", "x/t-001.tar", "x/t-002.tar"]


def test_prepare_writes_shards_and_index(sharded, synthetic):
    out = sharded["out"]
    index = json.loads(sharded["index"].read_text())
    classes = (synthetic / "classes.txt").read_text().split("\n")[: len(index["classes"])]
    assert index["format"] == "aim-video shards 1" and index["classes"] == classes
    # The broken input is listed as bad and shipped in no shard.
    bad = json.loads((out / "bad_inputs.json").read_text())
    assert [entry["path"] for entry in bad] == [str(sharded["broken"])]
    assert index["samples"] == 8 == sum(entry["samples"] for entry in index["shards"])
    assert [entry["url"] for entry in index["shards"]] == [
        f"train-{k:06d}.tar" for k in range(len(index["shards"]))]
    prepared_list = load_annotations(out / "train.txt", "mmaction",
                                     class_names=str(out / "classes.txt")).records
    seen = {}
    for entry in index["shards"]:
        path = out / entry["url"]
        assert entry["bytes"] == path.stat().st_size
        with tarfile.open(path) as tar:
            names = tar.getnames()
            # WebDataset layout: KEY.json beside KEY.mp4, samples in the index's order.
            assert names == [f"{key}.{ext}" for key in entry["keys"] for ext in ("json", "mp4")]
            for key, label in zip(entry["keys"], entry["labels"], strict=True):
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                position = int(key)  # the sample's place among the listed good videos
                source = sharded["sources"][position]
                assert meta == {"label": sharded["labels"][position], "class": classes[label],
                                "path": source, "frames": 8, "fps": meta["fps"]}
                assert label == sharded["labels"][position] and meta["fps"] > 0
                prepared = Path(prepared_list[position].path)
                assert tar.extractfile(f"{key}.mp4").read() == prepared.read_bytes()
                seen[key] = prepared.stat().st_size
        planned = sum(seen[key] + shards_module.SAMPLE_OVERHEAD for key in entry["keys"])
        assert planned <= parse_size(SHARD_SIZE) or len(entry["keys"]) == 1
    assert len(seen) == 8


def test_prepare_shards_resumes(sharded, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in sharded["out"].glob("train-*.tar")}
    index_before = sharded["index"].read_text()
    assert main(sharded["argv"]) == 1  # the broken file is still left out
    count = len(json.loads(index_before)["shards"])
    assert f"{count} shards (0 written now)" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in sharded["out"].glob("train-*.tar")}
    assert after == before and sharded["index"].read_text() == index_before


def test_index_reads_the_same_everywhere(sharded, http_root, synthetic):
    out = sharded["out"]
    local = read_index(str(sharded["index"]))
    memory = fsspec.filesystem("memory")
    for path in out.glob("train*"):
        memory.pipe(f"/shards-test/{path.name}", path.read_bytes())
    sources = [f"file://{sharded['index']}", f"{http_root}/train.shards.json",
               "memory://shards-test/train.shards.json"]
    expected = [(shard.keys, shard.labels, shard.start) for shard in local.shards]
    for source in sources:
        index = read_index(source)
        assert [(s.keys, s.labels, s.start) for s in index.shards] == expected, source
        assert index.class_names == local.class_names
        assert index.shards[1].url == source.rsplit("/", 1)[0] + "/train-000001.tar"
        # The shards stream from there byte for byte.
        streamed = [(s.id, s.video) for s in shards_module._stream_shard(index.shards[1])]
        assert streamed == [(s.id, s.video) for s in shards_module._stream_shard(
            local.shards[1])]
        assert all(video for _, video in streamed)
    last = len(local.shards) - 1
    pattern = read_index(f"{http_root}/train-{{000000..{last:06d}}}.tar",
                         str(synthetic / "classes.txt"))
    assert [(s.keys, s.labels, s.start) for s in pattern.shards] == expected
    with pytest.raises(DataError, match="needs data.class_names"):
        read_index(f"{http_root}/train-{{000000..000001}}.tar")


def test_bad_index_is_one_line(tmp_path, http_root, monkeypatch):
    not_index = tmp_path / "x.shards.json"
    not_index.write_text('{"format": "something else"}')
    with pytest.raises(DataError, match=r"x.shards.json: not a readable shard index"):
        read_index(str(not_index))
    with pytest.raises(DataError, match=r"its classes differ from data.class_names \(a list\)"):
        read_index(f"{http_root}/train.shards.json", ["a", "b"])
    monkeypatch.setattr(shards_module, "RETRY_WAIT_S", 0.0)
    with pytest.raises(DataError, match=rf"^{http_root}/missing.shards.json: the shard index "
                                        "cannot be read after 5 tries"):
        read_index(f"{http_root}/missing.shards.json")


def _test_items(dataset, indices):
    return {int(item["index"]): item for item in dataset.subset(indices)}


def test_views_each_video_once_across_ranks(sharded, http_root):
    cfg = DataConfig(val=f"{http_root}/train.shards.json", num_frames=4, input_size=32,
                     short_side=32, test_clips=2, num_workers=0)
    views = build_dataset(cfg, "val")
    shares = [views.rank_indices(rank, 3) for rank in range(3)]
    assert sorted(i for share in shares for i in share) == list(range(8))
    got = {}
    for share in shares:
        items = _test_items(views, share)
        assert sorted(items) == sorted(share)
        got |= items
    # The same views as the prepared files read as a local list.
    local = build_dataset(DataConfig(
        val=str(sharded["out"] / "train.txt"), class_names=str(sharded["out"] / "classes.txt"),
        format="mmaction", num_frames=4, input_size=32, short_side=32, test_clips=2,
        num_workers=0), "val")
    keys = [key for shard in views.index.shards for key in shard.keys]
    for sample_id, item in got.items():
        assert item["ok"]
        reference = local[int(keys[sample_id])]
        assert item["label"] == reference["label"]
        assert torch.equal(item["video"], reference["video"])


def test_evaluation_over_http_equals_local(sharded, http_root, tmp_path):
    def evaluate(val: str, **extra):
        cfg = tiny_config(sharded["out"], tmp_path, None, data__val=val, data__num_workers=1,
                          **extra)
        torch.manual_seed(0)
        model = ckpt.model_from_config(cfg, 10)
        return evaluate_model(model, cfg, split="val")

    local = evaluate(str(sharded["out"] / "train.txt"), data__format="mmaction",
                     data__class_names=sharded["out"] / "classes.txt", data__root=None)
    remote = evaluate(f"{http_root}/train.shards.json")
    assert remote.top1 == local.top1 and remote.top5 == local.top5
    assert remote.per_class == local.per_class
    assert remote.num_videos == 8 and remote.num_bad == 0
    assert (remote.confusion == local.confusion).all()


@pytest.fixture(scope="module")
def damaged(sharded) -> dict:
    """A copy of the shards (served under /damaged/) where shard 0's first video is garbage
    and a later shard is cut in the middle of its second video."""
    out = sharded["out"] / "damaged"
    out.mkdir()
    index = json.loads(sharded["index"].read_text())
    for entry in index["shards"]:
        (out / entry["url"]).write_bytes((sharded["out"] / entry["url"]).read_bytes())
    (out / "train.shards.json").write_text(json.dumps(index))
    first = index["shards"][0]
    with tarfile.open(out / first["url"]) as tar:
        samples = [(key, tar.extractfile(f"{key}.mp4").read(),
                    json.loads(tar.extractfile(f"{key}.json").read())) for key in first["keys"]]
    samples[0] = (samples[0][0], b"\x00garbage" * 50, samples[0][2])
    write_shard(out / first["url"], samples)
    victim = next(e for e in reversed(index["shards"]) if len(e["keys"]) >= 2 and e != first)
    last = out / victim["url"]
    with tarfile.open(last) as tar:
        cut = tar.getmembers()[3].offset_data + 100  # inside the second video
    last.write_bytes(last.read_bytes()[:cut])
    corrupt = f"{first['url']}#{first['keys'][0]}"
    return {"index": out / "train.shards.json", "corrupt": corrupt, "truncated": victim["url"],
            "missing": victim["keys"][1], "shards": index["shards"]}


def test_check_data_lists_bad_samples(damaged, http_root, capsys):
    status = main(["check-data", f"{http_root}/damaged/train.shards.json", "--workers", "0",
                   "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    bad = {entry["path"]: entry["reason"] for entry in report["bad"]}
    assert report["total"] == 8 and report["good"] == 6
    assert set(bad) == {f"{http_root}/damaged/{damaged['corrupt']}",
                        f"{http_root}/damaged/{damaged['truncated']}"}
    assert bad[f"{http_root}/damaged/{damaged['truncated']}"].startswith(
        f"sample {damaged['missing']}: truncated or corrupt shard")


# ---------------------------------------------------------------------------- training


def _train_set(source: str, rank: int, world: int, workers: int, batch: int = 2):
    cfg = DataConfig(train=source, num_frames=4, input_size=32, short_side=32,
                     num_workers=workers, shuffle_buffer=3)
    dataset = build_dataset(cfg, "train")
    sampler = dataset.configure(rank, world, seed=5, batch_size=batch, drop_last=False)
    loader = torch.utils.data.DataLoader(dataset.batches(), batch_size=None,
                                         num_workers=workers)
    return dataset, sampler, loader


def _epoch(sampler, loader, epoch: int, skip: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch, skip)
    return [batch.index.tolist() for batch in loader]


def test_each_sample_once_per_epoch_across_ranks_and_workers(sharded, http_root):
    source = f"{http_root}/train.shards.json"
    index = read_index(source)
    epochs = {}
    for epoch in (0, 1):
        ranks = []
        for rank in range(2):
            dataset, sampler, loader = _train_set(source, rank, 2, workers=2)
            batches = _epoch(sampler, loader, epoch)
            assert len(batches) == len(loader)  # the length the trainer plans its steps by
            ranks.append(batches)
        assert len(ranks[0]) == len(ranks[1])  # the same number of steps on every rank
        seen = [i for batches in ranks for batch in batches for i in batch]
        # Every sample at least once; the only repeats pad the smaller shares to the largest.
        groups = dataset.groups
        target = max(sum(len(index.shards[s]) for s in group) for group in groups)
        assert sorted(set(seen)) == list(range(8))
        assert len(seen) == 4 * target
        epochs[epoch] = ranks
    assert epochs[0] != epochs[1]  # another order each epoch
    _, sampler, loader = _train_set(source, 1, 2, workers=2)
    assert _epoch(sampler, loader, 1) == epochs[1][1]  # and the same order when read again


def test_a_resumed_epoch_continues_where_it_stopped(sharded):
    source = str(sharded["index"])
    _, sampler, loader = _train_set(source, 0, 1, workers=2)
    whole = _epoch(sampler, loader, 3)
    for consumed in (1, 2, 3):
        _, sampler, loader = _train_set(source, 0, 1, workers=2)
        assert _epoch(sampler, loader, 3, skip=consumed * 2) == whole[consumed:]


def test_unreachable_shard_is_one_line_naming_it(sharded, http_root, tmp_path, monkeypatch):
    index = json.loads(sharded["index"].read_text())
    for entry in index["shards"]:  # shards named by URL: an index may live elsewhere
        entry["url"] = f"{http_root}/{entry['url']}"
    index["shards"][0]["url"] = f"{http_root}/gone-000000.tar"
    (tmp_path / "gone.shards.json").write_text(json.dumps(index))
    monkeypatch.setattr(shards_module, "RETRY_WAIT_S", 0.0)
    _, sampler, loader = _train_set(str(tmp_path / "gone.shards.json"), 0, 1, workers=0)
    with pytest.raises(DataError, match=rf"^{http_root}/gone-000000.tar: the shard cannot be "
                                        r"read after 5 tries \(FileNotFoundError"):
        _epoch(sampler, loader, 0)


def _run(synthetic, backbone, out, train: str, **extra):
    from aim_video.engine.train import train as run_training

    cfg = tiny_config(synthetic, out, backbone, data__train=train, data__num_workers=1,
                      data__shuffle_buffer=3, train__plots=False, eval__splits=["val"],
                      **extra)
    return run_training(cfg, progress=False)


def test_training_over_http_equals_local_shards(sharded, damaged, http_root, synthetic,
                                                backbone, tmp_path):
    local = _run(synthetic, backbone, tmp_path / "local", str(damaged["index"]))
    remote = _run(synthetic, backbone, tmp_path / "http",
                  f"{http_root}/damaged/train.shards.json")
    assert [h["train_loss"] for h in remote.history] == [h["train_loss"] for h in local.history]
    expected = ckpt.read_training_checkpoint(local.last_checkpoint)["model"]
    actual = ckpt.read_training_checkpoint(remote.last_checkpoint)["model"]
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key
    # The corrupt sample and the truncated shard are bad files, named where they were read.
    bad = json.loads((tmp_path / "http" / "bad_files.json").read_text())
    assert set(bad) == {f"{http_root}/damaged/{damaged['corrupt']}",
                        f"{http_root}/damaged/{damaged['truncated']}"}


def test_killed_mid_epoch_over_http_resumes_to_the_uninterrupted_run(sharded, http_root,
                                                                     synthetic, backbone,
                                                                     tmp_path):
    # As tests/test_faults.py does for local files: pieces of a run SIGKILL themselves; two
    # loader workers, a checkpoint every step, killed after step 4 of the 4 of epoch 1: the
    # resumed epoch starts with its fourth batch, worker 1's (the loader starts at worker 0).
    from test_faults import SETTINGS, _Pieces

    settings = SETTINGS | {"data.num_workers": 2, "train.save_every_steps": 1,
                           "data.train": f"{http_root}/train.shards.json",
                           "data.shuffle_buffer": 3}
    pieces = _Pieces(tiny_overrides(synthetic, tmp_path / "unused", backbone, **settings))
    try:
        status, log = pieces.run(tmp_path / "straight", "never")
        assert status == 0, log
        out = tmp_path / "killed"
        status, log = pieces.run(out, "step:4")
        assert status == -signal.SIGKILL, log
        assert ckpt.read_training_checkpoint(out / "last.pt")["global_step"] == 3
        status, log = pieces.run(out, "never")
        assert status == 0, log
    finally:
        pieces.close()
    expected = ckpt.read_training_checkpoint(tmp_path / "straight" / "last.pt")
    actual = ckpt.read_training_checkpoint(out / "last.pt")
    assert actual["global_step"] == expected["global_step"] == 8
    for key, tensor in expected["model"].items():
        assert torch.equal(actual["model"][key], tensor), key


def test_a_shard_that_fails_twice_is_retried_with_doubling_waits(sharded, monkeypatch):
    failures: dict[str, int] = {}

    class Flaky(_QuietHandler):
        def do_GET(self) -> None:
            failures[self.path] = failures.get(self.path, 0) + 1
            if self.path.endswith(".tar") and failures[self.path] <= 2:
                self.send_error(503, "busy")
                return
            super().do_GET()

    handler = functools.partial(Flaky, directory=str(sharded["out"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    waits: list[float] = []
    monkeypatch.setattr(shards_module.time, "sleep", waits.append)
    try:
        index = read_index(f"http://127.0.0.1:{server.server_address[1]}/train.shards.json")
        samples = list(shards_module._stream_shard(index.shards[0]))
    finally:
        server.shutdown()
        server.server_close()
    assert [s.video is not None for s in samples] == [True] * len(index.shards[0])
    assert waits == [shards_module.RETRY_WAIT_S, 2 * shards_module.RETRY_WAIT_S]


def test_a_mid_epoch_resume_with_other_slots_is_refused(sharded):
    dataset, _, _ = _train_set(str(sharded["index"]), 0, 1, workers=2)
    dataset.check_resume("last.pt", 1, 2, step_in_epoch=3)  # the same slots
    dataset.check_resume("last.pt", 1, 1, step_in_epoch=0)  # at an epoch's start: any
    with pytest.raises(DataError, match=r"^last.pt stopped mid-epoch reading shards with 1 "
                                        r"process\(es\) x 1 loader worker\(s\); resume with"):
        dataset.check_resume("last.pt", 1, 1, step_in_epoch=3)


def test_shards_in_an_s3_store_read_as_local_ones(sharded, monkeypatch):
    # A local S3-compatible server (moto); the endpoint and the credentials come from the
    # environment, where the store's client looks, as a user's would.
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            monkeypatch.setenv(key, value)
        store = fsspec.filesystem("s3", skip_instance_cache=True)
        store.mkdir("clips")
        for path in sharded["out"].glob("train*"):
            if path.suffix in (".tar", ".json"):
                store.pipe(f"clips/k/{path.name}", path.read_bytes())
        fsspec.filesystem("s3").invalidate_cache()
        _, sampler, loader = _train_set("s3://clips/k/train.shards.json", 0, 1, workers=0)
        sampler.set_epoch(1)
        remote = list(loader)
    finally:
        server.stop()
    _, sampler, loader = _train_set(str(sharded["index"]), 0, 1, workers=0)
    sampler.set_epoch(1)
    local = list(loader)
    assert len(remote) == len(local) == 4
    for a, b in zip(remote, local, strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.video, b.video)


def test_bad_samples_are_replaced_the_same_in_a_resumed_epoch(damaged):
    source = str(damaged["index"])
    _, sampler, loader = _train_set(source, 0, 1, workers=2)
    whole = [(b.index.tolist(), b.skipped) for b in (sampler.set_epoch(2) or loader)]
    assert sum(len(skipped) for _, skipped in whole) == 2  # the corrupt and the missing one
    for consumed in range(1, len(whole)):
        _, sampler, loader = _train_set(source, 0, 1, workers=2)
        sampler.set_epoch(2, consumed * 2)
        assert [(b.index.tolist(), b.skipped) for b in loader] == whole[consumed:]


def test_two_processes_on_uneven_http_shards_run_the_same_steps(sharded, http_root, synthetic,
                                                                 backbone, tmp_path):
    # Three shards of 2, 2 and 1 videos for 2 processes: the shares hold 3 and 2 videos (the
    # smaller one repeats one), so both run 2 steps of 2; evaluation over the same shards
    # counts each of the 5 videos once (rank 0 reads two shards, rank 1 one).
    from test_engine_train import _ddp_worker, _free_port

    index = json.loads(sharded["index"].read_text())
    pairs = [e for e in index["shards"] if e["samples"] == 2][:2]
    single = [e for e in index["shards"] if e["samples"] == 1][:1]
    index["shards"] = [dict(e, url=f"{http_root}/{e['url']}") for e in pairs + single]
    (tmp_path / "uneven.shards.json").write_text(json.dumps(index))
    source = str(tmp_path / "uneven.shards.json")
    cfg = tiny_config(synthetic, tmp_path / "run", backbone, optim__epochs=1, data__train=source,
                      data__val=source, eval__splits=["val"], train__plots=False)
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, _free_port(), cfg, tmp_path),
                                          nprocs=2, join=True, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["steps"] for r in ranks] == [2, 2]
    final = json.loads((tmp_path / "run" / "eval_val" / "metrics.json").read_text())
    assert final["num_videos"] == 5 and final["num_bad"] == 0
