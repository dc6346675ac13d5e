"""The one path from decoded views to answers, shared by evaluation and every predictor.

`eval` (`engine.evaluate`), `predict`, `timeline`, `extract` and the many-task predictor
(`aim_video.predictor`) all go through here, so what one of them answers for a video is what
the others answer for it:

* `views_loader`: the test-mode batches of a dataset (`ViewsBatch`);
* `ViewsModel`: a batch of views (B, V, C, T, H, W) -> each task's softmax averaged over the
  V views, or the pooled representation before the head averaged over them; the B·V clips run
  in chunks of `eval.views_chunk` under the run's autocast, each chunk moved to the device
  once and answered by every task on one backbone;
* `top_answers` / `batch_reasons`: a batch's top-k classes per video, and why each
  unreadable video could not be read.

This module imports nothing of the engine (the engine's evaluation imports it): callers pass
the device, the autocast dtype (`engine.distributed.autocast_dtype`) and the chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from aim_video.data.dataset import ViewsBatch, collate

ClipModel = Callable[[Tensor], Tensor]  # (N, 3, T, H, W) normalised floats -> (N, K) logits


@dataclass
class Task:
    """One classifier on a shared model.

    With several tasks on one backbone, `weights` holds the task's trainable tensors (on the
    model's device), put into the model's parameters of the same names before its forward
    pass; with one task it is empty and the model is used as it is.
    """

    name: str  # the key of its results
    class_names: list[str]  # index -> name
    checkpoint: str | None = None  # where it was loaded from
    weights: dict[str, Tensor] = field(default_factory=dict)


def views_loader(dataset: Dataset, batch_size: int, workers: int,
                 device: torch.device) -> DataLoader:
    """Batches (`ViewsBatch`) of a test-mode dataset (or a `Subset` of one), in order."""
    return DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # never draw from the global RNG (training resumes it)
    )


class ViewsModel:
    """A clip model, with one task or several on one backbone, applied to batches of views.

    Args:
        model: clips (N, 3, T, H, W) -> logits (N, K), on `device` already; `features` also
            needs its `forward_features` (N, 3, T, H, W) -> (N, D).
        device: where the clips go.
        dtype: autocast dtype, or None for fp32.
        chunk: clips per forward pass (`eval.views_chunk`).
        tasks: the tasks whose `weights` are swapped into `model` (see `Task`); default one,
            the model as it is, named "model".
    """

    def __init__(self, model: ClipModel, device: torch.device, dtype: torch.dtype | None,
                 chunk: int, tasks: Sequence[Task] = ()) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.chunk = chunk
        self.tasks = list(tasks) or [Task("model", [])]
        self._current: Task | None = None  # the task whose tensors the model holds
        self._swapped: dict[str, torch.nn.Parameter] | None = None  # what `use` assigns to

    @torch.no_grad()
    def probabilities(self, views: Tensor) -> dict[str, Tensor]:
        """Each task's softmax averaged over each video's views.

        Args:
            views: (B, V, C, T, H, W) views of B videos (or windows).

        Returns:
            task name -> float32 (B, K_task) on the CPU.
        """
        logits = self._per_clip(self.model, views)
        # (B·V, K) -> softmax -> (B, V, K) -> mean over views
        return {name: out.float().softmax(dim=-1).view(*views.shape[:2], -1).mean(dim=1).cpu()
                for name, out in logits.items()}

    @torch.no_grad()
    def features(self, views: Tensor) -> dict[str, Tensor]:
        """Each task's pooled representation before the head, averaged over the views.

        The head is linear, so the head of this average is the average of the views' logits
        (with one view: exactly the logits `probabilities` takes the softmax of).

        Args:
            views: (B, V, C, T, H, W).

        Returns:
            task name -> float32 (B, D) on the CPU.

        Raises:
            AttributeError: the model has no `forward_features`.
        """
        forward_features = self.model.forward_features  # type: ignore[attr-defined]
        out = self._per_clip(forward_features, views)
        # (B·V, D) -> (B, V, D) -> mean over views
        return {name: f.float().view(*views.shape[:2], -1).mean(dim=1).cpu()
                for name, f in out.items()}

    def use(self, task: Task) -> None:
        """Puts `task`'s tensors into the model's parameters (no copy; nothing with one task).

        Outside autocast on purpose: autocast caches the low-precision copy of a parameter
        that requires grad, keyed by the parameter, for the whole autocast region, so a swap
        inside one would reuse the previous task's copy. A shared model's parameters do not
        require grad either (`Predictor.from_checkpoints`).
        """
        if task is self._current or not task.weights:
            return
        if self._swapped is None:  # walking the module tree costs more than the swap itself
            parameters = dict(self.model.named_parameters())  # type: ignore[attr-defined]
            self._swapped = {name: parameters[name] for name in task.weights}
        for name, tensor in task.weights.items():
            self._swapped[name].data = tensor
        self._current = task

    def _per_clip(self, fn: ClipModel, views: Tensor) -> dict[str, Tensor]:
        """`fn` of each task over the B·V clips in chunks of `chunk`.

        Each chunk is moved to the device once and run by every task in turn, each task's
        swap (`use`) outside its autocast region.

        Returns:
            task name -> (B·V, ...) outputs, on the device.
        """
        clips = views.flatten(0, 1)  # (B, V, C, T, H, W) -> (B·V, C, T, H, W)
        out: dict[str, list[Tensor]] = {task.name: [] for task in self.tasks}
        for part in clips.split(self.chunk):
            part = part.to(self.device, non_blocking=True)
            for task in self.tasks:
                self.use(task)
                with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                    enabled=self.dtype is not None):
                    out[task.name].append(fn(part))
        return {name: torch.cat(parts) for name, parts in out.items()}


def batch_reasons(batch: ViewsBatch, path_of: Callable[[int], str]) -> list[str | None]:
    """For each video of `batch`: None when it was read, else why not.

    Args:
        batch: test-mode batch.
        path_of: dataset index -> the path its `skipped` entries name.
    """
    reasons = dict(batch["skipped"])
    return [None if ok else reasons.get(path_of(index), "unreadable")
            for index, ok in zip(batch["index"].tolist(), batch["ok"].tolist())]


@dataclass
class VideoAnswer:
    """One video's top-k classes, or why it could not be read."""

    index: int  # the video's index in its dataset
    ok: bool  # False: the video could not be read
    top: list[int]  # the top-k classes, most probable first ([] when not ok)
    probs: list[float]  # their probabilities ([] when not ok)
    reason: str | None = None  # why it could not be read


def top_answers(batch: ViewsBatch, probs: Tensor, k: int,
                path_of: Callable[[int], str]) -> list[VideoAnswer]:
    """The `k` most probable classes of each video of `batch` (all when there are fewer).

    Args:
        batch: the test-mode batch `probs` was computed from.
        probs: (B, K) probabilities (`ViewsModel.probabilities`).
        k: classes per video.
        path_of: dataset index -> path (see `batch_reasons`).
    """
    top_p, top_i = probs.topk(min(k, probs.shape[1]), dim=1)
    answers = []
    for index, reason, classes, p in zip(batch["index"].tolist(), batch_reasons(batch, path_of),
                                         top_i.tolist(), top_p.tolist()):
        ok = reason is None
        answers.append(VideoAnswer(index, ok, classes if ok else [], p if ok else [], reason))
    return answers
