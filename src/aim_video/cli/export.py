"""`aim-video export`: a training checkpoint's classifier as an ONNX file, verified."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint's classifier to ONNX (verified with onnxruntime)",
        description=(
            "Export the whole classifier of a training checkpoint (normalised clip "
            "(B, 3, T, H, W) in, logits out; batch dynamic, frames and size from the config) "
            "with PyTorch's exporter. Class names and test-time preprocessing are stored in the "
            "file's metadata, so it alone is enough to predict (aim-video predict --runtime "
            "onnx). Before the file appears, onnxruntime's logits are compared with PyTorch's "
            "on a seeded random clip at another batch size; the command prints the largest "
            "difference and fails if it is above 1e-4 (no file is written then). Needs pip install 'aim-video[export]'."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="last.pt / best.pt of a run")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    parser.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    parser.add_argument("--pretrained", metavar="PATH", help="backbone weights (if moved)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.export import FEATURE_TOLERANCE, VERIFY_TOLERANCE, export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, pretrained=args.pretrained)
    print(f"{result.path}: {result.bytes / 2**20:.1f} MiB, {len(result.class_names)} classes, "
          f"clips (batch, 3, {result.num_frames}, {result.input_size}, {result.input_size})")
    print(f"onnxruntime vs PyTorch: max |Δlogit| = {result.max_abs_diff:.2e} at batch "
          f"{result.verify_batch} (fp32, limit {VERIFY_TOLERANCE:.0e}); features: "
          f"{result.max_feature_diff:.2e} of the largest (limit {FEATURE_TOLERANCE:.0e})")
    return 0
