"""`aim-video watch`: classify a live stream (or a file) window by window as it plays."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aim_video.cli import arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="classify a live stream (camera, URL, standard input) as it plays",
        description="Classify each window of a stream as soon as it is complete: the windows, "
                    "probabilities and segments that `timeline` gives for the same video. "
                    "SOURCE is a URL FFmpeg reads (rtsp, http(s) incl. HLS and MPEG-TS, udp, "
                    "tcp), - for a stream on standard input (e.g. ffmpeg ... -f mpegts -), or "
                    "a file (as fast as it decodes, or at its own pace with --realtime). Prints "
                    "one line per window (time, top classes, lag) and each segment when it "
                    "closes. When the model is slower than a live stream, it skips to the "
                    "newest window (never a growing backlog) and says how many it skipped "
                    "(--max-lag: how late a window may be first; 0: never skip). A "
                    "URL that drops is reopened with back-off (--reconnect) and the gap is "
                    "reported. Ctrl-C or SIGTERM ends it cleanly, the open segment closed "
                    "(exit status 130); a stream that gives no frame is exit status 1.",
    )
    parser.add_argument("source", metavar="SOURCE", help="URL, - (standard input) or file")
    arguments.add_model(parser)
    arguments.add(parser, "window", "stride", "threshold", "top_k", "json")
    parser.add_argument("--realtime", action="store_true",
                        help="play a file at its own pace (as a live stream: windows skipped "
                             "when the model falls behind)")
    parser.add_argument("--max-lag", type=arguments.float_in(0, unit=" s"), metavar="SECONDS",
                        help="how late a live stream's window may be before it is skipped for "
                             "a newer one (default: the stride); 0: never skip, every window "
                             "is classified however far the model falls behind")
    parser.add_argument("--reconnect", type=arguments.float_in(0, unit=" s"), default=30.0,
                        metavar="SECONDS",
                        help="keep reopening a URL that dropped or ended for this long "
                             "(0: end with it)")
    parser.add_argument("--out", metavar="EVENTS.jsonl",
                        help="append every record (window, segment, gap, ...) as a JSON line")
    parser.add_argument("--serve", metavar="[HOST:]PORT",
                        help="also serve a live page of the current top classes and recent "
                             "segments (host 127.0.0.1 unless given)")
    parser.set_defaults(func=run)


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (the watch then ends cleanly) while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can take signals
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    from aim_video.data.decode import VideoDecodeError
    from aim_video.errors import UserError
    from aim_video.live import EventsFile, LiveSource, watch
    from aim_video.live_server import LiveServer, parse_address

    from aim_video.engine.config import parse_views

    if args.views is not None and parse_views(args.views)[0] != 1:
        raise UserError(f"--views {args.views}: a window is one clip; give 1xCROPS, e.g. 1x3")
    arguments.check_out(args.out, "file")
    max_lag = args.max_lag
    address = parse_address(args.serve) if args.serve else None
    predictor = arguments.predictor_from_args(args)
    stop = threading.Event()
    source = LiveSource(args.source, realtime=args.realtime, reconnect=args.reconnect, stop=stop)
    events = EventsFile(args.out) if args.out else None
    server = LiveServer(*address, args.source) if address else None
    if server is not None:
        print(f"aim-video watch: the live page is at {server.url}", file=sys.stderr, flush=True)
    outputs: list[Callable[[dict[str, Any]], None]] = [
        _print_json if args.json else _printer(predictor.multitask)]
    if events is not None:
        outputs.append(events.write)
    if server is not None:
        outputs.append(server.publish)
    start = {"type": "start", "source": args.source, "stride": args.stride,
             "window": args.window, "threshold": args.threshold, "max_lag": max_lag,
             "tasks": [task.name for task in predictor.tasks]}
    end: dict[str, Any] = {}
    try:
        with _signals_set(stop):
            for output in outputs[1:]:  # the terminal has the command line already
                output(start)
            for record in watch(predictor, source, stride=args.stride, window=args.window,
                                threshold=args.threshold, top_k=args.top_k,
                                max_lag=max_lag, stop=stop):
                for output in outputs:
                    output(record)
                if record["type"] == "end":
                    end = record
    except VideoDecodeError as err:
        print(f"aim-video watch: unreadable: {err}", file=sys.stderr)
        return 1
    finally:
        if events is not None:
            events.close()
        if server is not None:
            server.close()
    return 130 if end.get("reason") == "stopped" else 0


def _print_json(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def _printer(multitask: bool) -> Callable[[dict[str, Any]], None]:
    """Prints a record as one line of text."""

    def tops(top: list[dict[str, Any]]) -> str:
        return "  ".join(f"{t['class']} {t['prob']:.2f}" for t in top)

    def show(record: dict[str, Any]) -> None:
        kind = record["type"]
        if kind == "window":
            classes = (" | ".join(f"{name}: {tops(t['top'])}" for name, t in
                                  record["tasks"].items()) if multitask else tops(record["top"]))
            line = (f"{record['start']:9.2f}-{record['end']:.2f} s  {classes}  "
                    f"lag {record['lag']:.2f} s")
            if record["skipped"]:
                n = record["skipped"]
                line += f"  ({n} window{'s' if n > 1 else ''} skipped to keep up)"
        elif kind == "segment":
            task = f"{record['task']}: " if multitask else ""
            line = (f"segment {record['start']:.2f}-{record['end']:.2f} s  {task}"
                    f"{record['class']} (mean p {record['mean_prob']:.2f}, "
                    f"{record['windows']} window{'s' if record['windows'] != 1 else ''})")
        elif kind == "gap":
            line = (f"gap at {record['at']:.2f} s: {record['reason']}; reopened after "
                    f"{record['seconds']:.1f} s")
        elif kind == "jump":
            line = (f"note: timestamps jumped at {record['at']:.2f} s (from {record['from']:.2f}"
                    f" to {record['to']:.2f} s); window times go on from the last frame")
        elif kind == "lost":
            line = (f"the stream dropped at {record['at']:.2f} s: {record['reason']}; "
                    f"{record['note']}")
        elif kind == "end":
            lag = (f"; lag median {record['lag_median']:.3f} s, p95 {record['lag_p95']:.3f} s"
                   if record["lag_median"] is not None else "")
            line = (f"ended ({record['reason']}): {record['windows']} windows classified, "
                    f"{record['skipped']} skipped, {record['segments']} segments, "
                    f"{record['gaps']} gaps{lag}")
            if record["note"]:
                line += f"\nnote: {record['note']}"
        else:
            return
        print(line, flush=True)

    return show
