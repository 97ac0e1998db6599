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
    t_ids, p_ids, inter = _overlaps(true, pred)
    if len(t_ids) == 0 or len(p_ids) == 0:
        return np.zeros((len(t_ids), len(p_ids)))
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


#: Size bins of ``saemi evaluate``: (name, low, high) of the equivalent circular diameter in
#: pixels at full resolution, ``low <= d < high``.
SIZE_BINS = (("under15", 0.0, 15.0), ("15to25", 15.0, 25.0), ("25to150", 25.0, 150.0), ("over150", 150.0, np.inf))

#: Two true particles touch when a pixel of one lies within ``1 + TOUCH_GAP`` pixels (chessboard
#: distance) of a pixel of the other: directly adjacent, or with one background pixel between.
TOUCH_GAP = 1


def _overlaps(true, pred):
    """Ids, pixel areas and the intersection counts of two labellings (row/column 0 = background)."""
    t_ids = np.unique(true[true > 0])
    p_ids = np.unique(pred[pred > 0])
    t = np.searchsorted(t_ids, true.ravel()) + 1
    t[true.ravel() == 0] = 0
    p = np.searchsorted(p_ids, pred.ravel()) + 1
    p[pred.ravel() == 0] = 0
    nt, npd = len(t_ids) + 1, len(p_ids) + 1
    inter = np.bincount(t * npd + p, minlength=nt * npd).reshape(nt, npd)
    return t_ids, p_ids, inter


def touching_ids(true, gap=TOUCH_GAP):
    """The true particles (label ids, sorted) that touch another true particle.

    A particle touches another when one of its pixels has a pixel of the other
    within a ``(3 + 2 gap)``-pixel square around it: ``gap=0`` is 8-connected
    adjacency, ``gap=1`` (the default, :data:`TOUCH_GAP`) also counts two
    particles with one background pixel between them (a hand-drawn contact).
    """
    from scipy import ndimage as ndi

    true = np.asarray(true)
    fg = true > 0
    if not fg.any():
        return np.zeros(0, true.dtype)
    size = 3 + 2 * gap
    big = 2 ** 40  # above every label id; exact as the float cval the filter takes
    lab = true.astype(np.int64)
    hi = ndi.maximum_filter(lab, size, mode="constant", cval=0)
    lo = ndi.minimum_filter(np.where(fg, lab, big), size, mode="constant", cval=big)
    near_other = fg & ((hi > lab) | (lo < lab))
    return np.unique(true[near_other])


def detailed_scores(true, pred, touch_gap=TOUCH_GAP):
    """:func:`score_image` plus AP per size bin, AP on touching particles and diameter ratios.

    A predicted particle matches a true one when their IoU is above 0.5 (the
    match is then unique, as in :func:`match_instances`).

    * **Size bins** (:data:`SIZE_BINS`, the equivalent diameter ``sqrt(4 A / pi)``
      in pixels of the image as given): a true particle is binned by its own
      diameter; it is a TP of its bin when matched, else an FN there. A matched
      prediction goes with its true particle (whatever its own size); an
      unmatched prediction is an FP of the bin of *its own* diameter. The bin's
      AP is ``TP / (TP + FP + FN)``, NaN when the bin holds neither a true
      particle nor an unmatched prediction.
    * **Touching particles** (:func:`touching_ids`): the true particles that
      touch another true particle. TP: such a particle matched; FN: one not
      matched; FP: an unmatched prediction whose largest overlap (in pixels)
      with a true particle is with a touching one (a blob fusing two of them,
      a fragment of one). An unmatched prediction on background alone or on
      isolated particles does not count here. AP as above, NaN when the image
      has no touching particle.
    * **Diameter ratio**: predicted over true equivalent diameter of each
      matched pair; ``d_ratio_median`` is this image's median (NaN without a
      match).

    Returns
    -------
    row : dict
        :func:`score_image`'s keys, then per bin ``b``: ``n_true_b``, ``tp_b``,
        ``fp_b``, ``fn_b``, ``ap50_b``; ``n_touching``, ``tp_touching``,
        ``fp_touching``, ``fn_touching``, ``ap50_touching``; ``n_matched``,
        ``d_ratio_median``.
    ratios : ndarray
        The diameter ratio of every matched pair (for a median over images).
    """
    true, pred = np.asarray(true), np.asarray(pred)
    row = score_image(true, pred)
    t_ids, p_ids, inter = _overlaps(true, pred)
    area_t, area_p = inter.sum(axis=1)[1:], inter.sum(axis=0)[1:]
    ov = inter[1:, 1:]
    iou = ov / np.maximum(area_t[:, None] + area_p[None, :] - ov, 1)
    matched = iou > 0.5
    t_match = matched.any(axis=1)
    p_match = matched.any(axis=0)
    d_t = np.sqrt(4 * area_t / np.pi)
    d_p = np.sqrt(4 * area_p / np.pi)

    def ap(tp, fp, fn):
        return tp / (tp + fp + fn) if tp + fp + fn else float("nan")

    for name, lo, hi in SIZE_BINS:
        in_t = (d_t >= lo) & (d_t < hi)
        tp = int((in_t & t_match).sum())
        fn = int((in_t & ~t_match).sum())
        fp = int(((d_p >= lo) & (d_p < hi) & ~p_match).sum())
        row.update({f"n_true_{name}": int(in_t.sum()), f"tp_{name}": tp, f"fp_{name}": fp, f"fn_{name}": fn,
                    f"ap50_{name}": ap(tp, fp, fn)})

    touch = np.isin(t_ids, touching_ids(true, touch_gap))
    tp = int((touch & t_match).sum())
    fn = int((touch & ~t_match).sum())
    if ov.size:
        has_overlap = ov.max(axis=0) > 0
        best_true = ov.argmax(axis=0)
        fp = int((~p_match & has_overlap & touch[best_true]).sum())
    else:
        fp = 0
    row.update({"n_touching": int(touch.sum()), "tp_touching": tp, "fp_touching": fp, "fn_touching": fn,
                "ap50_touching": ap(tp, fp, fn) if touch.any() else float("nan")})

    ti, pj = np.nonzero(matched)
    ratios = d_p[pj] / d_t[ti]
    row.update({"n_matched": int(len(ratios)),
                "d_ratio_median": float(np.median(ratios)) if len(ratios) else float("nan")})
    return row, ratios
