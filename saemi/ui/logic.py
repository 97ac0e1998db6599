"""Pure helpers behind the Dash callbacks: data in, data out, no Dash state.

Everything the page computes lives here so it can be unit-tested without a
browser: decoding uploads, the settings a control panel means, the set of
particles the user clicked away, the kept-particle table with physical units,
summaries, CSV text, and the Plotly figures (image view and histogram).

Conventions
-----------
* An *analysis* (what the ``analysis`` store holds) is the backend's ``analyze``
  answer reduced to what the page needs: ``key`` (image id + splitting
  settings), ``image_id``, ``filename``, ``width``, ``height``, ``settings``,
  ``particles`` (rows in pixel units, every particle found) and ``count_api``.
* Particles the user excludes are removed *here*, not by the backend, so the
  label image keeps every particle and a second click can restore one. The
  statistics use :func:`saemi.measure.summarize`, the same code the API runs,
  so the page and the API agree for the same settings.
"""

import base64
import binascii
import io
import json
import math
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from ..export import csv_text
from ..measure import METRICS, add_physical_columns, metric_column, summarize
from .client import ClientError

#: Metrics offered in the histogram selector: value -> label.
METRIC_LABELS = {"area": "Area", "equivalent_diameter": "Equivalent diameter", "feret_max": "Feret diameter (max)"}
#: Settings that change how particles are split (and so renumber the labels).
SPLIT_KEYS = ("watershed", "min_distance", "threshold", "min_size", "exclude_edge", "merge_threshold",
              "min_relative_size")
#: Accepted upload types (checked again by the backend, which decodes the bytes).
#: The EM formats (.dm3, .dm4, .emd, .mrc) have no registered MIME type: browsers match them by suffix.
ACCEPT = (".png,.jpg,.jpeg,.tif,.tiff,.bmp,.gif,.dm3,.dm4,.emd,.mrc,"
          "image/png,image/jpeg,image/tiff,image/bmp,image/gif")

OUTLINE_RGBA = (255, 110, 0, 255)
REMOVED_RGBA = (20, 20, 20, 170)
REMOVED_OUTLINE_RGBA = (0, 200, 255, 255)
BANNER_COLOUR = "rgba(0, 220, 255, 0.9)"
SCALE_COLOUR = "rgba(60, 220, 60, 0.95)"
LINE_COLOUR = "#ff1fd2"  # the calibration line the user draws


# --- uploads and settings -------------------------------------------------------------------

def decode_upload(contents, filename=None):
    """The bytes of a ``dcc.Upload`` data URL (``data:<type>;base64,<data>``).

    Raises
    ------
    ClientError
        For a missing, malformed or empty upload.
    """
    if not contents or not isinstance(contents, str):
        raise ClientError("no file was received; try the upload again", code="bad_request")
    if isinstance(filename, list) or isinstance(contents, list):
        raise ClientError("upload one image at a time", code="bad_request")
    _, _, payload = contents.partition(",")
    if not payload:
        raise ClientError(f"{filename or 'the file'} is empty (0 bytes)", code="empty")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("the upload was garbled in transfer; try again", code="bad_request") from None
    if not data:
        raise ClientError(f"{filename or 'the file'} is empty (0 bytes)", code="empty")
    return data


def sentence_tail(message):
    """A message to follow a colon: 'Not an image' -> 'not an image', 'TIFF file ...' unchanged."""
    text = str(message or "").strip() or "the image could not be analysed"
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def slider_max(default, floor):
    """A slider's upper end that always includes the model's default value."""
    try:
        return max(floor, int(math.ceil(float(default) * 2)))
    except (TypeError, ValueError):
        return floor


def settings_from_controls(watershed, min_distance, threshold, min_size, exclude_edge, merge_threshold=0.0,
                           min_relative_percent=0.0):
    """The splitting settings the control panel means.

    Parameters
    ----------
    watershed, exclude_edge : list of str or bool
        Checklist values (``["on"]`` when ticked) or plain booleans.
    min_distance, threshold, min_size : number or str or None
        Slider values; missing or unreadable ones fall back to a safe default.
    merge_threshold : number or str or None
        Merge touching pieces whose shared border is weaker than this; 0 is off.
    min_relative_percent : number or str or None
        Drop particles smaller than this percentage of the typical particle area;
        0 is off. Sent as the fraction ``min_relative_size``.

    Returns
    -------
    dict
        The keys of :data:`SPLIT_KEYS`, clamped to the ranges the backend accepts.
    """
    def num(v, kind, default):
        try:
            return kind(v) if v is not None and v != "" else default
        except (TypeError, ValueError):
            return default

    def fraction(v):
        v = num(v, float, 0.0)
        return round(min(0.99, max(0.0, v)), 6) if math.isfinite(v) else 0.0

    return {"watershed": bool(watershed) and "on" in watershed if isinstance(watershed, list) else bool(watershed),
            "min_distance": max(1, num(min_distance, int, 7)),
            "threshold": min(0.99, max(0.01, num(threshold, float, 0.5))),
            "min_size": max(0, num(min_size, int, 0)),
            "exclude_edge": bool(exclude_edge) and "on" in exclude_edge if isinstance(exclude_edge, list)
            else bool(exclude_edge),
            "merge_threshold": fraction(merge_threshold),
            "min_relative_size": fraction(num(min_relative_percent, float, 0.0) / 100)}


def analysis_key(image_id, settings):
    """Identifies one labelling: the same key means the same label numbers."""
    split = {k: settings.get(k) for k in SPLIT_KEYS}
    return f"{image_id}:{json.dumps(split, sort_keys=True)}"


def parse_nm_per_pixel(value):
    """A positive finite calibration, or None (empty, zero, negative or not a number)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def detected_scale(info):
    """The scale bar the backend read in an upload: dict with ``nm_per_pixel`` and a description, or None."""
    scale = (info or {}).get("scale")
    if not isinstance(scale, dict):
        return None
    nm = parse_nm_per_pixel(scale.get("nm_per_pixel"))
    if not nm:
        return None
    value, unit, length = scale.get("value"), scale.get("unit") or "", scale.get("bar_length_px")
    text = f"scale bar {format_number(value)} {unit}".rstrip()
    if length:
        text += f" = {format_number(float(length))} px"
    return {"nm_per_pixel": nm, "text": f"{text} ({format_number(nm)} nm/px)", "bar_box": scale.get("bar_box")}


def file_calibration(info):
    """The calibration record the backend sent for an upload (file's pixel size, else scale bar's), or None.

    Returns
    -------
    dict or None
        The record (see :class:`saemi.calibration.Calibration`) when it holds a
        usable ``nm_per_pixel``.
    """
    record = (info or {}).get("calibration")
    if not isinstance(record, dict) or not parse_nm_per_pixel(record.get("nm_per_pixel")):
        return None
    return record


def page_calibration(nm_value, image):
    """What the sizes on the page rest on, for the calibration line under the image.

    Parameters
    ----------
    nm_value : number or str or None
        The nm-per-pixel field.
    image : dict or None
        The image store; ``calibration`` is the record the backend sent on upload.

    Returns
    -------
    dict
        ``nm_per_pixel`` (float or None), ``source`` ("file", "scale_bar",
        "user" or None), ``details`` (str), ``text`` (one line) and
        ``warnings`` (list of str).

    Examples
    --------
    >>> img = {"calibration": {"nm_per_pixel": 7.344, "source": "file", "details": "Zeiss CZ_SEM, 50.00 kX",
    ...                        "text": "7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)", "warnings": []}}
    >>> page_calibration(7.344, img)["text"]
    'Calibration: 7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)'
    >>> page_calibration(8, img)["warnings"][0][:34]
    'The file says 7.344 nm/px (Zeiss C'
    """
    from ..calibration import AGREEMENT_TOLERANCE, format_nm

    record = (image or {}).get("calibration") or {}
    nm = parse_nm_per_pixel(nm_value)
    rec_nm = parse_nm_per_pixel(record.get("nm_per_pixel"))
    file_nm = parse_nm_per_pixel(record.get("file_nm_per_pixel")) or (
        rec_nm if record.get("source") == "file" else None)
    warnings = [w for w in record.get("warnings") or [] if isinstance(w, str)]
    if nm is None:
        return {"nm_per_pixel": None, "source": None, "details": "", "warnings": warnings,
                "text": "Calibration: none, sizes in pixels. Type the nm per pixel or measure the scale bar."}
    if rec_nm and abs(nm - rec_nm) <= 1e-9 * rec_nm:
        return {"nm_per_pixel": nm, "source": record.get("source"), "details": record.get("details") or "",
                "warnings": warnings, "text": f"Calibration: {record.get('text') or format_nm(nm) + ' nm/px'}"}
    warnings = [w for w in warnings if not w.startswith("The scale bar reads")]
    if file_nm and abs(nm - file_nm) / file_nm > AGREEMENT_TOLERANCE:
        warnings.append(f"The file says {format_nm(file_nm)} nm/px ({record.get('details') or 'its metadata'}); "
                        f"your {format_nm(nm)} nm/px differs by {100 * abs(nm - file_nm) / file_nm:.0f} % and is used")
    return {"nm_per_pixel": nm, "source": "user", "details": "set by you", "warnings": warnings,
            "text": f"Calibration: {format_nm(nm)} nm/px set by you (typed or measured on the scale bar)"}


def calibration_csv_columns(nm_value, image):
    """The page's calibration as CSV columns: nm_per_pixel, calibration_source, calibration_details."""
    c = page_calibration(nm_value, image)
    return {"nm_per_pixel": c["nm_per_pixel"], "calibration_source": c["source"] or "",
            "calibration_details": c["details"]}


def next_calibration(current, previous_detected, detected):
    """The nm-per-pixel field after a new upload.

    The new image's own calibration (the file's pixel size, else its scale bar)
    wins when there is one; a value that only came from the previous image is
    cleared; a value the user typed stays.

    Returns
    -------
    float or None or the string ``"keep"``
    """
    cur = parse_nm_per_pixel(current)
    if detected:
        return detected
    if cur is not None and previous_detected is not None and abs(cur - float(previous_detected)) < 1e-12:
        return None
    return "keep"


# --- manual calibration: a line drawn along the scale bar -----------------------------------

#: Length units a scale bar's value may be typed in, with their size in nm.
LENGTH_UNITS = {"nm": 1.0, "µm": 1000.0}
_UNIT_ALIASES = {"nm": "nm", "µm": "µm", "μm": "µm", "um": "µm", "micron": "µm", "microns": "µm"}
_SHAPE_KEY = re.compile(r"^shapes\[(\d+)\]\.(x0|y0|x1|y1)$")
_LINE_COORDS = ("x0", "y0", "x1", "y1")


def _finite(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _line_of(shape, index):
    """A shape of the image view as a line dict, or None when it is not a line in data coordinates."""
    if not isinstance(shape, dict) or shape.get("type") != "line":
        return None
    if str(shape.get("xref", "x")).startswith("paper") or str(shape.get("yref", "y")).startswith("paper"):
        return None
    coords = {k: _finite(shape.get(k)) for k in _LINE_COORDS}
    if any(v is None for v in coords.values()):
        return None
    return {"index": int(index), **coords}


def drawn_line(relayout, previous=None):
    """The calibration line after one ``relayoutData`` event of the image view.

    The image view's axes are in original-image pixels (pixel centres at
    integers, whatever the stride of the displayed picture; see
    :func:`base_figure`), so the shape coordinates Plotly reports are image
    pixel coordinates already.

    Parameters
    ----------
    relayout : dict or None
        ``dcc.Graph.relayoutData``. Drawing a new line (or erasing one) gives
        ``{"shapes": [...]}``, the whole shape list; dragging or editing an
        existing line gives ``{"shapes[i].x0": ..., "shapes[i].y1": ...}``
        with the coordinates that changed; zooming and panning give axis keys.
    previous : dict or None
        The line this function returned last time (``index``, ``x0``, ``y0``,
        ``x1``, ``y1``), to complete edits that move only one end.

    Returns
    -------
    dict or None
        The last line drawn or edited, as ``previous``; None when the shape
        list holds no line (all erased). Events that do not concern a line
        return ``previous`` unchanged.

    Examples
    --------
    >>> box = {"type": "rect", "x0": 0, "y0": 0, "x1": 5, "y1": 5}
    >>> line = drawn_line({"shapes": [box, {"type": "line", "x0": 1, "y0": 2, "x1": 31, "y1": 42}]})
    >>> line
    {'index': 1, 'x0': 1.0, 'y0': 2.0, 'x1': 31.0, 'y1': 42.0}
    >>> drawn_line({"shapes[1].x1": 61, "shapes[1].y1": 2}, line)
    {'index': 1, 'x0': 1.0, 'y0': 2.0, 'x1': 61.0, 'y1': 2.0}
    >>> drawn_line({"xaxis.range[0]": 3}, line) is line
    True
    """
    if not isinstance(relayout, dict):
        return previous
    if isinstance(relayout.get("shapes"), list):
        lines = [_line_of(shape, i) for i, shape in enumerate(relayout["shapes"])]
        lines = [ln for ln in lines if ln is not None]
        return lines[-1] if lines else None
    edits = {}
    for key, value in relayout.items():
        m = _SHAPE_KEY.match(str(key))
        if m:
            edits.setdefault(int(m.group(1)), {})[m.group(2)] = _finite(value)
    if not edits:
        return previous
    index = max(edits)  # one shape moves at a time; the last one if several did
    changed = edits[index]
    if any(v is None for v in changed.values()):
        return previous
    if previous is not None and previous.get("index") == index:
        return {**previous, **changed}
    if len(changed) == 4:  # an older line moved as a whole: it is now the one that counts
        return {"index": index, **{k: changed[k] for k in _LINE_COORDS}}
    return previous


def line_length(line):
    """Length in image pixels of a line dict (``x0``, ``y0``, ``x1``, ``y1``); None without a line.

    Examples
    --------
    >>> line_length({"x0": 0, "y0": 0, "x1": 30, "y1": 40})
    50.0
    """
    if not line:
        return None
    try:
        return float(math.hypot(float(line["x1"]) - float(line["x0"]), float(line["y1"]) - float(line["y0"])))
    except (KeyError, TypeError, ValueError):
        return None


def length_in_nm(value, unit="nm"):
    """A typed length converted to nm; None unless it is a positive finite number in a known unit.

    Parameters
    ----------
    value : number or str
        What the user typed (a decimal comma is accepted).
    unit : str
        ``"nm"`` or ``"µm"`` (also ``"um"`` and the Greek ``"μm"``).

    Examples
    --------
    >>> length_in_nm("0,5", "µm")
    500.0
    >>> length_in_nm(-3, "nm") is None
    True
    """
    if isinstance(value, str):
        value = value.strip().replace(",", ".")
    if isinstance(value, bool):
        return None
    v = _finite(value)
    factor = LENGTH_UNITS.get(_UNIT_ALIASES.get(str(unit or "nm").strip(), ""))
    if v is None or v <= 0 or factor is None:
        return None
    return v * factor


def manual_calibration(line, value, unit="nm"):
    """nm per pixel from a line drawn along the scale bar and the bar's typed value.

    Parameters
    ----------
    line : dict or None
        From :func:`drawn_line`, in image pixels.
    value : number or str or None
        The length the scale bar stands for, as typed.
    unit : str
        Unit of ``value``: ``"nm"`` or ``"µm"``.

    Returns
    -------
    dict
        ``length_px`` (float or None), ``length_text`` (what to show beside the
        inputs), ``nm_per_pixel`` (float, rounded to 6 significant digits, or
        None) and ``message`` (the result, or what is missing).

    Examples
    --------
    >>> r = manual_calibration({"x0": 10, "y0": 5, "x1": 210, "y1": 5}, 500, "nm")
    >>> r["length_px"], r["nm_per_pixel"]
    (200.0, 2.5)
    >>> manual_calibration(None, 500)["message"]
    'Draw a line along the scale bar first: press Draw line, then drag on the image.'
    """
    length = line_length(line)
    out = {"length_px": length, "length_text": f"Line: {format_number(length)} px" if length else "No line drawn",
           "nm_per_pixel": None}
    nm = length_in_nm(value, unit)
    typed = value is not None and str(value).strip() != ""
    if length is None:
        out["message"] = "Draw a line along the scale bar first: press Draw line, then drag on the image."
    elif length < 1:
        out["message"] = "The line is shorter than a pixel; drag it along the whole scale bar."
    elif nm is None:
        out["message"] = ("The bar's length must be a positive number." if typed
                          else "Type the length the scale bar stands for.")
    else:
        per_px = float(f"{nm / length:.6g}")
        out["nm_per_pixel"] = per_px
        out["message"] = (f"{format_number(nm)} nm / {format_number(length)} px = {format_number(per_px)} nm per "
                          "pixel")
    return out


def display_unit(unit):
    """'px^2' -> 'px²' for people (CSV and API keep the ASCII form)."""
    return (unit or "").replace("^2", "²")


def reduce_analysis(result, settings):
    """The part of an ``analyze`` answer the page keeps in its stores.

    Returns
    -------
    (analysis, labels) : tuple of dict
        ``labels`` holds the label PNG (base64) apart, because only the image
        view needs it.
    """
    key = analysis_key(result["image_id"], settings)
    particles = [{k: v for k, v in row.items() if not k.endswith("_nm") and k != "area_nm2"}
                 for row in result.get("particles", [])]
    analysis = {"key": key, "image_id": result["image_id"], "filename": result.get("filename", "image"),
                "width": result.get("width"), "height": result.get("height"), "settings": dict(settings),
                "particles": particles, "count_api": (result.get("summary") or {}).get("count"),
                "timings": result.get("timings", {})}
    labels = {"key": key, "labels_png": result.get("labels_png")}
    return analysis, labels


# --- removed particles ----------------------------------------------------------------------

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

def kept_table(analysis, removed=None, nm_per_pixel=None):
    """The particles that count (not excluded), as a DataFrame; adds nm columns when calibrated."""
    from ..measure import PIXEL_COLUMNS

    rows = (analysis or {}).get("particles") or []
    table = pd.DataFrame(rows, columns=PIXEL_COLUMNS if not rows else None)
    if rows:
        table = table[[c for c in PIXEL_COLUMNS if c in table] + [c for c in table if c not in PIXEL_COLUMNS]]
    drop = set(removed_labels(removed, (analysis or {}).get("key")))
    if drop and len(table):
        table = table[~table["label"].isin(drop)]
    table = table.reset_index(drop=True)
    for col in table.columns:
        if col == "touches_edge":
            table[col] = table[col].astype(bool)
        elif col != "label":
            table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    if "label" in table:
        table["label"] = table["label"].astype(int)
    nm = parse_nm_per_pixel(nm_per_pixel)
    if nm:
        add_physical_columns(table, nm)
    return table


def summary_of(table, metric="equivalent_diameter", nm_per_pixel=None):
    """:func:`saemi.measure.summarize` for the kept particles, in nm when calibrated."""
    unit = "nm" if parse_nm_per_pixel(nm_per_pixel) else "px"
    return summarize(table, metric if metric in METRICS else "equivalent_diameter", unit)


def format_number(v, digits=4):
    """A short human-readable number ('-' for missing)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - mag)
    return f"{v:,.{min(decimals, 3)}f}"


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
                     **{k: settings.get(k) for k in SPLIT_KEYS}, "nm_per_pixel": nm,
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


def grid_columns(nm_per_pixel=None):
    """AG Grid column definitions for the particle table, in px or nm."""
    unit = "nm" if parse_nm_per_pixel(nm_per_pixel) else "px"
    area = "area_nm2" if unit == "nm" else "area_px"
    cols = [("label", "Label"), (area, f"Area ({unit}²)"),
            (f"equivalent_diameter_{unit}", f"Eq. diam. ({unit})"),
            (f"feret_max_{unit}", f"Feret max ({unit})"), (f"feret_min_{unit}", f"Feret min ({unit})"),
            (f"perimeter_{unit}", f"Perimeter ({unit})"), ("circularity", "Circularity"),
            ("aspect_ratio", "Aspect ratio"), (f"centroid_x_{unit}", f"x ({unit})"),
            (f"centroid_y_{unit}", f"y ({unit})"), ("touches_edge", "Touches edge")]
    out = []
    for field, name in cols:
        longest = max(len(w) for w in name.split())
        col = {"field": field, "headerName": name, "sortable": True, "filter": field != "touches_edge",
               "minWidth": max(80, 8 * longest + 52), "headerTooltip": name}
        if field not in ("label", "touches_edge"):
            col["type"] = "numericColumn"
        out.append(col)
    return out


def round_for_reading(v):
    """At least 4 significant digits, at most 3 decimals (None for NaN/inf)."""
    v = float(v)
    if not math.isfinite(v):
        return None
    if v == 0:
        return 0.0
    decimals = max(0, min(3, 3 - math.floor(math.log10(abs(v)))))
    return round(v, decimals)


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


# --- histogram --------------------------------------------------------------------------------

def axis_title(metric, unit):
    return f"{METRIC_LABELS.get(metric, metric.replace('_', ' ').capitalize())} ({display_unit(unit)})"


def histogram_figure(table, metric="equivalent_diameter", bin_width=None, nm_per_pixel=None, summary=None,
                     key=None):
    """Plotly histogram of one metric of the kept particles, with mean and median lines."""
    summary = summary or summary_of(table, metric, nm_per_pixel)
    unit = "nm" if parse_nm_per_pixel(nm_per_pixel) else "px"
    col = metric_column(table, metric, unit)
    values = table[col].to_numpy(dtype=float) if col in table else np.array([])
    fig = go.Figure()
    xbins = None
    try:
        bw = float(bin_width)
        if math.isfinite(bw) and bw > 0 and values.size:
            lo = math.floor(values.min() / bw) * bw
            if (values.max() - lo) / bw <= 2000:  # a tiny bin width must not hang the browser
                xbins = {"start": lo, "end": values.max() + bw, "size": bw}
    except (TypeError, ValueError):
        pass
    fig.add_trace(go.Histogram(x=values, xbins=xbins, name="particles", marker_color="#4c78a8",
                               marker_line={"color": "white", "width": 1},
                               hovertemplate="%{x}<br>%{y} particles<extra></extra>"))
    mean, median = summary.get("mean"), summary.get("median")
    mean_right = not (median is not None and mean is not None and median > mean)  # labels point apart
    for stat, colour, dash in (("mean", "#d62728", "solid"), ("median", "#2ca02c", "dash")):
        v = summary.get(stat)
        if summary.get("count") and v is not None and math.isfinite(v):
            right = mean_right if stat == "mean" else not mean_right
            fig.add_vline(x=v, line={"color": colour, "width": 2, "dash": dash},
                          annotation={"text": f"{stat} {format_number(v)}", "font": {"color": colour}},
                          annotation_position="top right" if right else "top left")
    fig.update_layout(template="plotly_white", margin={"l": 50, "r": 15, "t": 30, "b": 45},
                      xaxis_title=axis_title(metric, summary.get("unit", unit)), yaxis_title="Count",
                      bargap=0.02, showlegend=False, uirevision=f"{metric}:{unit}",
                      meta={"count": summary.get("count", 0), "key": key or ""})
    if not values.size:
        fig.add_annotation(text="no particles", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


# --- image view -------------------------------------------------------------------------------

def encode_png(array, compress_level=3):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def data_url(data, mime):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def display_image(data, max_side=2048):
    """The micrograph as a JPEG data URL for the browser, plus its size and display stride.

    16-bit and TIFF images are decoded (and stretched to 8 bits) by
    :func:`saemi.io.load_image`, which browsers cannot do themselves. Images
    larger than ``max_side`` are shown subsampled (``stride`` > 1) in the same
    pixel coordinates.
    """
    from ..io import load_image

    img = load_image(data)
    h, w = img.shape[:2]
    stride = max(1, math.ceil(max(h, w) / max_side))
    small = img[::stride, ::stride]
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, format="JPEG", quality=90)
    return {"source": data_url(buf.getvalue(), "image/jpeg"), "width": w, "height": h, "stride": stride}


def decode_labels(labels_png):
    """The label image from its base64 16-bit PNG (int32, 0 = background)."""
    raw = base64.b64decode(labels_png)
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im).astype(np.int32)


def boundaries(labels, width=1):
    """Pixels of each particle within ``width`` pixels of another label (inner outlines)."""
    lab = np.asarray(labels)
    pad = np.pad(lab, width, mode="edge")
    h, w = lab.shape
    edge = np.zeros(lab.shape, bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                edge |= pad[width + dy:width + dy + h, width + dx:width + dx + w] != lab
    return edge & (lab > 0)


def label_colours(n, seed=0):
    """Bright colours, one per label (row 0 unused), the same as :mod:`saemi.overlay`."""
    rng = np.random.default_rng(seed)
    return np.vstack([[0, 0, 0], rng.integers(60, 256, (n, 3))]).astype(np.uint8)


def overlay_rgba(labels, removed=(), mode="outline"):
    """A transparent RGBA layer with the particles drawn, to lay over the micrograph.

    Kept particles get orange outlines (``outline``) or a colour each
    (``filled``); excluded ones are darkened with a cyan outline, so the user
    sees what was clicked away and can click it back.
    """
    lab = np.asarray(labels)
    h, w = lab.shape
    out = np.zeros((h, w, 4), np.uint8)
    width = 2 if max(h, w) > 900 else 1
    edge = boundaries(lab, width)
    removed = np.asarray(sorted(int(v) for v in removed), dtype=np.int64)
    is_removed = np.isin(lab, removed) if removed.size else np.zeros(lab.shape, bool)
    kept = (lab > 0) & ~is_removed
    if mode == "filled":
        colours = label_colours(int(lab.max(initial=0)))
        out[kept, :3] = colours[lab[kept]]
        out[kept, 3] = 150
        out[kept & edge] = (255, 255, 255, 230)
    else:
        out[kept & edge] = OUTLINE_RGBA
    out[is_removed] = REMOVED_RGBA
    out[is_removed & edge] = REMOVED_OUTLINE_RGBA
    return out


def hover_grid(labels, max_cells=200_000):
    """A subsampled label grid for hover and click look-ups in the browser.

    Returns
    -------
    dict
        ``z`` (uint16 or int32 array), ``x0``, ``dx``, ``y0``, ``dy`` in image
        pixel coordinates: cell (i, j) is centred on pixel (y0 + i dy, x0 + j dx).
    """
    lab = np.asarray(labels)
    h, w = lab.shape
    s = max(1, math.ceil(math.sqrt(h * w / max_cells)))
    off = s // 2
    z = lab[off::s, off::s]
    z = z.astype(np.uint16) if z.max(initial=0) <= 65535 else z.astype(np.int32)
    return {"z": z, "x0": (s - 1) / 2, "dx": s, "y0": (s - 1) / 2, "dy": s}


def base_figure(display, banner_box=None, opacity=0.9, scale_box=None):
    """The image view before any analysis: the micrograph, a banner box, empty layers.

    The axes are in original-image pixels with pixel centres at integers: a
    subsampled picture (``stride`` > 1) is stretched over the same range, so
    shapes the user draws (the calibration line) come back in image pixels.
    """
    w, h, stride = display["width"], display["height"], display.get("stride", 1)
    fig = go.Figure()
    fig.add_trace(go.Image(source=display["source"], x0=(stride - 1) / 2, dx=stride, y0=(stride - 1) / 2,
                           dy=stride, hoverinfo="skip", name="micrograph"))
    fig.add_trace(go.Image(source=EMPTY_PNG, x0=0, dx=max(w, 1), y0=0, dy=max(h, 1),
                           opacity=0.9 if opacity is None else float(opacity),
                           hoverinfo="skip", name="particles"))
    fig.add_trace(go.Heatmap(z=np.zeros((1, 1), np.uint16), x0=w / 2, dx=w, y0=h / 2, dy=h, showscale=False,
                             colorscale=[[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]], hoverinfo="none",
                             name="labels", zmin=0, zmax=1))
    shapes = []
    if banner_box:
        shapes.append({"type": "rect", "x0": banner_box["x0"] - 0.5, "x1": banner_box["x1"] - 0.5,
                       "y0": banner_box["y0"] - 0.5, "y1": banner_box["y1"] - 0.5,
                       "line": {"color": BANNER_COLOUR, "width": 2, "dash": "dot"}, "name": "banner"})
    if scale_box and len(scale_box) == 4:  # (y0, y1, x0, x1), half-open
        y0, y1, x0, x1 = (float(v) for v in scale_box)
        shapes.append({"type": "rect", "x0": x0 - 1.5, "x1": x1 + 0.5, "y0": y0 - 1.5, "y1": y1 + 0.5,
                       "line": {"color": SCALE_COLOUR, "width": 2}, "name": "scale bar"})
    fig.update_layout(margin={"l": 0, "r": 0, "t": 0, "b": 0}, dragmode="pan", shapes=shapes,
                      newshape={"line": {"color": LINE_COLOUR, "width": 3}, "opacity": 1},
                      hovermode="closest", uirevision=display["source"][-64:], template="none",
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                      meta={"width": w, "height": h})
    fig.update_xaxes(visible=False, range=[-0.5, w - 0.5], constrain="domain")
    fig.update_yaxes(visible=False, range=[h - 0.5, -0.5], scaleanchor="x", constrain="domain")
    return fig


def graph_style(width=None, height=None):
    """CSS of the image view: as tall as the image's aspect needs, within the window."""
    style = {"width": "100%", "minHeight": "300px", "maxHeight": "calc(100vh - 190px)"}
    if width and height:
        style["aspectRatio"] = f"{int(width)} / {int(height)}"
    else:
        style["height"] = "clamp(340px, calc(100vh - 200px), 880px)"
    return style


def overlay_update(labels, removed=(), mode="outline"):
    """What changes in the image view after an analysis: the particle layer and the hover grid."""
    h, w = labels.shape
    layer = overlay_rgba(labels, removed, mode)
    grid = hover_grid(labels)
    return {"source": data_url(encode_png(layer), "image/png"), "x0": 0, "dx": 1, "y0": 0, "dy": 1,
            "grid": grid, "width": w, "height": h}


def tooltip_text(label, particles, nm_per_pixel=None, removed=()):
    """What hovering a particle shows (the same text the browser-side callback builds)."""
    row = next((p for p in particles or [] if int(p["label"]) == int(label)), None)
    if row is None:
        return ""
    nm = parse_nm_per_pixel(nm_per_pixel)
    unit, k = ("nm", nm) if nm else ("px", 1.0)
    text = (f"Particle {int(label)}: eq. diameter {format_number(row['equivalent_diameter_px'] * k)} {unit}, "
            f"area {format_number(row['area_px'] * k * k)} {unit}²")
    if int(label) in set(removed or ()):
        text += " (excluded; click to restore)"
    return text


EMPTY_PNG = data_url(encode_png(np.zeros((1, 1, 4), np.uint8)), "image/png")
