"""The evaluation report: the page's data, thumbnails, the CLI, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from chromium import Chromium
from fake_eval import fake_evaluation
from PIL import Image

from aim_video.cli import main
from aim_video.data.dataset import DataConfig
from aim_video.data.transforms import CLIP_MEAN, CLIP_STD, normalize
from aim_video.report import MATRIX_MAX, THUMBS, ReportError, ThumbnailWriter, build_eval_report


def page_data(path: Path) -> dict:
    """The JSON blob a report page embeds."""
    text = path.read_text(encoding="utf-8")
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text,
                     re.S)
    return json.loads(blob.group(1))


def predictions(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """6 classes (a full confusion matrix), 80 videos, 3 unreadable, thumbnails."""
    folder = tmp_path_factory.mktemp("small") / "eval_val"
    fake_evaluation(folder, classes=6, videos=80)
    build_eval_report(folder)
    return folder


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """More classes than the page draws a matrix for: top confusions only."""
    folder = tmp_path_factory.mktemp("many") / "eval_val"
    fake_evaluation(folder, classes=MATRIX_MAX + 10, videos=400, accuracy=0.5, thumbs=False)
    build_eval_report(folder)
    return folder


# ---------------------------------------------------------------------------- without a browser
def test_page_embeds_the_evaluation(small):
    data = page_data(small / "report.html")
    metrics = json.loads((small / "metrics.json").read_text())
    assert data["kind"] == "eval"
    assert data["metrics"] == {k: v for k, v in metrics.items() if k != "bad_files"}
    assert data["classes"] == [f"class {c:03d}" for c in range(6)]
    rows = predictions(small)
    assert [v[0] for v in data["videos"]] == [r["index"] for r in rows]
    for video, row in zip(data["videos"], rows):
        index, label, top, probs, src, thumb, reason = video
        assert data["classes"][label] == row["label"]
        assert [data["classes"][c] for c in top] == [t["class"] for t in row["top"]]
        assert probs == pytest.approx([t["prob"] for t in row["top"]], abs=1e-4)
        # The <video> source is the original file, relative to the page.
        assert os.path.normpath(small / unquote(src)) == os.path.normpath(row["path"])
        assert thumb == int(row["ok"]) and reason == row["reason"]
    assert sum(not r["ok"] for r in rows) == metrics["num_bad"] == 3


def test_no_string_in_the_data_can_close_the_script(tmp_path):
    folder = tmp_path / "eval"
    fake_evaluation(folder, classes=3, videos=10, thumbs=False)
    csv = (folder / "per_class.csv").read_text().replace("class 001", "</script><b>x</b>")
    (folder / "per_class.csv").write_text(csv)
    jsonl = (folder / "predictions.jsonl").read_text().replace("class 001", "</script><b>x</b>")
    (folder / "predictions.jsonl").write_text(jsonl)
    page = build_eval_report(folder).read_text()
    assert page.count("</script>") == 2  # the data's and the code's own
    assert page_data(folder / "report.html")["classes"][1] == "</script><b>x</b>"


def test_thumbnails_are_the_first_view_unnormalised(tmp_path):
    t, size = 4, 32
    # Flat colours per frame, so JPEG keeps them to a few levels.
    colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200], [120, 120, 120]])
    clip = colours.view(t, 1, 1, 3).expand(t, size, size, 3).to(torch.uint8)  # (T, H, W, C)
    view0 = normalize(clip, CLIP_MEAN, CLIP_STD)  # (C, T, H, W)
    video = torch.stack([view0, torch.zeros_like(view0)])  # (V, C, T, H, W); view 1 is not shown
    batch = {"video": torch.stack([video, video]), "index": torch.tensor([7, 9]),
             "ok": torch.tensor([True, False])}
    ThumbnailWriter(tmp_path, height=16)(batch, DataConfig(normalize="clip"))
    thumbs = tmp_path / THUMBS
    assert sorted(p.name for p in thumbs.iterdir()) == ["7.jpg"]  # unreadable: no strip
    strip = np.asarray(Image.open(thumbs / "7.jpg").convert("RGB")).astype(int)
    assert strip.shape == (16, 4 * 16, 3)
    for frame, colour in enumerate(colours.tolist()):
        centre = strip[8, frame * 16 + 8]
        assert np.abs(centre - colour).max() <= 12, (frame, centre, colour)


def test_cli_rebuilds_the_report_and_names_a_folder_it_cannot_read(tmp_path, capsys):
    folder = tmp_path / "eval"
    fake_evaluation(folder, classes=3, videos=12, thumbs=False)
    assert main(["report", str(folder)]) == 0
    assert page_data(folder / "report.html")["kind"] == "eval"
    assert capsys.readouterr().out.strip() == str(folder / "report.html")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aim-video report: error: ") and "not an evaluation folder" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(ReportError):
        build_eval_report(tmp_path / "missing")


def test_an_evaluation_folder_makes_a_report_with_the_strips_of_what_the_model_saw(
        synthetic, backbone, tmp_path, one_thread):
    from test_engine_support import tiny_config

    from aim_video.engine.evaluate import evaluate_checkpoint
    from aim_video.engine.train import train

    cfg = tiny_config(synthetic, tmp_path / "run", backbone, train__max_steps=1,
                      train__plots=False, eval__splits=[])
    checkpoint = train(cfg, progress=False).last_checkpoint
    # The engine writes the results; the report observes the batches and draws the page.
    result = evaluate_checkpoint(checkpoint, out_dir=tmp_path / "eval",
                                 on_batch=ThumbnailWriter(tmp_path / "eval"))
    assert not (tmp_path / "eval" / "report.html").exists()
    data = page_data(build_eval_report(tmp_path / "eval"))
    assert data["metrics"]["checkpoint"] == str(checkpoint)
    assert data["metrics"]["top1"] == result.top1 and "model:" in data["config"]
    strips = sorted((tmp_path / "eval" / "thumbs").iterdir())
    assert len(strips) == result.num_videos - result.num_bad == len(data["videos"])
    size, frames = cfg.data.input_size, cfg.data.num_frames
    assert Image.open(strips[0]).size == (frames * min(64, size), min(64, size))
    assert all(v[5] == 1 for v in data["videos"])


# ---------------------------------------------------------------------------- in Chromium
def load(browser: Chromium, path: Path) -> None:
    browser.errors.clear()
    browser.open(path.resolve().as_uri())


def shown_videos(browser: Chromium, count: int) -> list[int]:
    """The indices of the listed videos, once `count` of them are listed."""
    browser.wait_for(f"document.querySelectorAll('#videos .video').length === {count}")
    return sorted(browser.evaluate(
        "[...document.querySelectorAll('#videos .video')].map(e => +e.dataset.index)"))


def pair_videos(folder: Path, true: str, predicted: str) -> list[int]:
    return sorted(r["index"] for r in predictions(folder)
                  if r["ok"] and r["label"] == true and r["top"][0]["class"] == predicted)


def test_page_shows_the_metrics_without_errors(browser, small):
    load(browser, small / "report.html")
    metrics = json.loads((small / "metrics.json").read_text())
    shown = browser.evaluate(
        "Object.fromEntries(['top1', 'top5', 'mean_class_accuracy', 'views', 'num_bad']"
        ".map(k => [k, document.getElementById(k).textContent]))")
    assert shown == {"top1": f"{metrics['top1']:.2f}%", "top5": f"{metrics['top5']:.2f}%",
                     "mean_class_accuracy": f"{metrics['mean_class_accuracy']:.2f}%",
                     "views": metrics["views"], "num_bad": str(metrics["num_bad"])}
    reasons = browser.evaluate(
        "[...document.querySelectorAll('#unreadable tr')].slice(1).map(r => r.lastChild.textContent)")
    assert reasons == ["cannot decode"] * 3
    assert browser.errors == []


def test_clicking_a_cell_lists_exactly_its_videos(browser, small):
    load(browser, small / "report.html")
    names = [f"class {c:03d}" for c in range(6)]
    pairs = {(t, p): pair_videos(small, names[t], names[p]) for t in range(6) for p in range(6)}
    confused = max((k for k in pairs if k[0] != k[1]), key=lambda k: len(pairs[k]))
    for t, p in (confused, (2, 2)):  # a confusion and a diagonal cell
        assert len(pairs[t, p]) >= 2
        browser.click(f'#matrix td[data-true="{t}"][data-pred="{p}"]')
        assert shown_videos(browser, len(pairs[t, p])) == pairs[t, p]
        cards = browser.evaluate("[...document.querySelectorAll('#videos .video')].map(e => "
                                 "[e.querySelector('.true').textContent,"
                                 " e.querySelector('.probs tr td').textContent,"
                                 " e.querySelectorAll('.probs tr').length,"
                                 " e.querySelector('video').getAttribute('src')])")
        for true, top1, probs, src in cards:
            assert (true, top1, probs) == (names[t], names[p], 5) and src.endswith(".mp4")
    assert browser.errors == []


def test_many_classes_list_top_confusions_that_open_their_videos(browser, many):
    load(browser, many / "report.html")
    assert browser.evaluate("document.getElementById('matrix')") is None
    t, p = browser.evaluate("(() => { const r = document.querySelector('#confusions tbody tr');"
                            "return [r.dataset.true, r.dataset.pred].map(Number); })()")
    expected = pair_videos(many, f"class {t:03d}", f"class {p:03d}")
    assert expected and len(expected) == max(
        len(pair_videos(many, f"class {a:03d}", f"class {b:03d}"))
        for a in range(MATRIX_MAX + 10) for b in (a + 1, a + 2))  # the largest confusion first
    browser.click("#confusions tbody tr")
    assert shown_videos(browser, len(expected)) == expected
    assert browser.errors == []


def test_per_class_table_sorts_worst_first_and_by_any_column(browser, small):
    load(browser, small / "report.html")
    import csv

    with open(small / "per_class.csv") as f:
        rows = list(csv.DictReader(f))

    def column(i: int) -> list[str]:
        return browser.evaluate(f"[...document.querySelectorAll('#per-class tbody tr')]"
                                f".map(r => r.children[{i}].textContent)")

    worst_first = sorted(rows, key=lambda r: (float(r["top1"]), int(r["class"])))
    assert column(0) == [r["name"] for r in worst_first]
    browser.click("#per-class th[data-col='1']")  # videos, ascending
    assert column(1) == sorted(column(1), key=int) and column(0) != []
    assert sorted(column(1), key=int) == sorted((r["videos"] for r in rows), key=int)
    browser.click("#per-class th[data-col='1']")  # again: descending
    assert column(1) == sorted(column(1), key=int, reverse=True)
    browser.click("#per-class tbody tr td span.link")  # a class: its videos
    first = column(0)[0]
    expected = sorted(r["index"] for r in predictions(small) if r["label"] == first)
    assert shown_videos(browser, len(expected)) == expected
    assert browser.errors == []


def test_ablation_page_opens_a_variants_report(browser, tmp_path):
    from fake_eval import fake_demo

    from aim_video.demo import write_ablation_page

    fake_demo(tmp_path)
    load(browser, write_ablation_page(tmp_path))
    assert browser.evaluate("document.querySelectorAll('#variants tbody tr').length") == 3
    browser.click("#variants tbody a")
    browser.wait_for("!!document.getElementById('top1')")
    assert browser.evaluate("location.pathname").endswith("/runs/quick/aim/eval_val/report.html")
    assert browser.errors == []


def test_timeline_page_lists_segments_and_windows(browser, tmp_path):
    from aim_video.predictor import Timeline
    from aim_video.timeline import write_timeline

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]], np.float32)
    starts = np.arange(5, dtype=np.float64)
    timeline = Timeline(str(tmp_path / "long video.mp4"), ["walk", "run"], starts, starts + 2,
                        probs, fps=25.0)
    write_timeline(timeline, tmp_path / "tl", threshold=0.5, plot=False)
    assert main(["report", str(tmp_path / "tl")]) == 0
    data = page_data(tmp_path / "tl" / "report.html")
    assert data["kind"] == "timeline" and data["video"] == "../long%20video.mp4"
    load(browser, tmp_path / "tl" / "report.html")
    rows = browser.evaluate("[...document.querySelectorAll('#segments tbody tr')]"
                            ".map(r => [r.children[0].textContent, +r.children[1].textContent])")
    assert rows == [["walk", 0.0], ["run", 2.0], ["walk", 4.0]]
    assert browser.evaluate("document.querySelectorAll('#windows tbody tr').length") == 5
    assert browser.errors == []
