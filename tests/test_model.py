import inspect
import typing

import pytest
import torch

import aim_video
from aim_video.model import AIMConfig, AIMViT, ViTConfig, get_arch, scaled_adapter_std
from aim_video.model.config import ATTENTION_KERNELS, AttentionKernel, RecomputePolicy
from aim_video.model.layers import frames_to_tracks, tracks_to_frames
from aim_video.model.vit import Recompute
from aim_video.weights import save_state_dict

TINY = ViTConfig(width=64, layers=3, heads=2, patch_size=8, image_size=32)
IMAGE_ONLY = dict(spatial=False, temporal=False, joint=False, temporal_embedding=False)


def tiny(**changes) -> AIMConfig:
    return AIMConfig(vit=TINY, num_frames=4, num_classes=5, **changes)


@pytest.mark.parametrize(
    "arch, total, trainable",
    [("ViT-B/16", 96_764_560, 10_966_672), ("ViT-L/14", 341_438_864, 38_261_136)],
)
def test_parameter_counts_match_the_paper(arch, total, trainable):
    with torch.device("meta"):
        counts = AIMViT(AIMConfig(vit=get_arch(arch), num_classes=400)).parameter_counts()
    assert counts["total"] == total
    assert counts["trainable"] == trainable


def test_temporal_in_adds_one_adapter_per_block():
    with torch.device("meta"):
        base = AIMViT(AIMConfig(num_classes=174)).parameter_counts()["trainable"]
        ssv2 = AIMViT(AIMConfig(num_classes=174, temporal_in=True)).parameter_counts()
    assert ssv2["trainable.T_Adapter_in"] == 12 * (768 * 192 + 192 + 192 * 768 + 768)
    assert ssv2["trainable"] - base == ssv2["trainable.T_Adapter_in"]
    assert round(ssv2["trainable"] / 1e6, 1) == 14.3  # the paper's SSv2 (174 classes) figure


def test_at_init_aim_equals_the_frozen_image_model_per_frame():
    aim = AIMViT(tiny(temporal_in=True, dropout=0.0)).eval()
    image = AIMViT(tiny(**IMAGE_ONLY, dropout=0.0)).eval()
    missing, unexpected = image.load_state_dict(aim.state_dict(), strict=False)
    assert missing == [] and all("Adapter" in k or k == "temporal_embedding" for k in unexpected)
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        got = aim.forward_features(clip)
        # The image model on each frame alone, then the mean of the per-frame CLS features.
        frames = clip.transpose(1, 2).reshape(8, 3, 1, 32, 32)  # (B·T, C, 1, H, W)
        per_frame = image.forward_features(frames).view(2, 4, -1)
    torch.testing.assert_close(got, per_frame.mean(1), rtol=0, atol=1e-5)


def test_adapter_init_std_sets_every_fc1_and_leaves_fc2_at_zero():
    assert scaled_adapter_std(768) == 0.02  # the paper's value at CLIP B/16's width
    assert scaled_adapter_std(64) == pytest.approx(0.0693, abs=1e-4)
    torch.manual_seed(0)
    for std in (0.02, 0.1):
        model = AIMViT(AIMConfig(vit=get_arch("ViT-B/16"), num_frames=2, num_classes=5,
                                 temporal_in=True, adapter_init_std=std))
        adapters = [m for m in model.modules() if type(m).__name__ == "Adapter"]
        assert len(adapters) == 4 * 12
        fc1 = torch.cat([a.D_fc1.weight.flatten() for a in adapters])
        assert fc1.std().item() == pytest.approx(std, rel=0.02)
        assert all(not a.D_fc2.weight.any() and not a.D_fc2.bias.any() for a in adapters)


def test_trained_adapters_change_the_output():
    model = AIMViT(tiny()).eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    before = model(clip)
    torch.nn.init.normal_(model.transformer.resblocks[1].T_Adapter.D_fc2.weight, std=0.1)
    assert not torch.allclose(model(clip), before)


def test_temporal_attention_equals_attention_over_regrouped_tokens():
    attn = AIMViT(tiny()).transformer.resblocks[0].attn
    x = torch.randn(2 * 4, 17, 64)  # (B·T, L, D)
    regrouped = x.view(2, 4, 17, 64).transpose(1, 2).reshape(2 * 17, 4, 64)  # (B·L, T, D)
    expected = attn(regrouped).view(2, 17, 4, 64).transpose(1, 2).reshape(8, 17, 64)
    # What the block computes: regroup, attend, and the result read back frame-major.
    got = tracks_to_frames(attn(frames_to_tracks(x, frames=4)), 17).reshape(8, 17, 64)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_temporal_attention_mixes_frames_and_spatial_does_not():
    model = AIMViT(tiny(**IMAGE_ONLY)).eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    changed = clip.clone()
    changed[:, :, 3] = 0  # only the last frame differs
    per_frame = lambda m, c: m.transformer(m.embed(c), 4)[:, 0]  # noqa: E731
    with torch.no_grad():
        a, b = per_frame(model, clip), per_frame(model, changed)
    torch.testing.assert_close(a[:3], b[:3])  # frames 0-2 never see frame 3
    aim = AIMViT(tiny())
    for block in aim.transformer.resblocks:
        torch.nn.init.normal_(block.T_Adapter.D_fc2.weight, std=0.1)
    with torch.no_grad():
        a, b = per_frame(aim.eval(), clip), per_frame(aim, changed)
    assert not torch.allclose(a[:3], b[:3])


def test_exactly_the_trainable_set_gets_gradients():
    model = AIMViT(tiny(temporal_in=True)).train()
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert trainable == {n for n in dict(model.named_parameters()) if model.is_trainable(n)}
    assert any(n.endswith("T_Adapter_in.D_fc1.weight") for n in trainable)
    assert "transformer.resblocks.0.attn.in_proj_weight" not in trainable
    assert {"temporal_embedding", "ln_post.weight", "head.weight"} <= trainable


def test_full_finetune_trains_everything():
    model = AIMViT(tiny(full_finetune=True, **IMAGE_ONLY))
    assert all(p.requires_grad for p in model.parameters())
    assert set(model.trainable_state_dict()) == set(model.state_dict())


@pytest.mark.parametrize(
    "spec, expected",
    [("all", [1] * 6), ("top:2", [0, 0, 0, 0, 1, 1]), ("bottom:2", [1, 1, 0, 0, 0, 0]),
     ("every_other", [0, 1, 0, 1, 0, 1])],
)
def test_adapter_block_selection(spec, expected):
    cfg = AIMConfig(vit=ViTConfig(width=64, layers=6, heads=2, patch_size=8, image_size=32),
                    adapter_blocks=spec)
    model = AIMViT(cfg)
    has = [int(hasattr(b, "S_Adapter") and hasattr(b, "T_Adapter") and hasattr(b, "MLP_Adapter"))
           for b in model.transformer.resblocks]
    assert has == expected


@pytest.mark.parametrize("bad", ["top", "top:9", "some", "bottom:-1"])
def test_bad_adapter_block_spec_is_an_error(bad):
    with pytest.raises(ValueError, match="adapter_blocks"):
        AIMConfig(vit=TINY, adapter_blocks=bad)


def test_no_weight_decay_lists_norms_and_embeddings_only():
    names = AIMViT(tiny()).no_weight_decay()
    assert {"class_embedding", "positional_embedding", "temporal_embedding",
            "ln_pre.weight", "ln_post.bias", "transformer.resblocks.2.ln_2.weight"} <= names
    assert not any("Adapter" in n or "attn" in n or n.startswith("head") for n in names)


def test_wrong_frame_count_is_a_clear_error():
    with pytest.raises(ValueError, match="clip has 6 frames but the temporal embedding has 4"):
        AIMViT(tiny())(torch.randn(1, 3, 6, 32, 32))


def test_linear_probe_accepts_any_frame_count_and_is_order_blind():
    model = AIMViT(tiny(**IMAGE_ONLY)).eval()
    clip = torch.randn(1, 3, 6, 32, 32)
    torch.testing.assert_close(model(clip), model(clip.flip(2)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", [True, "mlp", Recompute.ATTENTION_MLP, False])
def test_grad_checkpointing_keeps_the_config_in_step(setting):
    model = AIMViT(tiny())
    model.set_grad_checkpointing(setting)
    assert model.transformer.recompute is Recompute.of(setting)
    assert Recompute.of(model.cfg.grad_checkpointing) is Recompute.of(setting)
    assert AIMViT(model.cfg).transformer.recompute is model.transformer.recompute


def test_create_model_loads_clip_weights_and_gives_the_fitting_transform(tmp_path):
    source = AIMViT(tiny())
    with torch.no_grad():
        source.conv1.weight.add_(1.0)
    save_state_dict(source, tmp_path / "clip.pt", "openai")
    model, transform = aim_video.create_model_and_transform(
        TINY, pretrained=tmp_path / "clip.pt", num_classes=7, num_frames=4, scale=1.0,
        num_crops=3)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.backbone_source == f"openai:{tmp_path / 'clip.pt'}"
    assert (model.cfg.num_classes, model.cfg.num_frames, model.cfg.scale) == (7, 4, 1.0)
    clip = torch.randint(0, 256, (4, 40, 48, 3), dtype=torch.uint8)  # (T, H, W, C)
    views = transform(clip)
    assert views.shape == (3, 3, 4, 32, 32)  # (crops, C, T, S, S): a batch for the model
    assert model.eval()(views).shape == (3, 7)
    with torch.device("meta"):  # a named backbone, without the cost of its init
        assert aim_video.create_model("ViT-B/32").cfg.vit == get_arch("ViT-B/32")


def test_public_flags_are_keyword_only():
    functions = [aim_video.create_model, aim_video.create_model_and_transform,
                 aim_video.load_pretrained, aim_video.load_aim_checkpoint]
    for function in functions:
        params = list(inspect.signature(function).parameters.values())
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional in (["arch"], ["model", "path"], ["path"]), function.__name__


def test_the_config_names_every_recompute_policy_and_kernel():
    # The config's Literal types are what settings are checked against; the model acts on them.
    assert set(typing.get_args(RecomputePolicy)) == {policy.value for policy in Recompute}
    assert ATTENTION_KERNELS == typing.get_args(AttentionKernel) == ("sdpa", "matmul")
    for kernel in ATTENTION_KERNELS:
        assert tiny(temporal_attention=kernel).temporal_attention == kernel
