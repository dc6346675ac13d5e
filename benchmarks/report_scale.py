"""The evaluation report at Kinetics-400 scale: file size, build time and load time in Chromium.

Writes a synthetic evaluation folder (400 classes, 20,000 videos, with the engine's own report
writer, as tests/fake_eval.py does for the tests), builds report.html, opens it in headless
Chromium several times and prints one JSON line: the page's size, the build time, the median
times from navigation to the page's script having rendered everything (it marks
`document.body.dataset.ready`) and to the first contentful paint, then the time to list a
confusion's videos and to re-sort the 400-row per-class table (both measured in the page
around a click, layout excluded).

    python benchmarks/report_scale.py                      # 400 classes x 20,000 videos
    python benchmarks/report_scale.py --classes 700 --videos 35000 --loads 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from chromium import Chromium  # noqa: E402
from fake_eval import fake_evaluation  # noqa: E402

from aim_video.report import build_eval_report  # noqa: E402

CLICK = ("(() => {{ const t = performance.now(); document.querySelector({!r}).click();"
         " return performance.now() - t; }})()")


def machine() -> str:
    """CPU model and core count."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").open()
                  if line.startswith("model name")), platform.processor() or "?")
    return f"{platform.machine()} {model}, {len(os.sched_getaffinity(0))} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--loads", type=int, default=5, help="page loads; the median is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "eval_val"
        fake_evaluation(folder, args.classes, args.videos, accuracy=0.75, unreadable=20,
                        thumbs=False)
        start = time.perf_counter()
        page = build_eval_report(folder)
        build_s = time.perf_counter() - start
        loads, paints, listing, sorting = [], [], [], []
        with Chromium() as browser:
            for _ in range(args.loads):
                browser.errors.clear()
                loads.append(float(browser.open(page.as_uri())))
                paints.append(browser.wait_for(
                    "performance.getEntriesByName('first-contentful-paint')[0]?.startTime"))
                listing.append(browser.evaluate(CLICK.format("#confusions tbody tr")))
                sorting.append(browser.evaluate(CLICK.format("#per-class th[data-col='1']")))
                shown = browser.evaluate("document.querySelectorAll('#videos .video').length")
            errors = list(browser.errors)
        print(json.dumps({
            "machine": machine(),
            "classes": args.classes, "videos": args.videos,
            "html_mib": round(page.stat().st_size / 2**20, 2), "build_s": round(build_s, 2),
            "script_done_ms": round(statistics.median(loads)),
            "first_paint_ms": round(statistics.median(paints)),
            "loads_ms": [round(x) for x in paints],
            "list_confusion_ms": round(statistics.median(listing), 1),
            "videos_listed": shown, "sort_400_rows_ms": round(statistics.median(sorting), 1),
            "console_errors": errors,
        }))


if __name__ == "__main__":
    main()
