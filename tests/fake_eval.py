"""Synthetic evaluation folders, written by the engine's own results writer (for the report's
tests and benchmarks/report_scale.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from aim_video.engine.evaluate import VideoResult, compute_metrics, write_results
from aim_video.report import THUMBS


def fake_evaluation(folder: Path, classes: int, videos: int, *, accuracy: float = 0.7,
                    unreadable: int = 3, thumbs: bool = True, seed: int = 0) -> list[VideoResult]:
    """Writes an evaluation folder of `videos` videos over `classes` classes; returns the
    per-video results it describes.

    A video's top-1 is its own class with probability `accuracy`, else a neighbouring class
    (so that confusions concentrate on a few pairs, as real ones do); the first `unreadable`
    videos could not be read. Video paths are relative to the working directory.
    """
    rng = np.random.default_rng(seed)
    names = [f"class {c:03d}" for c in range(classes)]
    results = []
    for i in range(videos):
        label = int(rng.integers(classes))
        path = str(folder.parent / "videos" / f"{label:03d}" / f"clip {i:05d}.mp4")
        if i < unreadable:
            results.append(VideoResult(i, path, label, False, [], [], reason="cannot decode"))
            continue
        first = label if rng.random() < accuracy else (label + int(rng.integers(1, 3))) % classes
        others = [c for c in rng.permutation(classes)[:6].tolist() if c != first][:4]
        probs = np.sort(rng.dirichlet(np.ones(5)))[::-1]
        results.append(VideoResult(i, path, label, True, [first, *others][:classes],
                                   probs[:min(5, classes)].tolist()))
    result = compute_metrics(results, classes, "val", "3x1")
    for row in result.per_class:
        row["name"] = names[row["class"]]
    write_results(result, names, folder, plots=False)
    if thumbs:
        (folder / THUMBS).mkdir(exist_ok=True)
        strip = Image.new("RGB", (4 * 32, 32), (90, 120, 160))
        for r in results:
            if r.ok:
                strip.save(folder / THUMBS / f"{r.index}.jpg")
    return results


def fake_demo(folder: Path) -> dict[str, dict]:
    """A demo output folder of the quick plan (report.json and an evaluation folder for each
    variant but the linear probe); returns report.json's variant rows."""
    from aim_video import demo

    rows = {}
    for name, top1 in (("linear_probe", 30.0), ("aim", 92.5), ("full_finetune", 94.0)):
        if name != "linear_probe":  # a run without an evaluation folder: no link
            fake_evaluation(folder / "runs" / "quick" / name / "eval_val", 4, 20, thumbs=False)
        rows[name] = {"label": demo.VARIANTS[name].label, "top1": top1, "top5": 100.0,
                      "trainable_params": {"aim": 150, "full_finetune": 1000}.get(name, 50),
                      "total_params": 1000, "train_seconds": 12.0,
                      "order_blind": demo.VARIANTS[name].order_blind, "run": "elsewhere"}
    (folder / "report.json").write_text(json.dumps({
        "plan": demo.QUICK.to_dict(), "classes": ["a", "b", "c", "d"], "variants": rows,
        "seconds": 183.0}))
    return rows
