"""Builds ``report.html``: the page's data as one JSON blob inside the one template.

One page per kind of folder: an evaluation (`build_eval_report`), a timeline of one long video
(`build_timeline_report`), and the demo's ablation (`aim_video.demo.write_ablation_page`).
"""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from aim_video.errors import UserError
from aim_video.files import read_json, write_text_atomic
from aim_video.report.thumbs import THUMBS

REPORT = "report.html"
TEMPLATE = Path(__file__).with_name("template.html")
MATRIX_MAX = 40  # classes up to which the page draws the whole confusion matrix
PROB_DIGITS = 4  # probabilities are shown to 0.1%


class ReportError(UserError):
    """A folder a report cannot be built from."""


def render_page(kind: str, title: str, data: dict[str, Any]) -> str:
    """The page: `data` (read by the template's script for `kind`) embedded as JSON.

    Every ``<`` in the JSON is written as ``\\u003c``, so no string in it (a class name, a
    path) can close the script element.
    """
    blob = json.dumps({"kind": kind, "title": title} | data, separators=(",", ":"),
                      ensure_ascii=False).replace("<", "\\u003c")
    head, tail = TEMPLATE.read_text(encoding="utf-8").split("__DATA__")
    return head.replace("__TITLE__", html.escape(title)) + blob + tail


def write_page(path: Path, kind: str, title: str, data: dict[str, Any]) -> Path:
    """`render_page` written atomically to `path`."""
    write_text_atomic(path, render_page(kind, title, data))
    return path


def relative_url(path: str | Path, folder: Path) -> str:
    """A URL for `path` (absolute, or relative to the working directory) from a page in
    `folder`, so the page finds the file wherever the two are moved together."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return quote(rel.replace(os.sep, "/"))


def _classes(folder: Path) -> tuple[list[str], list[list[float]]]:
    """Class names and [videos, unreadable, top-1, top-5] per class, from per_class.csv."""
    with open(folder / "per_class.csv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["class"]))
    return ([r["name"] for r in rows],
            [[int(r["videos"]), int(r["bad"]), round(float(r["top1"]), 2),
              round(float(r["top5"]), 2)] for r in rows])


def _videos(folder: Path, classes: list[str]) -> list[list[Any]]:
    """One row per video: [index, label, top classes, their probabilities, URL, has a
    thumbnail, reason unreadable]."""
    number = {name: i for i, name in reversed(list(enumerate(classes)))}
    thumbs = folder / THUMBS
    have = {p.stem for p in thumbs.glob("*.jpg")} if thumbs.is_dir() else set()
    folders: dict[str, str] = {}  # a video's folder -> its URL (videos share a few folders)

    def url(path: str) -> str:
        parent, name = os.path.split(path)
        if parent not in folders:
            folders[parent] = relative_url(parent or ".", folder)
        return f"{folders[parent]}/{quote(name)}"

    rows = []
    with open(folder / "predictions.jsonl", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            top = p["top"] if p["ok"] else []
            rows.append([p["index"], number[p["label"]], [number[t["class"]] for t in top],
                         [round(t["prob"], PROB_DIGITS) for t in top],
                         url(p["path"]), int(str(p["index"]) in have),
                         p.get("reason")])
    return rows


def eval_page_data(folder: Path) -> tuple[str, dict[str, Any]]:
    """The title and data of an evaluation folder's page."""
    metrics = read_json(folder / "metrics.json")
    if not isinstance(metrics, dict):
        raise ReportError(f"{folder / 'metrics.json'} is missing or not JSON")
    classes, per_class = _classes(folder)
    config = metrics.pop("config", None)
    metrics.pop("bad_files", None)  # the page lists them with the videos
    checkpoint = metrics.get("checkpoint")
    source = "/".join(Path(checkpoint).parts[-2:]) if checkpoint else folder.name
    title = f"{source} on {metrics.get('split', '?')}"
    return title, {
        "metrics": metrics, "classes": classes, "per_class": per_class,
        "videos": _videos(folder, classes), "matrix_max": MATRIX_MAX,
        "config": yaml.safe_dump(config, sort_keys=False) if config else None,
    }


def build_timeline_report(folder: str | Path) -> Path:
    """Writes ``folder/report.html`` from an `aim-video timeline` folder (``timeline.json``,
    ``segments.json``, ``timeline.png``): the video, its segments and windows, each a link
    that plays the video from there; returns its path."""
    folder = Path(folder)
    timeline = read_json(folder / "timeline.json")
    if not isinstance(timeline, dict) or "windows" not in timeline:
        raise ReportError(f"{folder / 'timeline.json'} is missing or not a timeline")
    segments = read_json(folder / "segments.json") or {"threshold": None, "segments": []}
    title = f"aim-video timeline: {Path(timeline['video']).name}"
    return write_page(folder / REPORT, "timeline", title, {
        "video": relative_url(timeline["video"], folder), "fps": timeline["fps"],
        "note": timeline.get("note"), "windows": timeline["windows"],
        "threshold": segments["threshold"], "segments": segments["segments"],
        "figure": "timeline.png" if (folder / "timeline.png").is_file() else None,
    })


def build_report(folder: str | Path) -> Path:
    """``report.html`` for an evaluation folder or a timeline folder, whichever `folder` is.

    Raises:
        ReportError: `folder` is neither.
    """
    folder = Path(folder)
    if (folder / "timeline.json").is_file() and not (folder / "metrics.json").is_file():
        return build_timeline_report(folder)
    return build_eval_report(folder)


def build_eval_report(folder: str | Path) -> Path:
    """Writes ``folder/report.html`` from an evaluation folder; returns its path.

    Raises:
        ReportError: `folder` is not an evaluation folder.
    """
    folder = Path(folder)
    missing = [n for n in ("metrics.json", "per_class.csv", "predictions.jsonl")
               if not (folder / n).is_file()]
    if missing:
        raise ReportError(f"{folder} is not an evaluation folder (no {', '.join(missing)}): "
                          "give the --out folder of `aim-video eval` or `aim-video timeline`, "
                          "or the demo's folder")
    title, data = eval_page_data(folder)
    return write_page(folder / REPORT, "eval", f"aim-video evaluation: {title}", data)
