"""The command line's contract: one-line errors with their exit status, help, and `eval`."""

from __future__ import annotations

import errno
import json
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
    assert main(["info"]) == 1
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
    assert proc.wait() == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err
