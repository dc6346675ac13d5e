"""`aim-video extract`: feature vectors of videos (or of their windows) for other tools."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from aim_video.cli.predict import add_input_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="feature vectors of videos, before the head",
        description="Write the pooled representation before the classifier (mean over the test "
                    "views) of each video, or of each window with --windows, to DIR/features.npy "
                    "(rows; np.load(..., mmap_mode='r')) and DIR/index.csv (row, path, start, "
                    "end, ok, error). A rerun continues where a previous one stopped. With "
                    "--pretrained alone: the frozen image model's features, no adapters (the "
                    "linear-probe baseline).",
    )
    add_input_arguments(parser)
    source = parser.add_argument_group("model (one of, or both: --pretrained moves the backbone)")
    source.add_argument("--checkpoint", help="last.pt / best.pt of a run")
    source.add_argument("--pretrained", metavar="PATH", help="image backbone weights")
    source.add_argument("--config", default="k400_vitb16_8f",
                        help="with --pretrained alone: the preset or YAML whose model.arch and "
                             "data settings (frames, sampling, size) to use")
    source.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="SECTION.KEY=VALUE", help="config overrides")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--windows", action="store_true",
                        help="one row per window (timeline windows) instead of per video")
    parser.add_argument("--stride", type=float, metavar="SECONDS",
                        help="with --windows: time between window starts")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float32")
    parser.set_defaults(func=run)


def _predictor(args: argparse.Namespace):
    from aim_video.engine.config import ConfigError, load_config
    from aim_video.predictor import Predictor

    if args.checkpoint:
        return Predictor.from_checkpoint(args.checkpoint, pretrained=args.pretrained,
                                         device=args.device, views=args.views,
                                         overrides=args.overrides)
    if not args.pretrained:
        raise ConfigError("give --checkpoint (adapted features) or --pretrained (the frozen "
                          "image model's)")
    cfg = load_config(args.config, args.overrides)
    if args.views:
        from aim_video.engine.config import with_views

        cfg = with_views(cfg, args.views)
    return Predictor.from_backbone(args.pretrained, cfg, device=args.device)


def run(args: argparse.Namespace) -> int:
    from aim_video.outputs import FeatureStore
    from aim_video.predictor import collect_inputs

    predictor = _predictor(args)
    frames = predictor.cfg.data.backend == "frames"
    videos = collect_inputs(args.inputs, root=args.root, frame_folders=frames)
    store = FeatureStore(args.out, args.dtype)
    todo = [v for v in dict.fromkeys(videos) if v not in store.done]
    retried = len(store.failed.intersection(todo))  # unreadable in an earlier run
    failed = 0
    bar = tqdm(total=len(todo), unit="video", disable=args.no_progress or not todo,
               file=sys.stderr, desc="extract")
    if args.windows:
        batches = ([predictor.window_features(v, args.stride, batch_size=args.batch_size)]
                   for v in todo)
    else:
        batches = predictor.iter_features(todo, batch_size=args.batch_size, workers=args.workers)
    try:
        for part in batches:
            for item in part:
                if not item.ok:
                    failed += 1
                    tqdm.write(f"aim-video extract: unreadable: {item.path}: {item.error}",
                               file=sys.stderr)
                elif item.error:
                    tqdm.write(f"aim-video extract: note: {item.path}: {item.error}",
                               file=sys.stderr)
                store.append(item.path, item.features if item.ok else None, item.windows,
                             item.error)
            store.flush()
            bar.update(len(part))
    finally:
        bar.close()
    path = store.finalise()
    already = len(dict.fromkeys(videos)) - len(todo)
    rows = f"{store.rows} rows of {store.dim} floats" if store.dim else "no rows"
    print(f"{len(todo) - failed} extracted, {failed} unreadable ({retried} retried), "
          f"{already} already in {args.out}; {rows} in {path}", file=sys.stderr)
    return 1 if failed else 0
