"""What the ablation's runs found: one `VariantResult` per variant and the `DemoReport` that
gathers them (drawn by `figures`, written by `page`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aim_video.data.synthetic import SyntheticInfo
from aim_video.demo.plan import VARIANTS, Plan
from aim_video.demo.standin import Standin


@dataclass
class VariantResult:
    name: str
    top1: float  # multi-view top-1 on the validation split, %
    top5: float
    trainable_params: int
    total_params: int
    train_seconds: float  # summed over epochs (also across an interruption)
    history: list[dict[str, Any]]
    out_dir: Path
    trained: bool  # this call trained (False: the run was complete already, only re-tested)

    def row(self) -> dict[str, Any]:
        return {"label": VARIANTS[self.name].label, "top1": round(self.top1, 2),
                "top5": round(self.top5, 2), "trainable_params": self.trainable_params,
                "total_params": self.total_params,
                "train_seconds": round(self.train_seconds, 1),
                "order_blind": VARIANTS[self.name].order_blind, "run": str(self.out_dir)}


@dataclass
class DemoReport:
    plan: Plan
    data: SyntheticInfo
    standin: Standin
    variants: dict[str, VariantResult]
    # Wall time of the call that made the results: a rerun that trained nothing keeps the
    # figure of the report it found (it only re-tested the finished runs).
    seconds: float
    out_dir: Path
    cached: bool = False  # every step was cached: `seconds` is the earlier run's

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "classes": list(self.data.class_names),
            "standin": {"path": str(self.standin.path), "metrics": self.standin.metrics},
            "variants": {name: v.row() for name, v in self.variants.items()},
            "seconds": round(self.seconds, 1),
        }

    def table(self) -> str:
        """The results as a fixed-width text table."""
        head = f"{'variant':<18} {'top-1':>6} {'top-5':>6} {'trainable':>10} {'share':>6} {'train s':>8}"
        full = self.variants.get("full_finetune")
        lines = [head, "-" * len(head)]
        for name, v in self.variants.items():
            share = f"{100 * v.trainable_params / full.trainable_params:5.1f}%" if full else ""
            lines.append(f"{name:<18} {v.top1:6.1f} {v.top5:6.1f} {v.trainable_params:>10,} "
                         f"{share:>6} {v.train_seconds:8.0f}")
        return "\n".join(lines)


__all__ = ["DemoReport", "VariantResult"]
