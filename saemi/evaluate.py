"""Scoring the full pipeline on labelled images, and tuning its splitting settings."""

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .card import CARD_FILE, read_card, weights_dir
from .instances import SplitSettings, split_touching
from .metrics import score_image
from .pipeline import Settings, measure, segment
from .train import list_pairs, read_label_image


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
    """Run ``segment`` + ``measure`` on each image and score it against its labels.

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
        seg = segment(data_dir / "images" / f"{name}.png", segmenter)
        analysis = measure(seg, settings)
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
        labels = measure(seg, settings).labels
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


def tune_postprocess(data_dir, segmentations, grid=None):
    """Grid-search the splitting settings on cached probabilities, by mean AP@0.5.

    Parameters
    ----------
    segmentations : dict
        name -> Segmentation, from :func:`evaluate`.
    grid : dict, optional
        Lists of values for ``threshold``, ``min_distance``, ``min_size``.

    Returns
    -------
    best : dict
        The best settings (``watershed``, ``threshold``, ``min_distance``,
        ``min_size``) and their ``ap50``.
    table : pandas.DataFrame
        Every combination tried with its mean AP@0.5.
    """
    grid = grid or {"threshold": [0.5, 0.6, 0.7], "min_distance": [7, 10, 15, 20, 30], "min_size": [20, 40, 80]}
    truths = {n: read_label_image(Path(data_dir) / "segmaps" / f"{n}.png") for n in segmentations}
    probabilities = {n: s.probability for n, s in segmentations.items()}
    rows = []
    for watershed in (True, False):
        combos = itertools.product(grid["threshold"], grid["min_distance"] if watershed else [grid["min_distance"][0]],
                                   grid["min_size"])
        for thr, md, ms in combos:
            s = SplitSettings(watershed=watershed, threshold=thr, min_distance=md, min_size=ms)
            aps = [score_image(truths[n], split_touching(p, s))["ap50"] for n, p in probabilities.items()]
            rows.append({"watershed": watershed, "threshold": thr, "min_distance": md, "min_size": ms,
                         "ap50": float(np.mean(aps))})
    table = pd.DataFrame(rows).sort_values("ap50", ascending=False)
    best = table.iloc[0].to_dict()
    best = {"watershed": bool(best["watershed"]), "threshold": float(best["threshold"]),
            "min_distance": int(best["min_distance"]), "min_size": int(best["min_size"]), "ap50": float(best["ap50"])}
    return best, table


def write_card_postprocess(best, metrics, folder=None):
    """Record tuned splitting settings and full-pipeline metrics in the model card."""
    folder = Path(folder or weights_dir())
    folder = folder.parent if folder.is_file() else folder
    card = read_card(folder)
    card["postprocess"] = {k: best[k] for k in ("watershed", "threshold", "min_distance", "min_size")}
    card["validation_full_pipeline"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
    with open(folder / CARD_FILE, "w") as f:
        json.dump(card, f, indent=2)
    return card
