"""The training loop: exact resume, the random-backbone guard, bad files, DDP."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_engine_support import tiny_config

from aim_video.engine import distributed
from aim_video.engine.checkpoint import RandomBackboneError, read_training_checkpoint
from aim_video.engine.config import ConfigError
from aim_video.engine.evaluate import evaluate_checkpoint
from aim_video.engine.train import _DeviceSums, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.py

train_module = importlib.import_module("aim_video.engine.train")  # `train` is also the function

FAST = {"train__plots": False, "eval__splits": []}


def _trained(path) -> dict[str, torch.Tensor]:
    return read_training_checkpoint(path)["model"]


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stopped_and_resumed_runs_end_with_the_same_weights(synthetic, backbone, tmp_path):
    """Dropout, drop-path, augmentation and shuffling are all random: every draw must replay."""
    straight = train(tiny_config(synthetic, tmp_path / "straight", backbone, **FAST),
                     progress=False)
    assert straight.completed and straight.global_step == 8  # 2 epochs x 4 steps
    reference = _trained(straight.last_checkpoint)

    for stop_at in (3, 4):  # mid-epoch, and exactly at the end of epoch 1
        out = tmp_path / f"stop{stop_at}"
        first = train(tiny_config(synthetic, out, backbone, train__max_steps=stop_at, **FAST),
                      progress=False)
        assert not first.completed and first.global_step == stop_at
        resumed = train(tiny_config(synthetic, out, backbone, **FAST), resume="auto",
                        progress=False)
        assert resumed.completed and resumed.global_step == 8
        weights = _trained(resumed.last_checkpoint)
        assert weights.keys() == reference.keys()
        for name, tensor in reference.items():
            assert torch.equal(weights[name], tensor), f"{name} differs after resuming at {stop_at}"
        assert [h["train_loss"] for h in resumed.history] == pytest.approx(
            [h["train_loss"] for h in straight.history], abs=1e-6)
        assert [h["val_top1"] for h in resumed.history] == [h["val_top1"] for h in straight.history]
        steps = [r["step"] for r in _jsonl(out / "metrics.jsonl") if r["kind"] == "step"]
        assert steps == list(range(1, 9))  # lines after the checkpoint were not duplicated


def test_running_training_sums_add_up_and_start_over():
    sums = _DeviceSums("cpu")
    logits, labels = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]]), torch.zeros(3).long()
    sums.add(torch.tensor(0.5), logits, labels)  # 2 of 3 right
    sums.add(torch.tensor(1.0), logits[:1], labels[:1])  # 1 of 1
    assert sums.take() == (2.5, 3.0, 4)
    assert sums.take() == (0.0, 0.0, 0)


def test_a_training_step_keeps_every_tensor_on_the_training_device(synthetic, backbone,
                                                                   tmp_path, monkeypatch):
    # The GPU path without a GPU: one batch from the loader through device augmentation,
    # forward, backward, the running sums and a clipped optimiser step, on the meta device,
    # which refuses host tensors as CUDA does (the sums once crashed GPU training this way).
    monkeypatch.setattr(train_module, "backbone_fingerprint", lambda model: "unread")
    cfg = tiny_config(synthetic, tmp_path / "run", backbone, data__device_augment=True,
                      optim__grad_clip=1.0)
    env = distributed.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("meta"))
    trainer = train_module.Trainer(cfg, env, progress=False)
    video, labels = trainer._batch(next(iter(trainer.loader)))
    assert video.device.type == labels.device.type == "meta"
    trainer._micro_step(video, labels, 1.0, sync=True)
    trainer._optimizer_step()
    assert trainer._pending.clips == len(labels) and trainer.state.global_step == 1


def test_a_random_frozen_backbone_is_refused_unless_allowed(synthetic, tmp_path):
    with pytest.raises(RandomBackboneError, match=r"random frozen backbone.*learn next to nothing.*"
                                                  r"--pretrained PATH.*--allow-random-backbone"):
        train(tiny_config(synthetic, tmp_path / "refused", None, **FAST), progress=False)
    assert not (tmp_path / "refused" / "last.pt").exists()
    cfg = tiny_config(synthetic, tmp_path / "allowed", None, model__allow_random_backbone=True,
                      train__max_steps=1, **FAST)
    result = train(cfg, progress=False)
    assert read_training_checkpoint(result.last_checkpoint)["backbone_source"] == "random"
    # The random backbone is seeded by train.seed, so the checkpoint can still be evaluated.
    assert evaluate_checkpoint(result.last_checkpoint).num_videos == 4


def test_gradient_accumulation_equals_the_larger_batch(synthetic, backbone, tmp_path):
    # The same gradients, compared before Adam: Adam divides by the root of the second moments,
    # so a weight whose gradient is near zero can move by up to lr on a rounding difference,
    # and comparing trained weights would test one CPU's fp32 rounding. In float64 the two
    # schedules differ only by summation order: at most K·u·Σ|terms| per element (K summed
    # products, u = 1.1e-16), below 1e-11 of a tensor's largest gradient for K < 1e5 even
    # with a cancellation of 1e3 between Σ|terms| and the result; a wrong loss weight or a
    # gradient zeroed between micro-batches is off by a factor of 2 or more.
    no_noise = {"model__dropout": 0.0, "model__drop_path": 0.0, **FAST}
    env = distributed.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainers = [train_module.Trainer(tiny_config(synthetic, tmp_path / name, backbone,
                                                 **no_noise), env, progress=False)
                for name in ("big", "accumulated")]
    video, labels = trainers[0]._batch(next(iter(trainers[0].loader)))
    assert len(labels) == 2
    video = video.double()
    for trainer in trainers:
        trainer.model.double().train()
        torch.manual_seed(1)  # adapters off their zero init (fc2 = 0 leaves fc1 no gradient)
        with torch.no_grad():
            for param in trainer.model.parameters():
                param.add_(torch.randn_like(param), alpha=0.05)
    big, accumulated = trainers
    big._micro_step(video, labels, 1.0, sync=True)
    # What the loop does with optim.accum_steps=2: each micro-batch's loss weighted by 1/2.
    accumulated._micro_step(video[:1], labels[:1], 0.5, sync=False)
    accumulated._micro_step(video[1:], labels[1:], 0.5, sync=True)
    expected = {n: p.grad for n, p in big.model.named_parameters() if p.requires_grad}
    got = {n: p.grad for n, p in accumulated.model.named_parameters() if p.requires_grad}
    assert got.keys() == expected.keys() and all(g is not None for g in got.values())
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(got[name], grad, rtol=0, atol=1e-11 * grad.abs().max().item(),
                                   msg=name)


def test_gradient_accumulation_runs_the_larger_batchs_schedule(synthetic, backbone, tmp_path):
    # End to end through the loop: the same number of optimiser steps at the same learning
    # rates over the same clips. Losses, not weights, are compared: the weights Adam moves
    # differently are those whose gradients are at rounding level, which by that token barely
    # change the loss. The rest is fp32 rounding of one forward pass: a dot product of K terms
    # is exact to K·u relative (K = 256, the MLP's hidden width; u = 6e-8: 1.5e-5), and the
    # loss passes through a few of them (2 blocks): 1e-4.
    no_noise = {"model__dropout": 0.0, "model__drop_path": 0.0, "optim__epochs": 1, **FAST}
    big = train(tiny_config(synthetic, tmp_path / "big", backbone, **no_noise), progress=False)
    accumulated = train(tiny_config(synthetic, tmp_path / "acc", backbone, optim__batch_size=1,
                                    optim__accum_steps=2, **no_noise), progress=False)
    assert big.global_step == accumulated.global_step == 4
    logs = [[r for r in _jsonl(tmp_path / name / "metrics.jsonl") if r["kind"] == "step"]
            for name in ("big", "acc")]
    assert [r["step"] for r in logs[1]] == [r["step"] for r in logs[0]] == [1, 2, 3, 4]
    assert [r["lr"] for r in logs[1]] == [r["lr"] for r in logs[0]]
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-4)


def test_repeated_augmentation_grad_checkpointing_and_bf16_run(synthetic, backbone, tmp_path):
    cfg = tiny_config(synthetic, tmp_path / "run", backbone, data__repeated_aug=2,
                      train__grad_checkpointing="mlp", train__precision="bf16",
                      train__channels_last=True, optim__grad_clip=1.0, optim__epochs=1, **FAST)
    result = train(cfg, progress=False)
    assert result.completed and result.global_step == 4
    steps = _jsonl(tmp_path / "run" / "metrics.jsonl")
    assert all(math.isfinite(s["loss"]) for s in steps if s["kind"] == "step")


def test_a_fresh_run_does_not_overwrite_a_previous_one(synthetic, backbone, tmp_path):
    cfg = tiny_config(synthetic, tmp_path / "run", backbone, train__max_steps=1, **FAST)
    train(cfg, progress=False)
    with pytest.raises(FileExistsError, match=r"last\.pt exists: pass resume='auto'"):
        train(cfg, progress=False)


def test_broken_videos_are_skipped_listed_and_counted(synthetic, backbone, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic, data)
    (data / "empty.mp4").write_bytes(b"")
    good = sorted((data / "videos" / "train").rglob("*.mp4"))[0]
    (data / "truncated.mp4").write_bytes(good.read_bytes()[:300])
    for split in ("train", "val"):
        with open(data / f"{split}.txt", "a") as f:
            f.write("empty.mp4 0\ntruncated.mp4 1\n")
    cfg = tiny_config(data, tmp_path / "run", backbone, optim__epochs=1,
                      eval__splits=["val"], train__plots=False)
    result = train(cfg, progress=False)
    assert result.completed and result.global_step == 5  # 10 videos / batch 2
    bad = json.loads((tmp_path / "run" / "bad_files.json").read_text())
    assert sorted(bad) == [str(data / "empty.mp4"), str(data / "truncated.mp4")]
    assert all(reason for reason in bad.values())
    assert result.final_metrics["val_num_videos"] == 6
    assert result.final_metrics["val_num_bad"] == 2
    metrics = json.loads((tmp_path / "run" / "eval_val" / "metrics.json").read_text())
    assert sorted(metrics["bad_files"]) == sorted(bad)
    # Bad videos count as errors over all videos, and are left out of the readable numbers.
    readable = result.final_metrics["val_readable_top5"]
    assert result.final_metrics["val_top5"] == pytest.approx(readable * 4 / 6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg, out) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(cfg, progress=False)
    (out / f"rank{rank}.json").write_text(json.dumps(
        {"steps": result.global_step, "history": result.history}))


def test_two_process_ddp_run_on_cpu(synthetic, backbone, tmp_path):
    # 3 validation videos on 2 processes: padding (as DistributedSampler does) would count one
    # of them twice.
    val3 = tmp_path / "val3.txt"
    val3.write_text("".join((synthetic / "val.txt").read_text().splitlines(True)[:3]))
    cfg = tiny_config(synthetic, tmp_path / "run", backbone, optim__epochs=1, data__val=val3,
                      eval__splits=["val"], train__plots=False)
    # fork: the children start with torch imported, instead of importing it again.
    mp.start_processes(_ddp_worker, args=(2, _free_port(), cfg, tmp_path), nprocs=2, join=True,
                       start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["steps"] for r in ranks] == [2, 2]  # 8 videos / (2 processes x batch 2)
    for history in (r["history"] for r in ranks):
        del history[0]["seconds"]  # the only per-process entry
    assert ranks[0]["history"] == ranks[1]["history"]  # metrics reduced over both ranks
    state = read_training_checkpoint(tmp_path / "run" / "last.pt")
    assert len(state["processes"]) == 2 and state["global_step"] == 2
    assert state["history"][0]["val_top1"] is not None
    assert sorted(os.listdir(tmp_path / "run")) == [
        "bad_files.json", "best.pt", "config.yaml", "eval_val", "last.pt", "metrics.jsonl"]
    predictions = _jsonl(tmp_path / "run" / "eval_val" / "predictions.jsonl")
    assert [p["index"] for p in predictions] == [0, 1, 2]
    # The sharded validation agrees with a single-process evaluation of the checkpoint.
    single = evaluate_checkpoint(tmp_path / "run" / "last.pt")
    assert single.num_videos == 3
    assert (single.top1, single.top5) == (state["history"][0]["val_top1"],
                                          state["history"][0]["val_top5"])


def test_cpu_threads_leave_a_core_to_each_data_worker(monkeypatch):
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    torch.set_num_threads(8)
    assert distributed.cpu_threads(data_workers=2) == 6
    assert distributed.cpu_threads(data_workers=12) == 1  # never fewer than one
    assert distributed.cpu_threads(data_workers=2, requested=3) == 3  # train.cpu_threads
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: the cores are shared
    assert distributed.cpu_threads(data_workers=1) == 3
    torch.set_num_threads(2)  # what the caller (or OMP_NUM_THREADS) allows is the ceiling
    assert distributed.cpu_threads(data_workers=0) == 2

    with distributed.compute_threads(torch.device("cpu"), data_workers=3) as threads:  # 8 // 2 - 3
        assert threads == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2  # restored
    with distributed.compute_threads(torch.device("meta"), 0, requested=1) as threads:
        assert threads is None and torch.get_num_threads() == 2  # not the CPU: untouched


def test_training_on_the_cpu_runs_with_the_chosen_threads(synthetic, backbone, tmp_path,
                                                          monkeypatch):
    seen = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    torch.set_num_threads(2)
    train(tiny_config(synthetic, tmp_path / "run", backbone, train__cpu_threads=1,
                      optim__epochs=1, **FAST), progress=False)
    assert seen == [1] * 4 and torch.get_num_threads() == 2


def test_cpu_threads_must_be_positive(synthetic, backbone, tmp_path):
    with pytest.raises(ConfigError, match="train.cpu_threads must be >= 1, got 0"):
        tiny_config(synthetic, tmp_path / "run", backbone, train__cpu_threads=0)
