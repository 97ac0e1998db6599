"""The particles the page lists and counts: exclusions, the kept table, summaries and CSV text.

An *analysis* (what the ``analysis-store`` holds) is the backend's ``analyze``
answer reduced to what the page needs (see :func:`saemi.ui.controls.reduce_analysis`):
``key`` (image id + splitting settings), ``image_id``, ``filename``, ``width``,
``height``, ``settings``, ``particles`` (rows in pixel units, every particle found)
and ``count_api``. Particles the user excludes are dropped with
:func:`saemi.measure.kept_particles`, the function the core applies to
``removed_labels``; the statistics use :func:`saemi.measure.summarize`, the code
the API runs, so the page and the API agree for the same settings.
"""

import numpy as np
import pandas as pd

from ..export import csv_text
from ..measure import (LENGTH_UNITS, METRICS, PIXEL_COLUMNS, add_physical_columns, kept_particles, preferred_unit,
                       summarize)
from ..settings import names as setting_names
from .calibration import parse_nm_per_pixel
from .numbers import display_unit, format_number, round_for_reading

#: Metrics offered in the histogram selector: value -> label.
METRIC_LABELS = {"area": "Area", "equivalent_diameter": "Equivalent diameter", "feret_max": "Feret diameter (max)"}


def empty_removed(key=None):
    return {"key": key, "labels": []}


def reconcile_removed(removed, key):
    """Keep the excluded set while the labelling is the same; clear it when it changes.

    A new splitting setting renumbers the particles, so old label ids would
    point at different particles.
    """
    if not removed or removed.get("key") != key:
        return empty_removed(key)
    return removed


def toggle_removed(removed, key, label):
    """Exclude particle ``label`` from the statistics, or restore it if excluded."""
    removed = reconcile_removed(removed, key)
    try:
        label = int(label)
    except (TypeError, ValueError):
        return removed
    if label <= 0:
        return removed
    labels = set(removed["labels"])
    labels.symmetric_difference_update({label})
    return {"key": key, "labels": sorted(labels)}


def removed_labels(removed, key):
    """The excluded label ids that apply to the labelling ``key``."""
    if not removed or removed.get("key") != key:
        return []
    return [int(v) for v in removed.get("labels", [])]


def left_out(removed, filtered, analysis):
    """The exclusions of ``analysis``'s labelling with the particles the sample's filters leave out added.

    ``filtered``: image_id -> labels (the ``filtered-store``). Returns a removed-store dict, so every
    count, table and CSV of the shown image follows the filters as the sample's statistics do.
    """
    key = (analysis or {}).get("key")
    extra = (filtered or {}).get((analysis or {}).get("image_id")) or []
    if not extra:
        return removed
    return {"key": key, "labels": sorted(set(removed_labels(removed, key)) | {int(v) for v in extra})}


def count_text(analysis, removed, filtered=None):
    """The image header's count, the same number the summary shows: '84 particles counted (85 found,
    1 excluded)', or '85 particles found' when none is left out."""
    rows = (analysis or {}).get("particles") or []
    found = {int(r["label"]) for r in rows}
    excluded = found & set(removed_labels(removed, (analysis or {}).get("key")))
    filtered = (found - excluded) & {int(v) for v in (filtered or {}).get((analysis or {}).get("image_id")) or []}
    n = len(found)
    if not excluded and not filtered:
        return f"{n} particle{'s' if n != 1 else ''} found"
    parts = [f"{n} found"] + ([f"{len(excluded)} excluded"] if excluded else []) + \
        ([f"{len(filtered)} filtered out"] if filtered else [])
    kept = n - len(excluded) - len(filtered)
    return f"{kept} particle{'s' if kept != 1 else ''} counted ({', '.join(parts)})"


def clicked_label(click_data):
    """The particle label under a click on the image view (0 for background or none)."""
    try:
        point = click_data["points"][0]
    except (TypeError, KeyError, IndexError):
        return 0
    z = point.get("z")
    try:
        return int(z) if z is not None and np.isfinite(float(z)) else 0
    except (TypeError, ValueError):
        return 0


# --- tables, summaries, CSV -----------------------------------------------------------------

#: The size-unit selector: "auto" picks nm or µm from the particles (saemi.measure.preferred_unit).
UNIT_CHOICES = {"auto": "Auto", "nm": "nm", "um": "µm"}


def size_unit(analysis, nm_per_pixel=None, choice="auto"):
    """The length unit the page shows sizes in: "px" without a calibration, else nm or um (µm).

    ``choice`` "nm" or "um" is the user's; "auto" takes µm when the median
    particle of the whole analysis is 1 µm or larger (so 155 µm particles do
    not show as "154,919 nm"), nm otherwise.
    """
    nm = parse_nm_per_pixel(nm_per_pixel)
    if not nm:
        return "px"
    if choice in ("nm", "um"):
        return choice
    rows = (analysis or {}).get("particles") or []
    return preferred_unit([float(p["equivalent_diameter_px"]) * nm for p in rows])


def table_unit(table, nm_per_pixel=None):
    """The length unit of a table from :func:`kept_table` (px, nm or um)."""
    return table.attrs.get("unit") or ("nm" if parse_nm_per_pixel(nm_per_pixel) else "px")


def kept_table(analysis, removed=None, nm_per_pixel=None, unit="auto"):
    """The particles that count (not excluded), as a DataFrame, with physical columns when calibrated.

    The physical columns are in :func:`size_unit` (``unit``: "auto", "nm" or
    "um"), recorded in ``table.attrs["unit"]``.
    """
    rows = (analysis or {}).get("particles") or []
    table = pd.DataFrame(rows, columns=PIXEL_COLUMNS if not rows else None)
    if rows:
        table = table[[c for c in PIXEL_COLUMNS if c in table] + [c for c in table if c not in PIXEL_COLUMNS]]
    table = kept_particles(table, removed_labels(removed, (analysis or {}).get("key"))).reset_index(drop=True)
    for col in table.columns:
        if col == "touches_edge":
            table[col] = table[col].astype(bool)
        elif col == "origin":  # what made the particle: model, added, split, merged, edited
            table[col] = table[col].fillna("model").astype(str)
        elif col != "label":
            table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    if "label" in table:
        table["label"] = table["label"].astype(int)
    nm = parse_nm_per_pixel(nm_per_pixel)
    shown = size_unit(analysis, nm, unit)
    if nm:
        add_physical_columns(table, nm, shown)
    table.attrs["unit"] = shown
    return table


def summary_of(table, metric="equivalent_diameter", nm_per_pixel=None):
    """:func:`saemi.measure.summarize` for the kept particles: in the table's unit when calibrated, else px."""
    unit = table_unit(table, nm_per_pixel) if parse_nm_per_pixel(nm_per_pixel) else "px"
    return summarize(table, metric if metric in METRICS else "equivalent_diameter", unit)


def summary_rows(summary):
    """(label, value) pairs for the summary panel, in a fixed order."""
    unit = display_unit(summary.get("unit", ""))
    rows = [("Particles", format_number(summary.get("count")))]
    for name, key in (("Mean", "mean"), ("Median", "median"), ("Std. deviation", "std"),
                      ("D10", "d10"), ("D50", "d50"), ("D90", "d90")):
        rows.append((name, f"{format_number(summary.get(key))} {unit}".strip() if summary.get("count") else "-"))
    return rows


def particles_csv(table, calibration=None):
    """The per-particle table as CSV text (one row per kept particle).

    ``calibration`` (:func:`calibration_csv_columns`) adds its ``nm_per_pixel``
    and ``calibration_source`` as constant columns, as the CLI and the API do
    (see :func:`saemi.calibration.with_calibration_columns` for why columns).
    """
    if calibration is not None:
        table = table.copy()
        table["nm_per_pixel"] = calibration.get("nm_per_pixel")
        table["calibration_source"] = calibration.get("calibration_source") or ""
    return csv_text(table, float_format="%.6g")


def summary_csv(table, analysis, nm_per_pixel=None, calibration=None):
    """One row per metric: count, mean, median, std, D10/D50/D90, plus the settings and calibration used."""
    analysis = analysis or {}
    settings = analysis.get("settings") or {}
    nm = parse_nm_per_pixel(nm_per_pixel)
    rows = []
    for metric in METRICS:
        s = summary_of(table, metric, nm)
        rows.append({"filename": analysis.get("filename", "image"), **s,
                     **{k: settings.get(k) for k in setting_names("split")}, "nm_per_pixel": nm,
                     **({k: v for k, v in calibration.items() if k != "nm_per_pixel"} if calibration else {}),
                     "removed_labels": " ".join(str(v) for v in removed_labels_from_table(analysis, table))})
    return csv_text(pd.DataFrame(rows), float_format="%.6g")


def removed_labels_from_table(analysis, table):
    """Labels the analysis found that the kept table lacks (the user's exclusions)."""
    found = {int(r["label"]) for r in (analysis or {}).get("particles") or []}
    kept = set(int(v) for v in table["label"]) if len(table) else set()
    return sorted(found - kept)


def download_name(filename, kind):
    """``<stem>_particles.csv`` / ``<stem>_summary.csv`` for an uploaded file name."""
    from ..service import safe_stem

    return f"{safe_stem(filename)}_{kind}.csv"


def grid_columns(nm_per_pixel=None, unit=None):
    """AG Grid column definitions for the particle table, in px, nm or um (``unit``; default nm when calibrated)."""
    unit = unit or ("nm" if parse_nm_per_pixel(nm_per_pixel) else "px")
    area = f"area_{unit}2" if unit != "px" else "area_px"
    u = display_unit(unit)
    # "Touches edge" beside the label, both pinned: on a 1366 px screen the table scrolls sideways,
    # and the column that decides whether a particle is whole must not be the one scrolled off
    cols = [("label", "Label"), ("touches_edge", "Touches edge"), (area, f"Area ({u}²)"),
            (f"equivalent_diameter_{unit}", f"Eq. diam. ({u})"),
            (f"feret_max_{unit}", f"Feret max ({u})"), (f"feret_min_{unit}", f"Feret min ({u})"),
            (f"perimeter_{unit}", f"Perimeter ({u})"), ("circularity", "Circularity"),
            ("aspect_ratio", "Aspect ratio"), (f"centroid_x_{unit}", f"x ({u})"),
            (f"centroid_y_{unit}", f"y ({u})"), ("origin", "Origin")]
    out = []
    for field, name in cols:
        longest = max(len(w) for w in name.split())
        col = {"field": field, "headerName": name, "sortable": True, "filter": field not in ("touches_edge", "origin"),
               "minWidth": max(80, 8 * longest + 68), "headerTooltip": name}  # room for the sort arrow
        if field in ("label", "touches_edge"):
            col["pinned"] = "left"
        if field not in ("label", "touches_edge", "origin"):
            col["type"] = "numericColumn"
        out.append(col)
    return out


def grid_rows(table):
    """Table rows for the grid: numbers rounded for reading (the CSV keeps full precision)."""
    out = []
    for row in table.to_dict(orient="records"):
        clean = {}
        for k, v in row.items():
            if isinstance(v, (bool, np.bool_)):
                clean[k] = "yes" if v else "no"
            elif isinstance(v, (int, np.integer)):
                clean[k] = int(v)
            elif isinstance(v, (float, np.floating)):
                clean[k] = round_for_reading(v)
            else:
                clean[k] = v
        out.append(clean)
    return out


def tooltip_text(label, particles, nm_per_pixel=None, removed=(), unit=None):
    """What hovering a particle shows (the same text the browser-side callback builds)."""
    row = next((p for p in particles or [] if int(p["label"]) == int(label)), None)
    if row is None:
        return ""
    nm = parse_nm_per_pixel(nm_per_pixel)
    unit = "px" if not nm else unit or "nm"
    k = 1.0 if unit == "px" else nm / LENGTH_UNITS[unit]
    unit = display_unit(unit)
    text = (f"Particle {int(label)}: eq. diameter {format_number(row['equivalent_diameter_px'] * k)} {unit}, "
            f"area {format_number(row['area_px'] * k * k)} {unit}²")
    if int(label) in set(removed or ()):
        text += " (excluded; click to restore)"
    return text
