"""Small real videos for the inference tests, written with PyAV (this module holds no tests).

`write_indexed_video` writes H.264 frames that carry their own index: frame i is one flat colour
whose red and green levels spell i in base 16 (levels 16 apart, far more than H.264 at CRF 0
and the YUV round trip move them), so a test can tell which frame a decoder gave it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from aim_video.engine.checkpoint import checkpoint_state, model_from_config, save_checkpoint
from aim_video.engine.config import config_to_dict, load_config

TICKS = 240  # time base 1/240 s: exact for 8 and 24 fps and for the VFR steps used


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (import this fixture into a test module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def frame_colour(index: int) -> tuple[int, int, int]:
    return (index % 16) * 16 + 8, (index // 16) * 16 + 8, 128


def frame_index(frame: np.ndarray) -> int:
    """The index an (H, W, 3) frame of `write_indexed_video` carries."""
    r, g = (float(frame[..., c].mean()) for c in (0, 1))
    return int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16))


def write_indexed_video(path: Path, num_frames: int, fps: int = 8, size: int = 32,
                        times: list[Fraction] | None = None, faststart: bool = False) -> Path:
    """H.264 frames 0..num_frames-1 at `times` (seconds; default i / fps)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "g": "12"}
        stream.codec_context.time_base = Fraction(1, TICKS)
        for i in range(num_frames):
            image = np.empty((size, size, 3), np.uint8)
            image[:] = frame_colour(i)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            t = times[i] if times is not None else Fraction(i, fps)
            frame.pts, frame.time_base = int(t * TICKS), Fraction(1, TICKS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_checkpoint(path: Path, *, classes: int = 3, sampling: str = "dense",
                     num_frames: int = 4, interval: int = 2, views: str = "1x1",
                     seed: int = 0, width: int = 64, layers: int = 2, heads: int = 2,
                     patch_size: int = 8, size: int = 32) -> Path:
    """A trained-looking checkpoint (random frozen backbone, random trainable weights); tiny
    by default."""
    clips, crops = views.split("x")
    cfg = load_config("synthetic_cpu", [
        f"model.width={width}", f"model.layers={layers}", f"model.heads={heads}",
        f"model.patch_size={patch_size}", f"model.image_size={size}",
        "model.allow_random_backbone=true", f"data.input_size={size}",
        f"data.short_side={size}", f"data.num_frames={num_frames}", f"data.sampling={sampling}",
        f"data.frame_interval={interval}", f"data.test_clips={clips}", f"data.test_crops={crops}",
        "data.num_workers=0", "eval.batch_size=2", f"train.seed={seed}",
    ])
    model = model_from_config(cfg, classes)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in model.trainable_state_dict().items():
            # Trained-looking: adapters and head far from their (partly zero) initialisation.
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    state = checkpoint_state(model, optimizer=None, scheduler=None, scaler=None,
                             progress={}, cfg_dict=config_to_dict(cfg),
                             class_names=[f"class_{c}" for c in range(classes)])
    return save_checkpoint(state, path)


def kill_when(args: list[str], out: Path, ready: Callable[[Path], bool]) -> None:
    """Runs `aim-video ARGS` in a child process and SIGKILLs it from outside (as a crash or an
    OOM kill would stop it) as soon as `ready(out)`; fails unless the kill stopped it."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; from aim_video.cli import "
                              "main; sys.exit(main(sys.argv[1:]))", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while child.poll() is None and not ready(out) and time.monotonic() < deadline:
            time.sleep(0.005)
        child.kill()
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, err.decode(errors="replace")
