"""Scores of a predicted instance labelling against a ground-truth one."""

import numpy as np


def iou_matrix(true, pred):
    """Intersection over union of every true instance with every predicted one.

    Parameters
    ----------
    true, pred : ndarray of int, shape (H, W)
        Instance labels, 0 = background.

    Returns
    -------
    ndarray, shape (n_true, n_pred), float64
        Row i, column j is the IoU of true label ``i + 1`` (in the order of
        ``np.unique``) with predicted label ``j + 1``.
    """
    t_ids = np.unique(true[true > 0])
    p_ids = np.unique(pred[pred > 0])
    if len(t_ids) == 0 or len(p_ids) == 0:
        return np.zeros((len(t_ids), len(p_ids)))
    t = np.searchsorted(t_ids, true.ravel()) + 1
    t[true.ravel() == 0] = 0
    p = np.searchsorted(p_ids, pred.ravel()) + 1
    p[pred.ravel() == 0] = 0
    nt, npd = len(t_ids) + 1, len(p_ids) + 1
    inter = np.bincount(t * npd + p, minlength=nt * npd).reshape(nt, npd)
    area_t = inter.sum(axis=1, keepdims=True)
    area_p = inter.sum(axis=0, keepdims=True)
    union = area_t + area_p - inter
    return (inter / np.maximum(union, 1))[1:, 1:]


def match_instances(true, pred, iou_threshold=0.5):
    """Count one-to-one matches at an IoU threshold.

    With a threshold of 0.5 or more a true instance can overlap at most one
    predicted instance that much, so the matching is unique without search.

    Returns
    -------
    dict with ``tp``, ``fp``, ``fn`` (int), ``ap`` = TP / (TP + FP + FN) and
    ``f1`` = 2 TP / (2 TP + FP + FN). An image with no instances in either
    labelling scores 1.
    """
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    if iou_threshold >= 0.5:
        tp = int((iou > iou_threshold).sum())
    else:
        from scipy.optimize import linear_sum_assignment
        r, c = linear_sum_assignment(-iou)
        tp = int((iou[r, c] > iou_threshold).sum())
    fp, fn = n_pred - tp, n_true - tp
    denom = tp + fp + fn
    ap = tp / denom if denom else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if denom else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "ap": ap, "f1": f1}


def dice(true_mask, pred_mask):
    """Dice coefficient of two boolean masks (1 when both are empty)."""
    t, p = np.asarray(true_mask, bool), np.asarray(pred_mask, bool)
    s = t.sum() + p.sum()
    return 2.0 * np.logical_and(t, p).sum() / s if s else 1.0


def mean_diameter(labels):
    """Mean equivalent circular diameter (pixels) of the instances; NaN if none."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.sqrt(4 * areas / np.pi).mean()) if areas.size else float("nan")


def score_image(true, pred):
    """All per-image scores used by ``saemi evaluate``.

    Returns
    -------
    dict: ``ap50``, ``f1``, ``dice``, ``n_true``, ``n_pred``, ``mean_d_true``,
    ``mean_d_pred`` and ``mean_d_rel_err`` (|pred - true| / true, NaN when
    either has no particle).
    """
    m = match_instances(true, pred, 0.5)
    dt, dp = mean_diameter(true), mean_diameter(pred)
    rel = abs(dp - dt) / dt if np.isfinite(dt) and np.isfinite(dp) and dt > 0 else float("nan")
    return {"ap50": m["ap"], "f1": m["f1"], "dice": dice(true > 0, pred > 0),
            "n_true": len(np.unique(true[true > 0])), "n_pred": len(np.unique(pred[pred > 0])),
            "mean_d_true": dt, "mean_d_pred": dp, "mean_d_rel_err": rel}
