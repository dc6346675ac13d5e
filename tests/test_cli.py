"""The command line's contract: one-line errors with their exit status, help, and `eval`."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_engine_support import tiny_config

from aim_video import __version__
from aim_video.cli import build_parser, main
from aim_video.files import temp_files

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.py


@pytest.fixture(scope="module")
def checkpoint(synthetic, backbone, tmp_path_factory) -> Path:
    """last.pt of a tiny finished run (its own final evaluation written to eval_val/)."""
    from aim_video.engine.train import train

    out = tmp_path_factory.mktemp("cli_run")
    return train(tiny_config(synthetic, out, backbone), progress=False).last_checkpoint


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"aim-video {command}: error: "), err
    return lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"aim-video {__version__}"


def test_help_shows_defaults(capsys):
    for command in ("info", "make-synthetic", "eval"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
    out = capsys.readouterr().out
    assert "frames per clip (default: 8)" in out  # info
    assert "training videos (default: 800)" in out  # make-synthetic
    assert "(default: val)" in out  # eval --split
    assert "50%." in out and "50%%" not in out
    assert "(default: None)" not in out and "(default: False)" not in out


@pytest.mark.parametrize("argv", [
    ["info", "--frames", "0"],
    ["info", "--num-classes", "-3"],
    ["make-synthetic", "out", "--size", "33"],
    ["make-synthetic", "out", "--frames", "1"],
])
def test_impossible_counts_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --" in err and "Traceback" not in err


def test_a_bad_config_key_is_one_line(capsys):
    assert main(["train", "--config", "synthetic_cpu", "--set", "optim.lr_typo=1"]) == 2
    assert "optim.lr_typo" in _one_error_line(capsys.readouterr().err, "train")


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt: no such checkpoint file" in _one_error_line(capsys.readouterr().err, "eval")


def test_an_unwritable_out_folder_is_refused_before_the_checkpoint_is_read(tmp_path, capsys):
    # Root writes through permission bits, so the folder is made unwritable by putting it under
    # a regular file. The checkpoint does not exist either: the folder is checked first.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "eval"
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "eval")
    assert str(out) in line and "none.pt" not in line


def test_output_errors_and_interrupts_are_one_line(monkeypatch, capsys):
    import aim_video.cli.info as info

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.json")

    monkeypatch.setattr(info, "run", full_disk)
    assert main(["info"]) == 3
    assert _one_error_line(capsys.readouterr().err, "info").endswith(
        "/runs/x/metrics.json: No space left on device")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    assert main(["info"]) == 130
    _one_error_line(capsys.readouterr().err, "info")


def test_eval_any_split_with_timed_reports(checkpoint, tmp_path, capsys):
    # The run's own final evaluation records its wall time too.
    trained = json.loads((checkpoint.parent / "eval_val" / "metrics.json").read_text())
    assert trained["seconds"] > 0

    out = tmp_path / "eval_train"
    assert main(["eval", "--checkpoint", str(checkpoint), "--split", "train", "--views", "2x1",
                 "--out", str(out), "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # The 8 training videos, each read as 2 test views (not as one augmented training clip).
    assert (printed["split"], printed["num_videos"], printed["num_bad"]) == ("train", 8, 0)
    assert printed["views"] == "2x1"
    written = json.loads((out / "metrics.json").read_text())
    assert written["seconds"] > 0 and written["top1"] == printed["top1"]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 8
    # The report's page and the strips of what the model saw (the CLI fills evaluation's
    # per-batch observer; the engine draws nothing).
    assert (out / "report.html").is_file() and len(list((out / "thumbs").iterdir())) == 8
    assert not temp_files(out)  # no write left half-done

    assert main(["eval", "--checkpoint", str(checkpoint), "--no-progress"]) == 0
    assert "no --out given" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    # The reader is gone before the command writes (as `| head -c 10` once it has its bytes):
    # closing the only read end makes every write fail with EPIPE, on any machine. `main`
    # handles it for every command; `info` is the quickest to start.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from aim_video.cli import main; sys.exit(main())",
         "info", "--json", "--no-flops"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ----------------------------------------------------------------------------- one grammar
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


# --out names a file for some commands and a folder for others (check_out refuses the wrong
# kind in every one); --frames is a clip's length in `info` and a video's in `make-synthetic`.
OWN_MEANING = {"--out", "--frames"}


def test_a_flag_means_the_same_in_every_command():
    seen: dict[str, dict[str, tuple]] = {}
    for command, parser in _subparsers().items():
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help" and flag not in OWN_MEANING:
                    seen.setdefault(flag, {})[command] = (
                        action.default, action.help, action.type, action.nargs, action.metavar,
                        action.choices, type(action).__name__)
    shared = {flag: by for flag, by in seen.items() if len(by) > 1}
    # The flags that the issue lists as shared are shared, and by the commands it names.
    assert {"predict", "timeline", "extract", "eval"} <= set(shared["--device"])
    assert {"predict", "timeline", "extract", "eval"} <= set(shared["--views"])
    assert {"predict", "timeline", "extract", "eval", "export"} <= set(shared["--json"])
    assert {"predict", "timeline", "extract"} <= set(shared["--runtime"])
    assert {"timeline", "extract"} <= set(shared["--stride"]) & set(shared["--window"])
    assert {"eval", "extract", "train"} <= set(shared["--set"])
    for flag, by in shared.items():
        assert len({repr(v) for v in by.values()}) == 1, (flag, by)
    assert all(default == "auto" for default, *_ in shared["--device"].values())
    assert "--crops" not in seen and "--format" not in _flags("export")


def _flags(command: str) -> set[str]:
    return {f for a in _subparsers()[command]._actions for f in a.option_strings}


def test_every_help_lists_the_exit_statuses(capsys):
    for argv in ([], *([command] for command in _subparsers())):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
        out = capsys.readouterr().out
        assert "exit status:" in out, argv
        for code in (0, 1, 2, 3, 130, 141, 70):
            assert re.search(rf"^  {code} +\S", out, re.MULTILINE), (argv, code)


@pytest.mark.parametrize("argv", [
    ["timeline", "v.mp4", "--stride", "-1"],
    ["timeline", "v.mp4", "--stride", "0"],
    ["timeline", "v.mp4", "--stride", "1e-9"],
    ["timeline", "v.mp4", "--window", "0"],
    ["timeline", "v.mp4", "--threshold", "nan"],
    ["timeline", "v.mp4", "--threshold", "1.5"],
    ["extract", "v.mp4", "--out", "f", "--windows", "--stride", "inf"],
    ["predict", "v.mp4", "--top-k", "0"],
    ["predict", "v.mp4", "--top-k", "-1"],
    ["predict", "v.mp4", "--batch-size", "0"],
    ["predict", "v.mp4", "--workers", "-1"],
    ["predict", "v.mp4", "--views", "0x3"],
    ["eval", "--checkpoint", "c.pt", "--views", "3"],
])
def test_every_number_is_checked_when_the_command_line_is_read(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert f"argument {argv[-2]}" in line and argv[-1] in line


@pytest.mark.parametrize("argv, says", [
    (["timeline", "v.mp4", "--checkpoint", "c.pt", "--views", "3x1"], "a window is one clip"),
    (["eval", "--checkpoint", "a.pt", "--checkpoint", "b.pt"], "give exactly one (got 2)"),
    (["extract", "v.mp4", "--checkpoint", "a.pt", "--checkpoint", "b.pt", "--out", "o"],
     "give exactly one (got 2)"),
    (["predict", "v.mp4"], "--checkpoint is required"),
    (["predict", "v.mp4", "--runtime", "onnx", "--checkpoint", "c.pt"], "--runtime torch"),
    (["predict", "v.mp4", "--checkpoint", "c.pt", "--model", "m.onnx"], "--runtime onnx"),
    (["extract", "v.mp4", "--checkpoint", "c.pt", "--out", "o", "--stride", "1"],
     "add --windows"),
])
def test_flags_that_do_not_go_together_are_one_line(argv, says, capsys):
    assert main(argv) == 2
    assert says in _one_error_line(capsys.readouterr().err, argv[0])


@pytest.mark.parametrize("command, kind", [("predict", "folder"), ("export", "folder"),
                                           ("timeline", "file"), ("extract", "file"),
                                           ("eval", "file"), ("train", "file"),
                                           ("prepare", "file"), ("demo", "file")])
def test_an_out_of_the_wrong_kind_is_refused_before_any_work(command, kind, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir() if kind == "folder" else out.write_text("mine")
    # The checkpoint (config, list) does not exist: the output is checked first.
    none = ["--checkpoint", str(tmp_path / "none.pt")]
    argv = {"predict": ["predict", "v.mp4", *none], "timeline": ["timeline", "v.mp4", *none],
            "extract": ["extract", "v.mp4", *none], "export": ["export", *none],
            "eval": ["eval", *none], "train": ["train", "--config", str(tmp_path / "none.yaml")],
            "prepare": ["prepare", str(tmp_path / "none.txt")], "demo": ["demo"]}[command]
    assert main([*argv, "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert f"--out {out}: is a {kind}" in line
    assert out.is_dir() or out.read_text() == "mine"


# ----------------------------------------------------------------------------- exit statuses
def test_each_exit_status_has_one_meaning(checkpoint, monkeypatch, tmp_path, capsys):
    import aim_video.cli.info as info
    from aim_video.errors import OutputFailed

    assert main(["info", "--no-flops"]) == 0
    capsys.readouterr()
    # 1: done, the unreadable input named on stderr (predict, and eval too).
    video = Path(checkpoint).parent / "missing.mp4"
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--no-progress",
                 "--workers", "0"]) == 1
    assert str(video) in capsys.readouterr().err
    good = Path(_synthetic_val(checkpoint)[0])
    listing = tmp_path / "half.txt"
    listing.write_text(f"{good} 0\n{tmp_path / 'gone.mp4'} 1\n")
    assert main(["eval", "--checkpoint", str(checkpoint), "--set", f"data.val={listing}",
                 "--no-progress", "--json"]) == 1
    printed = capsys.readouterr()
    assert json.loads(printed.out)["num_bad"] == 1
    assert f"aim-video eval: unreadable: {tmp_path / 'gone.mp4'}: file not found" in printed.err

    def fails_with(error: BaseException):
        def run(args):
            raise error
        return run

    for error, status in ((OutputFailed("model.onnx: the check failed"), 3),
                          (OSError(errno.EROFS, "Read-only file system", "/ro/x.json"), 3),
                          (KeyboardInterrupt(), 130)):
        monkeypatch.setattr(info, "run", fails_with(error))
        assert main(["info"]) == status
        _one_error_line(capsys.readouterr().err, "info")

    # A bug is never mistaken for a user's error nor for "some inputs unreadable".
    monkeypatch.setattr(info, "run", fails_with(ZeroDivisionError("a bug")))
    assert main(["info"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.strip().splitlines()[-1].startswith("aim-video info: internal error")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_interrupts_with_status_130(signum):
    # A command that waits (info's body replaced) is stopped from outside, as a user would.
    # The child takes SIGINT as a terminal's foreground process does: a test run started as a
    # background job of a non-interactive shell (CI scripts, `cmd &`) hands its children SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler (reproduced: the child
    # slept its 60 s through the signal).
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "import aim_video.cli.info as info\n"
              "def wait(args):\n    print('ready', flush=True)\n    time.sleep(60)\n"
              "info.run = wait\nfrom aim_video.cli import main\nsys.exit(main(['info']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signum)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130
    assert err.strip() == "aim-video info: error: interrupted", err


# ----------------------------------------------------------------------------- relative paths
def _synthetic_val(checkpoint: Path) -> list[str]:
    from aim_video.engine.checkpoint import checkpoint_config, read_training_checkpoint

    cfg = checkpoint_config(read_training_checkpoint(checkpoint), checkpoint)
    folder = Path(cfg.data.val).parent
    return [str(folder / line.split()[0]) for line in Path(cfg.data.val).read_text().splitlines()]


def test_one_list_names_the_same_files_for_predict_and_eval(checkpoint, tmp_path, monkeypatch,
                                                             capsys):
    from aim_video.engine.checkpoint import checkpoint_config, read_training_checkpoint

    val = checkpoint_config(read_training_checkpoint(checkpoint), checkpoint).data.val
    monkeypatch.chdir(tmp_path)  # not the list's folder: its entries are beside the list
    assert main(["predict", val, "--checkpoint", str(checkpoint), "--json", "--no-progress",
                 "--workers", "0"]) == 0
    predicted = [v["path"] for v in json.loads(capsys.readouterr().out)["videos"]]
    # A run trained without data.root (as a new run stores it): the same rule, the same files.
    assert main(["eval", "--checkpoint", str(checkpoint), "--set", f"data.val={val}",
                 "data.root=null", "--out", "ev", "--no-progress"]) == 0
    evaluated = [json.loads(line)["path"]
                 for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    real = [os.path.realpath(p) for p in predicted]
    assert sorted(real) == sorted(os.path.realpath(p) for p in evaluated)
    assert sorted(real) == sorted(os.path.realpath(p) for p in _synthetic_val(checkpoint))
    assert all(os.path.isfile(p) for p in real) and len(real) == 4
