"""Command line: ``saemi analyze | train | evaluate | serve``."""

import argparse
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}


def collect_inputs(paths):
    """Files named, plus the image files (by suffix) directly inside named folders."""
    from .errors import SaemiError

    files = []
    for p in map(Path, paths):
        if not p.exists():
            raise SaemiError(f"no such file or folder: {p}", code="not_found")
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    return files


def output_stems(files):
    """Stem per input for the output files; on a clash the later file keeps its suffix."""
    seen, stems = set(), []
    for f in files:
        stem = f.stem if f.stem not in seen else f.name
        seen.add(stem)
        stems.append(stem)
    return stems


def _analyze(args):
    import numpy as np
    import pandas as pd
    from PIL import Image
    from tqdm import tqdm

    from .card import read_card
    from .errors import SaemiError
    from .overlay import draw_overlay
    from .pipeline import Settings, analyze, default_segmenter

    try:
        overrides = {k: v for k, v in {
            "watershed": args.watershed, "min_distance": args.min_distance, "threshold": args.threshold,
            "min_size": args.min_size, "exclude_edge": args.exclude_edge or None,
            "merge_threshold": args.merge_threshold, "min_relative_size": args.min_relative_size,
            "nm_per_pixel": args.nm_per_pixel, "metric": args.metric, "scale": args.scale}.items()
            if v is not None}
        settings = Settings.from_dict(overrides, defaults=read_card(args.weights)["postprocess"])
        files = collect_inputs(args.inputs)
        if not files:
            raise SaemiError("no image files found in the given paths")
        segmenter = default_segmenter(args.weights, args.device)
    except SaemiError as exc:
        print(f"saemi: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    for f, stem in tqdm(list(zip(files, output_stems(files))), desc="analysing", unit="image",
                        disable=args.quiet):
        try:
            a = analyze(f, settings, segmenter)
        except SaemiError as exc:
            failed += 1
            tqdm.write(f"skipped {f}: {exc}", file=sys.stderr)
            rows.append({"file": str(f), "status": "error", "error": str(exc)})
            continue
        Image.fromarray(a.labels.astype(np.uint16)).save(out / f"{stem}_labels.png")
        a.table.to_csv(out / f"{stem}_particles.csv", index=False)
        overlay = draw_overlay(a.segmentation.image, a.labels, args.overlay, 0.7, a.banner_box)
        Image.fromarray(overlay).save(out / f"{stem}_overlay.png")
        h, w = a.labels.shape
        rows.append({"file": str(f), "status": "ok", "error": "", "width": w, "height": h,
                     "banner": "" if a.banner_box is None else "{}:{},{}:{}".format(*a.banner_box),
                     "nm_per_pixel": a.nm_per_pixel or "",
                     **{k: v for k, v in a.summary.items()},
                     "seconds": round(sum(a.timings.values()), 3)})
    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    ok = len(rows) - failed
    print(f"{ok} of {len(rows)} images analysed; results in {out}" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


def _evaluate(args):
    import json

    from .evaluate import (TUNED_KEYS, cross_validated_ap, evaluate, evaluation_names, rescore, tune_postprocess,
                           write_card_postprocess)
    from .pipeline import Settings, default_segmenter
    from .card import read_card

    names = evaluation_names(args.data, args.split, args.subset)
    if args.limit:
        names = names[:args.limit]
    if args.baseline == "otsu":
        from .baseline import OtsuSegmenter

        segmenter = OtsuSegmenter()
        settings = Settings.from_dict(None, defaults=segmenter.card["postprocess"])
    else:
        segmenter = default_segmenter(args.weights, args.device)
        settings = Settings.from_dict(None, defaults=read_card(args.weights)["postprocess"])
    per_image, summary, segmentations = evaluate(args.data, names, segmenter, settings)
    if args.tune and not args.baseline:
        best, table, ap_per_setting = tune_postprocess(args.data, segmentations)
        print("tuned splitting settings:", best)
        print(f"cross-validated AP@0.5 (settings chosen on the other half of the images): "
              f"{cross_validated_ap(ap_per_setting):.4f}")
        settings = Settings.from_dict({k: best[k] for k in TUNED_KEYS})
        seconds = dict(zip(per_image["name"], per_image["seconds"]))
        per_image, summary = rescore(args.data, segmentations, settings, seconds)
        write_card_postprocess(best, summary, args.weights)
    per_image.to_csv(args.csv, index=False)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}, indent=1))
    print(f"per-image scores written to {args.csv}")
    return 0


def _train(args):
    from .train import train

    card = train(args.data, args.out, epochs=args.epochs, crop=args.size, batch_size=args.batch_size,
                 lr=args.lr, device=args.device, val_fraction=args.val_fraction, seed=args.seed,
                 minutes=args.minutes, val_every=args.val_every, checkpoint_dir=args.checkpoint_dir,
                 resume=args.resume, limit_images=args.limit_images)
    print("validation (training scale):", card.get("validation_at_training_scale"))
    return 0


def _serve(args):
    from .serve import run

    mode = "backend" if args.backend else "frontend" if args.frontend else "all"
    return run(mode, host=args.host, port=args.port, workers=args.workers)


def build_parser():
    parser = argparse.ArgumentParser(prog="saemi", description="Size analysis of electron-microscopy images.")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="analyse images or folders of images")
    a.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--watershed", dest="watershed", action="store_true", default=None,
                   help="split touching particles (default: the model card's setting)")
    a.add_argument("--no-watershed", dest="watershed", action="store_false")
    a.add_argument("--min-distance", type=int, default=None, help="minimum distance between watershed markers, px")
    a.add_argument("--threshold", type=float, default=None, help="particle probability cut, 0..1")
    a.add_argument("--min-size", type=int, default=None, help="drop particles smaller than this, px")
    a.add_argument("--min-relative-size", type=float, default=None, metavar="FRACTION",
                   help="drop particles smaller than this fraction of the image's typical particle area "
                        "(0 keeps all; default from the model card)")
    a.add_argument("--merge-threshold", type=float, default=None,
                   help="merge touching pieces whose shared border has a mean non-interior probability "
                        "below this (0 disables; default from the model card)")
    a.add_argument("--exclude-edge", action="store_true", help="drop particles touching the image border")
    a.add_argument("--nm-per-pixel", type=float, default=None, help="calibration: adds sizes in nm")
    a.add_argument("--scale", default="auto", choices=["auto", "none"],
                   help="auto: without --nm-per-pixel, calibrate from the scale bar read in the image")
    a.add_argument("--metric", default=None, help="summary metric (default equivalent_diameter)")
    a.add_argument("--overlay", default="outline", choices=["outline", "filled"])
    a.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a.add_argument("--weights", default=None, help="weights file or folder (default: bundled)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_analyze)

    e = sub.add_parser("evaluate", help="score the full pipeline on labelled images")
    e.add_argument("--data", required=True, help="folder with images/*.png and segmaps/*.png")
    e.add_argument("--split", default=None, help="split JSON (default: model_weights/split.json)")
    e.add_argument("--subset", default="val", choices=["val", "train"])
    e.add_argument("--limit", type=int, default=None, help="only the first N images")
    e.add_argument("--csv", default="evaluation.csv", help="per-image scores")
    e.add_argument("--tune", action="store_true",
                   help="grid-search the splitting settings and record them in the model card")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--weights", default=None)
    e.add_argument("--baseline", default=None, choices=["otsu"],
                   help="score the Otsu + watershed baseline instead of the network")
    e.set_defaults(func=_evaluate)

    t = sub.add_parser("train", help="train the U-Net from scratch on EMPS-style data")
    t.add_argument("--data", required=True, help="folder with images/*.png and segmaps/*.png")
    t.add_argument("--out", default="model_weights", help="where the weights, card and split go")
    t.add_argument("--epochs", type=int, default=60, help="epochs of len(train)/batch-size random crops")
    t.add_argument("--size", type=int, default=192, help="crop side in pixels at the network's scale")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--val-fraction", type=float, default=0.15)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--minutes", type=float, default=None, help="wall-clock budget; the schedule ends by then")
    t.add_argument("--val-every", type=int, default=4, help="validate every N epochs")
    t.add_argument("--checkpoint-dir", default="checkpoints")
    t.add_argument("--resume", action="store_true", help="continue from checkpoints/train_state.pt")
    t.add_argument("--limit-images", type=int, default=None, help="use only the first N images (quick tests)")
    t.set_defaults(func=_train)

    s = sub.add_parser("serve", help="run the web app, the REST backend, or the front end, under gunicorn")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="front end with the backend in-process (default)")
    which.add_argument("--backend", action="store_true", help="only the REST API (GPU server)")
    which.add_argument("--frontend", action="store_true", help="only the Dash page; set SAEMI_BACKEND_URL")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8050)
    s.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: $WEB_CONCURRENCY or 1)")
    s.set_defaults(func=_serve)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
