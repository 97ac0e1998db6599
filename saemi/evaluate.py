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
        mean_d_rel_err, seconds.
    summary : dict
        Means over images (and the median of the diameter error).
    probabilities : dict
        name -> probability array, for tuning without re-running the network.
    """
    from tqdm import tqdm

    data_dir = Path(data_dir)
    settings = settings or Settings.from_dict(None, defaults=read_card()["postprocess"])
    rows, probs = [], {}
    for name in tqdm(names, desc="evaluate", disable=not progress):
        t = time.perf_counter()
        seg = segment(data_dir / "images" / f"{name}.png", segmenter)
        analysis = measure(seg, settings)
        seconds = time.perf_counter() - t
        truth = read_label_image(data_dir / "segmaps" / f"{name}.png")
        rows.append({"name": name, **score_image(truth, analysis.labels), "seconds": seconds})
        probs[name] = seg.probability
    per_image = pd.DataFrame(rows)
    return per_image, summarize_scores(per_image), probs


def summarize_scores(per_image):
    """Means over images of AP@0.5, F1, Dice and seconds; mean and median diameter error."""
    err = per_image["mean_d_rel_err"].astype(float)
    return {"images": int(len(per_image)),
            "ap50": float(per_image["ap50"].mean()), "f1": float(per_image["f1"].mean()),
            "dice": float(per_image["dice"].mean()),
            "mean_d_rel_err_mean": float(np.nanmean(err)) if err.notna().any() else float("nan"),
            "mean_d_rel_err_median": float(np.nanmedian(err)) if err.notna().any() else float("nan"),
            "seconds_per_image": float(per_image["seconds"].mean())}


def tune_postprocess(data_dir, probabilities, grid=None):
    """Grid-search the splitting settings on cached probabilities, by mean AP@0.5.

    Parameters
    ----------
    probabilities : dict
        name -> (C, H, W) probabilities, from :func:`evaluate`.
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
    grid = grid or {"threshold": [0.4, 0.5, 0.6], "min_distance": [3, 5, 7, 10, 15], "min_size": [10, 20, 40]}
    truths = {n: read_label_image(Path(data_dir) / "segmaps" / f"{n}.png") for n in probabilities}
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
    card = read_card(folder)
    card["postprocess"] = {k: best[k] for k in ("watershed", "threshold", "min_distance", "min_size")}
    card["validation_full_pipeline"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
    with open(folder / CARD_FILE, "w") as f:
        json.dump(card, f, indent=2)
    return card
