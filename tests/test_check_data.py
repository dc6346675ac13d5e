"""`check-data`: good and broken videos through `scan` and the command line."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from aim_video.cli import main
from aim_video.data.annotations import Annotations, VideoRecord, load_annotations
from aim_video.data.check import BadEntry, scan
from aim_video.data.dataset import DataConfig, build_dataset
from aim_video.engine.evaluate import eval_dataset
from aim_video.errors import UserError


def write_video(path: Path, frames: int = 24, faststart: bool = False) -> Path:
    """A tiny H.264 MP4 of noise (noise keeps every frame's data large, so a cut loses frames)."""
    rng = np.random.default_rng(len(path.name))
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for _ in range(frames):
            noise = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noise, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A list file of 3 good videos and 4 broken ones; returns it and the expected reasons."""
    root = tmp_path_factory.mktemp("check")
    for name in ("a.mp4", "b c.mp4", "d.mp4"):
        write_video(root / name)
    full = write_video(root / "full.mp4").read_bytes()
    (root / "cut_index.mp4").write_bytes(full[: len(full) // 2])  # moov (at the end) lost
    whole = write_video(root / "whole.mp4", faststart=True).read_bytes()
    (root / "cut_data.mp4").write_bytes(whole[: len(whole) // 2])  # header fine, frames lost
    (root / "empty.mp4").write_bytes(b"")
    expected = {
        "cut_index.mp4": "not a readable video",
        "cut_data.mp4": "truncated or corrupt",
        "empty.mp4": "empty file (0 bytes)",
        "missing.mp4": "file not found",
    }
    names = [
        "a.mp4",
        "cut_index.mp4",
        "b c.mp4",
        "cut_data.mp4",
        "empty.mp4",
        "d.mp4",
        "missing.mp4",
    ]
    listing = root / "list.txt"
    listing.write_text("".join(f"{name} {i % 2}\n" for i, name in enumerate(names)))
    return listing, expected


@pytest.mark.parametrize("workers", [0, 2])
def test_scan_finds_every_broken_entry(dataset, workers):
    listing, expected = dataset
    report = scan(load_annotations(listing, root=listing.parent), workers=workers, progress=False)
    assert report.good == 3 and report.total == 7
    assert [Path(b.path).name for b in report.bad] == list(expected)  # in annotation order
    for entry, reason in zip(report.bad, expected.values(), strict=True):
        assert reason in entry.reason, entry


def test_scan_checks_declared_frame_counts(tmp_path):
    from PIL import Image

    for i in range(1, 6):
        Image.new("RGB", (16, 16)).save(tmp_path / f"img_{i:05d}.jpg")
    frames = Annotations(
        [VideoRecord(str(tmp_path), 0, 5), VideoRecord(str(tmp_path), 0, 8)], ["x"]
    )
    report = scan(frames, workers=0, progress=False)
    assert report.good == 1
    assert report.bad == [BadEntry(str(tmp_path), "the annotation declares 8 frames, only 5 found")]


def test_cli_json(dataset, capsys):
    listing, expected = dataset
    code = main(
        ["check-data", str(listing), "--root", str(listing.parent), "--workers", "2", "--json"]
    )
    out = capsys.readouterr().out
    result = json.loads(out)  # exactly one JSON object
    assert code == 1
    assert set(result) == {"good", "bad", "total"}
    assert (result["good"], result["total"]) == (3, 7)
    assert [Path(b["path"]).name for b in result["bad"]] == list(expected)
    assert all(set(b) == {"path", "reason"} for b in result["bad"])


def test_cli_text_and_exit_codes(dataset, tmp_path, capsys):
    listing, _ = dataset
    assert main(["check-data", str(listing), "--root", str(listing.parent), "--workers", "1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "7 entries: 3 readable, 4 unreadable"
    assert (
        lines[0] == f"{listing.parent / 'cut_index.mp4'}: not a readable video "
        "(Invalid data found when processing input)"
    )

    good = tmp_path / "good.txt"
    good.write_text(f"{listing.parent / 'a.mp4'} 0\n{listing.parent / 'd.mp4'} 1\n")
    assert main(["check-data", str(good), "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"good": 2, "bad": [], "total": 2}

    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("a.mp4 zero\n")
    assert main(["check-data", str(bad_list)]) == 2
    assert "bad.txt:1: label must be an integer" in capsys.readouterr().err


def test_a_folder_or_file_of_the_wrong_kind_is_named_as_such(dataset, tmp_path, capsys):
    listing, _ = dataset
    (tmp_path / "x.mp4").mkdir()  # a folder where a video file belongs
    video = listing.parent / "a.mp4"  # a video file where a frame folder belongs
    entries = Annotations([VideoRecord(str(tmp_path / "x.mp4"), 0)], ["x"])
    [bad] = scan(entries, backend="pyav", workers=0, progress=False).bad
    assert bad.reason.startswith("a directory where a video file was expected (backend 'pyav')")
    [bad] = scan(Annotations([VideoRecord(str(video), 0)], ["x"]), backend="frames", workers=0,
                 progress=False).bad
    assert bad.reason.startswith("a file where a frame folder was expected")
    # And on the command line.
    folder_list = tmp_path / "folder.txt"
    folder_list.write_text(f"{tmp_path / 'x.mp4'} 0\n")
    assert main(["check-data", str(folder_list), "--workers", "0"]) == 1
    assert "a directory where a video file was expected" in capsys.readouterr().out


def test_a_failure_that_is_not_about_the_file_stops_the_scan(dataset, monkeypatch):
    from aim_video.data import check

    def broken(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(check, "open_video", broken)
    listing, _ = dataset
    with pytest.raises(MemoryError):
        scan(load_annotations(listing, root=listing.parent), workers=0, progress=False)


def _within(seconds, fn, *args):
    """fn(*args) in a thread, so a reader that blocks fails the test instead of hanging it (a
    thread blocked in open() cannot be stopped: it is left as a daemon)."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert not thread.is_alive(), f"{fn.__name__} blocked"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_the_list_is_one_line_for_check_data_training_and_eval(tmp_path, capsys):
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    assert _within(30, main, ["check-data", str(fifo), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{fifo}: not a regular file (a FIFO, device or socket): give a list file")
    assert "\n" not in err
    for split in ("train", "val"):
        with pytest.raises(UserError, match="not a regular file"):
            _within(30, build_dataset, DataConfig(**{split: str(fifo)}), split)
    with pytest.raises(UserError, match="not a regular file"):
        _within(30, eval_dataset, DataConfig(val=str(fifo)), "val")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty.txt: lists no video (empty, or only comments)"),
        (b"# a comment\n\n", "empty.txt: lists no video (empty, or only comments)"),
        (b"good.mp4 99999999999999999999999\n", "empty.txt:1: label 99999999999999999999999 "
                                                "without class names"),
        (b"caf\xe9.mp4 0\n", "empty.txt: not UTF-8 text (byte 3: invalid continuation byte)"),
    ],
)
def test_hostile_lists_are_one_line_and_exit_2(tmp_path, capsys, content, message):
    listing = tmp_path / "empty.txt"
    listing.write_bytes(content)
    assert _within(60, main, ["check-data", str(listing), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_byte_order_mark_does_not_hide_the_first_video(dataset, tmp_path, capsys):
    listing, _ = dataset
    bom = tmp_path / "bom.txt"
    bom.write_bytes(f"\ufeff{listing.parent / 'a.mp4'} 0\n".encode())
    assert main(["check-data", str(bom), "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"good": 1, "bad": [], "total": 1}
