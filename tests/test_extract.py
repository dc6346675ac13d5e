"""`aim-video extract`: features before the head, per video or per window, resumable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engine_support import write_backbone
from video_helpers import (  # noqa: F401
    kill_when,
    one_thread,
    write_checkpoint,
    write_indexed_video,
)

from aim_video.cli import main
from aim_video.predictor import Predictor


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("extract")
    videos = {f"v{i}": write_indexed_video(root / f"v{i}.mp4", 16 + 8 * i) for i in range(3)}
    (root / "empty.mp4").write_bytes(b"")
    return {"checkpoint": write_checkpoint(root / "best.pt"), "root": root, **videos}


def _index(folder: Path) -> list[dict[str, str]]:
    with open(folder / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_features_fed_to_the_head_give_the_logits_predict_gives(files, tmp_path):
    out = tmp_path / "features"
    videos = [str(files["v0"]), str(files["root"] / "empty.mp4"), str(files["v2"])]
    assert main(["extract", *videos, "--checkpoint", str(files["checkpoint"]), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 1  # the empty file
    features = np.load(out / "features.npy", mmap_mode="r")
    index = _index(out)
    assert [(e["row"], e["ok"]) for e in index] == [("0", "1"), ("", "0"), ("1", "1")]
    assert features.shape == (2, 64) and features.dtype == np.float32
    predictor = Predictor.from_checkpoint(files["checkpoint"], device="cpu")
    with torch.no_grad():
        probs = predictor.model.forward_head(torch.from_numpy(np.array(features))).softmax(-1)
    predicted = predictor.predict([videos[0], videos[2]], top_k=3)
    for row, p in zip(probs, predicted):
        top = row.topk(3)
        assert [name for name, _ in p.top] == [f"class_{c}" for c in top.indices.tolist()]
        # The same clip through the same layers, in other batches: fp32 rounding (~1e-7).
        assert [prob for _, prob in p.top] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_window_features_and_float16(files, tmp_path, capsys):
    out = tmp_path / "windows"
    assert main(["extract", str(files["v2"]), "--checkpoint", str(files["checkpoint"]),
                 "--out", str(out), "--windows", "--stride", "1", "--dtype", "float16",
                 "--no-progress", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["extracted"], printed["unreadable"], printed["rows"], printed["dim"]) == (
        1, 0, 4, 64)
    features = np.load(out / "features.npy")
    index = _index(out)
    # 32 frames at 8 fps, 1 s windows every 1 s: 4 windows.
    assert features.shape == (4, 64) and features.dtype == np.float16
    assert [(float(e["start"]), float(e["end"])) for e in index] == [(k, k + 1) for k in range(4)]
    predictor = Predictor.from_checkpoint(files["checkpoint"], device="cpu")
    exact = predictor.window_features(files["v2"], stride=1.0).features
    # float16 keeps 11 significant bits: relative error at most 2^-11.
    np.testing.assert_allclose(features, exact, rtol=2**-11, atol=1e-6)


def test_the_frozen_image_models_features_need_no_checkpoint(files, tmp_path):
    backbone = write_backbone(tmp_path / "clip.pt", seed=3)
    out = tmp_path / "probe"
    overrides = ["model.width=64", "model.layers=2", "model.heads=2", "model.patch_size=8",
                 "model.image_size=32", "data.input_size=32", "data.short_side=32",
                 "data.num_frames=4", "data.frame_interval=2", "data.test_clips=1"]
    assert main(["extract", str(files["v0"]), "--pretrained", str(backbone), "--config",
                 "synthetic_cpu", "--set", *overrides, "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 0
    features = np.load(out / "features.npy")
    assert features.shape == (1, 64) and np.isfinite(features).all()
    predictor = Predictor.from_backbone(backbone, Predictor.from_checkpoint(
        files["checkpoint"], device="cpu").cfg, device="cpu")
    assert not any("adapter" in name for name, _ in predictor.model.named_parameters())
    assert main(["extract", str(files["v0"]), "--out", str(tmp_path / "none")]) == 2


def _index_lines(out: Path) -> int:
    index = out / "index.csv"
    return index.read_bytes().count(b"\r\n") - 1 if index.exists() else 0


def test_an_extraction_killed_from_outside_resumes(files, tmp_path, capsys):
    links = []
    for i in range(40):  # distinct paths to the three videos: the child cannot finish first
        link = tmp_path / f"clip{i}.mp4"
        link.symlink_to(files[f"v{i % 3}"])
        links.append(str(link))
    out = tmp_path / "features"
    args = ["extract", *links, "--checkpoint", str(files["checkpoint"]), "--out", str(out),
            "--batch-size", "2", "--workers", "0", "--no-progress"]
    kill_when(args, out, lambda out: _index_lines(out) >= 2)
    first = [e["path"] for e in _index(out)]
    assert 2 <= len(first) < len(links) and first == links[:len(first)]
    assert not (out / "features.npy").exists()
    with open(out / "features.bin", "ab") as f:
        f.write(b"\0" * 100)  # a row torn by the kill, never indexed
    assert main(args) == 0
    assert [e["path"] for e in _index(out)] == links
    assert f"{len(links) - len(first)} extracted, 0 unreadable (0 retried), {len(first)} " \
           f"already in {out}; 40 rows of 64 floats in" in capsys.readouterr().err
    features = np.load(out / "features.npy")
    fresh = tmp_path / "fresh"
    assert main(["extract", *links, "--checkpoint", str(files["checkpoint"]), "--out", str(fresh),
                 "--workers", "0", "--no-progress"]) == 0
    # The same clips in other batches (the resumed run's start): fp32 rounding only.
    np.testing.assert_allclose(features, np.load(fresh / "features.npy"), atol=1e-5)
    assert not (out / "features.bin").exists()


def test_names_with_line_breaks_are_extracted_once(files, tmp_path):
    names = []
    for i, name in enumerate(["cr\r.mp4", "ls\u2028.mp4", "lf\n.mp4", 'q",.mp4']):
        (tmp_path / name).symlink_to(files[f"v{i % 3}"])
        names.append(str(tmp_path / name))
    out = tmp_path / "features"
    args = ["extract", *names, "--checkpoint", str(files["checkpoint"]), "--out", str(out),
            "--workers", "0", "--no-progress"]
    assert main(args) == 0
    assert main(args) == 0
    assert [e["path"] for e in _index(out)] == names
    assert np.load(out / "features.npy").shape == (4, 64)


def test_a_damaged_folder_and_nothing_extracted_are_one_line(files, tmp_path, capsys):
    out = tmp_path / "features"
    empty = str(files["root"] / "empty.mp4")
    assert main(["extract", empty, "--checkpoint", str(files["checkpoint"]), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "0 extracted, 1 unreadable (0 retried), 0 already in" in err
    assert f"; no rows in {out / 'features.npy'}" in err and "None" not in err
    (out / "features.json").write_text('{"aim-video": "extract features", "dim": ')
    assert main(["extract", empty, "--checkpoint", str(files["checkpoint"]), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out / 'features.json'}: damaged (" in err
