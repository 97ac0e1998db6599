"""Scoring the full pipeline on labelled images, and tuning its splitting settings.

The shared data's ``split.json`` (beside the weights) has three lists: ``train``
(what the network was trained on), ``val`` (validation: checkpoint choice and the
tuning of the splitting settings) and ``test`` (never trained, chosen or tuned
on; carved out of the old validation images by :func:`saemi.dataset.carve_test`).
``saemi evaluate`` scores ``val`` and ``test`` apart (:func:`evaluation_subsets`);
``--tune`` tunes on ``val`` alone and refuses ``test``.

Figures per image (:func:`saemi.metrics.detailed_scores`) and over a subset
(:func:`summarize_scores`): AP@0.5, F1, Dice, AP per size bin of the true
particle's equivalent diameter at full resolution (under 15, 15-25, 25-150, 150 px
and over), AP on particles that touch another, the median ratio of matched
diameters (pred / true), the error of each image's mean diameter and the seconds
per image of the whole pipeline.
"""

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .card import CARD_FILE, read_card, weights_dir
from .dataset import image_file, list_pairs, read_label_image
from .instances import boundary_evidence, filter_particles, label_particles, merge_stage, remove_small
from .metrics import SIZE_BINS, detailed_scores, score_image
from .pipeline import particle_region, segment, split_and_measure, working_probability
from .size import estimate_diameter, upsample_labels
from .settings import Settings, SplitSettings, tuned_names, tuning_grid


#: The lists of a split file that ``saemi evaluate`` scores.
SUBSETS = ("val", "test", "train")


class TuningRefused(ValueError):
    """``--tune`` asked to choose settings on test images."""


def _read_split(split_file=None):
    path = Path(split_file) if split_file else weights_dir() / "split.json"
    if not path.exists():
        if split_file:
            raise FileNotFoundError(f"no split file {path}")
        return None
    with open(path) as f:
        return json.load(f)


def evaluation_names(data_dir, split_file=None, subset="val"):
    """Image names to evaluate: the split file's ``subset``, or every labelled image.

    ``split_file`` defaults to the ``split.json`` beside the weights in use, if the
    data folder is the one it was made for (its names exist there). A subset the
    file does not have (``test`` in an old two-list file) is empty.
    """
    got = evaluation_subsets(data_dir, split_file, [subset])
    return got.get(subset, got.get("all", []))


def evaluation_subsets(data_dir, split_file=None, subsets=("val", "test")):
    """``{subset: names}`` to score, in the order asked, leaving out empty subsets.

    The names are the split file's lists that exist in ``data_dir`` (see
    :func:`evaluation_names`). A data folder the default split was not made for
    (none of its names there) gives ``{"all": every labelled image}``.
    """
    names = list_pairs(data_dir)
    have = set(names)
    split = _read_split(split_file)
    if split is not None:
        chosen = {s: [n for n in split.get(s, []) if n in have] for s in subsets}
        if split_file or any(n in have for s in SUBSETS for n in split.get(s, [])):
            return {s: v for s, v in chosen.items() if v}
    return {"all": names}


def check_tuning_names(names, split_file=None, subset="val"):
    """Refuse to tune on test images: ``subset`` must not be ``test``, and no name may be in the split's ``test``.

    Raises :class:`TuningRefused` saying why.
    """
    if subset == "test":
        raise TuningRefused("--tune chooses settings on the validation images only: it refuses the test subset "
                            "(tune with --subset val or both: the test images are then scored, not tuned on)")
    split = _read_split(split_file) or {}
    leaked = sorted(set(names) & set(split.get("test", [])))
    if leaked:
        raise TuningRefused(f"--tune refuses test images: {', '.join(leaked[:5])}"
                            + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
                            + " are in the split's test list")


def evaluate(data_dir, names, segmenter, settings=None, progress=True):
    """Run ``segment`` + ``split_and_measure`` on each image and score it against its labels.

    The prediction is the shipped pipeline's (:func:`saemi.pipeline.segment`:
    scale bar, banner removal, network; then the splitting and measuring of
    :func:`saemi.pipeline.split_and_measure`), as ``saemi analyze`` runs it.

    Returns
    -------
    per_image : pandas.DataFrame
        One row per image: name, the figures of
        :func:`saemi.metrics.detailed_scores` (ap50, f1, dice, counts, mean
        diameters, mean_d_rel_err, per size bin and touching TP/FP/FN and AP,
        d_ratio_median) and seconds (the whole pipeline, scale-bar reading
        included).
    summary : dict
        :func:`summarize_scores` of the rows.
    segmentations : dict
        name -> :class:`saemi.pipeline.Segmentation`, to re-score other
        settings without running the network again (:func:`rescore`).
    """
    from tqdm import tqdm

    data_dir = Path(data_dir)
    settings = settings or Settings.from_dict(None, defaults=read_card()["postprocess"])
    rows, segmentations, ratios = [], {}, []
    for name in tqdm(names, desc="evaluate", disable=not progress, mininterval=5):
        t = time.perf_counter()
        seg = segment(image_file(data_dir, name), segmenter)
        analysis = split_and_measure(seg, settings)
        seconds = time.perf_counter() - t
        truth = read_label_image(data_dir / "segmaps" / f"{name}.png")
        row, r = detailed_scores(truth, analysis.labels)
        rows.append({"name": name, **row, "seconds": seconds})
        ratios.append(r)
        segmentations[name] = seg
    per_image = pd.DataFrame(rows)
    return per_image, summarize_scores(per_image, ratios), segmentations


def rescore(data_dir, segmentations, settings, seconds=None):
    """Scores of cached segmentations under other settings (the network is not re-run).

    ``seconds`` (name -> s) carries the timings of the first pass over.
    """
    rows, ratios = [], []
    for name, seg in segmentations.items():
        truth = read_label_image(Path(data_dir) / "segmaps" / f"{name}.png")
        labels = split_and_measure(seg, settings).labels
        row, r = detailed_scores(truth, labels)
        rows.append({"name": name, **row, "seconds": (seconds or {}).get(name, np.nan)})
        ratios.append(r)
    per_image = pd.DataFrame(rows)
    return per_image, summarize_scores(per_image, ratios)


def _pooled(per_image, key, has_true):
    """Pooled AP and the image mean for one group of particles (a size bin or ``touching``)."""
    tp, fp, fn = (int(per_image[f"{c}_{key}"].sum()) for c in ("tp", "fp", "fn"))
    with_true = per_image[per_image[has_true] > 0]
    return {"ap50": tp / (tp + fp + fn) if tp + fp + fn else float("nan"),
            "ap50_image_mean": float(with_true[f"ap50_{key}"].mean()) if len(with_true) else float("nan"),
            "images": int(len(with_true)), "n_true": int(per_image[has_true].sum()), "tp": tp, "fp": fp, "fn": fn}


def summarize_scores(per_image, ratios=None):
    """The figures of a subset.

    * ``ap50``, ``f1``, ``dice``, ``seconds_per_image``: means over images.
    * ``mean_d_rel_err_mean`` / ``_median``: mean and median over images of the
      relative error of the image's mean particle diameter.
    * ``d_ratio_median``: median over every matched pair of all images of the
      predicted / true equivalent diameter (``ratios``: the per-image arrays of
      :func:`saemi.metrics.detailed_scores`; without them, the median of the
      images' medians).
    * ``bins`` (per size bin of :data:`saemi.metrics.SIZE_BINS`) and
      ``touching``: ``ap50`` pooled over the subset, ``TP / (TP + FP + FN)`` of
      the summed counts (every particle and every false positive counts once,
      binned as :func:`saemi.metrics.detailed_scores` says); ``ap50_image_mean``
      the mean of the per-image AP over the ``images`` that have a true
      particle in the group; ``n_true``, ``tp``, ``fp``, ``fn`` the sums.
    """
    err = per_image["mean_d_rel_err"].astype(float)
    out = {"images": int(len(per_image)),
           "ap50": float(per_image["ap50"].mean()), "f1": float(per_image["f1"].mean()),
           "dice": float(per_image["dice"].mean()),
           "mean_d_rel_err_mean": float(np.nanmean(err)) if err.notna().any() else float("nan"),
           "mean_d_rel_err_median": float(np.nanmedian(err)) if err.notna().any() else float("nan"),
           "seconds_per_image": float(per_image["seconds"].mean())}
    if "tp_touching" in per_image:
        if ratios is not None:
            pooled = np.concatenate([np.asarray(r, float) for r in ratios]) if len(ratios) else np.zeros(0)
            out["d_ratio_median"] = float(np.median(pooled)) if pooled.size else float("nan")
        else:
            out["d_ratio_median"] = float(np.nanmedian(per_image["d_ratio_median"]))
        out["bins"] = {b: _pooled(per_image, b, f"n_true_{b}") for b, _, _ in SIZE_BINS}
        out["touching"] = _pooled(per_image, "touching", "n_touching")
    return out


TUNED_KEYS = tuned_names()

#: The tuning grid: the values each tuned setting's schema lists (saemi.settings.tuning_grid).
DEFAULT_GRID = tuning_grid()


def tune_postprocess(data_dir, segmentations, grid=None):
    """Grid-search the splitting settings on cached probabilities, by mean AP@0.5.

    The stages of :func:`saemi.instances.split_touching` are cached so that each
    watershed runs once per (threshold, min_distance_fraction) and each merge
    once per merge threshold; only the cheap size filters run for every
    combination. As :func:`saemi.pipeline.split`, the splitting runs at the
    network's working scale with the pixel settings taken from the image's
    typical diameter, and the labels are scored at full resolution.

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
        # as saemi.pipeline.split: at the network's working scale, labels mapped back to full resolution
        prob, scale = working_probability(seg)
        prob = np.asarray(prob)
        valid = particle_region(seg, prob.shape[-2:], scale)
        diameter = seg.diameter if seg.diameter is not None else estimate_diameter(prob, scale, valid)
        edge = boundary_evidence(prob)
        truth = truths[n]
        row = []
        for watershed in grid["watershed"]:
            distances = grid["min_distance_fraction"] if watershed else [grid["min_distance_fraction"][0]]
            merges = grid["merge_threshold"] if watershed and edge is not None else [0.0]
            for thr, md in itertools.product(grid["threshold"], distances):
                if not np.isfinite(diameter):
                    base = np.zeros(prob.shape[-2:], np.int32)
                else:
                    md_px = SplitSettings(min_distance_fraction=md).pixel_settings(diameter, scale)[0]
                    base = label_particles(prob, thr, watershed, md_px, valid)
                for mt in merges:
                    merged = merge_stage(base, edge, mt)
                    for ms in grid["min_size_fraction"]:
                        ms_px = SplitSettings(min_size_fraction=ms).pixel_settings(
                            diameter if np.isfinite(diameter) else 1.0, scale)[1]
                        sized = remove_small(merged, ms_px)
                        for rel in grid["min_relative_size"]:
                            # min_size is already applied; exclude_edge is never tuned (a choice, not a fit)
                            labels = filter_particles(sized, 0, rel, Settings().exclude_edge)
                            row.append(score_image(truth, upsample_labels(labels, truth.shape))["ap50"])
                            if n == names[0]:
                                chosen = SplitSettings(watershed=watershed, threshold=thr, min_distance_fraction=md,
                                                       merge_threshold=mt, min_size_fraction=ms,
                                                       min_relative_size=rel)
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
        Mean AP@0.5 over all images (NaN for fewer than two images).
    """
    names = list(per_image.columns)
    if len(names) < 2:  # nothing to choose on apart from the image scored
        return float("nan")
    folds = min(folds, len(names))
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


def rounded(value, digits=4):
    """``value`` with every float (in nested dicts too) rounded, NaN as None: JSON-ready."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, float):
        return None if not np.isfinite(value) else round(value, digits)
    return value


def write_card_postprocess(best, metrics, folder=None, test_metrics=None):
    """Record tuned splitting settings and full-pipeline metrics in the model card.

    ``metrics`` are the validation figures with those settings
    (``validation_full_pipeline``), ``test_metrics`` the test figures
    (``test_full_pipeline``). Without ``test_metrics`` an older
    ``test_full_pipeline`` is removed: it was scored with other settings.
    """
    folder = Path(folder or weights_dir())
    folder = folder.parent if folder.is_file() else folder
    card = read_card(folder)
    card["postprocess"] = {k: best[k] for k in TUNED_KEYS}
    card["validation_full_pipeline"] = rounded(metrics)
    if test_metrics is not None:
        card["test_full_pipeline"] = rounded(test_metrics)
    else:
        card.pop("test_full_pipeline", None)
    with open(folder / CARD_FILE, "w") as f:
        json.dump(card, f, indent=2)
    return card
