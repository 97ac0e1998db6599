"""Command line: ``saemi analyze | train | evaluate | serve``."""

import argparse
import os
import stat
import sys
from pathlib import Path

from .io import SUPPORTED_SUFFIXES as IMAGE_SUFFIXES  # noqa: E402  (one list: the page, the API, the CLI)

#: What ``saemi analyze`` writes per input, as ``<stem>_<kind>``, and once per run.
OUTPUT_KINDS = ("labels.png", "particles.csv", "overlay.png")
SUMMARY_FILE = "summary.csv"
#: The PNG text chunk that marks the label and overlay images SAEMI writes, so that a
#: later run over the same folder knows them for outputs, not micrographs.


def _say(message):
    """One line on stderr, prefixed ``saemi:``."""
    print(f"saemi: {message}", file=sys.stderr)


def is_saemi_output(path):
    """True for a label or overlay PNG an earlier ``saemi analyze`` wrote (it carries the mark).

    Only the file's header is read; any file that cannot be read is not an output.
    """
    name = path.name.lower()
    if not (name.endswith("_labels.png") or name.endswith("_overlay.png")):
        return False
    from PIL import Image

    from .overlay import OUTPUT_MARK, OUTPUT_MARK_KEY

    try:
        with Image.open(path) as im:
            return str(im.info.get(OUTPUT_MARK_KEY, "")).startswith(OUTPUT_MARK)
    except Exception:
        return False


def skip_reason(path):
    """Why a folder entry is not an input, or None when it is an image to analyse.

    Folders (whatever their name, ``x.png`` too) are not searched; symbolic links
    are followed, and a broken one or a loop is skipped; devices, pipes and
    sockets are skipped unread; so are files whose suffix is not in
    ``IMAGE_SUFFIXES``, and the outputs of an earlier run (a ``*_labels.png`` or
    ``*_overlay.png`` with SAEMI's mark, ``*_particles.csv``, ``summary.csv``).
    """
    import errno

    try:
        st = path.stat()
    except OSError as exc:
        if path.is_symlink():
            if exc.errno == errno.ELOOP:
                return "symbolic link loop"
            if exc.errno == errno.ENOENT:
                return "broken symbolic link (its target does not exist)"
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "a folder (folders inside a named folder are not searched)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device, pipe or socket)"
    name = path.name.lower()
    if name == SUMMARY_FILE or name.endswith("_particles.csv") or is_saemi_output(path):
        return "an output of an earlier SAEMI run"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file name (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ")"
    return None


def collect_inputs(paths):
    """The inputs of a run, and the paths passed over, with the reason for each.

    A named file is always an input (whatever its name); a named folder gives
    the image files directly inside it, in name order, and every other entry
    is passed over with :func:`skip_reason`. A file reached twice (named twice,
    or named and inside a named folder, or a link to another input) is an
    input once.

    Returns
    -------
    files : list of Path
    skipped : list of (Path, str)

    Raises
    ------
    SaemiError
        A named path that does not exist, or a named folder that cannot be listed.
    """
    from .errors import SaemiError

    files, skipped, seen = [], [], {}

    def add(f):
        try:
            st = os.stat(f)
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = ("path", str(f))
        if key in seen:
            skipped.append((f, f"the same file as the input {seen[key]}"))
        else:
            seen[key] = f
            files.append(f)

    for p in map(Path, paths):
        if not p.exists():
            if p.is_symlink():
                raise SaemiError(f"{p} is a broken symbolic link or a link loop", code="not_found")
            raise SaemiError(f"no such file or folder: {p}", code="not_found")
        if p.is_dir():
            try:
                entries = sorted(p.iterdir())
            except OSError as exc:
                raise SaemiError(f"cannot list the folder {p}: {exc.strerror or exc}", code="not_found") from exc
            for f in entries:
                reason = skip_reason(f)
                if reason:
                    skipped.append((f, reason))
                else:
                    add(f)
        else:
            add(p)
    return files, skipped


def output_stems(files):
    """Stem per input for the output files, all different.

    On a clash the later file keeps its suffix (``a.tif``), and if that is taken
    too, a number is added (``a.tif-2``).
    """
    seen, stems = set(), []
    for f in files:
        stem = f.stem if f.stem not in seen else f.name
        base, n = stem, 2
        while stem in seen:
            stem, n = f"{base}-{n}", n + 1
        seen.add(stem)
        stems.append(stem)
    return stems


def output_paths(out, stem):
    """``{kind: path}`` of the files written for one input (see ``OUTPUT_KINDS``)."""
    return {kind: Path(out) / f"{stem}_{kind}" for kind in OUTPUT_KINDS}


def _real(path):
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a link loop
        return Path(os.path.abspath(path))


def plan_outputs(files, out):
    """Every output path of the run, checked before anything is written.

    Returns
    -------
    list of dict
        :func:`output_paths` per input, in input order.

    Raises
    ------
    SaemiError
        If an output would replace an input (the same path after following
        links, or the same file by inode, so hard links count) or exists as
        something other than a file (a folder named ``a_labels.png``).
    """
    from .errors import SaemiError

    by_path, by_inode = {}, {}
    for f in files:
        by_path[_real(f)] = f
        try:
            st = os.stat(f)
            by_inode[(st.st_dev, st.st_ino)] = f
        except OSError:
            pass
    plans = [output_paths(out, stem) for stem in output_stems(files)]
    for target in [p for plan in plans for p in plan.values()] + [Path(out) / SUMMARY_FILE]:
        hit = by_path.get(_real(target))
        try:
            st = os.stat(target)
        except OSError:
            st = None
        if hit is None and st is not None:
            hit = by_inode.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise SaemiError(f"--out {out}: writing {target} would overwrite the input {hit}; "
                             "choose another --out folder (or move the file away if it is an output of an "
                             "earlier run)", code="bad_parameter")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise SaemiError(f"--out {out}: the output {target} exists and is not a file", code="bad_parameter")
    return plans


def prepare_out(out):
    """Create the output folder and prove it can be written in, or raise SaemiError."""
    import tempfile

    from .errors import SaemiError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SaemiError(f"--out {out} is a file, not a folder", code="bad_parameter")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaemiError(f"--out {out}: cannot create the folder: {exc.strerror or exc}",
                         code="bad_parameter") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".saemi-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SaemiError(f"--out {out}: cannot write in the folder: {exc.strerror or exc}",
                         code="bad_parameter") from exc


def summary_row(file, status, error="", analysis=None):
    """The ``summary.csv`` row of one path: the one place its columns are made.

    Parameters
    ----------
    file : Path
    status : {'ok', 'error', 'skipped', 'interrupted'}
    error : str
        Why the path failed or was skipped; empty when ok.
    analysis : saemi.pipeline.Analysis, optional
        Adds the image's size, banner, calibration, summary statistics and time.
    """
    from .calibration import calibration_columns, scale_bar_columns
    from .pipeline import diameter_fields

    row = {"file": str(file), "status": status, "error": error}
    if analysis is not None:
        a = analysis
        h, w = a.labels.shape
        row.update({"width": w, "height": h,
                    "banner": "" if a.banner_box is None else "{}:{},{}:{}".format(*a.banner_box),
                    **calibration_columns(a.calibration),
                    **scale_bar_columns(a.segmentation.scale),
                    **{f"{k}_px" if k == "diameter" else k: v for k, v in diameter_fields(a.segmentation).items()},
                    **{k: v for k, v in a.summary.items()},
                    "seconds": round(sum(a.timings.values()), 3)})
    return row


def sample_row(rows, plans, metric):
    """The last ``summary.csv`` row of a run: every particle of the images analysed, as one sample.

    Read back from the ``*_particles.csv`` files written (a serial run and a Dask
    run alike). Sizes are in nm when every image has a calibration, else in px
    for all, and the row's ``error`` cell says why. None when no image was analysed.
    """
    import pandas as pd

    from .distribution import sample_table
    from .measure import summarize

    done = [(r, plan) for r, plan in zip(rows, plans) if r["status"] == "ok"]
    if not done:
        return None
    calibrated = sum(str(r.get("unit", "px")).startswith("nm") for r, _ in done)
    unit = "nm" if calibrated == len(done) else "px"
    note = "" if unit == "nm" or not calibrated else \
        f"sizes in px: {calibrated} of {len(done)} images have a calibration, so nm cannot be combined"
    table = sample_table({r["file"]: pd.read_csv(plan["particles.csv"]) for r, plan in done})
    return {"file": f"sample of {len(done)} image{'s' if len(done) != 1 else ''}", "status": "sample", "error": note,
            **summarize(table, metric, unit), "seconds": round(sum(float(r.get("seconds") or 0) for r, _ in done), 3)}


def describe_error(exc):
    """A one-line message for a per-file failure; unexpected types are named."""
    from .errors import SaemiError

    if isinstance(exc, SaemiError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.strerror or exc}{where}"
    return f"unexpected {type(exc).__name__}: {exc}"


def _check_regular(f):
    from .errors import SaemiError

    if not stat.S_ISREG(os.stat(f).st_mode):
        raise SaemiError("not a regular file (a device, pipe or socket); not read", code="not_an_image")


def read_input(f):
    """An input's bytes, read as a serial run reads them (the same errors, the same messages).

    Used by a run on a Dask cluster, whose client reads every image and sends the bytes.
    """
    from .errors import SaemiError

    _check_regular(f)
    if not Path(f).is_file():
        raise SaemiError(f"no such file: {f}", code="not_found")
    return Path(f).read_bytes()


def encode_outputs(analysis, overlay_mode):
    """``{kind: bytes}`` of the files written for one analysed input (see ``OUTPUT_KINDS``).

    The one place they are made, for a serial run and on a Dask worker alike.
    """
    from .calibration import with_calibration_columns
    from .export import csv_text
    from .overlay import draw_overlay, output_mark, png_bytes

    a = analysis
    overlay = draw_overlay(a.segmentation.image, a.labels, overlay_mode, 0.7, a.banner_box)
    return {"labels.png": png_bytes(a.labels, software=output_mark("labels")),
            "particles.csv": csv_text(with_calibration_columns(a.table, a.calibration)).encode("utf-8"),
            "overlay.png": png_bytes(overlay, software=output_mark("overlay"))}


def write_outputs(plan, files):
    """Replace one input's outputs together (``plan``: :func:`output_paths`; ``files``: :func:`encode_outputs`)."""
    from .export import write_atomic_many

    write_atomic_many({plan[kind]: files[kind] for kind in OUTPUT_KINDS})


def _analyse_one(f, plan, settings, segmenter, overlay_mode):
    """Analyse one input and replace its three outputs together; returns the Analysis."""
    from .pipeline import analyze

    _check_regular(f)
    a = analyze(f, settings, segmenter)
    write_outputs(plan, encode_outputs(a, overlay_mode))
    return a


def _analyze(args):
    """``saemi analyze``: see the README's "Command line" section.

    Nothing is written until the arguments, the inputs and every output path
    have been checked (exit 2 otherwise, with nothing written). Then each input
    is analysed on its own: any failure is a row of ``summary.csv`` and the
    batch goes on. ``summary.csv`` is written at the end of every run that
    started, also after Ctrl-C (exit 130; the images not reached are rows
    with status ``interrupted``).

    With ``--scheduler`` or ``--workers`` the images are analysed on a Dask
    cluster (:mod:`saemi.distributed`); this process still checks, reads and
    writes everything, so the files and rows are those of a serial run. The
    cluster is reached (and its workers load the model) after the inputs and
    outputs are checked and before the output folder is created.
    """
    import pandas as pd

    from .card import read_card
    from .errors import SaemiError
    from .export import csv_text, write_atomic
    from .pipeline import default_segmenter
    from .settings import Settings, from_cli_arguments

    out = Path(args.out)
    distributed = bool(args.scheduler or args.workers)
    cluster = None
    try:
        overrides = from_cli_arguments(args)
        settings = Settings.from_dict(overrides, defaults=read_card(args.weights)["postprocess"])
        files, skipped = collect_inputs(args.inputs)
        for path, reason in skipped:
            _say(f"skipped {path}: {reason}")
        if not files:
            raise SaemiError("no image files found in the given paths")
        plans = plan_outputs(files, out)
        if distributed:
            from .distributed import connect

            cluster = connect(args.scheduler, args.workers, args.weights, args.device)
            # the defaults that belong to the weights the workers run
            settings = Settings.from_dict(overrides, defaults=cluster.card["postprocess"])
        prepare_out(out)
        segmenter = None if distributed else default_segmenter(args.weights, args.device)
    except SaemiError as exc:
        if cluster is not None:
            cluster.close()
        print(f"saemi: error: {exc}", file=sys.stderr)
        return 2
    if distributed:
        from .distributed import run_batch

        with cluster:
            rows, failed, interrupted = run_batch(cluster, files, plans, settings, args.overlay, args.quiet)
    else:
        rows, failed, interrupted = _run_serial(files, plans, settings, segmenter, args.overlay, args.quiet)
    sample = sample_row(rows, plans, settings.metric)
    rows += [summary_row(path, "skipped", reason) for path, reason in skipped]
    if sample is not None:
        rows.append(sample)
    try:
        # convert_dtypes: integer columns stay integers beside the empty cells of error and skipped rows
        write_atomic(out / SUMMARY_FILE, csv_text(pd.DataFrame(rows).convert_dtypes()))
    except Exception as exc:
        print(f"saemi: error: {out / SUMMARY_FILE} could not be written: {describe_error(exc)}", file=sys.stderr)
        return 130 if interrupted else 1
    ok = sum(r["status"] == "ok" for r in rows)
    if sample is not None and not args.quiet:
        _say(f"the sample: {sample['count']} particles, median {sample['metric'].replace('_', ' ')} "
             f"{sample['median']:.4g} {sample['unit']}" + (f" ({sample['error']})" if sample["error"] else ""))
    print(f"{ok} of {len(files)} images analysed; results in {out}" + (f"; {failed} failed" if failed else "")
          + (f"; {len(skipped)} paths skipped" if skipped else "") + ("; interrupted" if interrupted else ""))
    if interrupted:
        return 130
    return 1 if failed else 0


def _run_serial(files, plans, settings, segmenter, overlay_mode, quiet):
    """The images one after the other in this process; returns (rows in input order, failed, interrupted)."""
    from tqdm import tqdm

    rows, failed, interrupted = [], 0, False
    try:
        for f, plan in tqdm(list(zip(files, plans)), desc="analysing", unit="image", disable=quiet):
            try:
                a = _analyse_one(f, plan, settings, segmenter, overlay_mode)
            except Exception as exc:  # one bad file never stops the batch
                failed += 1
                message = describe_error(exc)
                tqdm.write(f"saemi: failed {f}: {message}", file=sys.stderr)
                rows.append(summary_row(f, "error", message))
                continue
            rows.append(summary_row(f, "ok", analysis=a))
    except KeyboardInterrupt:
        interrupted = True
        rows += [summary_row(f, "interrupted", "the run was interrupted before this image was done")
                 for f in files[len(rows):]]
    return rows, failed, interrupted


def _evaluate(args):
    import json

    import pandas as pd

    from .card import read_card
    from .evaluate import (TUNED_KEYS, TuningRefused, check_tuning_names, cross_validated_ap, evaluate,
                           evaluation_subsets, rescore, rounded, tune_postprocess, write_card_postprocess)
    from .pipeline import default_segmenter
    from .settings import Settings

    from .export import csv_text, write_atomic

    csv_path = Path(args.csv)
    if csv_path.is_dir() or not csv_path.parent.is_dir():
        print(f"saemi: error: --csv {csv_path}: " + ("is a folder" if csv_path.is_dir() else
              f"the folder {csv_path.parent} does not exist"), file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        print(f"saemi: error: --out {out_dir}: is a file", file=sys.stderr)
        return 2
    wanted = ["val", "test"] if args.subset == "both" else [args.subset]
    try:
        subsets = evaluation_subsets(args.data, args.split, wanted)
        if args.tune:  # settings are chosen on validation images only, never on test ones
            tune_subset = "val" if args.subset == "both" else args.subset
            check_tuning_names(subsets.get(tune_subset, subsets.get("all", [])), args.split, args.subset)
    except (TuningRefused, FileNotFoundError) as exc:
        print(f"saemi: error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        subsets = {k: v[:args.limit] for k, v in subsets.items()}
    if not subsets:
        print(f"saemi: error: no labelled images of the {args.subset} subset in {args.data}", file=sys.stderr)
        return 2
    tune_on = None
    if args.tune and not args.baseline:
        tune_on = next((k for k in (tune_subset, "all") if k in subsets), None)
    if args.tune and not args.baseline and tune_on is None:
        print("saemi: error: --tune: no validation images to tune on", file=sys.stderr)
        return 2
    if args.baseline == "otsu":
        from .baseline import OtsuSegmenter

        segmenter = OtsuSegmenter()
        settings = Settings.from_dict(None, defaults=segmenter.card["postprocess"])
    else:
        segmenter = default_segmenter(args.weights, args.device)
        settings = Settings.from_dict(None, defaults=read_card(args.weights)["postprocess"])
        print(f"network: engine {getattr(segmenter, 'engine', 'torch')}, {getattr(segmenter, 'precision', '?')} "
              "(SAEMI_ENGINE, SAEMI_PRECISION)", file=sys.stderr)
    results, best = {}, None
    if tune_on is not None:  # tune first, on its subset alone; then score every subset with the choice
        per_image, summary, segmentations = evaluate(args.data, subsets[tune_on], segmenter, settings)
        best, table, ap_per_setting = tune_postprocess(args.data, segmentations)
        print(f"tuned splitting settings (on {len(segmentations)} {tune_on} images):", best)
        cv_ap = cross_validated_ap(ap_per_setting)
        print(f"cross-validated AP@0.5 (settings chosen on the other half of the images): {cv_ap:.4f}")
        settings = Settings.from_dict({k: best[k] for k in TUNED_KEYS})
        seconds = dict(zip(per_image["name"], per_image["seconds"]))
        per_image, summary = rescore(args.data, segmentations, settings, seconds)
        summary["cross_validated_ap50"] = cv_ap
        results[tune_on] = (per_image, summary)
    for name, names in subsets.items():
        if name not in results:
            per_image, summary, _ = evaluate(args.data, names, segmenter, settings)
            results[name] = (per_image, summary)
    results = {k: results[k] for k in subsets}
    if best is not None:
        write_card_postprocess(best, results[tune_on][1], args.weights,
                               test_metrics=results["test"][1] if "test" in results else None)
    rows = pd.concat([r.assign(subset=k) for k, (r, _) in results.items()], ignore_index=True)
    rows = rows[["subset"] + [c for c in rows.columns if c != "subset"]]
    write_atomic(csv_path, csv_text(rows))
    summaries = {k: rounded(s) for k, (_, s) in results.items()}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, (r, _) in results.items():
            write_atomic(out_dir / f"{k}.csv", csv_text(r))
        report = {"subsets": summaries, "settings": {k: getattr(settings, k) for k in TUNED_KEYS},
                  "tuned_on": tune_on, "data": str(args.data), "split": str(args.split or "split.json beside the weights"),
                  "baseline": args.baseline}
        write_atomic(out_dir / "summary.json", json.dumps(report, indent=1) + "\n")
    print(json.dumps(summaries, indent=1))
    print(f"per-image scores written to {args.csv}" + (f" and {out_dir}/" if out_dir is not None else ""))
    return 0


def _train(args):
    from .augment import recipe_from_args
    from .errors import SaemiError
    from .train import train

    try:
        card = train(args.data, args.out, epochs=args.epochs, crop=args.size, batch_size=args.batch_size,
                     lr=args.lr, device=args.device, val_fraction=args.val_fraction, seed=args.seed,
                     minutes=args.minutes, val_every=args.val_every, checkpoint_dir=args.checkpoint_dir,
                     resume=args.resume, limit_images=args.limit_images, extra_dirs=args.extra,
                     extra_weight=args.extra_weight, recipe=recipe_from_args(args))
    except SaemiError as exc:  # a bad --data or --extra folder: one line, nothing trained
        print(f"saemi: error: {exc}", file=sys.stderr)
        return 2
    print("validation (training scale):", card.get("validation_at_training_scale"))
    return 0


def _serve(args):
    from .launch import run

    mode = "backend" if args.backend else "frontend" if args.frontend else "all"
    return run(mode, host=args.host, port=args.port, workers=args.workers)


def _positive_int(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return n


def _positive_float(text):
    try:
        x = float(text)
    except ValueError:
        x = 0.0
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return x


def build_parser():
    from .settings import add_cli_arguments

    parser = argparse.ArgumentParser(prog="saemi", description="Size analysis of electron-microscopy images.")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="analyse images or folders of images")
    a.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    a.add_argument("--out", required=True, help="output folder")
    add_cli_arguments(a)  # one flag per setting, from saemi.settings
    a.add_argument("--overlay", default="outline", choices=["outline", "filled"])
    a.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a.add_argument("--weights", default=None, help="weights file or folder (default: bundled)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    where = a.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="analyse on the Dask cluster whose scheduler is at ADDRESS (tcp://HOST:8786); "
                            "the workers need saemi and the weights")
    where.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="analyse on N local worker processes (a Dask LocalCluster)")
    a.set_defaults(func=_analyze)

    e = sub.add_parser("evaluate", help="score the full pipeline on labelled images")
    e.add_argument("--data", required=True, help="folder with images/*.png and segmaps/*.png")
    e.add_argument("--split", default=None, help="split JSON (default: split.json beside the weights in use)")
    e.add_argument("--subset", default="both", choices=["both", "val", "test", "train"],
                   help="which list of the split to score: validation and test apart (both, the default), or one")
    e.add_argument("--limit", type=int, default=None, help="only the first N images")
    e.add_argument("--csv", default="evaluation.csv", help="per-image scores of every subset (a subset column)")
    e.add_argument("--out", default=None, metavar="DIR",
                   help="also write DIR/<subset>.csv (one row per image, every figure) and DIR/summary.json")
    e.add_argument("--tune", action="store_true",
                   help="grid-search the splitting settings on the validation images (never test ones) and record "
                        "them, with the validation and test figures, in the model card")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--weights", default=None)
    e.add_argument("--baseline", default=None, choices=["otsu"],
                   help="score the Otsu + watershed baseline instead of the network")
    e.set_defaults(func=_evaluate)

    t = sub.add_parser("train", help="train the U-Net from scratch on EMPS-style data")
    t.add_argument("--data", required=True,
                   help="folder with images/*.png (or .tif) and segmaps/*.png, split into training and validation "
                        "images (to train on a lab's own folder alone, give it here)")
    t.add_argument("--extra", action="append", default=[], metavar="DIR",
                   help="a further folder of the same layout (e.g. corrected masks from the page) used for training "
                        "only, never validation; repeat for several folders")
    t.add_argument("--extra-weight", type=_positive_float, default=4.0, metavar="W",
                   help="each --extra image is drawn W times as often as a --data image (default 4)")
    t.add_argument("--out", default="model_weights",
                   help="where the weights, card and split go (serve them with SAEMI_WEIGHTS=FOLDER, or give "
                        "--out saemi/model_weights to replace the bundled ones)")
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
    from .augment import add_recipe_arguments

    add_recipe_arguments(t)  # --intensity-aug, --scale-aug, --copy-paste P, --hard-sampling (saemi.augment.Recipe)
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
