"""`aim-video export`: a training checkpoint's classifier as an ONNX file, verified."""

from __future__ import annotations

import argparse
import json

from aim_video.cli import arguments


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
            "difference and fails if it is above 1e-4 (no file is written then; exit status "
            "3). Needs pip install 'aim-video[export]'."
        ),
    )
    arguments.add(parser, "checkpoint", required=True)
    parser.add_argument("--out", required=True, metavar="MODEL.onnx",
                        help="the file to write, e.g. model.onnx")
    arguments.add(parser, "pretrained", "json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aim_video.export import FEATURE_TOLERANCE, VERIFY_TOLERANCE, export_checkpoint

    checkpoint = arguments.one_checkpoint(args)
    arguments.check_out(args.out, "file")
    result = export_checkpoint(checkpoint, args.out, pretrained=args.pretrained)
    if args.json:
        print(json.dumps({
            "path": str(result.path), "bytes": result.bytes,
            "classes": len(result.class_names), "num_frames": result.num_frames,
            "input_size": result.input_size, "max_abs_diff": result.max_abs_diff,
            "verify_batch": result.verify_batch, "tolerance": VERIFY_TOLERANCE}))
        return 0
    print(f"{result.path}: {result.bytes / 2**20:.1f} MiB, {len(result.class_names)} classes, "
          f"clips (batch, 3, {result.num_frames}, {result.input_size}, {result.input_size})")
    print(f"onnxruntime vs PyTorch: max |Δlogit| = {result.max_abs_diff:.2e} at batch "
          f"{result.verify_batch} (fp32, limit {VERIFY_TOLERANCE:.0e}); features: "
          f"{result.max_feature_diff:.2e} of the largest (limit {FEATURE_TOLERANCE:.0e})")
    return 0
