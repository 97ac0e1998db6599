"""Per-particle measurements and summary statistics."""

import math

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .errors import SaemiError

# Metrics a histogram or summary can be made of, with their dimension (1: length, 2: area).
METRICS = {"area": 2, "equivalent_diameter": 1, "feret_max": 1, "feret_min": 1, "perimeter": 1}

#: Physical length units of the tables: nm in one unit. "um" is written µm for people.
LENGTH_UNITS = {"nm": 1.0, "um": 1000.0}

PIXEL_COLUMNS = ["label", "area_px", "equivalent_diameter_px", "feret_max_px", "feret_min_px",
                 "perimeter_px", "circularity", "aspect_ratio", "centroid_x_px", "centroid_y_px",
                 "touches_edge"]


def feret_diameters(mask):
    """Largest and smallest caliper (Feret) diameters of one particle, in pixels.

    Computed on the convex hull of the pixel *corners*, so a single pixel has
    Feret diameters of sqrt(2) and 1 and a disc of radius r about 2r.

    Parameters
    ----------
    mask : ndarray of bool, shape (h, w)

    Returns
    -------
    (feret_max, feret_min) : tuple of float
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    xs, ys = np.concatenate(contours)[:, 0, :].T  # the hull only needs outline pixels
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1)
                              for dx in (0, 1) for dy in (0, 1)]).astype(np.float32)
    hull = cv2.convexHull(corners)[:, 0, :].astype(np.float64)
    if len(hull) < 3:
        d = float(np.hypot(*(hull.max(0) - hull.min(0))))
        return d, 1.0
    diff = hull[:, None, :] - hull[None, :, :]
    fmax = float(np.sqrt((diff ** 2).sum(-1)).max())
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    ok = lengths > 0
    normals = np.stack([-edges[ok, 1], edges[ok, 0]], axis=1) / lengths[ok, None]
    proj = np.einsum("ek,pk->ep", normals, hull)
    fmin = float((proj.max(axis=1) - proj.min(axis=1)).min())
    return fmax, fmin


#: skimage's ``perimeter_crofton(..., directions=4)`` weight of each 2x2 pixel configuration (code
#: = bottom-right + 2 top-right + 4 bottom-left + 8 top-left, as its convolution numbers them).
_CROFTON_4 = np.array([0, np.pi / 4 * (1 + 1 / np.sqrt(2)), np.pi / (4 * np.sqrt(2)), np.pi / (2 * np.sqrt(2)),
                       0, np.pi / 4 * (1 + 1 / np.sqrt(2)), 0, np.pi / (4 * np.sqrt(2)),
                       np.pi / 4, np.pi / 2, np.pi / (4 * np.sqrt(2)), np.pi / (4 * np.sqrt(2)),
                       np.pi / 4, np.pi / 2, 0, 0])


def crofton_perimeter(mask):
    """``skimage.measure.perimeter_crofton(np.pad(mask, 1), 4)`` of one particle's mask, as a float.

    The same 2x2-configuration counts dotted with the same weights (so the
    same float), counted on slices instead of a convolution: a third of the
    time per particle.

    Examples
    --------
    >>> round(crofton_perimeter(np.ones((10, 10), bool)), 3)  # a 10 px square: 40 px of outline, corners cut
    36.812
    """
    m = np.zeros((mask.shape[0] + 4, mask.shape[1] + 4), np.uint8)
    m[2:-2, 2:-2] = mask
    code = m[1:, 1:] + 2 * m[:-1, 1:] + 4 * m[1:, :-1] + 8 * m[:-1, :-1]
    # only code 0 (no pixel of the particle) is counted differently from skimage's: its weight is 0
    return float(_CROFTON_4 @ np.bincount(code.ravel(), minlength=16))


def kept_particles(table, removed):
    """The rows of a particle table the user did not exclude: the one place exclusions apply.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`particle_table` (a ``label`` column).
    removed : iterable of int
        Excluded labels (see ``Settings.removed_labels``); unknown ones are ignored.

    Returns
    -------
    pandas.DataFrame
        The other rows, index renumbered.

    Examples
    --------
    >>> import pandas as pd
    >>> kept_particles(pd.DataFrame({"label": [1, 2, 3]}), [2, 9])["label"].tolist()
    [1, 3]
    """
    removed = {int(v) for v in removed or ()}
    if not removed or not len(table):
        return table
    return table[~table["label"].isin(removed)].reset_index(drop=True)


def with_origin(table, origins=None):
    """The particle table with its ``origin`` column: what made each particle.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`particle_table`.
    origins : dict, optional
        Label -> origin for the particles manual edits made or changed (see
        :data:`saemi.edits.ORIGINS`); every other particle is ``model``.

    Examples
    --------
    >>> with_origin(pd.DataFrame({"label": [1, 2]}), {2: "added"})["origin"].tolist()
    ['model', 'added']
    """
    origins = origins or {}
    return table.assign(origin=[origins.get(int(lab), "model") for lab in table["label"]])


def particle_table(labels, nm_per_pixel=None, only=None, previous=None):
    """One row per particle with its size and shape.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Instance labels, 0 = background.
    nm_per_pixel : float, optional
        Calibration; when given, ``*_nm`` (lengths) and ``area_nm2`` columns are added.
    only : iterable of int, optional
        Measure these labels only (see :func:`update_table`).
    previous : tuple (labels, table), or a list of them, optional
        Other labellings of the same image and their pixel-unit tables (e.g.
        before a slider moved): a particle with exactly the pixels of one there
        takes that row, under its own label, instead of being measured again.
        The values are the same, as the measurements depend on the pixels only.

    Returns
    -------
    pandas.DataFrame
        Columns: ``label``, ``area_px``, ``equivalent_diameter_px`` (diameter of
        the disc of the same area), ``feret_max_px``, ``feret_min_px``,
        ``perimeter_px`` (Crofton estimate), ``circularity`` (4 pi area / perimeter^2, at most 1),
        ``aspect_ratio`` (feret_max / feret_min), ``centroid_x_px``,
        ``centroid_y_px`` (column and row of the centre of mass, pixels),
        ``touches_edge`` (bool); plus the physical columns.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:100, :100]
    >>> labels = ((yy - 50) ** 2 + (xx - 50) ** 2 <= 30 ** 2).astype(int)
    >>> t = particle_table(labels, nm_per_pixel=2.0)
    >>> round(float(t.equivalent_diameter_px[0]))
    60
    >>> round(float(t.equivalent_diameter_nm[0]))
    120
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise SaemiError(f"labels must be a 2-D array, got shape {labels.shape}", code="bad_parameter")
    h, w = labels.shape
    rows = []
    objects = ndi.find_objects(labels if labels.dtype in (np.int32, np.int64) else labels.astype(np.int64))
    wanted = None if only is None else {int(v) for v in only}
    earlier = _previous_rows(previous, labels.shape)
    for lab, sl in enumerate(objects, start=1):
        if sl is None or (wanted is not None and lab not in wanted):
            continue
        mask = labels[sl] == lab
        area = int(mask.sum())
        row = _same_particle(earlier, sl, mask, area)
        if row is not None:
            rows.append({**row, "label": lab})  # the same pixels: the same measurements
            continue
        ys, xs = np.nonzero(mask)
        fmax, fmin = feret_diameters(mask)
        perim = crofton_perimeter(mask) or 1.0
        rows.append({
            "label": lab,
            "area_px": area,
            "equivalent_diameter_px": math.sqrt(4 * area / math.pi),
            "feret_max_px": fmax,
            "feret_min_px": fmin,
            "perimeter_px": perim,
            "circularity": min(1.0, 4 * math.pi * area / perim ** 2),
            "aspect_ratio": fmax / fmin if fmin > 0 else float("nan"),
            "centroid_x_px": float(xs.mean() + sl[1].start),
            "centroid_y_px": float(ys.mean() + sl[0].start),
            "touches_edge": bool(sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w),
        })
    table = pd.DataFrame(rows, columns=PIXEL_COLUMNS)
    table["touches_edge"] = table["touches_edge"].astype(bool)
    if nm_per_pixel:
        add_physical_columns(table, nm_per_pixel)
    return table


def _previous_rows(previous, shape):
    """``[(labels, {label: row}), ...]`` of a :func:`particle_table` ``previous`` argument (usable ones only)."""
    if previous is None:
        return []
    pairs = [previous] if isinstance(previous, tuple) else list(previous)
    out = []
    for before, table in pairs:
        before = np.asarray(before)
        if before.shape == tuple(shape) and table is not None and len(table):
            out.append((before, {int(r["label"]): r for r in table[PIXEL_COLUMNS].to_dict("records")}))
    return out


def _same_particle(earlier, box, mask, area):
    """The row of an earlier particle with exactly the pixels ``mask`` (in ``box``), or None."""
    for before, rows in earlier:
        old = before[box][mask]
        row = rows.get(int(old[0]))
        if row is not None and row["area_px"] == area and (old == old[0]).all():
            return row
    return None


def update_table(table, labels, changed):
    """A pixel-unit particle table after some particles changed: only those are measured again.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`particle_table` (no physical columns) of the labels before the change.
    labels : ndarray of int, shape (H, W)
        The labels after it.
    changed : iterable of int
        Labels made, removed or reshaped (see :func:`saemi.edits.changed_labels`).

    Returns
    -------
    pandas.DataFrame
        Equal to ``particle_table(labels)``, rows in label order.
    """
    changed = sorted({int(v) for v in changed})
    if not changed:
        return table
    kept = table[~table["label"].isin(changed)]
    fresh = particle_table(labels, only=changed)
    parts = [t for t in (kept, fresh) if len(t)]
    out = pd.concat(parts, ignore_index=True) if parts else fresh
    return out.sort_values("label", kind="stable").reset_index(drop=True)


def add_physical_columns(table, nm_per_pixel, unit="nm"):
    """Add ``*_<unit>`` length columns and ``area_<unit>2`` in place; returns the table.

    ``unit`` is ``"nm"`` or ``"um"`` (µm) (see :data:`LENGTH_UNITS`).
    """
    k = float(nm_per_pixel)
    if not k > 0 or not math.isfinite(k):
        raise SaemiError(f"nm_per_pixel must be a positive number, got {nm_per_pixel}", code="bad_parameter")
    k /= LENGTH_UNITS[unit]
    table[f"area_{unit}2"] = table["area_px"] * k * k
    for col in ("equivalent_diameter", "feret_max", "feret_min", "perimeter", "centroid_x", "centroid_y"):
        table[f"{col}_{unit}"] = table[f"{col}_px"] * k
    return table


def preferred_unit(equivalent_diameters_nm):
    """``"um"`` when the median particle is 1 µm or larger, else ``"nm"``: numbers people can read.

    Examples
    --------
    >>> preferred_unit([65.0, 80.0]), preferred_unit([154_919.0]), preferred_unit([])
    ('nm', 'um', 'nm')
    """
    v = np.asarray(equivalent_diameters_nm, dtype=float)
    v = v[np.isfinite(v)]
    return "um" if v.size and float(np.median(v)) >= LENGTH_UNITS["um"] else "nm"


def metric_column(table, metric="equivalent_diameter", unit="px"):
    """Name of the table column holding ``metric`` in ``unit`` ('px', 'nm' or 'um')."""
    if metric not in METRICS:
        raise SaemiError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}", code="bad_parameter")
    if unit != "px" and unit not in LENGTH_UNITS:
        raise SaemiError(f"unknown unit {unit!r}; use px, nm or um", code="bad_parameter")
    if metric == "area":
        return "area_px" if unit == "px" else f"area_{unit}2"
    return f"{metric}_{unit}"


def summarize(table, metric="equivalent_diameter", unit="px"):
    """Count, mean, median, standard deviation and D10/D50/D90 of one metric.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`particle_table`.
    metric : {'area', 'equivalent_diameter', 'feret_max', 'feret_min', 'perimeter'}
    unit : {'px', 'nm', 'um'}
        'nm' and 'um' need those physical columns (a calibration).

    Returns
    -------
    dict
        ``metric``, ``unit`` (px, px^2, nm, nm^2, um or um^2), ``count``, ``mean``,
        ``median``, ``std`` (sample, ddof=1), ``d10``, ``d50``, ``d90`` (the
        10th, 50th and 90th percentiles by number); NaN statistics when empty.
    """
    col = metric_column(table, metric, unit)
    if col not in table:
        raise SaemiError(f"sizes in {unit} need a calibration (nm_per_pixel)", code="bad_parameter")
    v = table[col].to_numpy(dtype=float)
    nan = float("nan")
    unit_name = unit + ("^2" if METRICS[metric] == 2 else "")
    if v.size == 0:
        stats = dict(count=0, mean=nan, median=nan, std=nan, d10=nan, d50=nan, d90=nan)
    else:
        d10, d50, d90 = np.percentile(v, [10, 50, 90])
        stats = dict(count=int(v.size), mean=float(v.mean()), median=float(np.median(v)),
                     std=float(v.std(ddof=1)) if v.size > 1 else 0.0, d10=float(d10), d50=float(d50), d90=float(d90))
    return {"metric": metric, "unit": unit_name, **stats}
