"""Training settings that change how a step runs, not what it computes, must take effect.

Gradient checkpointing, channels-last and bf16 autocast leave a run's results about the same, so
a run that silently ignored them would pass every accuracy or loss check. Here each one is
observed inside the engine's own training step (`Trainer`, built from the `synthetic_cpu` preset
at tiny sizes), against the same step with the setting off.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from test_engine_support import tiny_config

from aim_video.engine import distributed

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.py

train_module = importlib.import_module("aim_video.engine.train")  # `train` is also the function

FAST = {"train__plots": False, "eval__splits": []}
CPU = distributed.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def trainer(data, weights, out_dir, **settings) -> train_module.Trainer:
    cfg = tiny_config(data, out_dir, weights, **FAST, **settings)
    built = train_module.Trainer(cfg, CPU, progress=False)
    built.model.train()  # as the loop does
    return built


def one_step(built: train_module.Trainer) -> None:
    """Forward and backward of one loader batch, through the engine's own micro-step."""
    video, labels = built._batch(next(iter(built.loader)))
    built._micro_step(video, labels, 1.0, sync=True)


# For each policy, the modules backward re-runs: all blocks' calls, or their attentions' and
# MLPs' calls (the attention runs twice per block: over space, then over time).
RECOMPUTED = {
    "nothing": (),
    "mlp": ("mlp",),
    "attention_mlp": ("attn", "mlp"),
    "blocks": ("block", "attn", "mlp"),
    True: ("block", "attn", "mlp"),  # the config's switch: whole blocks
}


@pytest.mark.parametrize("policy", list(RECOMPUTED), ids=str)
def test_gradient_checkpointing_reruns_the_policys_modules_in_backward(synthetic, backbone,
                                                                       tmp_path, policy):
    # Recomputation runs a module's forward again during backward: counted by pre-hooks (a
    # recomputation may stop early, before a module's forward returns, so not post-hooks).
    built = trainer(synthetic, backbone, tmp_path, train__grad_checkpointing=policy)
    calls = {"block": 0, "attn": 0, "mlp": 0}
    for block in built.model.transformer.resblocks:
        for name, module in (("block", block), ("attn", block.attn), ("mlp", block.mlp)):
            module.register_forward_pre_hook(
                lambda module, args, name=name: calls.__setitem__(name, calls[name] + 1))
    in_forward: dict[str, int] = {}
    built.model.register_forward_hook(lambda *_: in_forward.update(calls))
    one_step(built)

    layers = len(built.model.transformer.resblocks)
    assert in_forward == {"block": layers, "attn": 2 * layers, "mlp": layers}
    in_backward = {name: calls[name] - in_forward[name] for name in calls}
    expected = {name: in_forward[name] if name in RECOMPUTED[policy] else 0 for name in calls}
    assert in_backward == expected


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_reaches_the_patch_convolution(synthetic, backbone, tmp_path,
                                                     channels_last):
    built = trainer(synthetic, backbone, tmp_path, train__channels_last=channels_last)
    seen = []
    built.model.conv1.register_forward_pre_hook(lambda module, args: seen.append(module.weight))
    one_step(built)
    # (width, 3, patch, patch) with 3 channels: the two layouts have different strides.
    (weight,) = seen
    assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert weight.is_contiguous() != channels_last


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_training_precision_is_the_dtype_the_step_computes_in(synthetic, backbone, tmp_path,
                                                              precision, dtype):
    built = trainer(synthetic, backbone, tmp_path, train__precision=precision)
    seen: dict[str, torch.dtype] = {}

    def attention_input(module, args) -> None:  # hooks that return nothing change nothing
        seen.setdefault("attention input", args[0].dtype)

    def logits(module, args, out) -> None:
        seen["logits"] = out.dtype

    built.model.transformer.resblocks[0].attn.register_forward_pre_hook(attention_input)
    built.model.head.register_forward_hook(logits)
    one_step(built)
    assert seen == {"attention input": dtype, "logits": dtype}
    # Trainable weights and their gradients stay fp32 either way (autocast casts copies).
    head = built.model.head.weight
    assert head.dtype == torch.float32 and head.grad.dtype == torch.float32
