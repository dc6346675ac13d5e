#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one call on a host with one GPU (about 9 minutes),
# run from the repository root:
#
#     OUT=gpu-results bash benchmarks/gpu_run.sh [DEADLINE_S]
#
# The parts run in order of importance, each under its own time cap and never past DEADLINE_S
# (default 560) seconds from the start; a part that fails or runs out of time leaves its
# partial JSON lines and the next part still runs. Writes into $OUT (8 files, the most a
# device call brings back):
#   log.txt              the GPU, each part's exit status and seconds, and the engine smoke's log
#   1_b16_eager.jsonl    ViT-B/16 8x224 bf16 batch 32, train and inference, ours and the
#                        reference formulation, with the 12 costliest kernels of one step
#   2_l14_eager.jsonl    ViT-L/14 8x224 bf16 batch 8, likewise
#   3_data.jsonl         training clips/s of the data path on all the host's cores
#                        (benchmarks/data_throughput.py), originals and prepared, against decord
#   4_b16_recompute.jsonl  ViT-B/16 training with activation checkpointing, batch 32 and 64
#   5_b16_compiled.jsonl   ViT-B/16 under torch.compile, ours and the reference
#   6_b16_attention.jsonl  ViT-B/16's spatial and temporal attention calls alone, per kernel
#                          (flash, memory-efficient, cuDNN, math, plain matmuls)
#   7_b16_matmul_temporal.jsonl  ViT-B/16 eager with model.temporal_attention=matmul
# PyAV (and decord, for the data baseline) must be importable; where pip cannot reach an index,
# put their wheels in .whl/ and they are installed into /tmp/site first. With DRY_RUN=1 it only
# prints each part's command (tests/test_speed_paths.py checks them against the scripts' flags).
set -u
OUT=${OUT:-gpu-results}
DEADLINE=${1:-560}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
exec 3>&1
START=$(date +%s)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

left() { echo $((DEADLINE - $(date +%s) + START)); }

# part NAME CAP_S COMMAND...: runs COMMAND for at most CAP_S seconds (less near the deadline).
part() {
    local name=$1 cap=$2 budget t0 rc
    shift 2
    if [ -n "${DRY_RUN:-}" ]; then
        echo "$*" >&3  # the caller's stdout, past the part's own redirection
        return
    fi
    budget=$(left)
    ((budget < cap)) && cap=$budget
    if ((cap < 20)); then
        echo "== $name: skipped, $(left) s left" | tee -a "$LOG"
        return
    fi
    echo "== $name: up to $cap s" | tee -a "$LOG"
    t0=$(date +%s)
    timeout -s INT -k 20 "$cap" "$@"
    rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$LOG"
}

if [ -z "${DRY_RUN:-}" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
[ -z "${DRY_RUN:-}" ] && {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nproc
    python3 -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.version.cuda,
                                       'av', av.__version__)"
} 2>&1 | tee -a "$LOG"

B="python3 benchmarks/throughput.py --device cuda --frames 8 --dtypes bf16"
part b16_eager 130 $B --archs ViT-B/16 --batch-sizes 32 --compile eager --profile 12 \
    --out "$OUT/1_b16_eager.jsonl"

part attention 40 $B --archs ViT-B/16 --batch-sizes 32 --attention-kernels \
    --out "$OUT/6_b16_attention.jsonl"

part b16_matmul_temporal 60 $B --archs ViT-B/16 --batch-sizes 32 --compile eager \
    --temporal-attention matmul --reference none --out "$OUT/7_b16_matmul_temporal.jsonl"

# The engine end to end on the GPU (device augmentation, bf16 autocast, fused AdamW, pinned
# non-blocking copies), on a small synthetic set: it must finish and write its metrics.
cli() { python3 -c 'import sys; from aim_video.cli import main; sys.exit(main())' "$@"; }
smoke() {
    cli make-synthetic /tmp/aim-smoke/data --num-train 256 --num-val 64 \
        --size 32 --no-progress &&
    cli train --config synthetic_cpu --out /tmp/aim-smoke/run \
        --allow-random-backbone --no-progress --json --set train.device=cuda \
        data.train=/tmp/aim-smoke/data/train.txt data.val=/tmp/aim-smoke/data/val.txt \
        data.class_names=/tmp/aim-smoke/data/classes.txt data.root=/tmp/aim-smoke/data \
        data.num_workers=4 optim.epochs=2 \
        train.precision=bf16
}
export -f cli smoke
part engine_smoke 90 bash -c smoke >>"$LOG" 2>&1

part l14_eager 90 $B --archs ViT-L/14 --batch-sizes 8 --compile eager \
    --out "$OUT/2_l14_eager.jsonl"

# 960 clips a pass: each pass starts its workers afresh, and 480 (under 4 batches a worker at
# 16 workers) left the start and the tail in the wall time.
part data 170 python3 benchmarks/data_throughput.py --videos 24 --clips 960 --rounds 2 \
    --workers "$(nproc)" --prepared 4:20 --device-augment --cache /tmp/aim-bench \
    >"$OUT/3_data.jsonl"

part b16_recompute 70 $B --archs ViT-B/16 --batch-sizes 32 64 --modes train --compile eager \
    --recompute mlp attention_mlp blocks --reference none --out "$OUT/4_b16_recompute.jsonl"

part b16_compiled 600 $B --archs ViT-B/16 --batch-sizes 32 --compile default \
    --budget-s $(($(left) - 120)) --out "$OUT/5_b16_compiled.jsonl"

echo "== done after $(($(date +%s) - START)) s" | tee -a "$LOG"
