"""What the demo runs: the ablation's variants and the two plans (`FULL`, `QUICK`) that size it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from aim_video.data import synthetic
from aim_video.engine.config import config_to_dict, load_config

PRESET = "synthetic_cpu"


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: which parts of the model train."""

    label: str  # how tables and figures name it
    model: dict[str, bool]  # `model.*` switches of the run config
    order_blind: bool  # no temporal path and no temporal embedding: capped at 50% here


VARIANTS: dict[str, Variant] = {
    "linear_probe": Variant(
        "frozen + linear head",
        {"spatial": False, "temporal": False, "joint": False, "temporal_embedding": False}, True),
    "spatial": Variant(
        "spatial adapter only",
        {"spatial": True, "temporal": False, "joint": False, "temporal_embedding": False}, True),
    "spatial_temporal": Variant(
        "spatial + temporal adapters",
        {"spatial": True, "temporal": True, "joint": False, "temporal_embedding": True}, False),
    "aim": Variant(
        "AIM (spatial + temporal + joint)",
        {"spatial": True, "temporal": True, "joint": True, "temporal_embedding": True}, False),
    "full_finetune": Variant(
        "full fine-tuning (space-time)",
        {"spatial": True, "temporal": True, "joint": True, "temporal_embedding": True,
         "full_finetune": True}, False),
}


@dataclass(frozen=True)
class Plan:
    """Sizes and schedules of one demo run (`FULL` or `QUICK`)."""

    name: str
    # The benchmark.
    num_train: int
    num_val: int
    video_frames: int  # frames per video file; clips sample `clip_frames` of them
    size: int  # frame side in pixels (= the model's input)
    pairs: tuple[str, ...]  # motion pairs, by forward class
    # The stand-in image model.
    width: int
    layers: int
    heads: int
    patch_size: int
    standin_images: int
    standin_steps: int
    standin_batch: int
    standin_lr: float
    # The video runs.
    clip_frames: int
    temporal_in: bool  # T_Adapter_in before the temporal attention (the paper's SSv2 recipe)
    epochs: int
    batch_size: int  # videos per step; each gives `clips_per_video` clips
    clips_per_video: int  # repeated augmentation: clips drawn from one decoded video
    warmup_epochs: float
    lr: float  # AdamW peak lr of the adapters and head
    pretrained_lr_mult: float  # lr factor of the image model's weights in full fine-tuning
    # Multi-view testing: clips per video (x 1 crop: frames are already square); 3, as the
    # paper's Kinetics protocol.
    test_clips: int
    eval_every: int  # validate (1 view) every N epochs for the curves; 0: only the final test
    variants: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists), so it compares equal to what was written."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> dict[str, Any]:
        """What the cached stand-in and runs depend on: the plan, the renderer's version (of
        the videos and the stand-in's stills; the data folder checks its own) and the preset
        the runs start from; not which variants run nor the test views (a finished run is
        tested again with the views asked for)."""
        kept = {k: v for k, v in self.to_dict().items() if k not in ("variants", "test_clips")}
        preset = json.loads(json.dumps(config_to_dict(load_config(PRESET))))
        return kept | {"synthetic_version": synthetic.SYNTHETIC_VERSION, "preset": preset}


# The two motion pairs that move the object and the two that change its size and opacity. The
# rotation pair is left out: at 32 px a 4-block stand-in does not learn to read an object's
# orientation from one frame (its orientation regression stayed at chance in pretraining), so
# no variant could tell clockwise from counter-clockwise and the pair would only measure that.
DEMO_PAIRS = ("moves_left", "moves_up", "grows", "fades_in")

FULL = Plan(
    name="full", num_train=2400, num_val=400, video_frames=16, size=32, pairs=DEMO_PAIRS,
    width=64, layers=4, heads=4, patch_size=8,
    standin_images=16000, standin_steps=1000, standin_batch=64, standin_lr=3e-3,
    clip_frames=4, temporal_in=True, epochs=5, batch_size=16, clips_per_video=1,
    warmup_epochs=0.3, lr=5e-3, pretrained_lr_mult=0.1, test_clips=3, eval_every=2,
    variants=tuple(VARIANTS),
)
# The same data and stand-in (so either plan reuses what the other made), fewer epochs and the
# three variants that make the point.
QUICK = dataclasses.replace(
    FULL, name="quick", epochs=4, eval_every=0, variants=("linear_probe", "spatial", "aim"),
)
