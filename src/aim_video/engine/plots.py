"""PNG figures of a run: training curves and the confusion matrix (matplotlib).

`figure` and `save_figure` are the package's one way to draw and write a figure (the timeline
and the demo's figures use them too). They draw on a `matplotlib.figure.Figure` with its own
Agg canvas, never through pyplot: pyplot's global backend and figure list belong to the user
(a notebook's inline plots), and a library that switched them would change the user's plots.
matplotlib is imported inside the functions: it is slow to import and only needed at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aim_video.files import write_atomic


def figure(**kwargs: Any) -> Any:
    """A new `matplotlib.figure.Figure` on an Agg canvas of its own: files only, never a
    window, whatever backend pyplot uses.

    Args:
        kwargs: `Figure`'s arguments (`figsize`, ...).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Writes `fig` atomically (a reader never sees half a PNG).

    Args:
        fig: a matplotlib figure (`figure()`).
        path: the file to write; its suffix names the format (`.png`, `.svg`, ...).
        dpi: resolution of raster formats.
    """
    path = Path(path)
    # The temporary file's own suffix is .tmp: the format must be named, not guessed from it.
    fmt = path.suffix.lstrip(".") or "png"
    write_atomic(path, lambda temp: fig.savefig(temp, dpi=dpi, format=fmt))
    return path


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch (train, and validation where it was run).

    Args:
        history: one dict per epoch with `epoch`, `train_loss`, `train_top1` and, on
            validated epochs, `val_top1` / `val_top5` (accuracies in %).
        path: the PNG to write.
    """
    epochs = [h["epoch"] for h in history]
    fig = figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_acc.plot(epochs, [h["train_top1"] for h in history], marker="o", label="train top-1")
    for key in ("val_top1", "val_top5"):
        points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            ax_acc.plot(xs, ys, marker="s", label=key.replace("_", " "))
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class).

    Class names label the axes up to 60 classes; beyond that the image shows the pattern only.

    Args:
        matrix: (K, K) counts, `matrix[true, predicted]`.
        class_names: K names.
        path: the PNG to write.
    """
    k = len(class_names)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    side = min(4 + 0.3 * k, 30)
    fig = figure(figsize=(side, side))
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    if k <= 60:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)
