"""The demo's figures: results.png (top-1 and trainable parameters per variant), curves.png
(training loss and validation top-1 of every variant) and examples.png (validation clips with
the predictions of two variants)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aim_video.data.annotations import load_annotations
from aim_video.data.decode import open_video
from aim_video.demo.plan import VARIANTS
from aim_video.demo.results import DemoReport
from aim_video.engine.plots import figure, save_figure

FIGURES = ("results.png", "curves.png", "examples.png")


def write_figures(report: DemoReport) -> None:
    """Every figure of `FIGURES` in the demo's folder."""
    out = report.out_dir
    plot_results(report, out / "results.png")
    plot_training(report, out / "curves.png")
    plot_examples(report, out / "examples.png")


def plot_results(report: DemoReport, path: Path) -> Path:
    """Bar chart: multi-view top-1 per variant, with its trainable parameters; chance lines."""
    names = list(report.variants)
    top1 = [report.variants[n].top1 for n in names]
    colours = ["#9e9e9e" if VARIANTS[n].order_blind else "#1f77b4" for n in names]
    fig = figure(figsize=(8, 4.2))
    ax = fig.subplots()
    bars = ax.bar(range(len(names)), top1, color=colours)
    for bar, name in zip(bars, names):
        v = report.variants[name]
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1.5,
                f"{v.top1:.1f}%\n{v.trainable_params / 1e3:.1f}k params", ha="center", fontsize=8)
    classes = len(report.data.class_names)
    ax.axhline(100 / classes, color="k", lw=0.8, ls=":", label=f"chance ({100 / classes:.1f}%)")
    ax.axhline(50, color="r", lw=0.8, ls="--", label="order-blind ceiling (50%)")
    ax.set_xticks(range(len(names)), [VARIANTS[n].label for n in names], rotation=15,
                  ha="right", fontsize=8)
    ax.set(ylabel="validation top-1 (%)", ylim=(0, 112),
           title=f"AIM ablation on the synthetic time-reversal benchmark ({report.plan.name})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _step_losses(run: Path) -> tuple[list[int], list[float]]:
    """(step, running training loss) from a run's metrics.jsonl."""
    steps, losses = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "step":
            steps.append(record["step"])
            losses.append(record["loss"])
    return steps, losses


def plot_training(report: DemoReport, path: Path) -> Path:
    """Training loss per step and validation top-1 per epoch, every variant on one figure."""
    fig = figure(figsize=(11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, v in report.variants.items():
        style = "--" if VARIANTS[name].order_blind else "-"
        steps, losses = _step_losses(v.out_dir)
        ax_loss.plot(steps, losses, style, label=name)
        points = [(h["epoch"], h["val_top1"]) for h in v.history if "val_top1" in h]
        if points:
            ax_acc.plot(*zip(*points), style, marker="o", label=name)
    ax_loss.set(xlabel="optimiser step", ylabel="training loss (epoch running mean)",
                title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="validation top-1 (%, 1 view)", ylim=(0, 100),
               title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _predictions(run: Path) -> dict[str, str]:
    """Video path -> top-1 class name, from the run's final evaluation."""
    out = {}
    for line in (run / "eval_val" / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["ok"]:
            out[record["path"]] = record["top"][0]["class"]
    return out


def plot_examples(report: DemoReport, path: Path, frames: int = 8,
                  shown: tuple[str, ...] = ("spatial", "aim")) -> Path:
    """One validation clip per class: its frames, and the predictions of the `shown` variants
    (those that ran) for it."""
    names = list(report.data.class_names)
    firsts: dict[int, str] = {}  # label -> the path of its first validation video
    for record in load_annotations(report.data.val_list, root=report.data.root).records:
        firsts.setdefault(record.label, record.path)
    predictions = {n: _predictions(report.variants[n].out_dir)
                   for n in shown if n in report.variants}
    fig = figure(figsize=(frames * 1.0, len(firsts) * 1.25))
    axes = fig.subplots(len(firsts), frames, squeeze=False)
    for row, (label, video) in enumerate(sorted(firsts.items())):
        with open_video(video) as reader:
            index = np.linspace(0, reader.num_frames - 1, frames).round().astype(int)
            clip = reader.read(index.tolist())
        for col in range(frames):
            axes[row, col].imshow(clip[col], interpolation="nearest")
            axes[row, col].axis("off")
        guesses = []
        for name, found in predictions.items():
            guess = found.get(video, "?")
            guesses.append(f"{name}: {guess} ({'right' if guess == names[label] else 'WRONG'})")
        axes[row, 0].set_title(f"{names[label]}  |  " + "  |  ".join(guesses), fontsize=7,
                               loc="left")
    fig.suptitle("validation clips, time running left to right, with predictions", fontsize=9)
    # Titles run across the row, wider than their axes: lay out by hand, not tight_layout.
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93, wspace=0.06, hspace=0.5)
    return save_figure(fig, path, dpi=110)


__all__ = ["FIGURES", "plot_examples", "plot_results", "plot_training", "write_figures"]
