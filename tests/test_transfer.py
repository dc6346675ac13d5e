"""train.init_from: a fresh run starts from another run's (or a released AIM model's) adapters.

One tiny source run (1 epoch of 4 steps on the synthetic set, a width-64 backbone) is trained
per module; every test starts a new model or run from its best.pt.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_engine_support import tiny_config, write_backbone

from aim_video.engine import checkpoint as ckpt
from aim_video.engine.distributed import DistEnv
from aim_video.engine.evaluate import eval_dataset, run_model
from aim_video.engine.train import Trainer, train
from aim_video.engine.transfer import transfer_weights
from aim_video.weights import CheckpointError, backbone_fingerprint, resize_temporal_embedding

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"train__plots": False, "eval__splits": [], "train__tensorboard": False}


@pytest.fixture(scope="module")
def source(synthetic, backbone, tmp_path_factory):
    """best.pt of a tiny trained run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("source")
        result = train(tiny_config(synthetic, out, backbone, optim__epochs=1, **FAST),
                       progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.best_checkpoint is not None
    return result.best_checkpoint


def _model(synthetic, backbone, tmp_path, classes: int = 10, **extra):
    """A new run's model: built from the tiny config (seed 1) with its backbone loaded."""
    cfg = tiny_config(synthetic, tmp_path / "new", backbone, train__seed=1, **extra)
    model = ckpt.model_from_config(cfg, classes)
    ckpt.load_backbone(model, cfg.model, training=True)
    return model


def _probabilities(model, cfg) -> np.ndarray:
    """Every class's probability for every val video, (videos, classes)."""
    data = eval_dataset(cfg.data, "val")
    classes = model.head.weight.shape[0]
    results = run_model(model.eval(), data, list(range(len(data))), cfg, None, top_k=classes)
    probs = np.zeros((len(results), classes))
    for row, video in enumerate(results):
        probs[row, video.top] = video.probs
    return probs


def test_a_run_initialised_from_another_starts_at_its_accuracy(synthetic, backbone, source,
                                                               tmp_path):
    state = ckpt.read_training_checkpoint(source)
    source_cfg = ckpt.checkpoint_config(state, source)
    expected = _probabilities(ckpt.model_from_checkpoint(state, source, source_cfg), source_cfg)

    # Another seed: before the transfer its adapters and head are its own.
    cfg = tiny_config(synthetic, tmp_path / "new", backbone, train__seed=1, **FAST)
    trainer = Trainer(cfg, DistEnv(rank=0, world_size=1, local_rank=0,
                                   device=torch.device("cpu")), progress=False)
    assert np.abs(_probabilities(trainer.model, cfg) - expected).max() > 1e-3
    report = trainer.init_from(source)
    assert report.head.startswith("kept (the same 10 classes")
    assert report.new == [] and report.loaded == sorted(state["model"])

    first = trainer.validate()  # the new run's first evaluation, before any step
    assert first.top1 == state["best_top1"]
    # The same weights (copied bit for bit), the same backbone, the same decoded clips on one
    # thread: the probabilities can differ only by float32 rounding, should a kernel sum in
    # another order; 1e-6 is ~10 ulps of a probability near 1 (measured here: identical).
    np.testing.assert_allclose(_probabilities(trainer.model, cfg), expected, rtol=0, atol=1e-6)


def test_the_cli_key_is_saved_and_a_resumed_run_ignores_it(synthetic, backbone, source,
                                                           tmp_path, caplog):
    cfg = tiny_config(synthetic, tmp_path / "run", backbone, train__init_from=source,
                      train__max_steps=0, **FAST)
    with caplog.at_level(logging.INFO, logger="aim_video"):
        first = train(cfg, progress=False)
    assert first.global_step == 0
    assert f"init_from: {source}" in (tmp_path / "run" / "config.yaml").read_text()
    assert "init_from head: kept (the same 10 classes in the same order)" in caplog.text
    saved, trained = ckpt.read_training_checkpoint(first.last_checkpoint)["model"], \
        ckpt.read_training_checkpoint(source)["model"]
    for name, tensor in trained.items():
        assert torch.equal(saved[name], tensor), name

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aim_video"):
        train(cfg, resume="auto", progress=False)
    assert "train.init_from" in caplog.text and "is ignored: resuming from" in caplog.text
    assert "init_from head" not in caplog.text


def test_a_missing_source_is_named_before_any_work(synthetic, backbone, tmp_path):
    cfg = tiny_config(synthetic, tmp_path / "run", backbone,
                      train__init_from=tmp_path / "nowhere.pt", **FAST)
    with pytest.raises(CheckpointError, match="nowhere.pt: no such checkpoint file "
                                              "\\(train.init_from\\)"):
        train(cfg, progress=False)


def test_the_same_classes_reordered_permute_the_head(synthetic, backbone, source, tmp_path):
    trained = ckpt.read_training_checkpoint(source)
    names = trained["class_names"]
    reordered = names[3:] + names[:3]
    model = _model(synthetic, backbone, tmp_path)
    report = transfer_weights(model, source, reordered)
    assert report.head.startswith("kept, rows reordered")
    rows = [names.index(name) for name in reordered]
    assert torch.equal(model.head.weight, trained["model"]["head.weight"][rows])
    assert torch.equal(model.head.bias, trained["model"]["head.bias"][rows])


@pytest.mark.parametrize("classes", [10, 4])  # the same count renamed, and another count
def test_other_classes_reinitialise_the_head_and_say_so(synthetic, backbone, source, tmp_path,
                                                        classes):
    trained = ckpt.read_training_checkpoint(source)
    names = [f"other_{i}" for i in range(classes)]
    model = _model(synthetic, backbone, tmp_path, classes)
    head = model.head.weight.detach().clone()
    report = transfer_weights(model, source, names)
    assert report.head.startswith(f"re-initialised: the classes differ by name (10 in the "
                                  f"source, {classes} here; only in the source: ")
    assert "other_0" in report.head and "init_from head: re-initialised" in report.lines()[1]
    assert report.new == ["head.bias", "head.weight"]
    assert torch.equal(model.head.weight, head)  # left as the new run initialised it
    name = "transformer.resblocks.1.S_Adapter.D_fc1.weight"
    assert torch.equal(model.state_dict()[name], trained["model"][name])


def test_another_frame_count_interpolates_the_temporal_embedding(synthetic, backbone, source,
                                                                  tmp_path):
    trained = ckpt.read_training_checkpoint(source)["model"]["temporal_embedding"]  # (1, 4, 64)
    model = _model(synthetic, backbone, tmp_path, data__num_frames=12)
    report = transfer_weights(model, source, ckpt.read_training_checkpoint(source)["class_names"])
    assert "temporal_embedding 4 -> 12 frames (linear)" in report.lines()[0]
    te = model.temporal_embedding.detach()
    assert te.shape == (1, 12, 64)
    torch.testing.assert_close(te, resize_temporal_embedding(trained, 12), rtol=0, atol=0)
    # Stretched 3x over the same span (frames as equal cells), new frame 3i+1 sits at the
    # centre of old frame i: its weight is 1, up to the float32 rounding of the position
    # (4/12 is not exact), which leaves a few ulps (~1e-7) of the neighbour's value.
    torch.testing.assert_close(te[:, 1::3], trained, rtol=0,
                               atol=1e-6 * float(trained.abs().max()))
    assert not torch.allclose(te[:, 0::3], trained)  # and the others are interpolated
    assert model(torch.randn(1, 3, 12, 32, 32)).shape == (1, 10)


def test_a_different_backbone_is_refused_naming_both_fingerprints(synthetic, source, tmp_path):
    other = write_backbone(tmp_path / "other_clip.pt", seed=7)
    model = _model(synthetic, other, tmp_path)
    with pytest.raises(CheckpointError, match="backbone mismatch") as err:
        transfer_weights(model, source, ckpt.read_training_checkpoint(source)["class_names"])
    assert ckpt.read_training_checkpoint(source)["backbone_fingerprint"] in str(err.value)
    assert backbone_fingerprint(model) in str(err.value)


@pytest.mark.parametrize("key", ["transformer.resblocks.0.S_Adapter.D_fc9.weight",
                                 "bogus.weight"])
def test_a_key_the_model_has_no_place_for_is_refused_by_name(synthetic, backbone, source,
                                                             tmp_path, key):
    state = ckpt.read_training_checkpoint(source)
    state["model"][key] = torch.zeros(3)
    path = ckpt.save_checkpoint(state, tmp_path / "odd.pt")
    model = _model(synthetic, backbone, tmp_path)
    with pytest.raises(CheckpointError, match=f"not in this model \\(1\\): {key}$"):
        transfer_weights(model, path, state["class_names"])


def test_a_source_without_some_blocks_adapters_is_refused(synthetic, backbone, source, tmp_path):
    state = ckpt.read_training_checkpoint(source)
    gone = [k for k in state["model"] if k.startswith("transformer.resblocks.1.MLP_Adapter.")]
    for key in gone:
        del state["model"][key]
    path = ckpt.save_checkpoint(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing from the source \\(4\\)") as err:
        transfer_weights(_model(synthetic, backbone, tmp_path), path, state["class_names"])
    assert all(key in str(err.value) for key in gone)


def _released(source, tmp_path, **meta):
    """The source's whole model in the released MMAction2 layout, renamed by hand."""
    state = ckpt.read_training_checkpoint(source)
    model = ckpt.model_from_checkpoint(state, source, ckpt.checkpoint_config(state, source))
    weights = {("cls_head.fc_cls." + k[len("head."):] if k.startswith("head.")
                else "backbone." + k): v for k, v in model.state_dict().items()}
    path = tmp_path / "aim_release.pth"
    torch.save({"state_dict": weights, "meta": meta}, path)
    return path, model


def test_a_released_aim_checkpoint_loads(synthetic, backbone, source, tmp_path):
    # Released files keep numpy objects in `meta`: only a trusted load reads them.
    path, released = _released(source, tmp_path, seed=np.int64(0))
    model = _model(synthetic, backbone, tmp_path, data__num_frames=8)
    with pytest.raises(CheckpointError, match="trust"):
        transfer_weights(model, path, [f"c{i}" for i in range(10)])
    report = transfer_weights(model, path, [f"c{i}" for i in range(10)], trust=True)
    assert report.kind == "aim checkpoint"
    assert "the fingerprint of the file's" in report.lines()[0]
    assert report.head.startswith("re-initialised for 10 classes") and "no class names" in \
        report.head
    assert report.new == ["head.bias", "head.weight"]
    expected = released.state_dict()
    for name in report.loaded:
        if name == "temporal_embedding":  # 4 -> 8 frames
            assert torch.equal(model.temporal_embedding,
                               resize_temporal_embedding(expected[name], 8))
        else:
            assert torch.equal(model.state_dict()[name], expected[name]), name


def test_a_released_checkpoint_of_another_backbone_is_refused(synthetic, backbone, source,
                                                              tmp_path):
    path, _ = _released(source, tmp_path)
    state = torch.load(path, weights_only=True)
    state["state_dict"]["backbone.transformer.resblocks.1.mlp.c_proj.bias"][0] += 1e-3
    torch.save(state, path)
    model = _model(synthetic, backbone, tmp_path)
    with pytest.raises(CheckpointError, match="backbone mismatch") as err:
        transfer_weights(model, path, [f"c{i}" for i in range(10)])
    assert backbone_fingerprint(model) in str(err.value)
    assert "the fingerprint of the file's" in str(err.value)
