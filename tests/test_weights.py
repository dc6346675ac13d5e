import argparse
import pickle
from collections import OrderedDict

import pytest
import torch
from torch import nn

from aim_video.model import AIMConfig, AIMViT, ViTConfig
from aim_video.weights import (
    CheckpointError,
    backbone_fingerprint,
    export_state_dict,
    load_aim_checkpoint,
    load_pretrained,
    read_checkpoint,
    resize_positional_embedding,
    resize_temporal_embedding,
    save_state_dict,
)

VIT = ViTConfig(width=128, layers=2, heads=2, patch_size=8, image_size=32)
VIT3 = ViTConfig(width=128, layers=3, heads=2, patch_size=8, image_size=32)
IMAGE_ONLY = dict(spatial=False, temporal=False, joint=False, temporal_embedding=False)


def aim(vit: ViTConfig = VIT, **changes) -> AIMViT:
    return AIMViT(AIMConfig(vit=vit, num_frames=4, num_classes=5, **changes))


def randomised(model: AIMViT) -> AIMViT:
    """Every parameter random (norms and adapter fc2 too), so no swapped tensor goes unseen."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.05).add_(1.0 if param.ndim == 1 else 0.0)
    return model


def image_state(model: AIMViT) -> dict[str, torch.Tensor]:
    """The weights an image checkpoint carries: backbone and ln_post."""
    return {k: v for k, v in model.state_dict().items()
            if "Adapter" not in k and k.split(".")[0] not in ("temporal_embedding", "head")}


def assert_same_image_weights(a: AIMViT, b: AIMViT, **tol) -> None:
    sa, sb = image_state(a), image_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], msg=k, **(tol or dict(atol=0, rtol=0)))


# ------------------------------------------------------------------ Hugging Face, the reference
def hf_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=VIT.width, intermediate_size=4 * VIT.width, num_hidden_layers=VIT.layers,
        num_attention_heads=VIT.heads, image_size=VIT.image_size, patch_size=VIT.patch_size,
        hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )


def per_frame_cls(model: AIMViT, clip: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B·T, D): each frame's CLS after ln_post."""
    tokens = model.transformer(model.embed(clip), clip.shape[2])
    return model.ln_post(tokens[:, 0])


def frames_of(clip: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = clip.shape
    return clip.transpose(1, 2).reshape(b * t, c, h, w)  # (B, C, T, H, W) -> (B·T, C, H, W)


def test_hf_to_ours_equals_clip_vision_model(tmp_path):
    from transformers import CLIPVisionModel

    hf = CLIPVisionModel(hf_config()).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" in name:  # HF inits norms to 1/0; make a swapped norm visible
                param.add_(torch.randn_like(param) * 0.1)
    hf.save_pretrained(tmp_path)  # a model folder: config.json + model.safetensors
    model = aim(**IMAGE_ONLY).eval()
    report = load_pretrained(model, tmp_path)
    assert report.format == "hf" and report.auto
    assert model.backbone_source == f"hf:{tmp_path / 'model.safetensors'}"
    clip = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=frames_of(clip)).pooler_output
        torch.testing.assert_close(per_frame_cls(model, clip), expected, atol=1e-5, rtol=1e-5)
        pooled = expected.view(2, 3, -1).mean(1)
        torch.testing.assert_close(model.forward_features(clip), pooled, atol=1e-5, rtol=1e-5)


def test_ours_to_hf_loads_in_transformers(tmp_path):
    from transformers import CLIPVisionModel

    model = randomised(aim(**IMAGE_ONLY)).eval()
    hf_config().save_pretrained(tmp_path)
    save_state_dict(model, tmp_path / "model.safetensors", "hf")
    hf = CLIPVisionModel.from_pretrained(tmp_path).eval()
    clip = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=frames_of(clip)).pooler_output
        torch.testing.assert_close(per_frame_cls(model, clip), expected, atol=1e-5, rtol=1e-5)


def test_clip_model_checkpoint_ignores_the_text_tower(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    clip_model = CLIPModel(CLIPConfig(vision_config=hf_config().to_dict(), text_config=text))
    torch.save(clip_model.state_dict(), tmp_path / "pytorch_model.bin")
    model = aim()
    report = load_pretrained(model, tmp_path / "pytorch_model.bin")
    assert report.format == "hf"
    projections = {"logit_scale", "visual_projection.weight", "text_projection.weight"}
    assert projections <= set(report.ignored)
    assert any(k.startswith("text_model.") for k in report.ignored)
    vision = clip_model.vision_model.state_dict()
    torch.testing.assert_close(
        model.transformer.resblocks[1].attn.in_proj_weight,
        torch.cat([vision[f"encoder.layers.1.self_attn.{x}_proj.weight"] for x in "qkv"]),
    )


# ------------------------------------------------------------------ every format round-trips
def openai_torchscript(state: dict[str, torch.Tensor], path) -> None:
    """An archive shaped like OpenAI's `ViT-B-16.pt`: TorchScript, fp16, the whole CLIP."""

    class Holder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Holder()
    for name, tensor in state.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, Holder())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(tensor.half(), requires_grad=False))
    torch.jit.save(torch.jit.script(root), str(path))


def clip_extras(width: int) -> dict[str, torch.Tensor]:
    """What a CLIP file holds besides the visual tower (text tower, projections, scalars)."""
    return {
        "visual.proj": torch.randn(width, 16),
        "positional_embedding": torch.randn(7, 32),
        "token_embedding.weight": torch.randn(50, 32),
        "transformer.resblocks.0.attn.in_proj_weight": torch.randn(96, 32),
        "ln_final.weight": torch.ones(32),
        "text_projection": torch.randn(32, 16),
        "logit_scale": torch.tensor(4.6),
    }


def write(fmt: str, model: AIMViT, path) -> None:
    """A checkpoint as that format's own tools would write it."""
    state = export_state_dict(model, "openai" if fmt in ("openai-jit", "open_clip") else fmt)
    if fmt == "openai-jit":
        openai_torchscript({**state, **clip_extras(VIT.width),
                            "input_resolution": torch.tensor(32)}, path)
    elif fmt == "open_clip":  # a training checkpoint: DDP prefixes inside a wrapper
        state = {f"module.{k}": v for k, v in {**state, **clip_extras(VIT.width)}.items()}
        torch.save({"epoch": 3, "name": "run", "state_dict": state}, path)
    elif fmt == "aim":
        torch.save({"meta": {"epoch": 30}, "state_dict": state}, path)
    elif path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize(
    "fmt, file, detected",
    [
        ("openai-jit", "ViT-B-16.pt", "openai"),
        ("openai", "visual.pt", "openai"),
        ("open_clip", "epoch_3.pt", "open_clip"),
        ("hf", "model.safetensors", "hf"),
        ("hf", "pytorch_model.bin", "hf"),
        ("timm", "timm.pth", "timm"),
        ("aim", "aim_k400.pth", "aim"),
        ("ours", "ours.pt", "ours"),
    ],
)
def test_each_format_round_trips_and_is_detected(tmp_path, fmt, file, detected):
    source = randomised(aim(temporal_in=True))
    write(fmt, source, tmp_path / file)
    target = aim(temporal_in=True)
    fresh_adapter = target.transformer.resblocks[0].T_Adapter.D_fc1.weight.clone()
    report = load_pretrained(target, tmp_path / file)
    assert report.format == detected and report.auto
    assert target.backbone_source == f"{detected}:{tmp_path / file}"
    if fmt == "openai-jit":  # stored in fp16, as OpenAI's archives are
        assert_same_image_weights(source.half().float(), target)
    else:
        assert_same_image_weights(source, target)
    # Image loading leaves the parts AIM adds alone, even from a whole-AIM file.
    assert torch.equal(target.transformer.resblocks[0].T_Adapter.D_fc1.weight, fresh_adapter)
    assert "temporal_embedding" in report.kept_init and "head.weight" in report.kept_init


def test_plain_openai_visual_state_dict_without_prefix(tmp_path):
    source = randomised(aim())
    state = {k.removeprefix("visual."): v for k, v in export_state_dict(source, "openai").items()}
    torch.save({**state, "proj": torch.randn(VIT.width, 16)}, tmp_path / "visual.pt")
    target = aim()
    report = load_pretrained(target, tmp_path / "visual.pt")
    assert report.format == "openai" and report.ignored == ["proj"]
    assert_same_image_weights(source, target)


def test_foreign_names_are_the_published_ones():
    model = aim()
    d, n = VIT.width, VIT.grid**2 + 1
    timm = export_state_dict(model, "timm")
    assert timm["cls_token"].shape == (1, 1, d) and timm["pos_embed"].shape == (1, n, d)
    assert timm["blocks.1.attn.qkv.weight"].shape == (3 * d, d)
    assert {"patch_embed.proj.weight", "norm_pre.weight", "blocks.0.norm1.bias",
            "blocks.0.attn.proj.weight", "blocks.0.mlp.fc2.weight", "norm.weight"} <= set(timm)
    hf = export_state_dict(model, "hf")
    assert {"vision_model.embeddings.class_embedding", "vision_model.pre_layrnorm.weight",
            "vision_model.encoder.layers.1.self_attn.v_proj.bias",
            "vision_model.post_layernorm.bias"} <= set(hf)
    openai = export_state_dict(model, "openai")
    assert "visual.transformer.resblocks.1.mlp.c_fc.weight" in openai
    assert not any("Adapter" in k or "temporal" in k or "head" in k for k in openai)
    assert set(export_state_dict(model, "aim")) == {
        ("cls_head.fc_cls." + k[5:]) if k.startswith("head.") else "backbone." + k
        for k in model.state_dict()
    }


def test_full_load_of_our_own_state_dict(tmp_path):
    source = randomised(aim(temporal_in=True))
    torch.save(source.state_dict(), tmp_path / "ours.pt")
    target = aim(temporal_in=True)
    report = load_pretrained(target, tmp_path / "ours.pt", full=True)
    assert report.kept_init == [] and report.ignored == []
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k


# ------------------------------------------------------------------ strictness
def test_missing_key_is_an_error_naming_it_and_the_file(tmp_path):
    state = export_state_dict(aim(), "openai")
    del state["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    torch.save(state, tmp_path / "clip.pt")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(aim(), tmp_path / "clip.pt")
    message = str(err.value)
    assert str(tmp_path / "clip.pt") in message
    assert "missing (1): transformer.resblocks.1.mlp.c_fc.weight" in message


def test_unexpected_keys_are_errors_in_the_files_own_names(tmp_path):
    state = export_state_dict(aim(), "timm")
    state["blocks.0.ls1.gamma"] = torch.ones(VIT.width)  # layer scale: not a CLIP ViT
    state["blocks.2.norm1.weight"] = torch.ones(VIT.width)  # a third block
    torch.save(state, tmp_path / "timm.pth")
    with pytest.raises(CheckpointError, match=r"unexpected \(2\): blocks\.0\.ls1\.gamma, "
                                              r"blocks\.2\.norm1\.weight"):
        load_pretrained(aim(), tmp_path / "timm.pth")


def test_wrong_shapes_are_listed_first_twenty_and_a_count(tmp_path):
    save_state_dict(aim(ViTConfig(width=64, layers=2, heads=1, patch_size=8, image_size=32)),
                    tmp_path / "narrow.safetensors", "hf")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(aim(), tmp_path / "narrow.safetensors")
    line = next(x for x in str(err.value).splitlines() if "wrong shape" in x)
    assert line.strip().startswith("wrong shape (31):")
    assert "(11 more)" in line
    file_name = "vision_model.embeddings.class_embedding"
    assert f"class_embedding (file: {file_name}) (64,) != model (128,)" in line


def test_forcing_the_wrong_format_hints_at_the_detected_one(tmp_path):
    save_state_dict(aim(), tmp_path / "clip.pt", "openai")
    with pytest.raises(CheckpointError, match=r"(?s)missing \(29\).*look like 'openai'"):
        load_pretrained(aim(), tmp_path / "clip.pt", format="timm")


def test_pickle_needing_more_than_weights_needs_trust(tmp_path):
    path = tmp_path / "mmaction.pth"
    state = export_state_dict(randomised(aim()), "aim")
    torch.save({"state_dict": state, "meta": argparse.Namespace(config="...")}, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(aim(), path)
    message = str(err.value)
    assert str(path) in message and "argparse.Namespace" in message
    assert "trust=True" in message and "--trust-checkpoint" in message
    assert load_pretrained(aim(), path, trust=True).format == "aim"


class ClipBlock(nn.Module):
    """OpenAI CLIP's ResidualAttentionBlock, as its archives hold it."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(width, 4 * width), gelu=nn.GELU(), c_proj=nn.Linear(4 * width, width)))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(*[self.ln_1(x)] * 3, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ClipVisual(nn.Module):
    """OpenAI CLIP's VisionTransformer layout (names and shapes), for a TorchScript archive."""

    def __init__(self, vit: ViTConfig) -> None:
        super().__init__()
        d = vit.width
        self.conv1 = nn.Conv2d(3, d, vit.patch_size, stride=vit.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d))
        self.positional_embedding = nn.Parameter(torch.randn(vit.num_tokens, d))
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(
            *(ClipBlock(d, vit.heads) for _ in range(vit.layers)))
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Parameter(torch.randn(d, 16))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv1(image).flatten(2).transpose(1, 2)  # (B, D, g, g) -> (B, g², D)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)
        x = self.transformer.resblocks(x.transpose(0, 1)).transpose(0, 1)  # sequence-first
        return self.ln_post(x[:, 0]) @ self.proj


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_archive_tensors_are_read_without_running_its_code(tmp_path, monkeypatch):
    clip = nn.Module()
    clip.visual = randomised(ClipVisual(VIT)).eval()
    clip.logit_scale = nn.Parameter(torch.tensor(4.6))
    clip.forward = clip.visual.forward
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.trace(clip, torch.randn(1, 3, 32, 32)), str(path))
    expected = torch.jit.load(str(path)).state_dict()

    def no_jit_load(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code")

    monkeypatch.setattr(torch.jit, "load", no_jit_load)
    state = read_checkpoint(path).state
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(state[k], v) and state[k].dtype == v.dtype, k
    target = aim()
    report = load_pretrained(target, path)
    assert report.format == "openai" and set(report.ignored) == {"visual.proj", "logit_scale"}
    torch.testing.assert_close(target.transformer.resblocks[1].attn.in_proj_weight,
                               clip.visual.transformer.resblocks[1].attn.in_proj_weight)


class Hostile(nn.Module):
    """A TorchScript module whose `__setstate__`, run by torch.jit.load, writes to a file."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.ones(4))
        self.victim = victim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.class_embedding

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.class_embedding, self.victim, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        written = torch.from_file(state[1], True, 8, dtype=torch.uint8).fill_(66)
        self.class_embedding = state[0] + written[0].float() * 0  # used: not optimised away
        self.victim = state[1]
        self.training = state[2]


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_archive_whose_state_needs_its_code_is_refused(tmp_path):
    victim = tmp_path / "victim.bin"
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(Hostile(str(victim))), str(path))
    victim.write_bytes(bytes(8))
    torch.jit.load(str(path))  # what loading it used to do: its code runs
    assert victim.read_bytes() == b"B" * 8, "the fixture is not hostile"
    victim.write_bytes(bytes(8))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(aim(), path)
    message = str(err.value)
    assert str(path) in message and "__setstate__" in message and "--trust-checkpoint" in message
    assert victim.read_bytes() == bytes(8)


def test_plain_pickle_is_refused_naming_what_it_imports(tmp_path):
    source = randomised(aim())
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as f:
        pickle.dump(export_state_dict(source, "openai"), f)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(aim(), path)
    message = str(err.value)
    assert str(path) in message and "plain pickle" in message
    assert "imports torch._utils._rebuild_tensor_v2" in message and "--trust-checkpoint" in message
    target = aim()
    assert load_pretrained(target, path, trust=True).format == "openai"
    assert_same_image_weights(source, target)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "missing", "bad-safetensors"])
def test_unreadable_files_raise_checkpoint_error_naming_them(tmp_path, damage):
    path = tmp_path / ("w.safetensors" if damage == "bad-safetensors" else "w.pt")
    if damage != "missing":
        save_state_dict(aim(), path, "openai")
        data = path.read_bytes()
        path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"hello\n",
                          "bad-safetensors": data[: len(data) // 2]}[damage])
    with pytest.raises(CheckpointError, match=str(path)):
        load_pretrained(aim(), path)


def test_unknown_key_layout_is_refused(tmp_path):
    torch.save({"encoder.weight": torch.ones(3)}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="cannot tell the checkpoint format"):
        load_pretrained(aim(), tmp_path / "odd.pt")


def test_image_checkpoint_is_not_an_aim_model(tmp_path):
    save_state_dict(aim(), tmp_path / "clip.pt", "openai")
    with pytest.raises(CheckpointError, match="not an AIM video model"):
        load_aim_checkpoint(tmp_path / "clip.pt")


# ------------------------------------------------------------------ resizing
def test_smaller_checkpoint_grid_is_resized_and_cls_kept(tmp_path):
    source = randomised(aim())
    save_state_dict(source, tmp_path / "clip32.pt", "openai")
    target = aim(ViTConfig(width=128, layers=2, heads=2, patch_size=8, image_size=48))
    report = load_pretrained(target, tmp_path / "clip32.pt")
    assert report.resized == ["positional_embedding: grid 4x4 -> 6x6 (bicubic)"]
    assert target.positional_embedding.shape == (37, 128)
    assert torch.equal(target.positional_embedding[0], source.positional_embedding[0])
    target(torch.randn(1, 3, 4, 48, 48))  # runs at the new size


def test_positional_resize_keeps_constants_and_is_identity_at_same_size():
    pos = torch.cat([torch.randn(1, 8), torch.full((16, 8), 0.3)])
    for grid in (2, 6, (3, 5)):
        out = resize_positional_embedding(pos, grid)
        assert torch.equal(out[0], pos[0])
        torch.testing.assert_close(out[1:], torch.full_like(out[1:], 0.3))
    assert out.shape == (16, 8)
    noisy = torch.randn(17, 8)
    assert torch.equal(resize_positional_embedding(noisy, 4), noisy)


def test_temporal_resize_keeps_a_constant_constant_and_the_ends():
    te = torch.full((1, 8, 6), 0.7)
    torch.testing.assert_close(resize_temporal_embedding(te, 16), torch.full((1, 16, 6), 0.7))
    ramp = torch.linspace(0, 1, 8).view(1, 8, 1).expand(1, 8, 6)
    out = resize_temporal_embedding(ramp, 16)
    assert out.shape == (1, 16, 6)
    assert torch.equal(out[0, 0], ramp[0, 0]) and torch.equal(out[0, -1], ramp[0, -1])
    assert bool((out[0, 1:, 0] >= out[0, :-1, 0]).all())  # still increasing


def test_aim_checkpoint_8_to_16_frames(tmp_path):
    source = randomised(AIMViT(AIMConfig(vit=VIT, num_frames=8, num_classes=5)))
    save_state_dict(source, tmp_path / "aim8.pth", "aim")
    model = load_aim_checkpoint(tmp_path / "aim8.pth", num_frames=16)
    assert model.cfg.num_frames == 16 and model.temporal_embedding.shape == (1, 16, 128)
    torch.testing.assert_close(
        model.temporal_embedding, resize_temporal_embedding(source.temporal_embedding, 16)
    )
    assert model(torch.randn(1, 3, 16, 32, 32)).shape == (1, 5)


# ------------------------------------------------------------------ architecture inference
@pytest.mark.parametrize(
    "changes",
    [
        dict(),
        dict(temporal_in=True, num_classes=7),
        dict(adapter_blocks="top:1", bottleneck_ratio=0.125),
        dict(adapter_blocks="every_other", joint=False, vit=VIT3),
        dict(spatial=False, temporal=False, joint=False, temporal_embedding=False),
    ],
)
def test_load_aim_checkpoint_infers_the_architecture(tmp_path, changes):
    cfg = AIMConfig(**{"vit": VIT, "num_frames": 4, "num_classes": 5, **changes})
    source = randomised(AIMViT(cfg))
    save_state_dict(source, tmp_path / "aim.pth", "aim")
    model = load_aim_checkpoint(tmp_path / "aim.pth", scale=0.5)
    if not cfg.temporal_embedding:  # then the frame count is stored nowhere (and matters not)
        cfg = cfg.replace(num_frames=model.cfg.num_frames)
    assert model.cfg == cfg
    assert not model.training
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, p in source.named_parameters() if p.requires_grad}
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


# ------------------------------------------------------------------ provenance
def test_fingerprint_follows_the_frozen_weights_only():
    model = aim()
    before = backbone_fingerprint(model)
    assert len(before) == 16 and before == backbone_fingerprint(model)
    with torch.no_grad():
        model.transformer.resblocks[1].S_Adapter.D_fc2.weight.add_(1.0)
        model.temporal_embedding.add_(1.0)
        model.ln_post.weight.add_(1.0)
        model.head.bias.add_(1.0)
    assert backbone_fingerprint(model) == before
    with torch.no_grad():
        model.transformer.resblocks[1].mlp.c_proj.bias[3] += 1e-3
    assert backbone_fingerprint(model) != before


def test_fingerprint_is_the_same_for_the_same_weights_in_another_model(tmp_path):
    source = randomised(aim())
    save_state_dict(source, tmp_path / "clip.pt", "openai")
    other = aim(**IMAGE_ONLY)  # another adaptation, same backbone
    assert backbone_fingerprint(other) != backbone_fingerprint(source)
    load_pretrained(other, tmp_path / "clip.pt")
    assert backbone_fingerprint(other) == backbone_fingerprint(source)
