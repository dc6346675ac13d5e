import argparse

import pytest
import torch
from reference import ReferenceAIM

from aim_video.model import AIMConfig, AIMViT, ViTConfig, get_arch
from aim_video.weights import load_aim_checkpoint

TINY = dict(width=128, layers=2, heads=2, patch_size=8, image_size=32, num_frames=4, num_classes=5)


def perturbed_reference(temporal_in: bool) -> ReferenceAIM:
    """A reference model whose adapters and temporal embedding are not at their zero init,
    so that every branch of the block contributes to the logits."""
    ref = ReferenceAIM(**TINY, temporal_in=temporal_in).eval()
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if "D_fc2" in name or name.endswith("temporal_embedding"):
                param.normal_(0, 0.05)
            if "ln_" in name:  # non-trivial norms, so a swapped ln_1/ln_2 would show
                param.add_(torch.randn_like(param) * 0.1)
    return ref


def release_keys(layers: int, temporal_in: bool) -> set[str]:
    """The state_dict keys of a released AIM checkpoint (paper-facts, 'Released checkpoint')."""
    keys = {
        "backbone.conv1.weight", "backbone.class_embedding", "backbone.positional_embedding",
        "backbone.temporal_embedding", "cls_head.fc_cls.weight", "cls_head.fc_cls.bias",
    }
    keys |= {f"backbone.{n}.{p}" for n in ("ln_pre", "ln_post") for p in ("weight", "bias")}
    adapters = ["S_Adapter", "T_Adapter", "MLP_Adapter"] + (["T_Adapter_in"] if temporal_in else [])
    for i in range(layers):
        block = f"backbone.transformer.resblocks.{i}."
        keys |= {block + f"attn.{n}" for n in ("in_proj_weight", "in_proj_bias")}
        parts = ["attn.out_proj", "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj"]
        parts += [f"{a}.{fc}" for a in adapters for fc in ("D_fc1", "D_fc2")]
        keys |= {block + f"{part}.{p}" for part in parts for p in ("weight", "bias")}
    return keys


@pytest.mark.parametrize("temporal_in", [False, True])
def test_state_dict_keys_are_the_release_keys(temporal_in):
    ref = ReferenceAIM(**TINY, temporal_in=temporal_in)
    assert set(ref.state_dict()) == release_keys(2, temporal_in)


def test_init_is_the_papers():
    ref = ReferenceAIM(**TINY, temporal_in=True)
    fc2 = {n: p for n, p in ref.named_parameters() if "D_fc2" in n}
    assert len(fc2) == 2 * 4 * 2  # weight and bias of 4 adapters in 2 blocks, T_Adapter_in too
    assert all(torch.count_nonzero(p) == 0 for p in fc2.values())
    assert torch.count_nonzero(ref.backbone.temporal_embedding) == 0
    fc1 = ref.backbone.transformer.resblocks[0].S_Adapter.D_fc1.weight
    assert 0.015 < fc1.std() < 0.025  # trunc normal 0.02 (cut at +-2 absolute, as timm does)
    assert 0.005 < ref.cls_head.fc_cls.weight.std() < 0.015  # normal 0.01


@pytest.mark.parametrize("temporal_in", [False, True])
def test_aimvit_equals_the_reference_on_a_released_checkpoint(tmp_path, temporal_in):
    ref = perturbed_reference(temporal_in)
    path = tmp_path / "aim_release.pth"
    # As released: state_dict beside an mmcv-style `meta` that needs full unpickling.
    torch.save({"state_dict": ref.state_dict(), "meta": argparse.Namespace(epoch=30)}, path)
    model = load_aim_checkpoint(path, scale=0.5, trust=True)
    assert model.cfg.temporal_in is temporal_in
    assert not model.training and model.backbone_source == f"aim:{path}"
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        expected = ref(clip)
        got = model(clip)
    assert expected.abs().max() > 1e-2  # a meaningful comparison, not two near-zero outputs
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_scale_matters_and_must_be_given(tmp_path):
    ref = perturbed_reference(False)
    path = tmp_path / "aim.pth"
    torch.save({"state_dict": ref.state_dict()}, path)
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        wrong = load_aim_checkpoint(path, scale=1.0)(clip)
        right = load_aim_checkpoint(path, scale=0.5)(clip)
        expected = ref(clip)
    torch.testing.assert_close(right, expected, atol=1e-5, rtol=1e-5)
    assert (wrong - expected).abs().max() > 1e-4


def test_released_trainable_rule_is_our_trainable_set():
    cfg = AIMConfig(vit=get_arch("ViT-B/16"), num_classes=400, temporal_in=True)
    with torch.device("meta"):
        ref = ReferenceAIM.from_config(cfg)
        ours = AIMViT(cfg)
    ref.freeze()

    def ours_name(name: str) -> str:
        return name.removeprefix("backbone.").replace("cls_head.fc_cls", "head")

    ref_trainable = {ours_name(n) for n, p in ref.named_parameters() if p.requires_grad}
    assert ref_trainable == {n for n, p in ours.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters())


def test_from_config_refuses_what_the_release_cannot_express():
    vit = ViTConfig(width=64, layers=2, heads=2, patch_size=8, image_size=32)
    with pytest.raises(ValueError, match=r"\['joint', 'bottleneck_ratio'\]"):
        ReferenceAIM.from_config(AIMConfig(vit=vit, joint=False, bottleneck_ratio=0.5))


def test_fp16_layernorm_computes_in_fp32():
    ref = ReferenceAIM(**TINY).eval()
    ln = ref.backbone.ln_pre
    x = torch.randn(3, 128) * 100
    out = ln(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ln(x.half().float()).half().float())
