"""ONNX export: `aim-video export` on a tiny trained-looking checkpoint, run by onnxruntime.

One export per module (tracing takes seconds); the tests read the file it wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re

import numpy as np
import pytest
import torch
from video_helpers import write_checkpoint, write_indexed_video

pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")
pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")

from aim_video import export as export_module  # noqa: E402
from aim_video.cli import main  # noqa: E402
from aim_video.data.dataset import NORMALIZATIONS  # noqa: E402
from aim_video.engine import checkpoint as ckpt  # noqa: E402
from aim_video.export import (  # noqa: E402
    EXPORT_BATCH,
    FEATURE_TOLERANCE,
    ExportError,
    OnnxClassifier,
    onnx_predictor,
)
from aim_video.predictor import Predictor  # noqa: E402
from aim_video.files import temp_files  # noqa: E402

# fp32 on both sides, the same operations in another order: differences are rounding (~1e-7
# here); a wrong graph (a missed adapter, a frame mix-up) moves logits by far more than this.
TOLERANCE = 1e-4
CLASSES = [f"class_{c}" for c in range(5)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    checkpoint = write_checkpoint(folder / "best.pt", classes=len(CLASSES), interval=3,
                                  views="2x1")
    state = ckpt.read_training_checkpoint(checkpoint)
    cfg = ckpt.checkpoint_config(state, checkpoint)
    out = folder / "model.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["export", "--checkpoint", str(checkpoint),
                       "--out", str(out)])
    assert status == 0
    return {"cfg": cfg, "model": ckpt.model_from_checkpoint(state, checkpoint, cfg).eval(),
            "checkpoint": checkpoint, "out": out, "stdout": stdout.getvalue(), "state": state,
            "video": write_indexed_video(folder / "video.mp4", 24)}


def test_the_command_prints_the_verified_logit_difference(exported):
    match = re.search(r"max \|Δlogit\| = (\S+) at batch (\d+)", exported["stdout"])
    assert match, exported["stdout"]
    assert float(match[1]) <= TOLERANCE
    features = re.search(r"features: (\S+) of the largest", exported["stdout"])
    assert features and float(features[1]) <= FEATURE_TOLERANCE
    assert int(match[2]) != EXPORT_BATCH  # verified at a batch size other than the traced one
    assert not temp_files(exported["out"].parent)


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_gives_pytorchs_logits_at_other_batch_sizes(exported, batch):
    onnx_model = OnnxClassifier(exported["out"])
    assert isinstance(onnx_model.input_shape[0], str)  # the batch axis is symbolic
    clips = torch.randn(batch, 3, 4, 32, 32)
    with torch.no_grad():
        expected = exported["model"](clips).numpy()
    logits = onnx_model(clips)
    assert logits.shape == (batch, len(CLASSES))
    np.testing.assert_allclose(logits, expected, rtol=0, atol=TOLERANCE)
    if batch > 1:  # the logits depend on the clip (not a constant folded in at tracing)
        assert np.abs(logits - logits.mean(axis=0)).max() > 100 * TOLERANCE


def test_the_file_alone_holds_class_names_and_preprocessing(exported):
    import onnx

    cfg, state = exported["cfg"], exported["state"]
    onnx_model = OnnxClassifier(exported["out"])
    assert onnx_model.class_names == CLASSES
    # The test-time data settings come back equal, less where the training data was.
    paths = dict.fromkeys(("format", "train", "val", "test", "root", "class_names"))
    expected = dataclasses.replace(cfg.data, **{k: getattr(onnx_model.data_config, k)
                                                for k in paths})
    assert onnx_model.data_config == expected
    assert (onnx_model.num_frames, onnx_model.input_size) == (4, 32)
    assert onnx_model.backbone_fingerprint == state["backbone_fingerprint"]
    # Plain ONNX metadata_props, readable without aim-video.
    props = {p.key: p.value for p in onnx.load(str(exported["out"])).metadata_props}
    assert json.loads(props["class_names"]) == CLASSES
    assert (props["num_frames"], props["input_size"], props["test_views"]) == ("4", "32", "2x1")
    assert (props["sampling"], props["frame_interval"]) == ("dense", "3")
    assert props["backbone_fingerprint"] == state["backbone_fingerprint"]
    assert json.loads(props["mean"]) == pytest.approx(NORMALIZATIONS["clip"][0])
    assert props["aim_video_version"]


def test_damaged_missing_and_foreign_files_are_one_line_errors(exported, tmp_path, capsys):
    import onnx

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported["out"].read_bytes()[:5000])
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(exported["out"]))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    tampered = tmp_path / "tampered.onnx"
    model = onnx.load(str(exported["out"]))
    for prop in model.metadata_props:
        if prop.key == "class_names":
            prop.value = '["jump", "run"'
    onnx.save(model, str(tampered))
    cases = {truncated: "cannot load", tmp_path / "missing.onnx": "no such ONNX file",
             foreign: "not an aim-video ONNX export", tampered: "damaged aim-video metadata"}
    for path, reason in cases.items():
        with pytest.raises(ExportError) as err:
            OnnxClassifier(path)
        assert str(path) in str(err.value) and reason in str(err.value)
        assert "\n" not in str(err.value)
    status = main(["predict", str(exported["video"]), "--runtime", "onnx", "--model",
                   str(truncated)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"aim-video predict: error: {truncated}: onnxruntime cannot load")


def test_a_failed_verification_fails_the_command_and_writes_nothing(exported, tmp_path,
                                                                    monkeypatch, capsys):
    # The traced file is reused (tracing again would take seconds); the check is made to fail.
    monkeypatch.setattr(export_module, "export_onnx",
                        lambda model, path, metadata: path.write_bytes(exported["out"].read_bytes()))
    monkeypatch.setattr(export_module, "max_differences", lambda *args: (0.25, 0.0))
    out = tmp_path / "model.onnx"
    status = main(["export", "--checkpoint", str(exported["checkpoint"]), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3  # an output that failed its own check, not a mistake of the user
    assert len(err) == 1 and err[0].startswith("aim-video export: error:")
    assert "0.25" in err[0] and "limit 0.0001" in err[0]
    assert not out.exists() and not temp_files(tmp_path)


def test_predict_on_onnxruntime_gives_the_checkpoints_predictions(exported, capsys):
    def predict(*args: str) -> list[dict]:
        status = main(["predict", str(exported["video"]), "--json", "--top-k", "3",
                       "--workers", "0", *args])
        assert status == 0
        return json.loads(capsys.readouterr().out)["videos"]

    [from_file] = predict("--runtime", "onnx", "--model", str(exported["out"]))
    [from_checkpoint] = predict("--checkpoint", str(exported["checkpoint"]))
    # The same clips (the file's own sampling, 2 test views) through both runtimes.
    assert from_file["ok"] and [t["class"] for t in from_file["top"]] == [
        t["class"] for t in from_checkpoint["top"]]
    np.testing.assert_allclose([t["prob"] for t in from_file["top"]],
                               [t["prob"] for t in from_checkpoint["top"]], atol=TOLERANCE)


def test_predict_refuses_mixed_runtime_options(exported, capsys):
    cases = {("--runtime", "onnx"): "--model MODEL.onnx is required",
             ("--model", str(exported["out"])): "with --runtime onnx",
             ("--runtime", "onnx", "--model", str(exported["out"]), "--checkpoint",
              str(exported["checkpoint"])): "--checkpoint is for --runtime torch"}
    for args, message in cases.items():
        assert main(["predict", str(exported["video"]), *args]) == 2
        assert message in capsys.readouterr().err


def test_the_file_gives_pytorchs_features_and_a_predictor_extracts_with_them(exported, tmp_path,
                                                                            capsys):
    import onnx

    onnx_model = OnnxClassifier(exported["out"])
    clips = torch.randn(3, 3, 4, 32, 32)
    with torch.no_grad():
        expected = exported["model"].forward_features(clips).numpy()
    logits, features = onnx_model.run(clips)
    assert features.shape == (3, exported["model"].cfg.vit.width)
    # Relative to the largest feature, as the export's own check (FEATURE_TOLERANCE says why).
    assert np.abs(features - expected).max() <= FEATURE_TOLERANCE * np.abs(expected).max()
    np.testing.assert_array_equal(onnx_model.features(clips), features)
    np.testing.assert_array_equal(onnx_model(clips), logits)
    # Through the Predictor: the same views as the checkpoint's, each runtime's features.
    from_file = onnx_predictor(exported["out"]).features([exported["video"]])
    from_checkpoint = Predictor.from_checkpoint(exported["checkpoint"], device="cpu").features(
        [exported["video"]])
    [a], [b] = from_file, from_checkpoint
    assert a.ok and b.ok and a.features.shape == b.features.shape
    assert np.abs(a.features - b.features).max() <= FEATURE_TOLERANCE * np.abs(b.features).max()
    # A file with the logits only (as exported before features were an output): one line.
    logits_only = tmp_path / "logits_only.onnx"
    model = onnx.load(str(exported["out"]))
    del model.graph.output[1]
    onnx.save(model, str(logits_only))
    old = onnx_predictor(logits_only)
    assert old.predict([exported["video"]])[0].ok
    with pytest.raises(ExportError, match="logits only.*export the checkpoint again"):
        old.features([exported["video"]])
def test_timeline_on_onnxruntime_gives_the_checkpoints_windows(exported, tmp_path, capsys):
    def timeline(name: str, *args: str) -> tuple[dict, dict]:
        out = tmp_path / name
        assert main(["timeline", str(exported["video"]), "--json", "--no-plot", "--no-progress",
                     "--stride", "0.5", "--threshold", "0", "--out", str(out), *args]) == 0
        return json.loads(capsys.readouterr().out), json.loads((out / "timeline.json").read_text())

    summary, from_file = timeline("onnx", "--runtime", "onnx", "--model", str(exported["out"]))
    _, from_checkpoint = timeline("torch", "--checkpoint", str(exported["checkpoint"]))
    assert summary["windows"] == len(from_file["windows"]) > 1
    assert summary["video"] == str(exported["video"].absolute())
    for mine, theirs in zip(from_file["windows"], from_checkpoint["windows"], strict=True):
        assert (mine["start"], mine["end"]) == (theirs["start"], theirs["end"])
        assert [t["class"] for t in mine["top"]] == [t["class"] for t in theirs["top"]]
        np.testing.assert_allclose([t["prob"] for t in mine["top"]],
                                   [t["prob"] for t in theirs["top"]], atol=TOLERANCE)


def test_export_json_says_what_the_text_says(exported, tmp_path, monkeypatch, capsys):
    # The traced file is reused (tracing again would take seconds).
    monkeypatch.setattr(export_module, "export_onnx",
                        lambda model, path, metadata: path.write_bytes(exported["out"].read_bytes()))
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(exported["checkpoint"]), "--out", str(out),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"] == str(out) and printed["bytes"] == out.stat().st_size
    assert printed["classes"] == len(CLASSES) and printed["max_abs_diff"] <= TOLERANCE
    assert printed["verify_batch"] != EXPORT_BATCH
