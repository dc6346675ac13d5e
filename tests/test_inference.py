"""One inference path: `eval` and the predictor answer a video with the same code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from video_helpers import one_thread, write_checkpoint, write_indexed_video  # noqa: F401

from aim_video.engine.evaluate import evaluate_checkpoint
from aim_video.inference import Task, ViewsModel
from aim_video.predictor import Predictor


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inference")
    videos = [write_indexed_video(root / f"v{i}.mp4", 12 + 5 * i) for i in range(4)]
    (root / "garbage.mp4").write_bytes(b"not a video at all" * 100)
    listed = [*videos[:2], root / "garbage.mp4", *videos[2:], root / "missing.mp4"]
    listing = root / "val.txt"
    listing.write_text("".join(f"{path} {i % 3}\n" for i, path in enumerate(listed)))
    return {"checkpoint": write_checkpoint(root / "best.pt", classes=5, views="3x1"),
            "list": listing, "videos": [str(p) for p in listed]}


def test_eval_and_predict_give_the_same_probabilities(files, one_thread):  # noqa: F811
    # One compute thread on both sides (evaluation sets its own: train.cpu_threads), the same
    # batches (eval.batch_size) and chunks: the same code on the same clips then rounds the
    # same way, so the probabilities are compared exactly.
    result = evaluate_checkpoint(files["checkpoint"], device="cpu",
                                 overrides=[f"data.val={files['list']}", "train.cpu_threads=1"])
    predictor = Predictor.from_checkpoint(files["checkpoint"], device="cpu")
    predictions = predictor.predict(files["videos"], top_k=5)
    assert [v.path for v in result.videos] == [p.path for p in predictions] == files["videos"]
    assert [v.ok for v in result.videos] == [True, True, False, True, True, False]
    names = predictor.class_names
    for video, prediction in zip(result.videos, predictions):
        assert video.ok == prediction.ok and video.reason == prediction.error
        assert [names[c] for c in video.top] == [name for name, _ in prediction.top]
        assert video.probs == [prob for _, prob in prediction.top]  # exactly
    assert result.bad_files == {p.path: p.error for p in predictions if not p.ok}
    assert result.bad_files[files["videos"][-1]] == "file not found"


def test_chunks_and_tasks_do_not_change_the_answer(files, one_thread):  # noqa: F811
    predictor = Predictor.from_checkpoint(files["checkpoint"], device="cpu")
    model = predictor.model
    views = torch.randn(3, 4, 3, 4, 32, 32)  # 3 videos x 4 views
    whole = ViewsModel(model, torch.device("cpu"), None, chunk=12).probabilities(views)
    by_one = ViewsModel(model, torch.device("cpu"), None, chunk=1).probabilities(views)
    # Each clip alone or all 12 in one call: the same clips, fp32 matmuls blocked differently
    # (differences of a few roundings, ~1e-7 on probabilities of size ~0.2).
    torch.testing.assert_close(whole["model"], by_one["model"], rtol=0, atol=1e-6)
    with torch.no_grad():
        # (3·4, K) -> softmax -> (3, 4, K) -> mean over the views
        expected = model(views.flatten(0, 1)).softmax(-1).view(3, 4, -1).mean(1)
    torch.testing.assert_close(whole["model"], expected, rtol=0, atol=1e-6)
    # A task whose weights are the model's own is answered as the model alone.
    own = {n: p.data for n, p in model.named_parameters() if n.startswith("head.")}
    tasks = [Task("a", predictor.class_names, weights=own), Task("b", predictor.class_names)]
    both = ViewsModel(model, torch.device("cpu"), None, chunk=12, tasks=tasks)
    out = both.probabilities(views)
    assert set(out) == {"a", "b"}
    torch.testing.assert_close(out["a"], whole["model"], rtol=0, atol=0)
    torch.testing.assert_close(out["b"], whole["model"], rtol=0, atol=0)
    features = both.features(views)["a"]
    assert features.shape == (3, model.cfg.vit.width)


def test_the_engine_imports_neither_the_report_nor_the_predictor():
    code = ("import sys, aim_video.engine; "
            "print(sorted(m for m in sys.modules if m.startswith(('aim_video.report', "
            "'aim_video.predictor'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
