"""The fast paths of the model compute what the reference does, and stay fast.

Equality with the reference formulation (outputs and trainable gradients), the recompute
policies against plain backward, torch.compile without graph breaks, no host syncs, one 4-D SDPA
call per attention, no autograd work before the first trainable parameter, and the benchmark
script itself on a micro config.
"""

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference import ReferenceAIM
from torch.utils._python_dispatch import TorchDispatchMode

from aim_video.model import AIMConfig, AIMViT, ViTConfig
from aim_video.model.layers import MLP, AutocastLayerNorm, DropPath, tracks_to_frames
from aim_video.model.vit import Recompute
from aim_video.weights import load_aim_checkpoint

TINY = ViTConfig(width=64, layers=2, heads=2, patch_size=8, image_size=32)
ADAPTERS = ("T_Adapter_in", "T_Adapter", "S_Adapter", "MLP_Adapter")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Micro tensors gain nothing from a second thread, and on a busy 2-core machine every op
    # would wait for it to be scheduled.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**changes) -> AIMConfig:
    return AIMConfig(vit=TINY, num_frames=4, num_classes=5, **changes)


def with_live_adapters(model: AIMViT) -> AIMViT:
    """Adapters away from their zero init, so every branch shows in outputs and gradients."""
    with torch.no_grad():
        for block in model.transformer.resblocks:
            for name in ADAPTERS:
                if hasattr(block, name):
                    getattr(block, name).D_fc2.weight.normal_(0, 0.05)
        model.temporal_embedding.normal_(0, 0.05)
    return model


def clip(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32)


class OpLog(TorchDispatchMode):
    """Records the aten ops that run, with their tensor arguments' shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[int, ...]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        self.calls.append((func.overloadpacket.__name__, shapes))
        return func(*args, **(kwargs or {}))

    def count(self) -> Counter:
        return Counter(name for name, _ in self.calls)


def grads(model: torch.nn.Module, rename=lambda n: n) -> dict[str, torch.Tensor]:
    return {rename(n): p.grad for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- same results as the reference
@pytest.mark.parametrize("temporal_in", [False, True])
def test_outputs_and_trainable_gradients_equal_the_reference_in_fp32(tmp_path, temporal_in):
    ref = ReferenceAIM(width=64, layers=2, heads=2, patch_size=8, image_size=32, num_frames=4,
                       num_classes=5, temporal_in=temporal_in, drop_path=0.0, dropout=0.0)
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if "D_fc2" in name or name.endswith("temporal_embedding") or "ln_" in name:
                param.add_(torch.randn_like(param) * 0.05)
    ref.freeze()
    path = tmp_path / "aim.pth"
    torch.save({"state_dict": ref.state_dict()}, path)
    loaded = load_aim_checkpoint(path, heads=2)
    ours = AIMViT(tiny(temporal_in=temporal_in, drop_path=0.0, dropout=0.0))
    ours.load_state_dict(loaded.state_dict())

    x = clip()
    weights = torch.randn(2, 5)  # a loss that weighs every logit differently
    outs = []
    for model in (ref, ours):
        out = model.train()(x)
        (out * weights).sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    assert outs[0].abs().max() > 1e-2
    expected = grads(ref, lambda n: n.removeprefix("backbone.").replace("cls_head.fc_cls", "head"))
    got = grads(ours)
    assert set(got) == set(expected)
    assert any("T_Adapter_in" in n for n in got) is temporal_in
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_mlp_is_clips_quick_gelu_mlp_and_keeps_one_hidden_tensor():
    mlp = MLP(64, 256)
    mlp.reset_parameters(depth=4)
    x = torch.randn(3, 5, 64, requires_grad=True)
    hidden = F.linear(x, mlp.c_fc.weight, mlp.c_fc.bias)
    expected = F.linear(hidden * torch.sigmoid(1.702 * hidden), mlp.c_proj.weight, mlp.c_proj.bias)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.shape) or t, lambda t: t):
        out = mlp(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # Frozen weights: backward keeps only the activation's input, not x * sigmoid's two.
    mlp.requires_grad_(False)
    kept.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.shape) or t, lambda t: t):
        mlp(x)
    assert [s for s in kept if s == (3, 5, 256)] == [(3, 5, 256)]


def test_droppath_add_equals_the_unfused_branch_and_keeps_x_layout():
    drop = DropPath(0.4).train()
    x = torch.randn(6, 5, 8)
    branch = torch.randn(6, 5, 8)
    torch.manual_seed(3)
    got = drop.add(x, branch, scale=0.5)
    torch.manual_seed(3)  # the unfused oracle: a per-sample keep mask, scaled by 1/keep
    keep = torch.empty(6, 1, 1).bernoulli_(0.6)
    expected = x + 0.5 * (branch * keep / 0.6)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert 0 < int((got == x).all(dim=(1, 2)).sum()) < 6  # some samples dropped, not all
    drop.eval()
    torch.testing.assert_close(drop.add(x, branch, scale=0.5), x + 0.5 * branch, rtol=0, atol=0)
    # A token-major branch is added into frame-major x without a copy of its own.
    frame_major = torch.randn(2, 3, 5, 8)  # (B, T, L, D)
    tracks = torch.randn(2 * 5, 3, 8)  # (B·L, T, D)
    out = drop.train().add(frame_major, tracks_to_frames(tracks, 5), sample_dims=2)
    assert out.is_contiguous()


def test_autocast_layernorm_normalises_in_fp32_and_returns_the_compute_dtype():
    norm = AutocastLayerNorm(64)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(4, 64) * 50 + 300  # a large mean: fp32 statistics matter
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, norm(x).bfloat16(), rtol=0, atol=0)
    assert norm(x).dtype == torch.float32  # without autocast: a plain LayerNorm


def test_residual_stream_stays_fp32_under_autocast():
    model = AIMViT(tiny()).eval()
    block = model.transformer.resblocks[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model.embed(clip())
        assert tokens.dtype == torch.float32
        assert block(tokens, 4).dtype == torch.float32


# ---------------------------------------------------------------- recompute policies
@pytest.mark.parametrize("policy", [Recompute.MLP, Recompute.ATTENTION_MLP, Recompute.BLOCKS])
def test_recompute_policies_give_the_plain_outputs_and_gradients(policy):
    plain = with_live_adapters(AIMViT(tiny(drop_path=0.3, temporal_in=True))).train()
    recomputing = AIMViT(tiny(drop_path=0.3, temporal_in=True)).train()
    recomputing.load_state_dict(plain.state_dict())
    recomputing.set_grad_checkpointing(policy)
    x = clip()
    outs, all_grads = [], []
    for model in (plain, recomputing):
        torch.manual_seed(7)  # same drop-path and dropout draws
        out = model(x)
        out.square().sum().backward()
        outs.append(out)
        all_grads.append(grads(model))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-6)
    for name, grad in all_grads[0].items():
        torch.testing.assert_close(all_grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def forward_matmuls_in_backward(policy: Recompute) -> Counter:
    """(input, weight) shapes of the linear layers that backward re-runs, one-block model.

    Linear layers run as `addmm` (bias + input @ weight); gradients are plain `mm`.
    """
    model = AIMViT(AIMConfig(vit=ViTConfig(width=64, layers=1, heads=2, patch_size=8, image_size=32),
                             num_frames=4, num_classes=5))
    model.set_grad_checkpointing(policy)
    out = model.train()(clip())
    log = OpLog()
    with log:
        out.sum().backward()
    return Counter((shapes[1], shapes[2]) for name, shapes in log.calls if name == "addmm")


def test_recompute_re_runs_only_the_matmuls_it_must():
    assert forward_matmuls_in_backward(Recompute.NOTHING) == Counter()
    # mlp: c_fc again (136 tokens x 64 -> 256), not c_proj.
    assert forward_matmuls_in_backward(Recompute.MLP) == Counter({((136, 64), (64, 256)): 1})
    # attention_mlp: also the in-projection of both attentions (-> 3 x 64), not out_proj.
    assert forward_matmuls_in_backward(Recompute.ATTENTION_MLP) == Counter(
        {((136, 64), (64, 256)): 1, ((136, 64), (64, 192)): 2}
    )


def test_recompute_policy_from_the_config_switch_and_by_name():
    assert Recompute.of(True) is Recompute.BLOCKS and Recompute.of(False) is Recompute.NOTHING
    assert Recompute.of("attention_mlp") is Recompute.ATTENTION_MLP
    model = AIMViT(tiny(grad_checkpointing=True))
    assert model.transformer.recompute is Recompute.BLOCKS
    model.set_grad_checkpointing("mlp")
    assert [b.recompute_mlp and not b.recompute_attention for b in model.transformer.resblocks] == [True, True]
    with pytest.raises(ValueError, match="unknown recompute policy 'some'; known: nothing, mlp"):
        model.set_grad_checkpointing("some")


# ---------------------------------------------------------------- no needless work
def backward_nodes(out: torch.Tensor) -> Counter:
    """Counts the autograd graph's nodes by type."""
    seen, stack, kinds = set(), [out.grad_fn], Counter()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        kinds[type(node).__name__] += 1
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return kinds


def test_no_autograd_work_before_the_first_trainable_parameter():
    # AIM trains the temporal embedding, added after the patch embedding: the conv is never
    # differentiated, and no frozen weight receives a gradient.
    model = AIMViT(tiny()).train()
    nodes = backward_nodes(model(clip()))
    assert not any("Convolution" in kind for kind in nodes)
    # Adapters in the last block only, no temporal embedding: the first block is not in the
    # graph at all, nor the last block's temporal attention (its input is still frozen; the
    # first trainable weights are in the T_Adapter after it). What is left: the spatial
    # attention, and the norms ln_1 (spatial), ln_2 and ln_post.
    model = AIMViT(tiny(adapter_blocks="top:1", temporal_embedding=False)).train()
    nodes = backward_nodes(model(clip()))
    assert sum(n for kind, n in nodes.items() if "ScaledDotProduct" in kind) == 1
    assert sum(n for kind, n in nodes.items() if "NativeLayerNorm" in kind) == 3


def test_each_attention_is_one_4d_fused_sdpa_call_and_tokens_are_copied_once_per_block():
    model = AIMViT(tiny()).eval()
    log = OpLog()
    with torch.no_grad(), log:
        model(clip())
    sdpa = [shapes for name, shapes in log.calls if "scaled_dot_product" in name]
    assert len(sdpa) == 2 * TINY.layers
    assert all(len(shape) == 4 for shapes in sdpa for shape in shapes)
    # (B·L, heads, T, head_dim) and (B·T, heads, L, head_dim): no 5-D fallback to bmm + softmax.
    assert {shapes[0] for shapes in sdpa} == {(2 * 17, 2, 4, 32), (2 * 4, 2, 17, 32)}
    ops = log.count()
    assert ops["bmm"] == ops["_softmax"] == 0
    # One copy of the input clip (to frames) and one regrouping per block, nothing else.
    assert ops["clone"] + ops["copy_"] + ops["contiguous"] == 1 + TINY.layers


@pytest.mark.parametrize("recompute", ["nothing", "attention_mlp"])
def test_temporal_attention_through_matmuls_equals_sdpa(recompute):
    torch.manual_seed(0)
    fused = with_live_adapters(AIMViT(tiny(temporal_in=True, dropout=0.0, drop_path=0.0)))
    plain = AIMViT(tiny(temporal_in=True, dropout=0.0, drop_path=0.0,
                        temporal_attention="matmul"))
    plain.load_state_dict(fused.state_dict())
    x = clip()
    for model in (fused, plain):
        model.set_grad_checkpointing(Recompute(recompute))
        model(x).square().sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), fused(x), rtol=1e-5, atol=1e-6)
    for name, grad in grads(fused).items():
        torch.testing.assert_close(grads(plain)[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="temporal_attention"):
        tiny(temporal_attention="flash")


# ---------------------------------------------------------------- compile and CUDA graphs
HOST_SYNC_OPS = {"_local_scalar_dense", "item", "nonzero", "is_nonzero", "masked_select", "unique"}


@pytest.mark.parametrize("train", [False, True])
def test_forward_never_reads_device_data_on_the_host(train):
    # What would block CUDA graphs and stall the GPU: .item(), nonzero, data-dependent shapes.
    model = AIMViT(tiny(drop_path=0.2)).train(train)
    log = OpLog()
    with torch.set_grad_enabled(train), log:
        out = model(clip())
        if train:
            out.sum().backward()
    assert not HOST_SYNC_OPS & set(log.count())


@pytest.mark.slow
def test_compiles_as_one_graph_and_matches_eager():
    torch._dynamo.reset()
    model = with_live_adapters(AIMViT(tiny(temporal_in=True, drop_path=0.3))).eval()
    # aot_eager traces forward and backward like inductor does, without generating code.
    fast = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-6)
    # Under autocast too, as GPUs run it: the norms' cast to the autocast dtype is traced.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(fast(x), model(x), rtol=1e-2, atol=1e-2)
    model.train()
    model.set_grad_checkpointing(Recompute.ATTENTION_MLP)
    torch.manual_seed(5)
    fast(x).square().sum().backward()
    compiled_grads = {n: g.clone() for n, g in grads(model).items()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    model(x).square().sum().backward()
    for name, grad in grads(model).items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    torch._dynamo.reset()


# ---------------------------------------------------------------- the benchmark script
@pytest.fixture(scope="module")
def throughput():
    path = Path(__file__).parents[1] / "benchmarks" / "throughput.py"
    spec = importlib.util.spec_from_file_location("throughput", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["throughput"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmark_reports_results_speedups_and_equal_logits(throughput, tmp_path):
    out = tmp_path / "results.jsonl"
    records = throughput.main(
        ["--device", "cpu", "--archs", "cpu-micro", "--frames", "4", "--batch-sizes", "2",
         "--dtypes", "fp32", "--compile", "eager", "--steps", "1", "--warmup", "0",
         "--threads", "1", "--clock", "cpu", "--paired", "--out", str(out)]
    )
    assert len(out.read_text().splitlines()) == len(records)
    kinds = Counter(r["kind"] for r in records)
    assert kinds["result"] == 4 and kinds["speedup"] == 2  # (train, infer) x (ours, reference)
    assert all(r["speedup"] > 0 and r["method"] == "paired" for r in records if r["kind"] == "speedup")
    (check,) = [r for r in records if r["kind"] == "check"]
    assert check["max_abs_diff"] < 1e-5 < check["max_abs_logit"]
    for r in (r for r in records if r["kind"] == "result"):
        assert r["clips_per_s"] > 0 and r["gflops_per_clip"] > 0 and "rss_delta_gib" in r
    flops = {r["mode"]: r["gflops_per_clip"] for r in records if r["kind"] == "result"}
    assert 1.8 < flops["train"] / flops["infer"] < 2.5  # frozen backbone: no weight gradients


def test_memory_estimate_orders_the_policies_and_beats_the_reference(throughput):
    cfg = AIMConfig(vit=throughput.CPU_ARCHS["cpu-micro"], num_frames=4, num_classes=400)
    cases = [throughput.Case("reference", "cpu-micro", 4, 8, "bf16", "train", "eager", "nothing")]
    cases += [throughput.Case("ours", "cpu-micro", 4, 8, "bf16", "train", "eager", r.value)
              for r in Recompute]
    peaks = [throughput.estimate(case, cfg, steps=1)["est_peak_mem_gib"] for case in cases]
    # reference > ours > ours recomputing the MLP > ... attention too > whole blocks
    assert peaks == sorted(peaks, reverse=True) and len(set(peaks)) == len(peaks)


def test_grad_checkpointing_in_the_config_means_recomputing_whole_blocks():
    assert AIMViT(tiny(grad_checkpointing=True)).transformer.recompute is Recompute.BLOCKS
    assert AIMViT(tiny()).transformer.recompute is Recompute.NOTHING


def test_cpu_threads_benchmark_compares_against_the_default_threads(tmp_path):
    path = Path(__file__).parents[1] / "benchmarks" / "cpu_threads.py"
    spec = importlib.util.spec_from_file_location("cpu_threads", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    records = bench.main(["--videos", "16", "--workers", "0", "--cache", str(tmp_path)])
    machine, baseline, chosen = records
    assert machine["videos"] == 16 and machine["cores"] >= 1
    assert baseline["threads"] == threads and "ratio_vs_baseline" not in baseline
    assert chosen["setting"] == "train.cpu_threads default" and chosen["ratio_vs_baseline"] > 0
    assert baseline["clips_per_s"] > 0 and chosen["clips_per_s"] > 0
    assert torch.get_num_threads() == threads  # training restored the caller's setting


def test_gpu_script_parts_pass_the_benchmarks_own_flags(throughput, tmp_path):
    # A mistyped flag would cost a GPU session its few device minutes: every part's command
    # must parse with its script's own argument parser.
    repo = Path(__file__).parents[1]
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path)}
    printed = subprocess.run(["bash", "benchmarks/gpu_run.sh"], cwd=repo, env=env, text=True,
                             capture_output=True, check=True).stdout
    spec = importlib.util.spec_from_file_location(
        "data_throughput", repo / "benchmarks" / "data_throughput.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    parsers = {"benchmarks/throughput.py": throughput.parse_args,
               "benchmarks/data_throughput.py": data.parse_args}
    parsed = Counter()
    for line in printed.splitlines():
        words = line.split()
        if len(words) > 1 and words[1] in parsers:
            parsers[words[1]](words[2:])  # exits (SystemExit) on an unknown flag
            parsed[words[1]] += 1
    assert parsed == {"benchmarks/throughput.py": 6, "benchmarks/data_throughput.py": 1}
    assert "bash -c smoke" in printed


def test_benchmark_times_each_temporal_kernel_and_compares_the_first(throughput):
    records = throughput.main(["--device", "cpu", "--archs", "cpu-tiny", "--frames", "8",
                               "--batch-sizes", "2", "--dtypes", "fp32", "--compile", "eager",
                               "--modes", "infer", "--temporal-attention", "matmul", "sdpa",
                               "--steps", "1", "--warmup", "1", "--threads", "1"])
    ours = [r["temporal_attention"] for r in records
            if r["kind"] == "result" and r["impl"] == "ours"]
    assert ours == ["matmul", "sdpa"]
    (speedup,) = [r for r in records if r["kind"] == "speedup"]
    matmul = next(r for r in records
                  if r["kind"] == "result" and r["temporal_attention"] == "matmul")
    assert speedup["temporal_attention"] == "matmul"
    assert speedup["ours_clips_per_s"] == matmul["clips_per_s"]


def test_attention_kernels_are_timed_alone_and_agree(throughput):
    records = throughput.main(["--device", "cpu", "--attention-kernels", "--archs", "cpu-tiny",
                               "--frames", "8", "--batch-sizes", "2", "--dtypes", "fp32",
                               "--steps", "2", "--warmup", "1"])
    timed = {(r["call"], r["kernel"]): r for r in records if r["kind"] == "attention"}
    # The CPU has flash and math SDPA kernels (the others are reported as skipped).
    assert {("spatial", "flash"), ("temporal", "math"), ("temporal", "matmul")} <= set(timed)
    assert timed["spatial", "flash"]["shape"] == [16, 3, 50, 64]  # B·T frames, 7x7 + 1 tokens
    assert timed["temporal", "flash"]["shape"] == [100, 3, 8, 64]  # B·(N+1) tracks, T frames
    for record in timed.values():
        assert record["max_abs_diff_vs_matmul"] < 1e-5
        assert record["per_step_ms"] == pytest.approx(4 * record["forward_backward_ms"], rel=1e-3)
    skipped = [r for r in records if r["kind"] == "skipped"]
    assert len(timed) + len(skipped) == 2 * 5
