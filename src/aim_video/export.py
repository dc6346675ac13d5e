"""Export a trained classifier to ONNX, and run the exported file with onnxruntime.

The exported graph is the whole classifier: a normalised clip (B, 3, T, H, W) in, two outputs,
the logits (B, num_classes) and the pooled features before the head (B, D) (what
`AIMViT.forward_features` gives: `extract` and feature timelines run on the file too), the
batch dimension dynamic, frames and size fixed by the run's config.
The file carries, as ONNX `metadata_props` (string keys and values), everything needed to
predict with it and nothing else: class names, the test-time preprocessing (frames, size,
mean/std, sampling, test views) and the backbone's fingerprint. `OnnxClassifier` reads them
back, so a prediction pipeline needs only the file and onnxruntime.

`export_checkpoint` checks its own work before the file appears: onnxruntime must give the
PyTorch model's logits within `VERIFY_TOLERANCE` and its features within
`FEATURE_TOLERANCE` on a seeded random clip, at a batch size other than the one traced, so the
dynamic batch axis is exercised too.

Needs the `export` extra (`pip install 'aim-video[export]'`): onnx and onnxscript to export
(PyTorch's own exporter, `torch.onnx.export(dynamo=True)`), onnxruntime to run and verify.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aim_video import __version__
from aim_video.data.dataset import NORMALIZATIONS, DataConfig
from aim_video.engine import checkpoint as ckpt
from aim_video.engine.config import RunConfig, TrainConfig, config_to_dict, with_views
from aim_video.errors import OutputFailed, UserError
from aim_video.files import ensure_writable_dir, write_atomic
from aim_video.model import AIMViT
from aim_video.weights import backbone_fingerprint

if TYPE_CHECKING:
    from aim_video.predictor import Predictor

FORMAT = "aim-video-onnx"
FORMAT_VERSION = 1
# The highest opset onnxruntime 1.18 (the extra's floor: the exporter writes IR version 10)
# runs; the ViT needs nothing newer.
OPSET = 20
INPUT_NAME = "clip"
OUTPUT_NAME = "logits"
FEATURES_NAME = "features"  # the second output; files exported before it have only the logits
# fp32 logits of the two runtimes differ by reordered sums only; 1e-4 is far above that and far
# below what a wrong graph gives.
VERIFY_TOLERANCE = 1e-4
# The features are ln_post's output averaged over frames: unit-variance entries scaled by its
# weights, so their size is the weights' (about 1 for a fresh ln_post, several units for
# CLIP's), not the logits'. The same reordered fp32 sums give differences proportional to that
# size, so the limit is relative to the largest feature. Measured: 1.8e-7 of it (a tiny model)
# and 1.6e-7 (random ViT-B/16, 4 frames), a few fp32 roundings; 1e-4 leaves the logits' margin
# over that, and a graph that drops an adapter or mixes frames moves features by a large
# fraction of their size.
FEATURE_TOLERANCE = 1e-4
# Traced at one batch size, verified at another: a batch axis that was baked in fails there.
# Not 1: torch.export specialises dimensions of size 1.
EXPORT_BATCH = 3
VERIFY_BATCH = 2
# DataConfig fields that only say where training data is: not part of the preprocessing.
_DATA_PATH_FIELDS = ("format", "train", "val", "test", "root", "class_names")


class ExportError(UserError, RuntimeError):
    """An ONNX export that cannot be made or verified, or an ONNX file that cannot be used."""


def _require(module: str) -> Any:
    """Imports an optional dependency of the `export` extra, or says how to install it."""
    try:
        return __import__(module)
    except ImportError as err:
        raise ExportError(
            f"{module} is not installed ({err}); install the export extra: "
            "pip install 'aim-video[export]'"
        ) from None


# ------------------------------------------------------------------------------------ metadata
def export_metadata(
    cfg: RunConfig, class_names: Sequence[str], model: AIMViT, fingerprint: str | None = None
) -> dict[str, str]:
    """The `metadata_props` of an exported run: enough to predict with the file alone.

    `data_config` is the run's test-time data settings as JSON (what `OnnxClassifier` rebuilds a
    `DataConfig` from); the separate keys say the same for readers that are not aim-video.

    Args:
        cfg: the run config.
        class_names: label index -> class name.
        model: the model being exported (for its backbone's source and fingerprint).
        fingerprint: `backbone_fingerprint(model)` if already known.
    """
    data = cfg.data
    mean, std = NORMALIZATIONS[data.normalize]
    preprocessing = {
        k: v for k, v in config_to_dict(cfg)["data"].items() if k not in _DATA_PATH_FIELDS
    }
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "aim_video_version": __version__,
        "class_names": json.dumps(list(class_names)),
        "input_layout": "B,C,T,H,W (RGB, normalised)",
        "num_frames": str(data.num_frames),
        "input_size": str(data.input_size),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "sampling": data.sampling,
        "frame_interval": str(data.frame_interval),
        "test_views": f"{data.test_clips}x{data.test_crops}",
        "test_short_side": str(data.test_short_side or data.input_size),
        "data_config": json.dumps(preprocessing),
        "backbone_source": model.backbone_source,
        "backbone_fingerprint": fingerprint or backbone_fingerprint(model),
    }


# ------------------------------------------------------------------------------------ export
# Loggers of the exporter and their levels while exporting: the ONNX optimiser reports every
# constant it folds or skips at INFO (hundreds of lines for ViT-B); the registry warns once per
# torchvision op it cannot register, and the model has none.
_EXPORTER_LOG_LEVELS = {
    "onnxscript": logging.WARNING,
    "onnx_ir": logging.WARNING,
    "torch.onnx._internal.exporter._registration": logging.ERROR,
}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hides the exporter's routine messages (see `_EXPORTER_LOG_LEVELS`) and a pytree
    deprecation warning raised inside torch."""
    loggers = {logging.getLogger(name): level for name, level in _EXPORTER_LOG_LEVELS.items()}
    before = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


class _LogitsAndFeatures(torch.nn.Module):
    """The classifier with its pooled features as a second output (what is exported)."""

    def __init__(self, model: AIMViT) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(clip)  # (B, D)
        return self.model.forward_head(features), features  # (B, K), (B, D)


def export_onnx(model: AIMViT, path: str | os.PathLike[str], metadata: Mapping[str, str]) -> None:
    """Writes `model` (in eval mode, fp32) as an ONNX graph with a dynamic batch axis: the clip
    in, the logits and the pooled features out.

    PyTorch's own exporter (`torch.onnx.export(dynamo=True)`) traces the model with
    `torch.export`; SDPA becomes MatMul/Softmax and the LayerNorms plain LayerNormalization
    (no autocast is active, so `AutocastLayerNorm` is `nn.LayerNorm`).

    Args:
        model: the classifier; put in eval mode, without recomputation.
        path: the file to write (one file: weights are not split out).
        metadata: written as the model's `metadata_props`.
    """
    _require("onnx")
    _require("onnxscript")
    cfg = model.cfg
    model.eval()
    model.set_grad_checkpointing(False)
    size = cfg.vit.image_size
    example = torch.zeros(EXPORT_BATCH, 3, cfg.num_frames, size, size)
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            _LogitsAndFeatures(model).eval(), (example,), dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, FEATURES_NAME],
            opset_version=OPSET,
            verbose=False,
        )
    program.model.metadata_props.update(metadata)
    program.save(os.fspath(path), external_data=False)


def verification_clip(cfg: Any, batch: int = VERIFY_BATCH, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal clip of the model's shape (what normalised frames look like)."""
    size = cfg.vit.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, cfg.num_frames, size, size, generator=generator)


def max_differences(model: AIMViT, onnx_model: OnnxClassifier,
                    clip: torch.Tensor) -> tuple[float, float]:
    """max |logits(PyTorch) - logits(onnxruntime)| on `clip`, both fp32, and the same of the
    features relative to the largest of PyTorch's (see `FEATURE_TOLERANCE`)."""
    model.eval()
    with torch.no_grad():
        features = model.forward_features(clip)
        logits = model.forward_head(features).numpy()
    features = features.numpy()
    got_logits, got_features = onnx_model.run(clip)
    scale = max(float(np.abs(features).max()), np.finfo(np.float32).tiny)
    return (float(np.abs(got_logits - logits).max()),
            float(np.abs(got_features - features).max()) / scale)


@dataclass
class ExportResult:
    """What `export_checkpoint` wrote and how well it matched PyTorch."""

    path: Path  # the ONNX file
    bytes: int  # its size
    max_abs_diff: float  # max |Δlogit| against PyTorch at `verify_batch`
    max_feature_diff: float  # max |Δfeature| / max |feature| against PyTorch, same batch
    verify_batch: int  # the batch size verified (not the one traced)
    num_frames: int
    input_size: int
    class_names: list[str]


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    pretrained: str | None = None,
    tolerance: float = VERIFY_TOLERANCE,
) -> ExportResult:
    """Exports a training checkpoint's classifier to ONNX and verifies it with onnxruntime.

    The file appears at `out` only once verified: it is written beside it, loaded back by
    `OnnxClassifier` (metadata included) and compared with PyTorch (logits and features) on a
    seeded random clip of `VERIFY_BATCH` clips, then renamed into place.

    Args:
        checkpoint: `last.pt` / `best.pt` of a run.
        out: the ONNX file to write.
        pretrained: backbone weights overriding the checkpoint config's `model.pretrained`.
        tolerance: the largest max |Δlogit| accepted (the features' limit is
            `FEATURE_TOLERANCE`).

    Raises:
        ExportError: onnx/onnxscript/onnxruntime missing, or the logits (features) differ by
            more than `tolerance` (`FEATURE_TOLERANCE`); no file is left at `out` then.
        CheckpointError, ConfigError: the checkpoint or its backbone cannot be loaded.
    """
    for module in ("onnx", "onnxscript", "onnxruntime"):
        _require(module)  # before minutes of loading and tracing
    out = Path(out)
    ensure_writable_dir(out.parent)
    state = ckpt.read_training_checkpoint(checkpoint)
    cfg = ckpt.checkpoint_config(state, checkpoint)
    model = ckpt.model_from_checkpoint(state, checkpoint, cfg, pretrained).cpu().float().eval()
    names = list(state["class_names"])
    metadata = export_metadata(cfg, names, model, state.get("backbone_fingerprint"))
    measured: list[tuple[float, float]] = []

    def write_verified(temp: Path) -> None:
        export_onnx(model, temp, metadata)
        diff, feature_diff = max_differences(model, OnnxClassifier(temp),
                                             verification_clip(model.cfg))
        measured.append((diff, feature_diff))
        if not diff <= tolerance:  # also catches nan
            raise OutputFailed(
                f"{out}: onnxruntime's logits differ from PyTorch's by {diff:.3g} (max |Δlogit| "
                f"at batch {VERIFY_BATCH}, limit {tolerance:g}); the file was not written"
            )
        if not feature_diff <= FEATURE_TOLERANCE:
            raise ExportError(
                f"{out}: onnxruntime's features differ from PyTorch's by {feature_diff:.3g} of "
                f"the largest (at batch {VERIFY_BATCH}, limit {FEATURE_TOLERANCE:g}); the file "
                "was not written"
            )

    write_atomic(out, write_verified)
    return ExportResult(
        path=out, bytes=out.stat().st_size, max_abs_diff=measured[0][0],
        max_feature_diff=measured[0][1], verify_batch=VERIFY_BATCH,
        num_frames=cfg.data.num_frames, input_size=cfg.data.input_size, class_names=names,
    )


# ------------------------------------------------------------------------------------ runtime
class OnnxClassifier:
    """An exported aim-video classifier on onnxruntime: clips in, logits (and features) out.

    Reads the file's metadata, so the class names and test-time preprocessing come with it.
    Files exported before the features were an output give the logits only
    (`has_features` False).

    Args:
        path: an ONNX file written by `export_checkpoint` / `aim-video export`.
        threads: onnxruntime's intra-op threads; None: its default (the physical cores).
        providers: onnxruntime execution providers; default the CPU's.
        optimization: onnxruntime's graph optimisation level (`onnxruntime.GraphOptimizationLevel`
            name: ORT_DISABLE_ALL, ORT_ENABLE_BASIC, ORT_ENABLE_EXTENDED, ORT_ENABLE_ALL).

    Raises:
        ExportError: onnxruntime is missing, or the file is missing, damaged or not an aim-video
            export (names the file and what is wrong).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        optimization: str = "ORT_ENABLE_ALL",
    ) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(os.fspath(self.path), options,
                                                providers=list(providers))
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types, untyped
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"{self.path}: onnxruntime cannot load it: {first}") from None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.class_names, self.data_config = self._read_metadata()
        (self.input,) = self.session.get_inputs()
        self.input_shape = tuple(self.input.shape)  # ("batch", 3, T, S, S)
        outputs = self.session.get_outputs()
        self.output_names = [o.name for o in outputs][:2]  # logits, then features if exported
        self.has_features = len(outputs) > 1 and outputs[1].name == FEATURES_NAME
        classes = outputs[0].shape[-1]
        if classes != len(self.class_names):
            raise ExportError(
                f"{self.path}: the graph gives {classes} logits but its metadata names "
                f"{len(self.class_names)} classes"
            )

    def _read_metadata(self) -> tuple[list[str], DataConfig]:
        meta = self.metadata
        if meta.get("format") != FORMAT:
            raise ExportError(f"{self.path}: not an aim-video ONNX export (no '{FORMAT}' "
                              "format in its metadata); export one with aim-video export")
        if int(meta.get("format_version", "0")) > FORMAT_VERSION:
            raise ExportError(
                f"{self.path}: export format version {meta['format_version']} is newer than "
                f"this aim-video understands ({FORMAT_VERSION}); upgrade aim-video"
            )
        try:
            names = json.loads(meta["class_names"])
            data = DataConfig(**json.loads(meta["data_config"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ExportError(
                f"{self.path}: damaged aim-video metadata ({type(err).__name__}: {err})"
            ) from None
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ExportError(f"{self.path}: damaged aim-video metadata: class_names is not a "
                              "list of strings")
        return names, data

    @property
    def num_frames(self) -> int:
        return self.data_config.num_frames

    @property
    def input_size(self) -> int:
        return self.data_config.input_size

    @property
    def backbone_fingerprint(self) -> str:
        return self.metadata.get("backbone_fingerprint", "")

    def __call__(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits of normalised clips.

        Args:
            clips: float (B, 3, T, H, W), normalised as `data_config` says.

        Returns:
            float32 (B, num_classes) logits.
        """
        [logits] = self._run(clips, self.output_names[:1])
        return logits

    def features(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        """The pooled features before the head: float32 (B, D).

        Raises:
            ExportError: the file was exported without them.
        """
        self._need_features()
        [features] = self._run(clips, [FEATURES_NAME])
        return features

    def run(self, clips: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Logits and features from one run of the graph."""
        self._need_features()
        logits, features = self._run(clips, self.output_names)
        return logits, features

    def _need_features(self) -> None:
        if not self.has_features:
            raise ExportError(f"{self.path} gives logits only (exported before features were "
                              "an output); export the checkpoint again for features")

    def _run(self, clips: np.ndarray | torch.Tensor, outputs: list[str]) -> list[np.ndarray]:
        if isinstance(clips, torch.Tensor):
            clips = clips.detach().cpu().numpy()
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        expected = self.input_shape[1:]
        if clips.ndim != 5 or clips.shape[1:] != expected:
            raise ValueError(f"{self.path} takes clips of shape (B, {', '.join(map(str, expected))})"
                             f", got {tuple(clips.shape)}")
        return self.session.run(outputs, {self.input.name: clips})

    def __repr__(self) -> str:
        return (f"OnnxClassifier({str(self.path)!r}, {len(self.class_names)} classes, "
                f"{self.num_frames}x{self.input_size})")


def onnx_predictor(
    path: str | os.PathLike[str], views: str | None = None, threads: int | None = None
) -> Predictor:
    """A `Predictor` (predict, timeline, features) that runs an exported file on onnxruntime.

    Everything comes from the file: the class names and the test-time data settings. The
    run config's other sections keep their defaults: the Predictor reads only the evaluation
    batch sizes and the precision (fp32 here) from them. Features come from the graph's second
    output (a file exported without it refuses them, saying so).

    Args:
        path: an ONNX file written by `aim-video export`.
        views: CLIPSxCROPS overriding the file's test views, e.g. "3x1".
        threads: onnxruntime's intra-op threads; None: its default.
    """
    from aim_video.predictor import Predictor  # the predictor imports the data side; lazily

    classifier = OnnxClassifier(path, threads=threads)
    cfg = with_views(RunConfig(data=classifier.data_config, train=TrainConfig(precision="fp32")),
                     views)

    return Predictor(_OnnxClipModel(classifier), cfg, classifier.class_names, device="cpu")


class _OnnxClipModel:
    """An `OnnxClassifier` as the Predictor's clip model (`inference.ClipModel`): torch
    tensors in and out, `forward_features` from the graph's second output."""

    def __init__(self, classifier: OnnxClassifier) -> None:
        self.classifier = classifier

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.classifier(clips))

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Raises ExportError (one line) for a file exported without features."""
        return torch.from_numpy(self.classifier.features(clips))
