"""`aim-video watch`: live equals offline, at a stream's pace, over HTTP, on standard input,
through a dropped connection, with a model too slow to keep up, and on the live page.

The streams are MPEG-TS files of flat-colour frames that carry their index (`video_helpers`),
served by the test at their real pace (each packet sent when its time comes). The reference
is `Predictor.timeline` on the same file: `watch` must give its windows (start, end) and
probabilities to 1e-5 (the same model on the same clips, one window per call against a batch:
fp32 rounding only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from chromium import INSTALL_HINT, Chromium, find_chromium
from video_helpers import frame_colour, frame_index, one_thread, write_checkpoint  # noqa: F401

from aim_video.cli import main
from aim_video.data.stream import stream_windows
from aim_video.live import LiveSource, watch
from aim_video.live_server import LiveServer
from aim_video.timeline import segments
from aim_video.predictor import Predictor

FPS, FRAMES, STRIDE = 8, 32, 0.5  # 4 s streams; windows of 4 frames 2 apart (1 s), every 0.5 s
WINDOWS = 7  # (4 s - 1 s) / 0.5 s + 1


def write_ts(path: Path, num_frames: int = FRAMES) -> Path:
    """MPEG-TS, H.264 frames 0..num_frames-1 at FPS, a keyframe every 8 frames."""
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "g": "8", "bf": "0"}
        stream.codec_context.time_base = Fraction(1, FPS)
        for i in range(num_frames):
            image = np.empty((32, 32, 3), np.uint8)
            image[:] = frame_colour(i)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def schedule(path: Path) -> list[tuple[float, int, bool]]:
    """(seconds since the first packet, byte offset where it starts, keyframe) per packet."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts * stream.time_base, p.pos, p.is_keyframe)
                   for p in container.demux(stream) if p.pts is not None]
    first = packets[0][0]
    return [(float(t - first), pos, key) for t, pos, key in packets]


def send_paced(data: bytes, marks: list[tuple[float, int, bool]], write, start: int = 0,
               stop: int | None = None) -> None:
    """Writes `data[:stop]` from packet offset `start` on, each packet when its time comes
    (the bytes before the first packet, the stream's tables, go first)."""
    stop = len(data) if stop is None else stop
    shown = [(t, pos) for t, pos, _ in marks if start <= pos < stop]
    t0, clock = shown[0][0], time.monotonic()
    write(data[: marks[0][1]])
    ends = [pos for _, pos in shown[1:]] + [stop]
    for (t, pos), end in zip(shown, ends):
        time.sleep(max(0.0, clock + t - t0 - time.monotonic()))
        write(data[pos:end])


class PacedServer:
    """Serves a TS file over HTTP on 127.0.0.1 at its pace; with `drop`, the first connection
    ends at that packet offset and the next one goes on from there (as a live stream does)."""

    def __init__(self, path: Path, drop: int | None = None) -> None:
        data, marks = path.read_bytes(), schedule(path)
        self.connections = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                owner.connections += 1
                n = owner.connections
                if n > (2 if drop else 1):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                part = ((0, drop) if n == 1 else (drop, None)) if drop else (0, None)
                try:
                    send_paced(data, marks, self.wfile.write, *part)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/live.ts"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("watch")
    checkpoint = write_checkpoint(folder / "best.pt", interval=2)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    video = write_ts(folder / "v.ts")
    return checkpoint, predictor, video, predictor.timeline(video, stride=STRIDE)


def windows_of(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "window"]


def assert_timeline_windows(records: list[dict], timeline, every: bool = True) -> None:
    """Each window record is the timeline's window of the same start, probabilities to 1e-5
    (top-k = all classes); with `every`, all of them in order."""
    got = windows_of(records)
    index = {s: i for i, s in enumerate(timeline.starts.tolist())}
    if every:
        assert [w["start"] for w in got] == timeline.starts.tolist()
    for w in got:
        i = index[w["start"]]
        assert w["end"] == timeline.ends[i]
        probs = {t["class"]: t["prob"] for t in w["top"]}
        np.testing.assert_allclose([probs[c] for c in timeline.class_names], timeline.probs[i],
                                   atol=1e-5)


def test_a_file_gives_the_timeline_and_appends_to_its_own_events_file(setup, tmp_path, capsys):
    checkpoint, _, video, timeline = setup
    out = tmp_path / "events.jsonl"
    args = ["watch", str(video), "--checkpoint", str(checkpoint), "--stride", str(STRIDE),
            "--top-k", "3", "--threshold", "0", "--device", "cpu", "--out", str(out)]
    assert main(args + ["--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert_timeline_windows(printed, timeline)
    assert all(w["skipped"] == 0 and w["lag"] >= 0 for w in windows_of(printed))
    # Segments close as timeline defines them (threshold 0: one per run of a top class).
    expected = segments(timeline, 0.0)
    got = [r for r in printed if r["type"] == "segment"]
    assert [(s["class"], s["start"], s["end"], s["windows"]) for s in got] == [
        (s["class"], s["start"], s["end"], s["windows"]) for s in expected]
    np.testing.assert_allclose([s["mean_prob"] for s in got],
                               [s["mean_prob"] for s in expected], atol=1e-5)
    end = printed[-1]
    assert end["type"] == "end" and end["reason"] == "end of stream"
    assert (end["windows"], end["skipped"], end["segments"]) == (WINDOWS, 0, len(expected))
    # The file: our header, then this run's start record and the same records.
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"format": "aim-video-watch-events", "version": 1}
    assert lines[1]["type"] == "start" and lines[1]["source"] == str(video)
    assert [r["type"] for r in lines[2:]] == [r["type"] for r in printed]
    # A second run appends (one header); a torn last line is cut off first.
    with open(out, "a") as f:
        f.write('{"type": "wind')
    assert main(args) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("     0.00-1.00 s  class_") and "lag" in text[0]
    assert text[-1].startswith(f"ended (end of stream): {WINDOWS} windows classified, 0 skipped")
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(again) == 2 * len(lines) - 1 and again[len(lines)]["type"] == "start"
    # A file that is not ours is refused, unchanged, in one line.
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"mine": 1}\n')
    assert main(args[:-1] + [str(foreign)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an events file of aim-video watch" in err[0]
    assert foreign.read_text() == '{"mine": 1}\n'


def test_an_http_stream_at_its_pace_gives_the_timeline(setup):
    _, predictor, video, timeline = setup
    server = PacedServer(video)
    try:
        records = list(watch(predictor, server.url, stride=STRIDE, top_k=3))
    finally:
        server.close()
    assert_timeline_windows(records, timeline)
    assert records[-1]["skipped"] == 0 and records[-1]["gaps"] == 0


def test_a_dropped_connection_is_reopened_and_the_gap_reported(setup):
    _, predictor, video, timeline = setup
    keyframes = [pos for t, pos, key in schedule(video) if key and t > 0]
    server = PacedServer(video, drop=keyframes[len(keyframes) // 2])
    try:
        records = list(watch(predictor, server.url, stride=STRIDE, top_k=3, reconnect=1.5))
    finally:
        server.close()
    kinds = [r["type"] for r in records]
    gaps = [r for r in records if r["type"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["reason"]  # FFmpeg's words for the broken read
    assert gaps[0]["at"] == 15 / FPS  # the last frame before the drop (at keyframe 16)
    # The second connection goes on where the first stopped: the windows are the timeline's.
    assert_timeline_windows(records, timeline)
    assert 0 < kinds.index("gap") < len(kinds) - 1
    # Then the server has nothing more: the source is given up after --reconnect seconds.
    assert kinds[-1] == "end" and "lost" in kinds[-3:-1]
    assert records[-1]["gaps"] == 1 and "not back within 1.5 s" in records[-1]["note"]


def test_standard_input_gives_the_timeline(setup, tmp_path):
    checkpoint, _, video, timeline = setup
    # One thread, as in this process: a tiny model is fastest so, and keeps up on a busy CPU.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from aim_video.cli import main; sys.exit(main())",
         "watch", "-", "--checkpoint", str(checkpoint), "--stride", str(STRIDE), "--top-k",
         "3", "--device", "cpu", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        bufsize=0)  # each packet reaches the pipe when it is written

    def feed() -> None:
        send_paced(video.read_bytes(), schedule(video), proc.stdin.write)
        proc.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    feeder.join()
    assert proc.returncode == 0, err.decode()
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert_timeline_windows(records, timeline)
    assert records[-1]["type"] == "end" and records[-1]["skipped"] == 0


class Slow:
    """The model, taking `seconds` longer per call: slower than the stream."""

    def __init__(self, model, seconds: float) -> None:
        self.model, self.seconds, self.calls = model, seconds, 0

    def __call__(self, clips):
        self.calls += 1
        time.sleep(self.seconds)
        return self.model(clips)


def test_a_slow_model_skips_to_the_newest_window_and_counts_what_it_skipped(setup):
    _, predictor, video, timeline = setup
    model = predictor.model
    predictor.model = Slow(model, 1.5 * STRIDE)  # 3 windows arrive while it does 2
    try:
        records = list(watch(predictor, str(video), stride=STRIDE, top_k=3, realtime=True))
    finally:
        predictor.model = model
    got = windows_of(records)
    end = records[-1]
    # Every window is either classified or counted as skipped; some had to be skipped.
    assert end["windows"] == len(got) and end["windows"] + end["skipped"] == WINDOWS
    assert end["skipped"] > 0
    # What is classified is the timeline (live equals offline), in order, ending with the
    # newest window; each record counts the windows skipped just before it.
    assert_timeline_windows(records, timeline, every=False)
    starts = [w["start"] for w in got]
    assert starts == sorted(starts) and starts[-1] == timeline.starts[-1]
    positions = [round(s / STRIDE) for s in starts]
    assert [w["skipped"] for w in got] == [b - a - 1 for a, b in zip([-1] + positions,
                                                                     positions)]


def test_timestamps_that_restart_keep_window_times_monotonic(tmp_path):
    once = write_ts(tmp_path / "once.ts")
    twice = tmp_path / "twice.ts"  # a camera restarting: its clock starts again at zero
    twice.write_bytes(once.read_bytes() * 2)
    notices = []
    source = LiveSource(str(twice), notify=notices.append)
    windows = [(w.start, [frame_index(f) for f in w.frames])
               for w in stream_windows(twice, num_frames=4, interval=2, stride=STRIDE,
                                       source=source)]
    assert [n["type"] for n in notices] == ["jump"] and notices[0]["at"] == (FRAMES - 1) / FPS
    # Times go on one frame after the last: the windows of frames 0-39, 0-39 played in a row.
    assert windows == [(k * STRIDE, [(4 * k + 2 * j) % FRAMES for j in range(4)])
                       for k in range(2 * WINDOWS + 1)]


def test_a_source_that_cannot_be_opened_is_one_line(setup, tmp_path, capsys):
    checkpoint = str(setup[0])
    for source, words in (("http://127.0.0.1:9/none.ts", "cannot be opened"),
                          (str(tmp_path / "none.ts"), "no such file")):
        assert main(["watch", source, "--checkpoint", checkpoint, "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and source in err[0]
    for option, words in ((["--views", "3x1"], "a window is one clip"),
                          (["--serve", "localhost:http"], "expected HOST:PORT")):
        assert main(["watch", "-", "--checkpoint", checkpoint, *option]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]


def test_sigterm_ends_cleanly_with_everything_written(setup, tmp_path, capsys):
    checkpoint, _, video, timeline = setup
    out = tmp_path / "events.jsonl"

    def stop_after_three_windows() -> None:
        while not out.exists() or out.read_text().count('"type": "window"') < 3:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop_after_three_windows, daemon=True)
    killer.start()
    assert main(["watch", str(video), "--realtime", "--checkpoint", str(checkpoint),
                 "--stride", str(STRIDE), "--threshold", "0", "--top-k", "3", "--device",
                 "cpu", "--out", str(out)]) == 130
    killer.join()
    records = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert records[-1]["type"] == "end" and records[-1]["reason"] == "stopped"
    got = windows_of(records)
    assert 3 <= len(got) < WINDOWS
    assert_timeline_windows(records, timeline, every=False)
    # The open segment was closed: the segments cover every window classified.
    assert sum(r["windows"] for r in records if r["type"] == "segment") == len(got)
    assert capsys.readouterr().out.splitlines()[-1].startswith("ended (stopped)")


def _stream_to_page(predictor, video: Path, server: LiveServer, done: list) -> None:
    for record in watch(predictor, str(video), stride=STRIDE, top_k=3, realtime=True):
        server.publish(record)
        done.append(record)


def test_the_event_stream_sends_each_record_as_it_happens(setup):
    _, predictor, video, timeline = setup
    server = LiveServer("127.0.0.1", 0, str(video))
    received = []
    with urllib.request.urlopen(server.url + "events", timeout=60) as events:
        state = json.loads(events.readline().decode().removeprefix("data: "))
        assert state["type"] == "state" and state["source"] == str(video)
        published: list = []
        worker = threading.Thread(target=_stream_to_page,
                                  args=(predictor, video, server, published))
        worker.start()
        for line in events:
            if line.startswith(b"data: "):
                received.append(json.loads(line[6:]))
                if received[-1]["type"] == "end":
                    break
        worker.join()
    server.close()
    assert received == published
    assert_timeline_windows(received, timeline)  # a file played at its pace: the timeline too


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        pytest.skip(INSTALL_HINT)
    with Chromium() as page:
        yield page


def test_the_live_page_updates_while_the_stream_plays(setup, browser):
    _, predictor, video, timeline = setup
    server = LiveServer("127.0.0.1", 0, str(video))
    try:
        browser.errors.clear()
        browser.open(server.url)
        published: list = []
        worker = threading.Thread(target=_stream_to_page,
                                  args=(predictor, video, server, published))
        worker.start()
        # While it plays: windows arrive one by one (the count moves, the stream not over).
        browser.wait_for("+document.body.dataset.windows >= 2")
        assert not browser.evaluate("document.getElementById('status').textContent"
                                    ".startsWith('ended')")
        worker.join()
        browser.wait_for("document.getElementById('status').textContent.startsWith('ended')")
        last = windows_of(published)[-1]
        shown = browser.evaluate(
            "[...document.querySelectorAll('#current .row')]"
            ".map(r => [r.children[0].textContent, r.children[2].textContent])")
        assert shown == [[t["class"], f"{t['prob']:.3f}"] for t in last["top"]]
        segs = [r for r in published if r["type"] == "segment"]
        assert browser.evaluate("document.querySelectorAll('#segments li').length") == len(segs)
        assert browser.evaluate("document.body.dataset.windows") == str(WINDOWS)
        assert browser.errors == []
    finally:
        server.close()


def test_several_tasks_on_one_backbone_each_give_their_timeline(setup, tmp_path):
    from test_multitask import write_backbone, write_task

    video = setup[2]
    backbone = write_backbone(tmp_path / "backbone.pt")
    paths = [write_task(tmp_path / name / "best.pt", classes=classes, weights_seed=seed,
                        backbone=backbone) for name, classes, seed in
             (("actions", 3, 1), ("sports", 5, 2))]
    both = Predictor.from_checkpoints(paths, device="cpu")
    timelines = both.timelines(video, stride=STRIDE)
    records = list(watch(both, str(video), stride=STRIDE, top_k=5, threshold=0.0))
    for name, timeline in timelines.items():
        mine = [{**r, "top": r["tasks"][name]["top"]} for r in windows_of(records)]
        assert_timeline_windows(mine, timeline)
        got = [(s["class"], s["start"], s["end"], s["windows"]) for s in records
               if s["type"] == "segment" and s["task"] == name]
        assert got == [(s["class"], s["start"], s["end"], s["windows"])
                       for s in segments(timeline, 0.0)]
