"""A long video's timeline, as files: `segments` (runs of one top class), and `write_timeline`:
`timeline.csv`, `timeline.json`, `segments.json` and `timeline.png` (`plot_timeline`).

The `Timeline` itself (windows, their times and class probabilities) comes from
`Predictor.timeline`; `aim-video timeline` writes its files here and `aim-video report` builds
a page from them.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from aim_video.engine.plots import figure, save_figure
from aim_video.files import write_json_atomic, write_text_atomic
from aim_video.predictor import Timeline


def segments(timeline: Timeline, threshold: float) -> list[dict[str, Any]]:
    """Runs of consecutive windows with the same top class at `threshold` or above.

    Returns:
        [{class, start, end, mean_prob, windows}] in time order; `mean_prob` is the class's
        mean probability over the run's windows.
    """
    out: list[dict[str, Any]] = []
    if len(timeline.probs) == 0:
        return out
    top = timeline.probs.argmax(axis=1)
    best = timeline.probs.max(axis=1)
    run: list[int] = []

    def close() -> None:
        if run:
            c = int(top[run[0]])
            out.append({"class": timeline.class_names[c], "start": float(timeline.starts[run[0]]),
                        "end": float(timeline.ends[run[-1]]),
                        "mean_prob": float(timeline.probs[run, c].mean()), "windows": len(run)})

    for i in range(len(top)):
        if best[i] >= threshold and run and top[i] == top[run[-1]]:
            run.append(i)
            continue
        close()
        run = [i] if best[i] >= threshold else []
    close()
    return out


def write_timeline(timeline: Timeline, folder: str | os.PathLike[str], *, top_k: int = 5,
                   threshold: float = 0.5, plot: bool = True) -> dict[str, Path]:
    """timeline.csv, timeline.json, segments.json and (if `plot`) timeline.png in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tops = timeline.top(top_k)
    k = min(top_k, len(timeline.class_names))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["window", "start", "end"]
                    + [f"{name}{r}" for r in range(1, k + 1) for name in ("class", "prob")])
    for i, top in enumerate(tops):
        writer.writerow([i, f"{timeline.starts[i]:.6f}", f"{timeline.ends[i]:.6f}"]
                        + [v for name, prob in top for v in (name, f"{prob:.6f}")])
    paths = {"csv": folder / "timeline.csv", "json": folder / "timeline.json",
             "segments": folder / "segments.json"}
    write_text_atomic(paths["csv"], text.getvalue())
    write_json_atomic(paths["json"], {
        "video": timeline.path, "fps": timeline.fps, "note": timeline.note,
        "windows": [{"start": float(s), "end": float(e),
                     "top": [{"class": n, "prob": p} for n, p in top]}
                    for s, e, top in zip(timeline.starts, timeline.ends, tops)],
    })
    write_json_atomic(paths["segments"], {"threshold": threshold,
                                          "segments": segments(timeline, threshold)})
    if plot:
        paths["png"] = plot_timeline(timeline, folder / "timeline.png", threshold=threshold)
    return paths


def plot_timeline(timeline: Timeline, path: Path, *, classes: int = 5,
                  threshold: float = 0.5) -> Path:
    """The most probable classes' probabilities over time, one line each, over a strip that
    colours each window by its top class (when at `threshold` or above)."""
    import matplotlib  # slow to import: only when a picture is drawn

    probs = timeline.probs
    centres = (timeline.starts + timeline.ends) / 2
    shown = np.argsort(-probs.max(axis=0, initial=0.0), kind="stable")[:classes]
    fig = figure(figsize=(11, 4.2))
    ax, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [5, 1]})
    colours = matplotlib.colormaps["tab10"]
    for n, c in enumerate(shown):
        ax.plot(centres, probs[:, c], color=colours(n % 10), lw=1.8,
                label=timeline.class_names[c])
    ax.axhline(threshold, color="grey", lw=0.8, ls="--")
    ax.set(ylabel="probability", ylim=(0, 1.02), title=Path(timeline.path).name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    ax.grid(alpha=0.3)
    colour_of = {int(c): colours(n % 10) for n, c in enumerate(shown)}
    for seg in segments(timeline, threshold):
        c = timeline.class_names.index(seg["class"])
        strip.axvspan(seg["start"], seg["end"], color=colour_of.get(c, "lightgrey"), lw=0)
    strip.set(yticks=[], xlabel="time (s)")
    strip.set_ylabel("top", rotation=0, ha="right", va="center")
    if timeline.note:
        fig.text(0.01, 0.01, timeline.note, fontsize=8, color="firebrick")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
