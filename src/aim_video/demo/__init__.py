"""`aim-video demo`: AIM's ablation on the built-in synthetic benchmark, on a laptop CPU.

What it shows: a frozen image model cannot tell a clip from the same clip played backwards, and
AIM's temporal adaptation fixes that with a small fraction of the parameters of full
fine-tuning. The steps, each cached in the output folder so that a rerun (or an interrupted run)
picks up where it stopped:

1. ``data/``: the synthetic time-reversal benchmark (`aim_video.data.synthetic`), real H.264
   files. Its classes come in pairs that are each other's time reversal, so a model blind to
   frame order is capped at 50% by construction.
2. ``standin/``: a small CLIP-architecture image ViT pretrained on *still images* of the same
   objects (`stills`), labelled by shape, colour, texture, position, size and opacity (never by
   motion). It stands in for CLIP, whose weights cannot be downloaded here; it is saved in
   OpenAI's layout and loaded through `aim_video.weights.load_pretrained` like any CLIP
   checkpoint (`standin`).
3. ``runs/<plan>/<variant>/``: one training run per variant through the ordinary engine
   (`aim_video.engine.train`, the `synthetic_cpu` preset), each evaluated with multi-view
   testing: a linear probe and spatial-only adaptation (both without a temporal embedding, so
   truly order-blind), spatial + temporal adaptation, full AIM, and full fine-tuning
   (`plan`, `ablation`).
4. ``report.json``, ``results.png`` (top-1 and trainable parameters), ``curves.png`` (training
   loss and validation top-1 of every variant), ``examples.png`` (clips with predictions;
   `figures`) and ``report.html``, the ablation page: the variants side by side, each linking
   the evaluation report of its run (`results`, `page`, `aim_video.report`).

This package is the demo, not the library: only the `demo` and `report` commands import it.
"""

from aim_video.demo.ablation import run_demo, run_variant, variant_config
from aim_video.demo.page import write_ablation_page, write_report
from aim_video.demo.plan import FULL, PRESET, QUICK, VARIANTS, Plan, Variant
from aim_video.demo.results import DemoReport, VariantResult
from aim_video.demo.standin import Standin, pretrain_standin

__all__ = ["FULL", "PRESET", "QUICK", "VARIANTS", "DemoReport", "Plan", "Standin", "Variant",
           "VariantResult", "pretrain_standin", "run_demo", "run_variant", "variant_config",
           "write_ablation_page", "write_report"]
