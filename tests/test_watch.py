"""`aim-video watch`: live equals offline, at a stream's pace, over HTTP, on standard input,
through a dropped connection, with a model too slow to keep up, and on the live page.

The streams are MPEG-TS files of flat-colour frames that carry their index (`video_helpers`),
served by the test at their real pace (each packet sent when its time comes). The reference
is `Predictor.timeline` on the same file: `watch` must give its windows (start, end) and
probabilities to 1e-5 (the same model on the same clips, one window per call against a batch:
fp32 rounding only).

Nothing here depends on how fast the machine is or how threads are scheduled: the live streams
are watched with skipping off (`max_lag` 0), so every window is classified whatever the load;
skipping itself is played on a fake clock; a test that must act while a stream plays holds the
stream at a known packet until it has acted, instead of racing the stream's end.
"""

from __future__ import annotations

import json
import math
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
from video_helpers import frame_colour, frame_index, one_thread, write_checkpoint  # noqa: F401

from aim_video import live
from aim_video.cli import main
from aim_video.data.stream import Window, stream_windows
from aim_video.live import LiveSource, _Handoff, watch
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
               stop: int | None = None, tables: bool = True) -> None:
    """Writes `data[:stop]` from packet offset `start` on, each packet when its time comes
    (with `tables`, the bytes before the first packet, the stream's tables, go first: a new
    connection's start)."""
    stop = len(data) if stop is None else stop
    shown = [(t, pos) for t, pos, _ in marks if start <= pos < stop]
    t0, clock = shown[0][0], time.monotonic()
    if tables:
        write(data[: marks[0][1]])
    ends = [pos for _, pos in shown[1:]] + [stop]
    for (t, pos), end in zip(shown, ends):
        time.sleep(max(0.0, clock + t - t0 - time.monotonic()))
        write(data[pos:end])


class PacedServer:
    """Serves a TS file over HTTP on 127.0.0.1 at its pace; with `drop`, the first connection
    ends at that packet offset and the next one goes on from there (as a live stream does);
    with `hold`, it stops sending at that packet offset until `release()` (and ends there at
    `close()`): a stream that cannot end before the test has done what it does meanwhile."""

    def __init__(self, path: Path, drop: int | None = None, hold: int | None = None) -> None:
        data, marks = path.read_bytes(), schedule(path)
        self.connections = 0
        self.released = threading.Event()
        self.closing = False
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
                    if hold is None:
                        send_paced(data, marks, self.wfile.write, *part)
                        return
                    send_paced(data, marks, self.wfile.write, 0, hold)
                    owner.released.wait()
                    if not owner.closing:
                        send_paced(data, marks, self.wfile.write, hold, tables=False)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/live.ts"

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.closing = True
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("watch")
    checkpoint = write_checkpoint(folder / "best.pt", interval=2)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    video = write_ts(folder / "v.ts")
    return checkpoint, predictor, video, predictor.timeline(video, stride=STRIDE)


def last_keyframe(video: Path) -> int:
    """The byte offset of the last keyframe (frame 24): a stream held there has given exactly
    4 windows (the 5th, 2-3 s, is complete only when frame 24 arrives)."""
    return [pos for _, pos, key in schedule(video) if key][-1]


HELD_WINDOWS = 4


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
    assert lines[0] == {"aim-video": "watch events", "format": 1}
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
    assert len(err) == 1 and "not aim-video watch events" in err[0]
    assert foreign.read_text() == '{"mine": 1}\n'


def test_an_http_stream_at_its_pace_gives_the_timeline(setup):
    _, predictor, video, timeline = setup
    server = PacedServer(video)
    try:
        records = list(watch(predictor, server.url, stride=STRIDE, top_k=3, max_lag=0))
    finally:
        server.close()
    assert_timeline_windows(records, timeline)
    assert records[-1]["skipped"] == 0 and records[-1]["gaps"] == 0


def test_a_dropped_connection_is_reopened_and_the_gap_reported(setup):
    _, predictor, video, timeline = setup
    keyframes = [pos for t, pos, key in schedule(video) if key and t > 0]
    server = PacedServer(video, drop=keyframes[len(keyframes) // 2])
    try:
        records = list(watch(predictor, server.url, stride=STRIDE, top_k=3, reconnect=1.5,
                             max_lag=0))
    finally:
        server.close()
    kinds = [r["type"] for r in records]
    gaps = [r for r in records if r["type"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["reason"]  # FFmpeg's words for the broken read
    assert gaps[0]["at"] == 15 / FPS  # the last frame before the drop (at keyframe 16)
    # The second connection goes on where the first stopped: the windows are the timeline's.
    assert_timeline_windows(records, timeline)
    # The gap comes where the stream broke: after the windows frames 0-15 complete (0-1 s,
    # 0.5-1.5 s), before the first that needs frame 16.
    gap = kinds.index("gap")
    assert [w["start"] for w in windows_of(records[:gap])] == [0.0, 0.5]
    # Then the server has nothing more: the source is given up after --reconnect seconds.
    # Only that tells the stream has ended, so the last window (3-4 s, which ends with the
    # stream) comes after `lost`; then the open segments close and `end` is last.
    lost = kinds.index("lost")
    assert records[lost]["at"] == (FRAMES - 1) / FPS
    assert kinds[lost + 1] == "window" and records[lost + 1]["start"] == timeline.starts[-1]
    assert set(kinds[lost + 2:-1]) <= {"segment"} and kinds[-1] == "end"
    assert records[-1]["gaps"] == 1 and "not back within 1.5 s" in records[-1]["note"]


def test_standard_input_gives_the_timeline(setup, tmp_path):
    checkpoint, _, video, timeline = setup
    # One thread, as in this process: a tiny model is fastest so on a busy CPU.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    errors = open(tmp_path / "stderr.txt", "wb")  # a file: no pipe to fill while out is read
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from aim_video.cli import main; sys.exit(main())",
         "watch", "-", "--checkpoint", str(checkpoint), "--stride", str(STRIDE), "--top-k",
         "3", "--device", "cpu", "--json", "--max-lag", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=env,
        bufsize=0)  # each packet reaches the pipe when it is written

    def feed() -> None:
        send_paced(video.read_bytes(), schedule(video), proc.stdin.write)
        proc.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    out = proc.stdout.read()
    proc.wait()
    feeder.join()
    errors.close()
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert_timeline_windows(records, timeline)
    assert records[-1]["type"] == "end" and records[-1]["skipped"] == 0


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def play(n: int, model_seconds: float, max_lag: float, depth: int = 8,
         arrivals: list[float] | None = None):
    """`n` windows of a stream (window k from k * STRIDE to that + 1 s, arriving at
    `arrivals[k]`, by default when it ends: at its pace) through `_Handoff` to a model taking
    `model_seconds` per window, all on a fake clock: one thread, so each put and take happens
    at a time the test sets. `max_lag` infinite: skipping off.

    Returns:
        (start, skipped just before it, seconds it waited for the model) per window taken,
        the windows queued each time the model came for one, and the windows skipped after
        the last one taken.
    """
    clock, stop = FakeClock(), threading.Event()
    handoff = _Handoff(max_lag != math.inf, max_lag, depth=depth, clock=clock)
    stream = [Window(k, k * STRIDE, k * STRIDE + 1.0, np.zeros(0)) for k in range(n)]
    arrivals = arrivals or [w.end for w in stream]
    taken, queued, free, i = [], [], 0.0, 0
    while i < n or handoff.items:
        while i < n and arrivals[i] <= free:  # what arrived while the model was busy
            clock.now = arrivals[i]
            handoff.put("window", stream[i], stop)
            i += 1
        if not handoff.items:  # the model waits for the next window
            free = arrivals[i]
            continue
        clock.now = free
        queued.append(len(handoff.items))
        _, window, arrived, skipped = handoff.take(stop)
        taken.append((window.start, skipped, clock.now - arrived))
        free += model_seconds
    return taken, queued, handoff.skipped


def test_a_slow_model_skips_to_the_newest_window_and_counts_what_it_skipped():
    # A window every 0.5 s, a model taking 1.25 s (2.5 windows' time) for each, windows up to
    # 0.6 s late classified. Window k is due at 1 + 0.5k s; the model comes for one at 1,
    # 2.25, 3.5, 4.75, 6 and 7.25 s and finds (lateness): 0; 1 (0.75 s: skipped), 2 (0.25 s:
    # taken); 3 (1 s), 4 (0.5 s), 5; 5 (1.25 s), 6 (0.75 s), 7 (0.25 s); 8 (1 s), 9 (0.5 s),
    # 10; 10 (1.25 s), 11 (0.75 s: late too, but the newest, so taken).
    taken, queued, after = play(12, 1.25, max_lag=0.6)
    assert taken == [(0.0, 0, 0.0), (1.0, 1, 0.25), (2.0, 1, 0.5), (3.5, 2, 0.25),
                     (4.5, 1, 0.5), (5.5, 1, 0.75)]
    assert after == 0  # the stream's last window is classified: nothing skipped after it
    # Every window is classified or counted, once.
    assert len(taken) + sum(skipped for _, skipped, _ in taken) + after == 12
    # Windows up to 1.1 s late are classified: the model takes the oldest of those, and a
    # window later than that only when it is the newest (at 7.25 s: 10, 1.25 s late, and 11).
    taken, queued, after = play(12, 1.25, max_lag=1.1)
    assert taken == [(0.0, 0, 0.0), (0.5, 0, 0.75), (1.5, 1, 1.0), (3.0, 2, 0.75),
                     (4.0, 1, 1.0), (5.5, 2, 0.75)]
    # No backlog: however long the stream, the model finds at most the windows of max_lag
    # (and the newest) waiting, and none waits longer than max_lag and one model call.
    for max_lag, most in ((0.6, 2), (1.1, 3)):
        taken, queued, after = play(400, 1.25, max_lag=max_lag)
        assert max(queued) == most and max(w for _, _, w in taken) <= max_lag + 1.25
        assert len(taken) + sum(skipped for _, skipped, _ in taken) + after == 400
    # A model that keeps up skips nothing, whatever max_lag.
    taken, queued, after = play(12, 0.4, max_lag=0.0001)
    assert [t[:2] for t in taken] == [(k * STRIDE, 0) for k in range(12)] and after == 0
    # Nor does a burst: windows 0-8 arrive at once, 4.5 s after their pace (a server sending
    # what it had buffered), then the rest at its pace that much later. They are early, not
    # late: the model works through them at 0.4 s a window and catches up.
    arrivals = [max(10.0, 1 + k * STRIDE + 4.5) for k in range(20)]
    taken, queued, after = play(20, 0.4, max_lag=STRIDE, depth=20, arrivals=arrivals)
    assert [t[:2] for t in taken] == [(k * STRIDE, 0) for k in range(20)] and after == 0


def test_max_lag_decides_when_watch_skips(setup, monkeypatch):
    _, predictor, video, _ = setup
    made: list = []

    class Seen(_Handoff):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(live, "_Handoff", Seen)
    # (skip, budget): a live source skips a window one stride late by default, max_lag late
    # when given; max_lag 0 or inf, or a file played as fast as it decodes, never skips.
    for kwargs, expected in (({}, (True, STRIDE)), ({"max_lag": 2.0}, (True, 2.0)),
                             ({"max_lag": 0}, (False,)), ({"max_lag": math.inf}, (False,)),
                             ({"realtime": False, "max_lag": 2.0}, (False,))):
        stop = threading.Event()
        stop.set()  # no need to play it: the handoff is made before the first frame
        records = list(watch(predictor, str(video), stride=STRIDE, stop=stop,
                             **{"realtime": True, **kwargs}))
        assert records[-1]["type"] == "end" and records[-1]["reason"] == "stopped"
        assert (made[-1].skip, made[-1].budget)[:len(expected)] == expected, kwargs
    with pytest.raises(ValueError, match="max_lag must be 0 or more seconds"):
        next(watch(predictor, str(video), max_lag=-1.0))


def test_with_skipping_off_every_window_is_classified_in_order():
    # max_lag 0 or inf: the same slow model classifies every window; the lag grows instead,
    # 0.75 s a window (which is why a live source is then read only as fast as the model goes).
    taken, queued, after = play(12, 1.25, max_lag=math.inf, depth=12)
    assert [(start, skipped) for start, skipped, _ in taken] == [(k * STRIDE, 0)
                                                                for k in range(12)]
    assert [lag for _, _, lag in taken] == [0.75 * k for k in range(12)] and after == 0


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
    # Numbers are checked when the command line is read, as in every command.
    with pytest.raises(SystemExit) as exit_:
        main(["watch", "-", "--checkpoint", checkpoint, "--max-lag", "-1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --max-lag: must be >= 0 s, got -1" in err[0]


def test_sigterm_ends_cleanly_with_everything_written(setup, tmp_path, capsys):
    checkpoint, _, video, timeline = setup
    out = tmp_path / "events.jsonl"
    # The stream stops at its last keyframe and stays open: the signal comes mid-stream.
    server = PacedServer(video, hold=last_keyframe(video))

    def stop_when_held_windows_are_written() -> None:
        while not out.exists() or out.read_text().count('"type": "window"') < HELD_WINDOWS:
            time.sleep(0.02)  # between polls, not as synchronisation
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop_when_held_windows_are_written, daemon=True)
    killer.start()
    try:
        assert main(["watch", server.url, "--checkpoint", str(checkpoint), "--stride",
                     str(STRIDE), "--threshold", "0", "--top-k", "3", "--device", "cpu",
                     "--max-lag", "0", "--out", str(out)]) == 130
    finally:
        server.close()
    killer.join()
    records = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert records[-1]["type"] == "end" and records[-1]["reason"] == "stopped"
    assert [w["start"] for w in windows_of(records)] == timeline.starts[:HELD_WINDOWS].tolist()
    got = windows_of(records)
    assert_timeline_windows(records, timeline, every=False)
    # The open segment was closed: the segments cover every window classified.
    assert sum(r["windows"] for r in records if r["type"] == "segment") == len(got)
    assert capsys.readouterr().out.splitlines()[-1].startswith("ended (stopped)")


def _stream_to_page(predictor, source: str, server: LiveServer, done: list) -> None:
    # A file at its pace; a URL comes at its own.
    for record in watch(predictor, source, stride=STRIDE, top_k=3,
                        realtime="://" not in source, max_lag=0):
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
                                  args=(predictor, str(video), server, published))
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


def test_the_live_page_updates_while_the_stream_plays(setup, browser):
    _, predictor, video, timeline = setup
    stream = PacedServer(video, hold=last_keyframe(video))
    server = LiveServer("127.0.0.1", 0, stream.url)
    try:
        browser.errors.clear()
        browser.open(server.url)
        published: list = []
        worker = threading.Thread(target=_stream_to_page,
                                  args=(predictor, stream.url, server, published))
        worker.start()
        # While it plays (held at its last keyframe: it cannot end meanwhile), the windows so
        # far are shown and the status is not `ended`.
        browser.wait_for(f"+document.body.dataset.windows == {HELD_WINDOWS}")
        assert not browser.evaluate("document.getElementById('status').textContent"
                                    ".startsWith('ended')")
        stream.release()
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
        stream.close()


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
