"""`aim-video prepare`: prepared videos keep every frame, fidelity, labels and class names; bad
inputs are listed and skipped; reruns skip finished files and redo interrupted ones; short-GOP
files are read by seeking, not by decoding long spans; the data benchmark runs."""

from __future__ import annotations

import importlib.util
import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from aim_video.cli import main
from aim_video.data import decode as decode_module
from aim_video.data.annotations import Annotations, VideoRecord, load_annotations
from aim_video.data.decode import open_video
from aim_video.data.prepare import (
    EncodeSettings,
    PrepareError,
    prepare_dataset,
    prepare_video,
    prepared_size,
    target_paths,
)

CLASSES = ["abseiling", "juggling balls", "yoga"]
SHORT_SIDE = 32


def smooth_frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A moving colour gradient with a moving square: natural-ish content x264 keeps well."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = rng.uniform(60, 200, 3)
    frames = []
    for t in range(num_frames):
        base = 128 + 60 * np.sin((x + 2 * t) / 9.0) * np.cos((y - t) / 11.0)
        frame = np.repeat(base[..., None], 3, axis=2) * (0.6 + 0.4 * colour / 255)
        top, left = (3 * t) % (height - 12), (2 * t + 5) % (width - 12)
        frame[top : top + 12, left : left + 12] = colour
        frames.append(frame)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, rate: Fraction = Fraction(25)) -> None:
    """H.264 as cameras and downloads have it: x264 defaults (long GOP, B-frames)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast", "threads": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """Three good videos in class folders (wide, tall, NTSC rate) and a truncated one."""
    root = tmp_path_factory.mktemp("sources")
    for folder in ("a", "b"):
        (root / folder).mkdir()
    write_video(root / "a" / "wide.mp4", smooth_frames(30, 48, 64, 0))
    write_video(root / "a" / "tall.mkv", smooth_frames(21, 64, 48, 1), Fraction(30000, 1001))
    write_video(root / "b" / "long.mp4", smooth_frames(40, 40, 72, 2))
    whole = (root / "b" / "long.mp4").read_bytes()
    (root / "b" / "broken.mp4").write_bytes(whole[: len(whole) // 2])  # index (moov) lost
    lines = ["a/wide.mp4 0", "b/broken.mp4 2", "a/tall.mkv 1", "b/long.mp4 2"]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


# Exit status 1, "done, but some inputs could not be read": b/broken.mp4 is left out.
SOME_UNREADABLE = 1


def prepare_cli(sources: Path, out: Path, *extra: str) -> int:
    return main([
        "prepare", str(sources / "train.txt"), "--out", str(out), "--root", str(sources),
        "--class-names", str(sources / "classes.txt"), "--short-side", str(SHORT_SIDE),
        "--no-progress", *extra,
    ])


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    assert prepare_cli(sources, out, "--workers", "2", "--gop", "4") == SOME_UNREADABLE
    return out


def test_prepared_list_keeps_labels_and_class_names_and_drops_the_bad_input(sources, prepared):
    original = load_annotations(sources / "train.txt", root=sources,
                                class_names=sources / "classes.txt")
    ready = load_annotations(prepared / "train.txt", class_names=prepared / "classes.txt")
    assert ready.class_names == CLASSES == original.class_names
    good = [r for r in original.records if "broken" not in r.path]
    assert [r.label for r in ready.records] == [r.label for r in good] == [0, 1, 2]
    expected = [prepared / "a" / "wide.mp4", prepared / "a" / "tall.mp4",
                prepared / "b" / "long.mp4"]
    assert [r.path for r in ready.records] == [str(p) for p in expected]
    bad = json.loads((prepared / "bad_inputs.json").read_text())
    assert [entry["path"] for entry in bad] == [str(sources / "b" / "broken.mp4")]
    assert "not a readable video" in bad[0]["reason"]
    assert not (prepared / "b" / "broken.mp4").exists()


@pytest.mark.parametrize("name", ["a/wide", "a/tall", "b/long"])
def test_prepared_videos_keep_every_frame_at_35_db(sources, prepared, name):
    source = next(sources.glob(f"{name}.*"))
    with open_video(source) as original, open_video(prepared / f"{name}.mp4") as ready:
        assert ready.num_frames == original.num_frames
        assert ready.fps == pytest.approx(original.fps, rel=1e-9)  # 30000/1001 survives
        size = prepared_size(original.height, original.width, SHORT_SIDE)
        assert (ready.height, ready.width) == size and min(size) == SHORT_SIDE
        frames = range(original.num_frames)
        reference = original.read(frames, size=size)
        decoded = ready.read(frames)
    assert psnr(decoded, reference) >= 35.0
    # Frame by frame too: a shifted frame would be far off for moving content.
    assert min(psnr(d, r) for d, r in zip(decoded, reference, strict=True)) >= 30.0


def test_prepared_videos_have_short_gops_and_no_b_frames(prepared):
    with av.open(str(prepared / "b" / "long.mp4")) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        keyframes = [i for i, p in enumerate(sorted(packets, key=lambda p: p.pts))
                     if p.is_keyframe]
        assert keyframes == list(range(0, 40, 4))
        # Decode order is display order: no frame waits for a later one.
        assert [p.pts for p in packets] == sorted(p.pts for p in packets)


def test_short_gop_files_are_read_by_seeking(prepared, monkeypatch):
    decoded = []
    real = decode_module.PyAVReader._decode_forward

    def counting(self, wanted):
        for index, frame in real(self, wanted):
            decoded.append(index)
            yield index, frame

    monkeypatch.setattr(decode_module.PyAVReader, "_decode_forward", counting)
    with open_video(prepared / "b" / "long.mp4") as reader:
        reader.read([1, 13, 26, 37])
    # Each wanted frame costs the frames from its keyframe on: 0-1, 12-13, 24-26, 36-37.
    assert decoded == [0, 1, 12, 13, 24, 25, 26, 36, 37]


def test_rerun_skips_finished_videos_and_redoes_interrupted_ones(sources, tmp_path):
    out = tmp_path / "out"
    assert prepare_cli(sources, out, "--workers", "1") == SOME_UNREADABLE
    wide, tall = out / "a" / "wide.mp4", out / "a" / "tall.mp4"
    stamp = wide.stat().st_mtime_ns
    tall.unlink()  # interrupted: the renamed file never appeared, a partial one is left
    partial = out / "a" / ".tall.mp4.0123abcd.tmp"  # as aim_video.files.write_atomic names it
    partial.write_bytes(b"half an mp4")
    annotations = load_annotations(sources / "train.txt", root=sources,
                                   class_names=sources / "classes.txt")
    report = prepare_dataset(annotations, out, EncodeSettings(short_side=SHORT_SIDE),
                             workers=1, progress=False)
    assert (report.converted, report.reused, len(report.bad)) == (1, 2, 1)
    assert wide.stat().st_mtime_ns == stamp
    assert not partial.exists()
    with open_video(tall) as reader:
        assert reader.num_frames == 21


def test_a_folder_holds_one_set_of_settings(sources, tmp_path, capsys):
    out = tmp_path / "out"
    assert prepare_cli(sources, out, "--workers", "1") == SOME_UNREADABLE
    assert prepare_cli(sources, out, "--workers", "1", "--crf", "18") == 2
    assert "other settings (crf 20.0 -> 18.0)" in capsys.readouterr().err


def test_cli_reports_counts_and_bad_inputs(sources, prepared, capsys):
    assert prepare_cli(sources, prepared, "--workers", "1", "--gop", "4") == SOME_UNREADABLE
    out = capsys.readouterr().out
    assert "3 videos prepared (0 now, 3 earlier)" in out
    assert f"{sources / 'b' / 'broken.mp4'}: not a readable video" in out
    assert f"data.train={prepared / 'train.txt'}" in out


def test_targets_keep_folders_and_refuse_collisions(tmp_path):
    targets = target_paths(["/d/x/a.avi", "/d/y/b.mp4", "/d/y/frames_c"], tmp_path)
    assert targets == [tmp_path / "x" / "a.mp4", tmp_path / "y" / "b.mp4",
                       tmp_path / "y" / "frames_c.mp4"]
    with pytest.raises(PrepareError, match=r"/d/a.avi and /d/a.mkv would both be prepared"):
        target_paths(["/d/a.avi", "/d/a.mkv"], tmp_path)
    with pytest.raises(PrepareError, match="would overwrite it"):
        target_paths([str(tmp_path / "v.mp4"), str(tmp_path / "w.mp4")], tmp_path)


def test_frame_folders_are_prepared_too(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames_clip"
    folder.mkdir()
    frames = smooth_frames(6, 36, 48, 3)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"img_{i + 1:05d}.jpg", quality=95)
    target = tmp_path / "clip.mp4"
    assert prepare_video(folder, target, EncodeSettings(short_side=SHORT_SIDE)) == 6
    with open_video(folder) as original, open_video(target) as ready:
        assert ready.num_frames == 6
        reference = original.read(range(6), size=(ready.height, ready.width))
        assert psnr(ready.read(range(6)), reference) >= 35.0


def test_iter_frames_is_read_of_every_frame(sources):
    with open_video(sources / "a" / "tall.mkv") as reader:
        streamed = np.stack(list(reader.iter_frames(short_side=24)))
        assert np.array_equal(streamed, reader.read(range(reader.num_frames), short_side=24))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="short_side must be even"):
        EncodeSettings(short_side=255)
    with pytest.raises(ValueError, match="gop must be >= 1"):
        EncodeSettings(gop=0)
    with pytest.raises(ValueError, match="preset must be one of"):
        EncodeSettings(preset="quick")
    assert prepared_size(1080, 1920, 256) == (256, 456)  # 455.1 rounds to an even 456
    assert prepared_size(1920, 1080, 256) == (456, 256)


def test_prepare_dataset_needs_no_class_names_file(tmp_path, sources):
    records = [VideoRecord(str(sources / "a" / "wide.mp4"), 1)]
    report = prepare_dataset(Annotations(records, ["x", "y"]), tmp_path / "o",
                             EncodeSettings(short_side=SHORT_SIDE), workers=1, progress=False,
                             list_name="val.txt")
    assert report.annotation_file == tmp_path / "o" / "val.txt"
    assert report.class_names_file.read_text() == "x\ny\n"
    assert os.path.getsize(report.annotation_file) > 0 and report.converted == 1


def test_data_benchmark_runs_on_a_micro_config(tmp_path):
    path = Path(__file__).parents[1] / "benchmarks" / "data_throughput.py"
    spec = importlib.util.spec_from_file_location("data_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    records = bench.main([
        "--videos", "2", "--seconds", "1", "--height", "48", "--clips", "8", "--rounds", "1",
        "--workers", "1", "--prepared", "4:20", "--device-augment", "--samplings", "uniform8",
        "--cache", str(tmp_path),
    ])
    (fidelity,) = [r for r in records if "prepared" in r]
    assert fidelity["psnr_db_min"] >= 35.0 and fidelity["size_vs_original"] > 0
    loaders = {r["loader"]: r for r in records if "loader" in r}
    assert set(loaders) == {"ours", "ours+device", "prepared-g4-crf20",
                            "prepared-g4-crf20+device", "decord"}
    (share,) = [r for r in records if "device_share_on" in r]
    assert share["batch"] == 32 and share["clips_per_s"] > 0
    for name, record in loaders.items():
        assert record["clips_per_s"] > 0 and record["cpu_ms_per_clip"] > 0
        assert ("ratio_vs_decord" in record) == (name != "decord")


def test_ucf101_split_lists_are_renamed_and_read_back_as_lists(sources, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 a\n2 b\n")
    (splits / "trainlist01.txt").write_text("a/wide.mp4 1\nb/long.mp4 2\n")
    out = tmp_path / "out"
    assert main(["prepare", str(splits / "trainlist01.txt"), "--out", str(out), "--root",
                 str(sources), "--short-side", str(SHORT_SIDE), "--workers", "1",
                 "--no-progress"]) == 0
    # "trainlist01.txt" would be read as a UCF101 split again, with 1-based labels.
    ready = load_annotations(out / "trainlist01_list.txt", class_names=out / "classes.txt")
    assert [r.label for r in ready.records] == [0, 1] and ready.class_names == ["a", "b"]


def test_splits_in_one_folder_must_share_class_names(sources, tmp_path):
    records = [VideoRecord(str(sources / "a" / "wide.mp4"), 0)]
    settings = EncodeSettings(short_side=SHORT_SIDE)
    prepare_dataset(Annotations(records, ["x", "y"]), tmp_path, settings, workers=1,
                    progress=False)
    with pytest.raises(PrepareError, match=r"classes.txt holds other class names"):
        prepare_dataset(Annotations(records, ["y", "x"]), tmp_path, settings, workers=1,
                        progress=False, list_name="val.txt")
