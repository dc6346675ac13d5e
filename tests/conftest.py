"""Settings and fixtures shared by every test file.

The engine's tiny runs (see `test_engine_support.tiny_config`) read two session fixtures, made
on first use: `synthetic`, a tiny synthetic data set (8 train + 4 val H.264 videos of 32 px),
and `backbone`, a tiny CLIP-layout image model saved as an OpenAI state dict (what
`--pretrained` reads). Modules that train or evaluate such runs opt in to `one_thread` with
`pytestmark = pytest.mark.usefixtures("one_thread")`. The pages' tests (report, live page)
share `browser`, headless Chromium per module.
"""

import os
from pathlib import Path

import pytest
import torch

# Tests never reach a model hub; transformers is only a reference implementation here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and far faster than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    from aim_video.data.synthetic import make_synthetic

    root = tmp_path_factory.getbasetemp() / "synthetic"
    make_synthetic(root, num_train=8, num_val=4, frames=8, size=32, seed=0, workers=1,
                   progress=False)
    return root


@pytest.fixture(scope="session")
def backbone(tmp_path_factory) -> Path:
    from test_engine_support import write_backbone

    return write_backbone(tmp_path_factory.getbasetemp() / "tiny_clip.pt", seed=123)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (tests/chromium.py) for the pages' tests, one per module; skipped,
    with the install hint, where Chromium is missing."""
    from chromium import INSTALL_HINT, Chromium, find_chromium

    if find_chromium() is None:
        pytest.skip(INSTALL_HINT)
    with Chromium() as page:
        yield page
