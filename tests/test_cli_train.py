"""`aim-video train`, `eval` and `predict` end to end on the synthetic data set."""

from __future__ import annotations

import json

import pytest
from test_engine_support import tiny_overrides

from aim_video.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.py


def test_train_then_eval_then_predict(synthetic, backbone, tmp_path, capsys):
    out = tmp_path / "run"
    overrides = tiny_overrides(synthetic, out, None)
    code = main(["train", "--config", "synthetic_cpu", "--set", *overrides,
                 "--pretrained", str(backbone), "--no-progress", "--json"])
    assert code == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["completed"] and trained["global_step"] == 8
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "bad_files.json",
                 "curves.png", "eval_val/metrics.json", "eval_val/per_class.csv",
                 "eval_val/confusion.png", "eval_val/predictions.jsonl", "eval_val/report.html",
                 "eval_val/thumbs/0.jpg"):
        assert (out / name).is_file(), name

    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--json", "--no-progress"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["num_videos"] == 4 and evaluated["num_bad"] == 0
    # The checkpoint alone (config + backbone path + trained weights) reproduces the run's
    # own final evaluation exactly.
    assert evaluated["top1"] == trained["final_metrics"]["val_top1"]
    assert evaluated["top5"] == trained["final_metrics"]["val_top5"]
    assert len(evaluated["per_class"]) == 10

    video = sorted((synthetic / "videos" / "val").rglob("*.mp4"))[0]
    missing = tmp_path / "missing.mp4"
    assert main(["predict", str(video), str(missing), "--checkpoint", str(out / "best.pt"),
                 "--top-k", "3", "--json"]) == 1  # one unreadable
    predicted = json.loads(capsys.readouterr().out)["videos"]
    assert [p["ok"] for p in predicted] == [True, False]
    top = predicted[0]["top"]
    assert len(top) == 3 and all(a["prob"] >= b["prob"] for a, b in zip(top, top[1:]))
    assert 0 < sum(t["prob"] for t in top) <= 1 + 1e-6
    assert predicted[1]["error"] == "file not found"

    assert main(["predict", str(video), "--checkpoint", str(out / "best.pt"), "--top-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == str(video) and table[1].lstrip().startswith("1. ")


def test_cli_errors_are_one_line_messages(synthetic, tmp_path, capsys):
    code = main(["train", "--config", "synthetic_cpu", "--set",
                 *tiny_overrides(synthetic, tmp_path / "run", None), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("aim-video train: error: refusing to train adapters on a random frozen")
    assert main(["train", "--config", "synthetic_cpu", "--set", "optim.lr_typo=1"]) == 2
    assert "unknown key optim.lr_typo" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt: no such checkpoint file" in capsys.readouterr().err


def test_shorthand_flags_become_config_overrides():
    from aim_video.cli import build_parser
    from aim_video.cli.train import config_overrides
    from aim_video.engine.config import load_config

    args = build_parser().parse_args([
        "train", "--config", "synthetic_cpu", "--set", "optim.lr=0.01", "--out", "runs/x",
        "--pretrained", "b.pt", "--allow-random-backbone", "--trust-checkpoint",
    ])
    cfg = load_config(args.config, config_overrides(args))
    assert (cfg.optim.lr, cfg.train.out_dir, cfg.model.pretrained) == (0.01, "runs/x", "b.pt")
    assert cfg.model.allow_random_backbone and cfg.model.trust_checkpoint
