"""`Predictor` and `aim-video predict`: one loaded model, batch prediction that survives a kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from video_helpers import (  # noqa: F401
    kill_when,
    one_thread,
    write_checkpoint,
    write_indexed_video,
)

import aim_video
from aim_video.cli import main
from aim_video.data.dataset import build_eval_transform
from aim_video.data.decode import open_video
from aim_video.data.sampling import dense_test_indices
from aim_video.data.sources import collect_inputs
from aim_video.predictor import Predictor


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predictor")
    videos = [write_indexed_video(root / f"v{i}.mp4", 12 + 4 * i) for i in range(3)]
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(b"not a video at all" * 100)
    return {"checkpoint": write_checkpoint(root / "best.pt", views="2x1"), "root": root,
            **{f"v{i}": v for i, v in enumerate(videos)}}


def test_predictions_are_the_models_softmax_over_the_checkpoints_test_views(files):
    predictor = aim_video.Predictor.from_checkpoint(files["checkpoint"], device="cpu")
    assert (predictor.cfg.data.test_clips, predictor.cfg.data.test_crops) == (2, 1)
    [p] = predictor.predict([files["v1"]], top_k=3)
    # The same clips by hand: the sampler's two test clips, the eval transform, the model.
    data = predictor.cfg.data
    with open_video(files["v1"]) as reader:
        indices = dense_test_indices(reader.num_frames, data.num_frames, data.frame_interval, 2)
        frames = torch.from_numpy(reader.read(indices.reshape(-1).tolist()))
    clips = frames.view(2, data.num_frames, *frames.shape[1:])
    views = torch.cat([build_eval_transform(data)(clip) for clip in clips])  # (2, C, T, S, S)
    with torch.no_grad():
        expected = predictor.model(views).softmax(-1).mean(0)
    top = expected.topk(3)
    assert p.ok and [name for name, _ in p.top] == [f"class_{c}" for c in top.indices.tolist()]
    # One model, same inputs; only the batch composition differs (fp32 sums in another order).
    assert [prob for _, prob in p.top] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_any_callable_from_clips_to_logits_is_a_model(files):
    loaded = Predictor.from_checkpoint(files["checkpoint"], device="cpu")
    calls = []

    def runtime(clips: torch.Tensor) -> torch.Tensor:  # what an ONNX session wrapper does
        calls.append(clips.shape)
        return loaded.model(clips)

    wrapped = Predictor(runtime, loaded.cfg, loaded.class_names, device="cpu")
    assert wrapped.predict([files["v0"]]) == loaded.predict([files["v0"]])
    assert calls and calls[0][1:] == (3, 4, 32, 32)
    with pytest.raises(aim_video.errors.UserError, match="forward_features"):
        wrapped.features([files["v0"]])


def test_inputs_come_from_files_folders_and_list_files(files, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{files['v1']} 0\n{files['v0']} 2\n")
    found = collect_inputs([files["v2"], listing, files["root"]])
    assert found[:3] == [str(files["v2"]), str(files["v1"]), str(files["v0"])]
    assert found[3:] == sorted(str(p) for p in files["root"].glob("*.mp4"))
    # Relative entries are beside the list unless --root says where.
    beside = files["root"] / "relative.txt"
    beside.write_text("v1.mp4 0\n")
    assert collect_inputs([beside]) == [str(files["root"] / "v1.mp4")]
    assert collect_inputs([beside], root=str(tmp_path)) == [str(tmp_path / "v1.mp4")]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="no video files"):
        collect_inputs([tmp_path / "nothing"])


def _lines(path: Path) -> list[dict]:
    """The records of a results file, after its header line."""
    header, *lines = path.read_text().split("\n")[:-1]
    assert json.loads(header) == {"aim-video": "predict results", "format": 1}
    return [json.loads(line) for line in lines]


def test_bad_files_in_the_middle_of_a_list_are_reported_and_counted(files, tmp_path, capsys):
    root = files["root"]
    listing = tmp_path / "list.txt"
    names = ["v0.mp4", "empty.mp4", "v1.mp4", "missing.mp4", "garbage.mp4", "v2.mp4"]
    listing.write_text("".join(f"{root / n} 1\n" for n in names))
    out = tmp_path / "results.jsonl"
    code = main(["predict", str(listing), "--checkpoint", str(files["checkpoint"]),
                 "--out", str(out), "--batch-size", "2", "--workers", "0", "--top-k", "2"])
    assert code == 1
    results = _lines(out)
    assert [Path(r["path"]).name for r in results] == names
    assert [r["ok"] for r in results] == [True, False, True, False, False, True]
    assert all(len(r["top"]) == 2 for r in results if r["ok"])
    assert results[3]["error"] == "file not found"
    err = capsys.readouterr().err
    unreadable = [line for line in err.splitlines() if "unreadable:" in line]
    assert len(unreadable) == 3 and all("aim-video predict: unreadable: " in u for u in unreadable)
    assert f"3 predicted, 3 unreadable (0 retried), 0 already in {out}" in err
    # A rerun tries the three failures again and replaces their records, in place.
    missing = root / "missing.mp4"
    missing.symlink_to(root / "v0.mp4")
    try:
        assert main(["predict", str(listing), "--checkpoint", str(files["checkpoint"]),
                     "--out", str(out), "--workers", "0", "--top-k", "2"]) == 1
    finally:
        missing.unlink()
    again = _lines(out)
    assert [Path(r["path"]).name for r in again] == names
    assert [r["ok"] for r in again] == [True, False, True, True, False, True]
    assert [again[i] for i in (0, 2, 5)] == [results[i] for i in (0, 2, 5)]
    assert f"1 predicted, 2 unreadable (3 retried), 3 already in {out}" in capsys.readouterr().err
    # The same summary as one JSON object on stdout: the two failures are tried once more.
    assert main(["predict", str(listing), "--checkpoint", str(files["checkpoint"]),
                 "--out", str(out), "--workers", "0", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "predicted": 0, "unreadable": 2, "retried": 2, "already_done": 4, "out": str(out)}
    # All good: exit status 0.
    assert main(["predict", str(files["v0"]), "--checkpoint", str(files["checkpoint"]),
                 "--out", str(tmp_path / "good.jsonl"), "--workers", "0"]) == 0


def test_a_run_killed_from_outside_resumes_where_it_stopped(files, tmp_path, capsys):
    links = []
    for i in range(40):  # distinct paths to the three videos: the child cannot finish first
        link = tmp_path / f"clip{i}.mp4"
        link.symlink_to(files[f"v{i % 3}"])
        links.append(str(link))
    out = tmp_path / "results.jsonl"
    args = ["predict", *links, "--checkpoint", str(files["checkpoint"]), "--out", str(out),
            "--batch-size", "2", "--no-progress"]
    # Killed with a decoding worker (--workers 1) once 2 records are in, resumed here without.
    kill_when([*args, "--workers", "1"], out,
               lambda out: out.exists() and out.read_bytes().count(b"\n") >= 3)
    first = _lines(out)
    assert 2 <= len(first) < len(links) and [r["path"] for r in first] == links[:len(first)]
    with open(out, "a") as f:
        f.write('{"path": "' + links[len(first)] + '", "ok": tr')  # a line torn mid-write
    args += ["--workers", "0"]
    assert main(args) == 0
    results = _lines(out)
    assert [r["path"] for r in results] == links and all(r["ok"] for r in results)
    assert results[:len(first)] == first
    left = len(links) - len(first)
    assert f"{left} predicted, 0 unreadable (0 retried), {len(first)} already in" in \
        capsys.readouterr().err
    # Nothing left to do: nothing is written again.
    before = out.stat()
    assert main(args) == 0 and _lines(out) == results
    assert out.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("content", [b'{"my": "settings", "keep": true}', b"\x89PNG\r\n" * 40],
                         ids=["json without a newline", "binary"])
def test_a_users_file_given_as_out_is_left_byte_for_byte(files, tmp_path, capsys, content):
    mine = tmp_path / "mine.json"
    mine.write_bytes(content)
    assert main(["predict", str(files["v0"]), "--checkpoint", str(files["checkpoint"]),
                 "--out", str(mine), "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{mine}: not aim-video predict results" in err
    assert mine.read_bytes() == content
    assert main(["predict", str(files["v0"]), "--checkpoint", str(files["checkpoint"]),
                 "--out", str(tmp_path), "--workers", "0", "--no-progress"]) == 2
    # Checked when the command line is read, before the model is loaded.
    assert f"--out {tmp_path}: is a folder; give a file name" in capsys.readouterr().err
