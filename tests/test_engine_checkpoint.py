"""Checkpoints: contents, atomic writes, RNG round trip, and clear errors for bad files."""

from __future__ import annotations

import importlib
import os
import pickle
import random
import shutil
import stat

import numpy as np
import pytest
import torch
from test_engine_support import tiny_config, write_backbone

from aim_video.cli import main
from aim_video.engine.checkpoint import (
    checkpoint_config,
    model_from_checkpoint,
    read_training_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from aim_video.engine.evaluate import evaluate_checkpoint
from aim_video.engine.train import train
from aim_video.errors import UserError
from aim_video.files import remove_temp_files, temp_files, write_atomic
from aim_video.weights import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.py

train_module = importlib.import_module("aim_video.engine.train")  # `train` is also the function

FAST = {"train__plots": False, "eval__splits": [], "train__max_steps": 1}


@pytest.fixture(scope="module")
def run(synthetic, backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt_run") / "run"
    result = train(tiny_config(synthetic, out, backbone, **FAST), progress=False)
    return result.last_checkpoint


def test_a_checkpoint_holds_only_the_trained_weights_and_its_provenance(run, backbone):
    state = read_training_checkpoint(run)  # torch.load(weights_only=True) inside
    weights = state["model"]
    assert "conv1.weight" not in weights
    assert "transformer.resblocks.0.attn.in_proj_weight" not in weights
    assert {"head.weight", "temporal_embedding", "ln_post.weight",
            "transformer.resblocks.1.MLP_Adapter.D_fc2.weight"} <= set(weights)
    assert state["backbone_source"] == f"openai:{backbone}"
    assert len(state["backbone_fingerprint"]) == 16
    assert state["class_names"][:2] == ["moves_left", "moves_right"]
    assert state["config"]["model"]["width"] == 64 and state["global_step"] == 1
    assert isinstance(state["processes"][0]["rng"]["torch"], torch.Tensor)


def test_truncated_missing_and_foreign_files_are_named_in_clear_errors(run, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(run.read_bytes()[: run.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{truncated}: cannot be read as a checkpoint "
                                              r"\(truncated, corrupt or not a torch file\)"):
        read_training_checkpoint(truncated)
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'nope.pt'}: no such checkpoint"):
        read_training_checkpoint(tmp_path / "nope.pt")
    released = tmp_path / "released.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, released)
    with pytest.raises(CheckpointError, match=rf"{released}: not an aim-video training "
                                              r"checkpoint.*load_aim_checkpoint"):
        read_training_checkpoint(released)


def test_a_different_backbone_is_refused_naming_both_fingerprints(run, synthetic, tmp_path):
    other = write_backbone(tmp_path / "other_clip.pt", seed=7)
    expected = read_training_checkpoint(run)["backbone_fingerprint"]
    with pytest.raises(CheckpointError, match=rf"backbone mismatch: the checkpoint was trained on "
                                              rf"backbone {expected} from .*tiny_clip.pt, but "
                                              rf"the loaded backbone is [0-9a-f]{{16}} from "
                                              rf".*other_clip.pt"):
        evaluate_checkpoint(run, pretrained=str(other))
    # Resuming on other weights is refused the same way.
    out = tmp_path / "resume"
    out.mkdir()
    shutil.copy(run, out / "last.pt")
    with pytest.raises(CheckpointError, match="backbone mismatch"):
        train(tiny_config(synthetic, out, other, **FAST), resume="auto", progress=False)


def test_saving_is_atomic(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": "x", "value": torch.ones(3)}, path)
    with pytest.raises((AttributeError, pickle.PicklingError)):
        save_checkpoint({"value": lambda: None}, path)  # cannot be pickled: fails mid-write
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_checkpoints_get_the_mode_of_every_other_output(tmp_path):
    umask = os.umask(0o022)
    try:
        save_checkpoint({"value": torch.ones(1)}, tmp_path / "a.pt")
        os.umask(0o027)  # the caller's umask applies, as to open()
        save_checkpoint({"value": torch.ones(1)}, tmp_path / "b.pt")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o644  # not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o640


def test_a_killed_writer_leaves_only_a_temporary_file_which_cleanup_finds(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "last.pt", _interrupted)
    assert (tmp_path / "last.pt").read_bytes() == b"old"
    # A SIGKILL runs no cleanup: what it leaves looks like this.
    left = [tmp_path / ".last.pt.0123abcd.tmp", tmp_path / ".best.pt.89abcdef.tmp"]
    for path in left:
        path.write_bytes(b"half")
    (tmp_path / ".hidden.tmp").write_bytes(b"not ours")
    assert temp_files(tmp_path, "best.pt") == left[1:]
    assert remove_temp_files(tmp_path) == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden.tmp", "last.pt"]


def _interrupted(temp):
    temp.write_bytes(b"new, half written")
    raise KeyboardInterrupt


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    cpu = torch.device("cpu")
    save_checkpoint({"rng": rng_state(cpu)}, tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"], cpu)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_a_moved_run_folder_finds_its_data_and_backbone_relative_to_the_checkpoint(
        synthetic, tmp_path, caplog):
    project = tmp_path / "project"
    shutil.copytree(synthetic, project / "data")
    (project / "weights").mkdir()
    write_backbone(project / "weights" / "clip.pt", seed=123)
    cfg = tiny_config(project / "data", project / "runs" / "a", project / "weights" / "clip.pt",
                      **FAST)
    with caplog.at_level("INFO", logger="aim_video.engine.checkpoint"):
        train(cfg, progress=False)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("backbone"))
    assert line.count("clip.pt") == 1  # the path once, not "loaded from X: ... from X"

    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    (project).rename(moved)
    checkpoint = moved / "runs" / "a" / "last.pt"
    state = read_training_checkpoint(checkpoint)
    assert state["config"]["data"]["train"] == str(project / "data" / "train.txt")  # absolute
    cfg = checkpoint_config(state, checkpoint)
    assert cfg.data.train == str(moved / "data" / "train.txt")
    assert cfg.data.root == str(moved / "data")
    assert cfg.model.pretrained == str(moved / "weights" / "clip.pt")
    assert cfg.train.out_dir == str(moved / "runs" / "a")
    model_from_checkpoint(state, checkpoint, cfg)  # the backbone's fingerprint matches
    # A path given as an override is taken as it is.
    assert checkpoint_config(state, checkpoint, ["data.val=v.txt"]).data.val == "v.txt"

    (moved / "weights" / "clip.pt").unlink()
    cfg = checkpoint_config(state, checkpoint)
    with pytest.raises(CheckpointError, match=rf"^{project / 'weights' / 'clip.pt'}: no such "
                                              r"backbone weights file \(model\.pretrained\)"):
        model_from_checkpoint(state, checkpoint, cfg)


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(
        synthetic, backbone, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "Trainer", None)  # building anything would fail
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "run"
    with pytest.raises(UserError, match=rf"^cannot write to the output folder {out}: "):
        train(tiny_config(synthetic, out, backbone, **FAST), progress=False)
    assert main(["train", "--config", "synthetic_cpu", "--out", str(out),
                 "--set", f"data.train={synthetic / 'train.txt'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aim-video train: error: cannot write to the output folder {out}: ")
    assert len(err.splitlines()) == 1
