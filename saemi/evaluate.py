"""Scoring the full pipeline on labelled images, and tuning its splitting settings."""

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .card import CARD_FILE, read_card, weights_dir
from .dataset import image_file, list_pairs, read_label_image
from .instances import boundary_evidence, filter_particles, label_particles, merge_stage, remove_small
from .metrics import score_image
from .pipeline import particle_region, segment, split_and_measure
from .settings import Settings, SplitSettings, tuned_names, tuning_grid


def evaluation_names(data_dir, split_file=None, subset="val"):
    """Image names to evaluate: the split file's ``subset``, or every labelled image.

    ``split_file`` defaults to the ``split.json`` beside the weights in use, if the
    data folder is the one it was made for (its names exist there).
    """
    names = list_pairs(data_dir)
    path = Path(split_file) if split_file else weights_dir() / "split.json"
    if path.exists():
        with open(path) as f:
            chosen = json.load(f)[subset]
        chosen = [n for n in chosen if n in set(names)]
        if chosen or split_file:
            return chosen
    return names


def evaluate(data_dir, names, segmenter, settings=None, progress=True):
    """Run ``segment`` + ``split_and_measure`` on each image and score it against its labels.

    Returns
    -------
    per_image : pandas.DataFrame
        One row per image: name, ap50, f1, dice, n_true, n_pred, mean diameters,
        mean_d_rel_err, seconds (the whole pipeline, scale-bar reading included).
    summary : dict
        Means over images (and the median of the diameter error).
    segmentations : dict
        name -> :class:`saemi.pipeline.Segmentation`, to re-score other
        settings without running the network again (:func:`rescore`).
    """
    from tqdm import tqdm

    data_dir = Path(data_dir)
    settings = settings or Settings.from_dict(None, defaults=read_card()["postprocess"])
    rows, segmentations = [], {}
    for name in tqdm(names, desc="evaluate", disable=not progress, mininterval=5):
        t = time.perf_counter()
        seg = segment(image_file(data_dir, name), segmenter)
        analysis = split_and_measure(seg, settings)
        seconds = time.perf_counter() - t
        truth = read_label_image(data_dir / "segmaps" / f"{name}.png")
        rows.append({"name": name, **score_image(truth, analysis.labels), "seconds": seconds})
        segmentations[name] = seg
    per_image = pd.DataFrame(rows)
    return per_image, summarize_scores(per_image), segmentations


def rescore(data_dir, segmentations, settings, seconds=None):
    """Scores of cached segmentations under other settings (the network is not re-run).

    ``seconds`` (name -> s) carries the timings of the first pass over.
    """
    rows = []
    for name, seg in segmentations.items():
        truth = read_label_image(Path(data_dir) / "segmaps" / f"{name}.png")
        labels = split_and_measure(seg, settings).labels
        rows.append({"name": name, **score_image(truth, labels), "seconds": (seconds or {}).get(name, np.nan)})
    per_image = pd.DataFrame(rows)
    return per_image, summarize_scores(per_image)


def summarize_scores(per_image):
    """Means over images of AP@0.5, F1, Dice and seconds; mean and median diameter error."""
    err = per_image["mean_d_rel_err"].astype(float)
    return {"images": int(len(per_image)),
            "ap50": float(per_image["ap50"].mean()), "f1": float(per_image["f1"].mean()),
            "dice": float(per_image["dice"].mean()),
            "mean_d_rel_err_mean": float(np.nanmean(err)) if err.notna().any() else float("nan"),
            "mean_d_rel_err_median": float(np.nanmedian(err)) if err.notna().any() else float("nan"),
            "seconds_per_image": float(per_image["seconds"].mean())}


TUNED_KEYS = tuned_names()

#: The tuning grid: the values each tuned setting's schema lists (saemi.settings.tuning_grid).
DEFAULT_GRID = tuning_grid()


def tune_postprocess(data_dir, segmentations, grid=None):
    """Grid-search the splitting settings on cached probabilities, by mean AP@0.5.

    The stages of :func:`saemi.instances.split_touching` are cached so that each
    watershed runs once per (threshold, min_distance) and each merge once per
    merge threshold; only the cheap size filters run for every combination.

    Parameters
    ----------
    segmentations : dict
        name -> Segmentation, from :func:`evaluate`.
    grid : dict, optional
        Lists of values per tuned setting, over :data:`DEFAULT_GRID`.

    Returns
    -------
    best : dict
        The best settings (:data:`TUNED_KEYS`) and their mean ``ap50``.
    table : pandas.DataFrame
        Every combination tried with its mean AP@0.5, best first.
    per_image : pandas.DataFrame
        AP@0.5 of every combination (rows, same index as ``table``) on every
        image (columns), for :func:`cross_validated_ap`.
    """
    grid = {**DEFAULT_GRID, **(grid or {})}
    names = list(segmentations)
    truths = {n: read_label_image(Path(data_dir) / "segmaps" / f"{n}.png") for n in names}
    tried, scores = [], []
    for n in names:
        seg = segmentations[n]
        prob = np.asarray(seg.probability)
        valid = particle_region(seg)
        edge = boundary_evidence(prob)
        row = []
        for watershed in grid["watershed"]:
            distances = grid["min_distance"] if watershed else [grid["min_distance"][0]]
            merges = grid["merge_threshold"] if watershed and edge is not None else [0.0]
            for thr, md in itertools.product(grid["threshold"], distances):
                base = label_particles(prob, thr, watershed, md, valid)
                for mt in merges:
                    merged = merge_stage(base, edge, mt)
                    for ms in grid["min_size"]:
                        sized = remove_small(merged, ms)
                        for rel in grid["min_relative_size"]:
                            # min_size is already applied; exclude_edge is never tuned (a choice, not a fit)
                            labels = filter_particles(sized, 0, rel, Settings().exclude_edge)
                            row.append(score_image(truths[n], labels)["ap50"])
                            if n == names[0]:
                                chosen = SplitSettings(watershed=watershed, threshold=thr, min_distance=md,
                                                       merge_threshold=mt, min_size=ms, min_relative_size=rel)
                                tried.append({k: getattr(chosen, k) for k in TUNED_KEYS})
        scores.append(row)
    per_image = pd.DataFrame(np.array(scores).T, columns=names)
    table = pd.DataFrame(tried)
    table["ap50"] = per_image.mean(axis=1)
    table = table.sort_values("ap50", ascending=False, kind="stable")
    best = _settings_row(table.iloc[0])
    return best, table, per_image


def cross_validated_ap(per_image, folds=2):
    """AP@0.5 of the tuning when the settings are chosen on other images.

    The images are dealt into ``folds`` groups; each group is scored with the
    settings that are best on the others. This is the figure to expect on new
    images, free of the optimism of choosing settings on the images scored.

    Parameters
    ----------
    per_image : pandas.DataFrame
        AP@0.5 of each setting (row) on each image (column), as returned by
        :func:`tune_postprocess`.
    folds : int

    Returns
    -------
    float
        Mean AP@0.5 over all images.
    """
    names = list(per_image.columns)
    total = 0.0
    for k in range(folds):
        held = names[k::folds]
        rest = [n for n in names if n not in held]
        best = per_image[rest].mean(axis=1).idxmax()
        total += float(per_image.loc[best, held].sum())
    return total / len(names)


def _settings_row(row):
    """A row of the tuning table as typed settings (:func:`saemi.settings.tuned_names`) and its ``ap50``."""
    tuned = Settings.from_dict({k: row[k].item() if hasattr(row[k], "item") else row[k] for k in TUNED_KEYS})
    return {**{k: getattr(tuned, k) for k in TUNED_KEYS}, "ap50": float(row["ap50"])}


def write_card_postprocess(best, metrics, folder=None):
    """Record tuned splitting settings and full-pipeline metrics in the model card."""
    folder = Path(folder or weights_dir())
    folder = folder.parent if folder.is_file() else folder
    card = read_card(folder)
    card["postprocess"] = {k: best[k] for k in TUNED_KEYS}
    card["validation_full_pipeline"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
    with open(folder / CARD_FILE, "w") as f:
        json.dump(card, f, indent=2)
    return card
