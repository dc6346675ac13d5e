"""`aim-video demo`: the stand-in, the variants' configs, the report, and the quick demo itself."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from aim_video import demo
from aim_video.cli import main
from aim_video.demo import ablation
from aim_video.demo import plan as demo_plan
from aim_video.data import synthetic
from aim_video.data.synthetic import SyntheticInfo
from aim_video.model import AIMViT
from aim_video.weights import load_pretrained

# A stand-in small enough to pretrain in a second.
TINY = dataclasses.replace(
    demo.QUICK, width=32, layers=2, heads=2, patch_size=8, size=16, standin_images=64,
    standin_steps=3, standin_batch=16,
)


def _fake_data(tmp_path) -> SyntheticInfo:
    names = ("moves_left", "moves_right", "grows", "shrinks")
    return SyntheticInfo(
        root=tmp_path, train_list=tmp_path / "train.txt", val_list=tmp_path / "val.txt",
        classes_file=tmp_path / "classes.txt", class_names=names, num_train=0, num_val=0,
        frames=16, size=32, seed=0, task="motion", fps=8, reused=False,
    )


def test_standin_is_saved_as_clip_loads_strictly_and_is_reused(tmp_path):
    first = demo.pretrain_standin(tmp_path, TINY, progress=False)
    assert not first.reused and first.path.name == "standin_vit.pt"
    assert set(first.metrics) == {"shape_accuracy", "colour_accuracy", "texture_accuracy",
                                  "x_r2", "y_r2", "size_r2", "opacity_r2"}
    # The file is an OpenAI-layout image model: it loads into a video model like CLIP does.
    cfg = demo.variant_config("aim", TINY, _fake_data(tmp_path), first.path, tmp_path / "run", 0)
    model = AIMViT(cfg.aim_config(4))
    report = load_pretrained(model, first.path)
    assert report.format == "openai"
    state = torch.load(first.path, weights_only=True)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in state  # CLIP's own names
    torch.testing.assert_close(model.conv1.weight, state["visual.conv1.weight"])

    again = demo.pretrain_standin(tmp_path, TINY, progress=False)
    assert again.reused and again.metrics == first.metrics and again.seconds == 0
    retrained = demo.pretrain_standin(tmp_path, dataclasses.replace(TINY, standin_steps=4),
                                      progress=False)
    assert not retrained.reused


def test_variants_train_what_their_names_say(tmp_path):
    data = _fake_data(tmp_path)
    counts = {}
    for name, variant in demo.VARIANTS.items():
        cfg = demo.variant_config(name, demo.FULL, data, tmp_path / "w.pt", tmp_path / name, 1)
        aim = cfg.aim_config(len(data.class_names))
        assert cfg.model.pretrained == str(tmp_path / "w.pt") and cfg.train.out_dir == str(
            tmp_path / name)
        assert cfg.data.train == str(data.train_list) and cfg.data.flip == 0.0
        assert (cfg.data.num_frames, cfg.data.input_size) == (demo.FULL.clip_frames,
                                                              demo.FULL.size)
        with torch.device("meta"):
            model = AIMViT(aim)
        counts[name] = model.parameter_counts()["trainable"]
        # Order-blind variants have neither a temporal path nor a temporal embedding.
        assert variant.order_blind == (not aim.temporal and not aim.temporal_embedding)
    assert counts["linear_probe"] < counts["spatial"] < counts["spatial_temporal"] < counts["aim"]
    assert counts["aim"] <= 0.15 * counts["full_finetune"]
    full = demo.variant_config("full_finetune", demo.FULL, data, tmp_path, tmp_path, 1)
    assert full.optim.pretrained_lr_mult == demo.FULL.pretrained_lr_mult < 1
    assert full.model.full_finetune


def test_unknown_variant_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown demo variants \['spatio'\]"):
        demo.run_demo(tmp_path / "out", quick=True, variants=("aim", "spatio"))
    assert not (tmp_path / "out").exists()
    assert main(["demo", "--out", str(tmp_path / "out"), "--variants", "spatio"]) == 2
    assert "unknown demo variants ['spatio']" in capsys.readouterr().err


def test_runs_made_with_other_settings_are_cleared_and_plans_keep_theirs_apart(
        tmp_path, monkeypatch):
    full = ablation._claim(tmp_path / "runs" / "full", demo.FULL)
    (full / "aim").mkdir()
    (full / "aim" / "last.pt").write_bytes(b"old")
    quick = ablation._claim(tmp_path / "runs" / "quick", demo.QUICK)
    assert ablation._claim(tmp_path / "runs" / "full", demo.FULL) == full
    assert (full / "aim" / "last.pt").is_file() and quick.is_dir()  # same settings: kept
    changed = dataclasses.replace(demo.FULL, lr=1e-3)
    ablation._claim(tmp_path / "runs" / "full", changed)
    assert not (full / "aim").exists()
    assert json.loads((full / "plan.json").read_text()) == changed.fingerprint()
    # Runs trained on videos from another version of the renderer are stale too.
    (full / "aim").mkdir()
    monkeypatch.setattr(synthetic, "SYNTHETIC_VERSION", synthetic.SYNTHETIC_VERSION + 1)
    ablation._claim(tmp_path / "runs" / "full", changed)
    assert not (full / "aim").exists()
    # And runs started from another version of the preset (its recipe changed).
    (full / "aim").mkdir()
    preset = demo_plan.load_config(demo.PRESET)
    recipe = dataclasses.replace(preset, optim=dataclasses.replace(preset.optim, lr=0.5))
    monkeypatch.setattr(demo_plan, "load_config", lambda *args: recipe)
    ablation._claim(tmp_path / "runs" / "full", changed)
    assert not (full / "aim").exists()
    # Which variants run, and with how many views they are tested, are not settings of the runs.
    for other in (dataclasses.replace(demo.FULL, variants=("aim",)),
                  dataclasses.replace(demo.FULL, test_clips=5)):
        assert other.fingerprint() == demo.FULL.fingerprint()


@pytest.mark.slow
def test_quick_demo_shows_that_order_needs_temporal_adaptation(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    rows = report["variants"]
    assert set(rows) == set(demo.QUICK.variants)
    for row in rows.values():
        assert set(row) >= {"top1", "top5", "trainable_params", "train_seconds"}
        assert 0 <= row["top1"] <= row["top5"] <= 100 and row["train_seconds"] > 0
    assert rows["aim"]["top1"] >= rows["spatial"]["top1"] + 25
    for name in ("linear_probe", "spatial"):  # order-blind: capped at 50% by construction
        assert rows[name]["top1"] <= 60
    for name in ("results.png", "curves.png", "examples.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "report.html").is_file()
    assert "aim" in printed and "top-1" in printed and "report.json" in printed

    # Everything is cached: a rerun trains nothing and reports the same numbers.
    runs = out / "runs" / "quick"
    before = {name: (runs / name / "last.pt").stat().st_mtime_ns for name in rows}
    again = demo.run_demo(out, quick=True, progress=False)
    assert {n: v.top1 for n, v in again.variants.items()} == {n: r["top1"] for n, r in rows.items()}
    assert again.standin.reused and again.data.reused
    assert before == {name: (runs / name / "last.pt").stat().st_mtime_ns for name in rows}


def _finished_runs(monkeypatch, tmp_path, trained: set[str]):
    """Stubs every step of `run_demo` as if cached, except the variants in `trained`."""
    data = dataclasses.replace(_fake_data(tmp_path), reused=True)
    monkeypatch.setattr(ablation, "make_synthetic", lambda *a, **k: data)
    monkeypatch.setattr(ablation, "pretrain_standin", lambda folder, plan, progress: (
        demo.Standin(tmp_path / "w.pt", {}, 0.0, reused=True)))
    monkeypatch.setattr(ablation, "run_variant", lambda cfg, name, classes, progress: (
        demo.VariantResult(name, 90.0, 100.0, 10, 100, 12.0, [], tmp_path, name in trained)))
    written = []
    monkeypatch.setattr(ablation, "write_report", written.append)
    return written


def test_a_rerun_that_trains_nothing_keeps_the_seconds_of_the_run_that_made_the_results(
        tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"plan": demo.QUICK.to_dict(), "seconds": 183.0}))
    _finished_runs(monkeypatch, tmp_path, trained=set())
    cached = demo.run_demo(out, quick=True, progress=False)
    assert cached.seconds == 183.0 and cached.cached
    # The command line says whose seconds they are, and lists every file written.
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert ("report.json, report.html, results.png, curves.png, examples.png (results from the "
            "run of 183 s; nothing retrained)") in printed
    # Anything trained in this call: its own wall time.
    _finished_runs(monkeypatch, tmp_path, trained={"aim"})
    fresh = demo.run_demo(out, quick=True, progress=False)
    assert fresh.seconds < 183.0 and not fresh.cached
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert "nothing retrained" not in capsys.readouterr().out
    # Another plan's report says nothing about this one.
    _finished_runs(monkeypatch, tmp_path, trained=set())
    assert demo.run_demo(out, quick=False, progress=False).seconds < 183.0


def test_ablation_page_links_each_variants_evaluation_report(tmp_path):
    from fake_eval import fake_demo
    from test_report import page_data

    rows = fake_demo(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    data = page_data(tmp_path / "report.html")
    assert data["kind"] == "ablation" and [v["name"] for v in data["variants"]] == list(rows)
    links = {v["name"]: v["report"] for v in data["variants"]}
    assert links["linear_probe"] is None
    for name in ("aim", "full_finetune"):  # built for the runs that had none
        assert (tmp_path / links[name]).is_file()
        assert page_data(tmp_path / links[name])["kind"] == "eval"
    assert [v["share"] for v in data["variants"]] == [5.0, 15.0, 100.0]
