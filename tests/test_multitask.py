"""Many tasks on one backbone: `Predictor.from_checkpoints` and `--checkpoint a --checkpoint b`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from video_helpers import one_thread, write_checkpoint, write_indexed_video  # noqa: F401

from aim_video.cli import main
from aim_video.engine.checkpoint import (
    checkpoint_config,
    model_from_config,
    read_training_checkpoint,
    save_checkpoint,
)
from aim_video.errors import UserError
from aim_video.predictor import Predictor, unique_names


def write_backbone(path: Path) -> Path:
    """The frozen weights `write_checkpoint` trains on (its seeded random backbone), as a file.

    The seeded random backbone also depends on the head's size (its initialisation draws come
    first), so tasks with other class counts load the backbone from this file instead.
    """
    checkpoint = write_checkpoint(path.with_suffix(".source.pt"))
    state = read_training_checkpoint(checkpoint)
    model = model_from_config(checkpoint_config(state, checkpoint), len(state["class_names"]))
    torch.save({k: v for k, v in model.state_dict().items() if not model.is_trainable(k)}, path)
    return path


def write_task(path: Path, *, classes: int, weights_seed: int, backbone: Path | None,
               **settings) -> Path:
    """A checkpoint with its own trained tensors and classes on `backbone` (None: the random
    backbone of seed 7, another one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(path, seed=0 if backbone else 7, **settings)
    state = read_training_checkpoint(path)
    generator = torch.Generator().manual_seed(100 + weights_seed)
    shapes = {name: (classes, *t.shape[1:]) if name.startswith("head.") else t.shape
              for name, t in state["model"].items()}
    state["model"] = {name: torch.randn(shape, generator=generator) * 0.3
                      for name, shape in shapes.items()}
    state["class_names"] = [f"t{weights_seed}_class_{c}" for c in range(classes)]
    if backbone:
        state["config"]["model"]["pretrained"] = str(backbone)
    return save_checkpoint(state, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multitask")
    backbone = write_backbone(root / "backbone.pt")
    return {
        # Different class counts: the heads differ in shape, the rest of the model does not.
        "a": write_task(root / "runs" / "actions" / "best.pt", classes=3, weights_seed=1,
                        backbone=backbone, views="2x1"),
        "b": write_task(root / "runs" / "sports" / "best.pt", classes=5, weights_seed=2,
                        backbone=backbone, views="2x1"),
        "v0": write_indexed_video(root / "v0.mp4", 16),
        "v1": write_indexed_video(root / "v1.mp4", 24),
        "root": root, "backbone": backbone,
    }


@pytest.fixture(scope="module")
def both(files) -> Predictor:
    return Predictor.from_checkpoints([files["a"], files["b"]], device="cpu")


def test_each_task_answers_as_it_does_alone(files, both):
    assert [t.name for t in both.tasks] == ["actions", "sports"] and both.multitask
    alone = {name: Predictor.from_checkpoint(files[key], device="cpu")
             for name, key in (("actions", "a"), ("sports", "b"))}
    views = torch.randn(3, 2, 3, 4, 32, 32)  # 3 videos x 2 views
    shared = both.task_probabilities(views)
    assert set(shared) == {"actions", "sports"}
    for name, predictor in alone.items():
        # The same model and inputs; only the order of fp32 sums may differ between calls.
        torch.testing.assert_close(shared[name], predictor.probabilities(views),
                                   rtol=0, atol=1e-5)
    # Again after the swaps, in the other order: nothing of one task stays in the model.
    both.views_model.use(both.tasks[1])
    torch.testing.assert_close(both.task_probabilities(views)["actions"],
                               alone["actions"].probabilities(views), rtol=0, atol=1e-5)
    # Through the whole pipeline: decoded clips, top-k per task.
    videos = [files["v0"], files["v1"]]
    predictions = both.predict(videos, top_k=3)
    for name, predictor in alone.items():
        for p, single in zip(predictions, predictor.predict(videos, top_k=3)):
            assert p.ok and p.top == [] and set(p.tasks) == {"actions", "sports"}
            assert [c for c, _ in p.tasks[name]] == [c for c, _ in single.top]
            assert [q for _, q in p.tasks[name]] == pytest.approx([q for _, q in single.top],
                                                                  abs=1e-5)
    timelines = both.timelines(files["v1"], stride=1.0)
    for name, predictor in alone.items():
        single = predictor.timeline(files["v1"], stride=1.0)
        assert timelines[name].class_names == single.class_names
        assert (timelines[name].starts == single.starts).all()
        assert abs(timelines[name].probs - single.probs).max() <= 1e-5


def test_the_backbone_is_held_once(both):
    model = both.model
    trainable = set(model.trainable_state_dict())
    parameters = dict(model.named_parameters())
    backbone = {id(p.untyped_storage()) for n, p in parameters.items() if n not in trainable}
    pointers = {n: p.data_ptr() for n, p in parameters.items()}
    # Every tensor the predictor holds: the one model's parameters and each task's own set.
    held = set(pointers.values()) | {t.data_ptr() for task in both.tasks
                                     for t in task.weights.values()}
    assert len(held) == len(parameters) + len(trainable)  # backbone + 2 x trainable
    assert all(set(task.weights) == trainable for task in both.tasks)
    task_pointers = [{t.data_ptr() for t in task.weights.values()} for task in both.tasks]
    assert not task_pointers[0] & task_pointers[1]
    assert not (task_pointers[0] | task_pointers[1]) & {
        pointers[n] for n in parameters if n not in trainable}
    assert len(backbone) == len(parameters) - len(trainable)
    assert not any(p.requires_grad for p in model.parameters())


def test_names_default_to_run_folders_and_repeats_are_numbered(files, tmp_path):
    assert unique_names(["a", "b", "a", "a"]) == ["a", "b", "a-2", "a-3"]
    last = tmp_path / "actions" / "last.pt"
    last.parent.mkdir()
    last.write_bytes(files["a"].read_bytes())
    predictor = Predictor.from_checkpoints([files["a"], last], device="cpu")
    assert [t.name for t in predictor.tasks] == ["actions", "actions-2"]
    named = Predictor.from_checkpoints({"x": files["a"], "y": files["b"]}, device="cpu")
    assert [t.name for t in named.tasks] == ["x", "y"]


def test_checkpoints_of_other_backbones_or_data_settings_are_refused(files, tmp_path):
    other = write_task(tmp_path / "other" / "best.pt", classes=3, weights_seed=3,
                       backbone=None, views="2x1")
    with pytest.raises(UserError) as refused:
        Predictor.from_checkpoints([files["a"], other], device="cpu")
    message = str(refused.value)
    theirs, ours = (read_training_checkpoint(p)["backbone_fingerprint"]
                    for p in (other, files["a"]))
    assert theirs != ours
    for part in (str(other), str(files["a"]), theirs, ours):
        assert part in message
    spaced = write_task(tmp_path / "spaced" / "best.pt", classes=3, weights_seed=4,
                        backbone=files["backbone"], interval=3, views="2x1")
    with pytest.raises(UserError, match=r"data\.frame_interval is 3, but 2 in .*actions"):
        Predictor.from_checkpoints([files["a"], spaced], device="cpu")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]  # after the header


def test_predict_with_two_checkpoints_writes_each_tasks_results(files, both, tmp_path, capsys):
    checkpoints = ["--checkpoint", str(files["a"]), "--checkpoint", str(files["b"])]
    out = tmp_path / "results.jsonl"
    args = ["predict", str(files["v0"]), *checkpoints, "--out", str(out), "--workers", "0",
            "--top-k", "2", "--no-progress"]
    assert main(args) == 0
    [record] = _lines(out)
    assert set(record["tasks"]) == {"actions", "sports"} and "top" not in record
    [expected] = both.predict([files["v0"]], top_k=2)
    for name, top in expected.tasks.items():
        assert [r["class"] for r in record["tasks"][name]["top"]] == [c for c, _ in top]
    # Resume: the first input is skipped, the second is added.
    assert main([*args[:2], str(files["v1"]), *args[2:]]) == 0
    assert [Path(r["path"]).name for r in _lines(out)] == ["v0.mp4", "v1.mp4"]
    assert "1 predicted, 0 unreadable (0 retried), 1 already in" in capsys.readouterr().err
    # The file holds two tasks' results: one checkpoint cannot continue it.
    assert main(["predict", str(files["v0"]), "--checkpoint", str(files["a"]),
                 "--out", str(out)]) == 2
    assert "holds tasks actions, sports, this run predicts with one model" in \
        capsys.readouterr().err
    # Text: one section per task.
    assert main(["predict", str(files["v0"]), *checkpoints, "--workers", "0",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[1:2] == ["  actions:"] and "  sports:" in text
    assert text[2].startswith("    1. t1_class_")


def test_timeline_with_two_checkpoints_writes_a_folder_per_task(files, both, tmp_path, capsys):
    out = tmp_path / "timeline"
    assert main(["timeline", str(files["v1"]), "--checkpoint", str(files["a"]),
                 "--checkpoint", str(files["b"]), "--out", str(out), "--no-plot",
                 "--no-progress", "--stride", "1"]) == 0
    timelines = both.timelines(files["v1"], stride=1.0)
    for name, timeline in timelines.items():
        written = json.loads((out / name / "timeline.json").read_text())["windows"]
        assert len(written) == len(timeline.starts) > 1
        assert [w["top"][0]["class"] for w in written] == [t[0][0] for t in timeline.top(1)]
        assert (out / name / "timeline.csv").exists() and (out / name / "segments.json").exists()
    assert not (out / "timeline.csv").exists()
    printed = capsys.readouterr().out
    assert "actions:" in printed and "sports:" in printed
