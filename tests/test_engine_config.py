"""Run configs: presets, overrides, validation, round trips."""

from __future__ import annotations

import dataclasses
import os
import typing
from importlib import resources

import pytest
import torch

from aim_video.cli import main
from aim_video.engine.checkpoint import model_from_config
from aim_video.engine.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    preset_names,
    save_config,
    with_absolute_paths,
    with_views,
)
from aim_video.engine.distributed import resolve_device
from aim_video.model import AIMConfig, AIMViT, ViTConfig
from aim_video.model.config import Adaptation
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


def test_the_input_side_is_data_input_size_alone(tmp_path):
    cfg = load_config("k400_vitb16_8f", ["data.input_size=112", "data.short_side=128"])
    assert cfg.aim_config().vit.image_size == 112
    # Older configs and checkpoints set it twice as model.image_size: accepted when equal, and
    # no longer saved.
    assert load_config("k400_vitb16_8f", ["model.image_size=224"]) == load_config("k400_vitb16_8f")
    assert "image_size" not in config_to_dict(cfg)["model"]
    with pytest.raises(ConfigError, match=r"^model\.image_size 224 differs from data\.input_size "
                                          r"112: the model's input side is data\.input_size; set "
                                          r"that and drop model\.image_size$"):
        load_config("k400_vitb16_8f", ["data.input_size=112", "model.image_size=224"])
    with pytest.raises(ConfigError, match=r"^the backbone \(model\.arch ViT-B/16, data\.input_size "
                                          r"100\): image_size 100 is not a multiple of patch_size 16"):
        load_config("k400_vitb16_8f", ["data.input_size=100"])


@pytest.mark.parametrize("name", sorted(
    p.name for p in (resources.files("aim_video") / "configs").iterdir() if p.name.endswith(".yaml")
))
def test_every_shipped_preset_file_loads_bases_included(name):
    cfg = load_config(name.removesuffix(".yaml"))
    assert cfg.aim_config(num_classes=10).vit.image_size == cfg.data.input_size


def test_the_synthetic_preset_as_released_still_loads(tmp_path):
    # Until the input side became data.input_size alone, synthetic_cpu said model.image_size: 32.
    old = tmp_path / "old.yaml"
    old.write_text("base: synthetic_cpu\nmodel:\n  image_size: 32\n")
    assert load_config(old) == load_config("synthetic_cpu")


# The AIMConfig fields a run config does not set as model.<field>, and where each comes from.
DERIVED = {
    "vit": "model.arch, with model.width/layers/heads/patch_size when set and data.input_size",
    "num_frames": "data.num_frames",
    "num_classes": "model.num_classes, else the train set's class count",
    "grad_checkpointing": "train.grad_checkpointing",
}
VIT_DERIVED = {"image_size": "data.input_size", "mlp_ratio": "model.arch (4 in every CLIP tower)"}


def _other_value(name: str, hint, default):
    """A valid value of an Adaptation field that differs from its default."""
    if name == "adapter_blocks":
        return "top:1"
    if typing.get_origin(hint) is typing.Literal:
        return next(v for v in typing.get_args(hint) if v != default)
    if hint is bool:
        return not default
    return default + 0.125  # the float settings


def test_every_aim_config_field_is_one_setting():
    hints = typing.get_type_hints(AIMConfig)
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    shared = [f for f in dataclasses.fields(AIMConfig) if f.name not in DERIVED]
    assert {f.name for f in shared} <= model_fields, "an AIMConfig field the run cannot set"
    assert {f.name for f in shared} == {f.name for f in dataclasses.fields(Adaptation)}
    assert typing.get_type_hints(TrainConfig)["grad_checkpointing"] == hints["grad_checkpointing"]
    vit_fields = {f.name for f in dataclasses.fields(ViTConfig)}
    assert vit_fields == {"width", "layers", "heads", "patch_size"} | set(VIT_DERIVED)
    assert {"width", "layers", "heads", "patch_size"} <= model_fields
    # Each shared setting reaches the model under its own name.
    for f in shared:
        value = _other_value(f.name, hints[f.name], f.default)
        cfg = load_config("synthetic_cpu", [f"model.{f.name}={value}"])
        assert getattr(cfg.aim_config(num_classes=3), f.name) == value, f.name
    # And each derived one from where DERIVED says.
    cfg = load_config("synthetic_cpu", [
        "model.width=64", "model.heads=2", "model.layers=3", "model.patch_size=4",
        "data.input_size=16", "data.num_frames=3", "train.grad_checkpointing=mlp"])
    aim = cfg.aim_config(num_classes=7)
    assert aim.vit == ViTConfig(width=64, layers=3, heads=2, patch_size=4, image_size=16)
    assert (aim.num_frames, aim.num_classes, aim.grad_checkpointing) == (3, 7, "mlp")
    assert load_config("synthetic_cpu", ["model.num_classes=5"]).aim_config(7).num_classes == 5


def test_the_model_is_built_with_the_train_configs_grad_checkpointing():
    cfg = load_config("synthetic_cpu", ["model.width=64", "model.layers=2", "model.heads=2",
                                        "train.grad_checkpointing=attention_mlp"])
    model = model_from_config(cfg, 3)
    assert model.cfg.grad_checkpointing == "attention_mlp"
    assert model.transformer.recompute is Recompute.ATTENTION_MLP
    off = model_from_config(load_config("synthetic_cpu", ["model.width=64", "model.layers=2",
                                                          "model.heads=2"]), 3)
    assert off.transformer.recompute is Recompute.NOTHING


@pytest.mark.parametrize("override, message", [
    ("model.scal=1", r"^unknown key model\.scal; valid keys of model: spatial, temporal, joint, "
                     r".*, arch, width, "),
    ("model.scale=big", r"^model\.scale: expected a number, got 'big'$"),
    ("model.temporal_attention=flash",
     r"^model\.temporal_attention: 'flash' is not one of 'sdpa', 'matmul'$"),
    ("model.width=sixty", r"^model\.width: expected an integer, got 'sixty'$"),
    ("model.adapter_blocks=top:9", r"^model: adapter_blocks 'top:9' is not one of all \| top:K"),
    ("model.arch=ViT-X", r"^model\.arch: unknown arch 'ViT-X'; known: ViT-B/32, "),
    ("train.grad_checkpointing=mpl", r"^train\.grad_checkpointing: expected true or false, got "
                                     r"'mpl'; or 'mpl' is not one of 'nothing', 'mlp', "
                                     r"'attention_mlp', 'blocks'$"),
])
def test_a_bad_model_setting_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("synthetic_cpu", [override])


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
    # Every model setting, the inherited adaptation ones included, survives the trip.
    changed = load_config(path, ["model.scale=0.25", "model.temporal_attention=matmul",
                                 "model.adapter_blocks=top:2", "model.width=64", "model.heads=2",
                                 "train.grad_checkpointing=mlp"])
    assert config_from_dict(config_to_dict(changed)) == changed
    assert config_to_dict(changed)["model"]["temporal_attention"] == "matmul"


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
    # An unset root stays unset: the lists' entries are beside each list, from any folder.
    assert absolute.data.root is None
    assert absolute.model.pretrained == os.path.expanduser("~/clip.pt")
    assert absolute.train.out_dir == str(tmp_path / "runs" / "a")
    assert with_absolute_paths(absolute) == absolute


def test_the_saved_config_is_written_atomically(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old")
    save_config(load_config("synthetic_cpu"), path)
    assert load_config(path) == load_config("synthetic_cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
