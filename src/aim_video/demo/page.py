"""The demo's report: report.json, its figures and report.html, the ablation page."""

from __future__ import annotations

from pathlib import Path

from aim_video.demo.figures import FIGURES, write_figures
from aim_video.demo.results import DemoReport
from aim_video.files import read_json, write_json_atomic
from aim_video.report import REPORT, ReportError, build_eval_report, relative_url, write_page


def write_report(report: DemoReport) -> None:
    """report.json, results.png, curves.png, examples.png and report.html in the demo folder."""
    out = report.out_dir
    write_json_atomic(out / "report.json", report.to_dict())
    write_figures(report)
    write_ablation_page(out)


def write_ablation_page(out_dir: str | Path) -> Path:
    """The demo folder's ``report.html`` from its ``report.json``: the variants side by side,
    each linking its run's evaluation report (built here for runs evaluated without one)."""
    out = Path(out_dir)
    report = read_json(out / "report.json")
    if not isinstance(report, dict) or "variants" not in report:
        raise ReportError(f"{out / 'report.json'} is missing or not a demo report")
    full = report["variants"].get("full_finetune")
    rows = []
    for name, row in report["variants"].items():
        evaluation = out / "runs" / report["plan"]["name"] / name / "eval_val"
        link = None
        if (evaluation / "metrics.json").is_file():
            if not (evaluation / REPORT).is_file():
                build_eval_report(evaluation)
            link = relative_url(evaluation / REPORT, out)
        share = 100 * row["trainable_params"] / full["trainable_params"] if full else None
        rows.append(row | {"name": name, "report": link, "share": share})
    plan = report["plan"]
    subtitle = (f"{plan['name']} plan: {len(report['classes'])} classes in time-reversal pairs "
                f"(an order-blind model is capped at 50%), {plan['test_clips']}-clip testing, "
                f"{report['seconds']:.0f} s on the CPU")
    return write_page(out / REPORT, "ablation",
                      "AIM ablation on the synthetic time-reversal benchmark",
                      {"subtitle": subtitle, "variants": rows,
                       "figures": [f for f in FIGURES if (out / f).is_file()]})


__all__ = ["write_ablation_page", "write_report"]
