"""Fault injection: a run killed with SIGKILL at chosen moments and resumed with `--resume auto`
until it ends has the same last.pt and best.pt, tensor for tensor, as a run never interrupted.

Each piece of a run is a process that kills itself at one deterministic point: after an optimiser step, just before a checkpoint's rename (its temporary
file written, the target not yet replaced), or at the first forward pass of the periodic
validation or of the final evaluation, or while receiving a batch from its data-loader
worker. The run uses a worker, as real runs do, so a killed parent with a live worker is part of
every piece. The pieces are forked from one server process (this file run as a script) that has
imported torch once: a fresh interpreter per piece would cost more than the training.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine_support import tiny_overrides

from aim_video.engine.checkpoint import read_training_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.py

# 2 epochs x 4 steps, validation after each, last.pt also every 2 steps, a final evaluation.
SETTINGS = {"train.plots": False, "eval.splits": ["val"], "train.save_every_steps": 2,
            "data.num_workers": 1, "train.cpu_threads": 1}


class _Pieces:
    """Runs pieces of a run in processes forked from a server; each returns (status, log)."""

    def __init__(self, overrides: list[str]) -> None:
        self.overrides = overrides
        self.server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self, out: Path, kill: str) -> tuple[int, str]:
        log = out.with_name(f"{out.name}.{kill.replace(':', '_')}.log")
        request = {"out": str(out), "kill": kill, "overrides": self.overrides, "log": str(log)}
        self.server.stdin.write(json.dumps(request) + "\n")
        ready, _, _ = select.select([self.server.stdout], [], [], 300)
        assert ready, f"the piece {kill} did not end in 5 minutes"
        reply = self.server.stdout.readline()
        assert reply, "the piece server died"
        return int(reply), log.read_text()

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


@pytest.fixture
def pieces(synthetic, backbone, tmp_path):
    server = _Pieces(tiny_overrides(synthetic, tmp_path / "unused", backbone, **SETTINGS))
    yield server
    server.close()


def test_a_loader_worker_dies_quietly_with_a_parent_killed_while_receiving_a_batch(pieces,
                                                                                  tmp_path):
    # The worker waits on the socket that hands over the batch's shared memory: without
    # loader_worker_init it printed a ConnectionResetError traceback and lived on for seconds.
    status, log = pieces.run(tmp_path / "run", "handshake")
    assert status == -signal.SIGKILL, log
    assert "Traceback" not in log and "ConnectionResetError" not in log, log


@pytest.mark.slow  # about 30 s of CPU: 7 pieces of a 2-epoch run and their workers
def test_a_run_killed_at_chosen_moments_ends_as_one_never_interrupted(pieces, tmp_path):
    status, log = pieces.run(tmp_path / "straight", "never")
    assert status == 0, log

    out = tmp_path / "killed"
    kills = [
        "step:3",  # mid-epoch, one step after the step-2 checkpoint, the worker alive
        "replace:last.pt:1",  # writing the step-4 last.pt: its temporary file is left
        "replace:best.pt:1",  # epoch 1's best.pt: last.pt already names epoch 1 the best
        "validate",  # validating epoch 2, after the step-8 last.pt (the end still to do)
        "final",  # the final evaluation, after epoch 2's end was saved
    ]
    logs = []
    for kill in kills:
        status, log = pieces.run(out, kill)
        assert status == -signal.SIGKILL, f"{kill} did not fire:\n{log}"
        logs.append(log)
        if kill == "replace:best.pt:1":
            assert [p.name for p in out.glob(".best.pt.*.tmp")] and not (out / "best.pt").exists()
            # A power loss in the middle of an append: a torn last line in the log.
            with open(out / "metrics.jsonl", "a") as f:
                f.write('{"kind": "step", "epoch": 2, "st')
    status, log = pieces.run(out, "never")
    assert status == 0, log
    logs.append(log)

    # What the kills left was repaired, and said so once.
    after_best_kill = logs[3]
    assert after_best_kill.count("metrics.jsonl: dropped 1 unreadable line(s)") == 1
    assert "rewrote " in after_best_kill and "best.pt from " in after_best_kill
    assert "removed 1 temporary file(s)" in after_best_kill
    assert "removed 1 temporary file(s)" in logs[2]  # the .last.pt.*.tmp of the second kill
    for log in logs:  # a killed parent's data-loader worker exits without a traceback
        assert "Traceback" not in log and "ConnectionResetError" not in log, log
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    for name in ("last.pt", "best.pt"):
        expected, actual = (read_training_checkpoint(folder / name)
                            for folder in (tmp_path / "straight", out))
        assert actual["global_step"] == expected["global_step"]
        assert actual["best_epoch"] == expected["best_epoch"]
        assert actual["model"].keys() == expected["model"].keys()
        for key, tensor in expected["model"].items():
            assert torch.equal(actual["model"][key], tensor), f"{name}: {key} differs"
        assert [h["val_top1"] for h in actual["history"]] == [
            h["val_top1"] for h in expected["history"]]

    def records(run: Path) -> list[tuple]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [(r["kind"], r["step"]) for r in map(json.loads, lines)]

    assert records(out) == records(tmp_path / "straight")  # no line lost or repeated
    final = json.loads((out / "eval_val" / "metrics.json").read_text())
    assert final["top1"] == json.loads(
        (tmp_path / "straight" / "eval_val" / "metrics.json").read_text())["top1"]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("last.pt", "best.pt", "config.yaml", "bad_files.json", "metrics.jsonl"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name


# ---------------------------------------------------------------------------- one piece of a run
def _arm(kill: str) -> None:
    """Makes this process SIGKILL itself at the point `kill` names (see `kills` above)."""
    from aim_video.engine.train import Trainer
    from aim_video.model import AIMViT

    def die() -> None:
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    kind, *args = kill.split(":")
    if kind == "step":
        real_step = Trainer._optimizer_step

        def step(self) -> None:
            real_step(self)
            if self.state.global_step == int(args[0]):
                die()

        Trainer._optimizer_step = step
    elif kind == "replace":
        real_replace, seen = os.replace, []

        def replace(src, dst) -> None:
            if Path(dst).name == args[0]:
                seen.append(dst)
                if len(seen) == int(args[1]):
                    die()
            real_replace(src, dst)

        os.replace = replace
    elif kind in ("validate", "final"):
        # The first forward pass of that evaluation: it has started, nothing is written yet.
        method = "validate" if kind == "validate" else "_final_evaluation"
        real_method, real_forward, armed = getattr(Trainer, method), AIMViT.forward, []

        def evaluation(self, *inputs, **kwargs):
            armed.append(True)
            return real_method(self, *inputs, **kwargs)

        def forward(self, *inputs, **kwargs):
            if armed and not self.training:
                die()
            return real_forward(self, *inputs, **kwargs)

        setattr(Trainer, method, evaluation)
        AIMViT.forward = forward
    elif kind == "handshake":
        # While receiving a batch from the worker: the worker has sent its challenge on the
        # socket that passes the batch's file descriptors and waits for the answer.
        import multiprocessing.connection

        multiprocessing.connection.answer_challenge = lambda *args, **kwargs: die()
    elif kind != "never":
        raise ValueError(kill)


def _piece(request: dict) -> None:
    """One piece of a run, in a forked child: its output goes to the request's log file."""
    import logging

    from aim_video.engine.config import load_config
    from aim_video.engine.train import train

    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", force=True)
    torch.set_num_threads(1)
    _arm(request["kill"])
    # The last value of a key wins.
    values = [*request["overrides"], f"train.out_dir={request['out']}"]
    train(load_config("synthetic_cpu", values), resume="auto", progress=False)


def _serve() -> None:
    """Forks a piece per request line; replies with its exit status once it and every process
    it left behind (a data-loader worker) have ended."""
    import ctypes
    import traceback

    import aim_video.engine.train  # noqa: F401 - imported once, before any fork

    pr_set_child_subreaper = 36  # orphaned workers become our children, so we can wait on them
    ctypes.CDLL(None).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _piece(request)
            except BaseException:  # noqa: BLE001 - reported in the log, as an exit status
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        status = None
        while True:
            try:
                child, code = os.wait()
            except ChildProcessError:
                break
            if child == pid:
                status = os.waitstatus_to_exitcode(code)
        print(status, flush=True)


if __name__ == "__main__":
    _serve()
