"""Run configs: presets, overrides, validation, round trips."""

from __future__ import annotations

import os

import pytest
import torch

from aim_video.cli import main
from aim_video.engine.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    preset_names,
    save_config,
    with_absolute_paths,
    with_views,
)
from aim_video.engine.distributed import resolve_device
from aim_video.model import AIMViT
from aim_video.model.vit import Recompute

PAPER_PRESETS = [
    f"{data}_{arch}_{frames}f"
    for data, frames_list in (("k400", (8, 16, 32)), ("ssv2", (8, 16, 32)),
                              ("k700", (32,)), ("diving48", (32,)))
    for arch in ("vitb16", "vitl14")
    for frames in frames_list
]


def test_every_paper_recipe_has_a_preset():
    assert sorted(PAPER_PRESETS + ["synthetic_cpu"]) == preset_names()


@pytest.mark.parametrize("name", preset_names())
def test_presets_load_and_build_on_the_meta_device(name):
    cfg = load_config(name)
    with torch.device("meta"):
        model = AIMViT(cfg.aim_config(num_classes=10))
    assert model.cfg.num_frames == cfg.data.num_frames
    assert cfg.model.pretrained is None and not cfg.model.allow_random_backbone


def test_k400_vitb16_8f_has_the_paper_parameter_counts():
    cfg = load_config("k400_vitb16_8f")
    with torch.device("meta"):
        counts = AIMViT(cfg.aim_config()).parameter_counts()
    assert (counts["total"], counts["trainable"]) == (96_764_560, 10_966_672)
    assert (cfg.data.num_frames, cfg.data.frame_interval, cfg.data.sampling) == (8, 16, "dense")
    assert (cfg.data.test_clips, cfg.data.test_crops, cfg.optim.batch_size) == (3, 1, 8)
    assert cfg.optim.backbone_lr_mult == 1.0 and cfg.data.color_jitter == 0.0


def test_recipe_details_that_the_reference_configs_got_wrong_or_vary():
    ssv2_large = load_config("ssv2_vitl14_16f")
    assert ssv2_large.model.temporal_in and ssv2_large.model.arch == "ViT-L/14"
    assert ssv2_large.model.scale == 1.0 and ssv2_large.data.flip == 0.0
    assert (ssv2_large.data.randaugment_n, ssv2_large.data.randaugment_m) == (4, 7)
    assert ssv2_large.data.random_erasing == 0.25 and ssv2_large.optim.label_smoothing == 0.1
    assert (ssv2_large.data.test_clips, ssv2_large.data.test_crops) == (1, 3)
    assert ssv2_large.optim.epochs == 50 and ssv2_large.model.num_classes == 174
    k700 = load_config("k700_vitl14_32f")
    assert (k700.data.num_frames, k700.data.frame_interval) == (32, 4)
    assert (k700.data.test_clips, k700.data.test_crops, k700.model.num_classes) == (3, 3, 700)
    assert k700.optim.backbone_lr_mult == 0.1 and k700.data.color_jitter == 0.5
    diving = load_config("diving48_vitb16_32f")
    assert (diving.data.sampling, diving.data.num_frames) == ("uniform", 32)
    assert (diving.data.test_clips, diving.data.test_crops, diving.optim.epochs) == (1, 1, 50)


def test_overrides_are_parsed_as_yaml_and_typed():
    cfg = load_config("k400_vitb16_8f", ["optim.lr=3e-5", "optim.grad_clip=1", "data.flip=0",
                                         "optim.betas=[0.9, 0.98]", "model.pretrained=a b.pt"])
    assert cfg.optim.lr == 3e-5 and isinstance(cfg.optim.lr, float)  # YAML reads 3e-5 as text
    assert cfg.optim.grad_clip == 1.0 and cfg.data.flip == 0.0
    assert cfg.optim.betas == (0.9, 0.98)
    assert cfg.model.pretrained == "a b.pt"
    for value, expected in (("true", True), ("mlp", "mlp"), ("attention_mlp", "attention_mlp")):
        policy = load_config("k400_vitb16_8f", [f"train.grad_checkpointing={value}"])
        assert policy.train.grad_checkpointing == expected
        assert Recompute.of(policy.train.grad_checkpointing).value in ("blocks", value)
    with pytest.raises(ConfigError, match=r"train\.grad_checkpointing: expected true or false, "
                       r"got 'mpl'; or 'mpl' is not one of 'nothing', 'mlp', 'attention_mlp'"):
        load_config("k400_vitb16_8f", ["train.grad_checkpointing=mpl"])


def test_unknown_key_names_it_and_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key optim\.learning_rate; valid keys of "
                                          r"optim: lr, betas, weight_decay"):
        load_config("k400_vitb16_8f", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="unknown section 'optimizer'"):
        load_config("k400_vitb16_8f", ["optimizer.lr=1"])
    with pytest.raises(ConfigError, match=r"optim\.epochs: expected an integer, got 'ten'"):
        load_config("k400_vitb16_8f", ["optim.epochs=ten"])
    with pytest.raises(ConfigError, match="not of the form section.key=value"):
        load_config("k400_vitb16_8f", ["lr=1"])
    with pytest.raises(ConfigError, match="no config file or preset named 'k401'; presets: "):
        load_config("k401")


def test_mismatched_image_size_is_caught_before_anything_runs():
    with pytest.raises(ConfigError, match="model image size 224 .* data.input_size 112"):
        load_config("k400_vitb16_8f", ["data.input_size=112", "data.short_side=128"])


def test_yaml_file_with_a_base_and_a_saved_config_round_trip(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: ssv2_vitb16_8f\noptim:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="a base preset cannot have bases itself"):
        load_config(path)
    path.write_text("base: _ssv2\noptim:\n  epochs: 3\ndata:\n  num_frames: 4\n")
    cfg = load_config(path, ["train.seed=7"])
    assert (cfg.optim.epochs, cfg.data.num_frames, cfg.train.seed) == (3, 4, 7)
    assert cfg.optim.label_smoothing == 0.1  # from the base
    saved = tmp_path / "config.yaml"
    save_config(cfg, saved)
    assert load_config(saved) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_with_views_changes_only_the_test_views():
    cfg = load_config("k400_vitb16_8f")
    changed = with_views(cfg, "1x3")
    assert (changed.data.test_clips, changed.data.test_crops) == (1, 3)
    assert (cfg.data.test_clips, cfg.data.test_crops) == (3, 1)
    with pytest.raises(ConfigError, match="not of the form CLIPSxCROPS"):
        with_views(cfg, "3by1")


@pytest.mark.parametrize("override, message", [
    ("train.device=tpu", "train.device: 'tpu' is not a supported device; accepted: auto, cpu, "
                         "cuda, cuda:N (N: a GPU index), mps"),
    ("optim.epochs=0", "optim.epochs must be >= 1, got 0"),
    ("optim.epochs=-2", "optim.epochs must be >= 1, got -2"),
])
def test_a_device_or_epoch_count_that_cannot_run_is_refused_in_one_line(override, message,
                                                                         capsys):
    with pytest.raises(ConfigError) as err:
        load_config("synthetic_cpu", [override])
    assert str(err.value) == message
    assert main(["train", "--config", "synthetic_cpu", "--set", override]) == 2
    assert capsys.readouterr().err == f"aim-video train: error: {message}\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_device_this_machine_lacks_is_named():
    with pytest.raises(ConfigError, match=r"train\.device: 'cuda:1' needs CUDA GPU 1, but torch "
                                          r"sees 0 CUDA GPU\(s\) here; use auto or cpu"):
        resolve_device("cuda:1", key="train.device")


def test_a_run_stores_its_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("synthetic_cpu", ["data.train=lists/train.txt", "data.val=val.txt",
                                        "model.pretrained=~/clip.pt", "train.out_dir=runs/a"])
    absolute = with_absolute_paths(cfg)
    assert absolute.data.train == str(tmp_path / "lists" / "train.txt")
    assert absolute.data.val == str(tmp_path / "val.txt") and absolute.data.test is None
    # Relative video paths were read from the working folder: it becomes the root.
    assert absolute.data.root == str(tmp_path)
    assert absolute.model.pretrained == os.path.expanduser("~/clip.pt")
    assert absolute.train.out_dir == str(tmp_path / "runs" / "a")
    assert with_absolute_paths(absolute) == absolute


def test_the_saved_config_is_written_atomically(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old")
    save_config(load_config("synthetic_cpu"), path)
    assert load_config(path) == load_config("synthetic_cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
