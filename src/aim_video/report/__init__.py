"""The evaluation report: a self-contained HTML page to look at what a model got wrong.

`build_report` writes the page of an evaluation or `aim-video timeline` folder.
`build_eval_report` turns an evaluation folder (``metrics.json``, ``per_class.csv``,
``predictions.jsonl``, and the ``thumbs/`` strips written while evaluating) into
``report.html``; `render_page` is the one template for every page (the demo's ablation too).
"""

from aim_video.report.build import (
    MATRIX_MAX,
    REPORT,
    ReportError,
    build_eval_report,
    build_report,
    build_timeline_report,
    relative_url,
    render_page,
    write_page,
)
from aim_video.report.thumbs import THUMBS, ThumbnailWriter

__all__ = ["MATRIX_MAX", "REPORT", "THUMBS", "ReportError", "ThumbnailWriter",
           "build_eval_report", "build_report",
           "build_timeline_report", "relative_url", "render_page", "write_page"]
