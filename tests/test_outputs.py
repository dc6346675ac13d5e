"""`aim_video.outputs`: resumable outputs prove they are ours before a byte changes, retry what
failed, and keep features on disk (memory maps, no rewrite for nothing, whole videos only)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from aim_video.files import OutputError, read_own_lines
from aim_video.outputs import FeatureStore, JsonlResults


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


USERS_FILES = {
    "json without a newline": b'{"path": "mine.mp4", "ok": true, "note": "my own file"}',
    "json lines": b'{"path": "a.mp4", "ok": true}\n{"path": "b.mp4", "ok": tr',
    "binary": bytes(range(256)) * 4 + b"\n\x00\xff",
    "old-format results": b'{"path": "a.mp4", "ok": true, "top": []}\n',
    "another output of ours": b'{"aim-video": "training log", "format": 1}\n{"step": 1}\n',
}


@pytest.mark.parametrize("content", USERS_FILES.values(), ids=USERS_FILES.keys())
def test_a_users_file_is_refused_and_left_byte_for_byte(tmp_path, content):
    path = tmp_path / "mine.json"
    path.write_bytes(content)
    before = _sha(path)
    with pytest.raises(OutputError, match=r"mine\.json: not aim-video predict results .*"
                                          r"left as it is: give another --out") as error:
        JsonlResults(path)
    assert "\n" not in str(error.value)
    assert _sha(path) == before


def test_a_folder_or_a_special_file_is_one_line(tmp_path):
    with pytest.raises(OutputError, match=r"is a folder; --out names a file"):
        JsonlResults(tmp_path)
    with pytest.raises(OutputError, match="is not a regular file"):
        JsonlResults("/dev/null")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(OutputError, match="is not a folder"):
        FeatureStore(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


def test_a_torn_tail_of_our_own_file_is_cut(tmp_path):
    path = tmp_path / "results.jsonl"
    with JsonlResults(path) as results:
        results.append([{"path": "a.mp4", "ok": True, "top": []}])
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"path": "b.mp4", "o')
    assert list(JsonlResults(path).records) == ["a.mp4"]
    assert path.read_bytes() == whole


def test_a_failed_input_is_retried_and_its_record_replaced(tmp_path):
    path = tmp_path / "results.jsonl"
    with JsonlResults(path) as results:
        results.append([{"path": "a", "ok": True}, {"path": "b", "ok": False, "error": "x"},
                        {"path": "c", "ok": True}])
    results = JsonlResults(path)
    assert set(results.done) == {"a", "c"} and set(results.records) == {"a", "b", "c"}
    results.append([{"path": "b", "ok": True}])
    # Killed before close: the later line holds when the file is read again.
    assert JsonlResults(path).records["b"] == {"path": "b", "ok": True}
    results.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"aim-video": "predict results", "format": 1}
    assert [json.loads(line) for line in lines[1:]] == [
        {"path": "a", "ok": True}, {"path": "b", "ok": True}, {"path": "c", "ok": True}]


NAMES = ["plain.mp4", "cr\r.mp4", "lf\n.mp4", "crlf\r\n.mp4", "ls\u2028ps\u2029.mp4",
         'quote".mp4', "comma,.mp4", '"both, ".mp4', "tab\t\x0b\x0c\x1c.mp4"]


def test_any_name_comes_back_as_it_was_written(tmp_path):
    path = tmp_path / "results.jsonl"
    with JsonlResults(path) as results:
        results.append({"path": name, "ok": True} for name in NAMES)
    assert list(JsonlResults(path).records) == NAMES
    store = FeatureStore(tmp_path / "features")
    for i, name in enumerate(NAMES):
        store.append(name, np.full(4, i, np.float32))
    store.finalise()
    reopened = FeatureStore(tmp_path / "features")
    assert list(reopened.groups) == NAMES and reopened.done == set(NAMES)
    with open(tmp_path / "features" / "index.csv", newline="", encoding="utf-8") as f:
        assert [e["path"] for e in csv.DictReader(f)] == NAMES  # what any CSV reader gets


def _store_with(folder: Path, videos: dict[str, int], dim: int = 3) -> FeatureStore:
    store = FeatureStore(folder)
    for name, rows in videos.items():
        features = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) + len(name)
        store.append(name, features, [(float(k), k + 1.0) for k in range(rows)])
    store.flush()
    return store


def test_a_video_half_written_by_a_kill_is_not_done(tmp_path):
    folder = tmp_path / "features"
    _store_with(folder, {"a": 2}).finalise()
    # A kill in the middle of video b's windows: 2 of its 3 rows and index lines are in.
    killed = _store_with(folder, {"b": 3})
    index = (folder / "index.csv").read_bytes()
    lines = index.split(b"\r\n")
    (folder / "index.csv").write_bytes(b"\r\n".join(lines[:-2]) + b"\r\n")
    assert lines[-2].startswith(b'"4","b"')
    killed._raw.close()
    with open(folder / "features.bin", "r+b") as f:
        f.truncate(2 * 3 * 4)
    store = FeatureStore(folder)
    assert store.done == {"a"} and store.rows == 2
    assert (folder / "index.csv").read_bytes() == b"\r\n".join(lines[:3]) + b"\r\n"
    assert (folder / "features.bin").stat().st_size == 0
    store.append("b", np.ones((3, 3), np.float32), [(0.0, 1.0)] * 3)
    store.finalise()
    features = np.load(folder / "features.npy")
    assert features.shape == (5, 3) and (features[2:] == 1).all()
    assert [e["row"] for e in csv.DictReader(open(folder / "index.csv", newline=""))] == [
        "0", "1", "2", "3", "4"]


def test_features_are_not_rewritten_when_nothing_was_added(tmp_path, monkeypatch):
    folder = tmp_path / "features"
    _store_with(folder, {"a": 2, "b": 1}).finalise()
    before = (folder / "features.npy").stat()
    read_whole = []
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: read_whole.append(a))
    store = FeatureStore(folder)
    assert store.done == {"a", "b"}
    store.finalise()
    after = (folder / "features.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not (folder / "features.bin").exists()
    # Rows added to a finished folder: old rows through a memory map, then the new ones.
    store = _store_with(folder, {"c": 2})
    assert store.stored == 3 and (folder / "features.bin").stat().st_size == 2 * 3 * 4
    store.finalise()
    features = np.load(folder / "features.npy", mmap_mode="r")
    assert isinstance(features, np.memmap) and features.shape == (5, 3)
    np.testing.assert_array_equal(features[:2], np.arange(6).reshape(2, 3) + 1)
    np.testing.assert_array_equal(features[3:], np.arange(6).reshape(2, 3) + 1)
    assert not read_whole


def test_an_unreadable_video_is_retried_and_its_line_replaced(tmp_path):
    folder = tmp_path / "features"
    store = _store_with(folder, {"a": 1})
    store.append("b", None, error="truncated")
    store.finalise()
    store = FeatureStore(folder)
    assert store.done == {"a"} and store.failed == {"b"}
    store.append("b", np.ones((1, 3), np.float32))
    store.finalise()
    index = list(csv.DictReader(open(folder / "index.csv", newline="")))
    assert [(e["row"], e["path"], e["ok"]) for e in index] == [("0", "a", "1"), ("1", "b", "1")]
    assert FeatureStore(folder).done == {"a", "b"}


def test_a_features_folder_that_is_not_ours_is_refused_untouched(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "index.csv").write_text("name,label\nx,1\n")
    before = _sha(folder / "index.csv")
    with pytest.raises(OutputError, match=r"index\.csv: not written by aim-video extract"):
        FeatureStore(folder)
    assert _sha(folder / "index.csv") == before and sorted(folder.iterdir()) == [
        folder / "index.csv"]
    (folder / "features.json").write_text('{"dim": 3, "dtype": "float32"')  # damaged
    with pytest.raises(OutputError, match=r"features\.json: damaged \("):
        FeatureStore(folder)
    (folder / "features.json").write_text('{"dim": 3, "dtype": "float32"}')  # an old format
    with pytest.raises(OutputError, match=r"features\.json: not aim-video's extract features"):
        FeatureStore(folder)
    assert _sha(folder / "index.csv") == before


def test_an_empty_file_holds_nothing_to_lose(tmp_path):
    path = tmp_path / "results.jsonl"
    path.touch()
    JsonlResults(path).close()
    assert json.loads(path.read_text()) == {"aim-video": "predict results", "format": 1}
    assert read_own_lines(path, "predict results", option="--out").lines == []


def test_the_training_log_proves_it_is_ours_before_its_repair(synthetic, backbone, tmp_path,
                                                              one_thread):
    from test_engine_support import tiny_config

    from aim_video.engine.train import train

    fast = {"train__plots": False, "eval__splits": [], "train__max_steps": 1}
    # A folder that is not a run's: its metrics.jsonl is someone else's, left as it was.
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.jsonl").write_bytes(b'{"my": "numbers"}')
    with pytest.raises(OutputError, match=r"metrics\.jsonl: not aim-video training log"):
        train(tiny_config(synthetic, out, backbone, **fast), progress=False)
    assert (out / "metrics.jsonl").read_bytes() == b'{"my": "numbers"}'
    # A run whose log an older version wrote without the header: its last.pt proves the folder
    # is the run's own, so the log is continued (a torn line cut) and gets the header.
    run = tmp_path / "run"
    train(tiny_config(synthetic, run, backbone, **fast), progress=False)
    header, *records = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(header) == {"aim-video": "training log", "format": 1, "kind": "header",
                                  "step": 0}
    assert [json.loads(r)["step"] for r in records] == [1]
    (run / "metrics.jsonl").write_text("\n".join(records) + '\n{"kind": "st')
    train(tiny_config(synthetic, run, backbone, **{**fast, "train__max_steps": 2}),
          resume="auto", progress=False)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == header and lines[1] == records[0]
    assert [json.loads(r)["step"] for r in lines[1:] if json.loads(r)["kind"] == "step"] == [1, 2]
