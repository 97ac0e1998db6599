"""A sample: several images analysed together, their combined distribution, zip uploads and session files.

Pure functions (no web code). A sample's images each keep their own settings,
calibration and exclusions; what they have in common is the distribution
computed over all their particles (:func:`sample_statistics`), in one unit:

* nm (shown in nm or µm) when every image has a calibration;
* px for all when any image lacks one, and the answer's ``note`` says why
  (sizes in nm and in px cannot be pooled), as the CLI's ``summary.csv``
  ``sample`` row does (:func:`saemi.cli.sample_row`).

Filters are ImageJ's "Analyze Particles" ranges (inclusive, either end
open): size (of the histogram's metric, in the sample's unit), circularity
and aspect ratio. The statistics, the particle CSV, the summary CSV and the
overlay (filtered particles are drawn greyed out) all follow them.

A zip upload is hostile input: :func:`unpack_zip` limits the member count,
the total uncompressed size and the names, and skips non-images with a
message naming them.
"""

import io
import json
import math
import posixpath
import zipfile

import numpy as np
import pandas as pd

from .distribution import WEIGHTINGS, in_ranges, lognormal_fit, lognormal_pdf, normal_fit, sample_table
from .errors import SaemiError
from .io import SUPPORTED_SUFFIXES
from .measure import METRICS, add_physical_columns, metric_column, preferred_unit, summarize

#: Limits on a zip upload: members looked at, images kept, and bytes once uncompressed.
MAX_ZIP_MEMBERS = 1000
MAX_ZIP_IMAGES = 200
MAX_ZIP_BYTES = 1024 * 2**20
#: A member whose compressed size is this many times smaller than its size is refused (a zip bomb).
MAX_ZIP_RATIO = 200
#: Images in one sample (uploads and session files alike).
MAX_SAMPLE_IMAGES = 200

FILTER_KEYS = ("size", "circularity", "aspect_ratio")
SESSION_FORMAT = "saemi-session"
SESSION_VERSION = 1


def is_zip(filename, data=b""):
    """True for a ``.zip`` name or bytes that start like a zip archive."""
    return str(filename or "").lower().endswith(".zip") or bytes(data[:4]) == b"PK\x03\x04"


def unpack_zip(data, max_members=MAX_ZIP_MEMBERS, max_images=MAX_ZIP_IMAGES, max_bytes=MAX_ZIP_BYTES):
    """The images in a zip archive, read with limits; the rest skipped with a reason.

    Parameters
    ----------
    data : bytes
        The archive.
    max_members, max_images, max_bytes : int
        Entries the archive may hold, images kept, and their total size once
        uncompressed (bytes). Over a limit the whole archive is refused:
        half a sample would give a wrong distribution without saying so.

    Returns
    -------
    images : list of (str, bytes)
        (name, bytes) in archive order. The name is the member's last path
        component (never used as a path), made unique with `` (2)``, ``(3)``...
    skipped : list of (str, str)
        (member name, why): folders' ``__MACOSX`` and hidden files are dropped
        silently; non-images, encrypted members and unsafe names are listed.

    Raises
    ------
    SaemiError
        ``bad_upload`` for bytes that are not a zip, an archive over a limit,
        or one that holds no image.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise SaemiError(f"the zip archive cannot be read ({exc})", code="bad_upload") from None
    if len(infos) > max_members:
        raise SaemiError(f"the zip archive holds {len(infos)} entries; at most {max_members} are read",
                         code="bad_upload")
    images, skipped, total, seen = [], [], 0, {}
    for info in infos:
        name = info.filename
        if info.is_dir():
            continue
        parts = name.replace("\\", "/").split("/")
        base = parts[-1]
        if "__MACOSX" in parts or base.startswith("."):
            continue
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or not base.strip():
            skipped.append((name, "unsafe name (an absolute path or one that leaves the archive)"))
            continue
        if info.flag_bits & 0x1:
            skipped.append((name, "encrypted"))
            continue
        suffix = posixpath.splitext(base.lower())[1]
        if suffix not in SUPPORTED_SUFFIXES:
            skipped.append((name, "not an image (PNG, JPEG, TIFF, BMP, GIF, DM3/DM4, EMD or MRC expected)"))
            continue
        if len(images) >= max_images:
            raise SaemiError(f"the zip archive holds more than {max_images} images; upload at most {max_images} "
                             "at a time", code="bad_upload")
        if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1) and info.file_size > 2**20:
            raise SaemiError(f"{base} in the zip archive expands {info.file_size // max(info.compress_size, 1)} "
                             "times; refused as a zip bomb", code="bad_upload")
        total += info.file_size
        if total > max_bytes:
            raise SaemiError(f"the zip archive's images come to over {max_bytes / 2**20:g} MB uncompressed; "
                             "upload fewer at a time", code="bad_upload")
        try:
            with archive.open(info) as fh:
                blob = fh.read(info.file_size + 1)  # a lying header cannot make it read more
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, ValueError) as exc:
            skipped.append((name, f"cannot be read ({exc})"))
            continue
        if len(blob) != info.file_size:
            skipped.append((name, "its size differs from what the archive says"))
            continue
        images.append((unique_name(base, seen), blob))
    if not images:
        listed = f": {describe_skipped(skipped)}" if skipped else ""
        raise SaemiError(f"the zip archive holds no image{listed}", code="bad_upload")
    return images, skipped


def unique_name(name, seen):
    """``name``, or ``name (2)``... when ``seen`` (a dict updated here) already holds it.

    Examples
    --------
    >>> seen = {}; [unique_name(n, seen) for n in ("a.png", "b.png", "a.png")]
    ['a.png', 'b.png', 'a (2).png']
    """
    n = seen.get(name, 0) + 1
    seen[name] = n
    if n == 1:
        return name
    stem, ext = posixpath.splitext(name)
    return unique_name(f"{stem} ({n}){ext}", seen)


def describe_skipped(skipped, limit=5):
    """'a.txt (not an image), b.pdf (not an image) and 3 more' for a list of (name, why)."""
    parts = [f"{n} ({why})" for n, why in skipped[:limit]]
    more = len(skipped) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


# --- filters ------------------------------------------------------------------------------------

def _range(value, name):
    """(low, high) of a filter, each a finite float or None; raises for a malformed one."""
    if value is None:
        return None, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SaemiError(f"filter {name} must be [low, high] (either may be null)", code="bad_parameter")
    out = []
    for v in value:
        if v is None or v == "":
            out.append(None)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise SaemiError(f"filter {name}: {v!r} is not a number", code="bad_parameter") from None
        if not math.isfinite(f):
            raise SaemiError(f"filter {name}: {v!r} is not a finite number", code="bad_parameter")
        out.append(f)
    lo, hi = out
    if lo is not None and hi is not None and lo > hi:
        raise SaemiError(f"filter {name}: the low end {lo:g} is above the high end {hi:g}", code="bad_parameter")
    return lo, hi


def check_filters(filters):
    """The filters as ``{"size": (lo, hi), "circularity": ..., "aspect_ratio": ...}`` (None ends: open).

    Raises
    ------
    SaemiError
        ``bad_parameter`` for an unknown filter or a malformed range.
    """
    filters = filters or {}
    if not isinstance(filters, dict):
        raise SaemiError("filters must be a JSON object", code="bad_parameter")
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise SaemiError(f"unknown filter {unknown[0]!r}; filters are {', '.join(FILTER_KEYS)}", code="bad_parameter")
    return {k: _range(filters.get(k), k) for k in FILTER_KEYS}


def filter_ranges(filters, metric, unit):
    """Column ranges for :func:`saemi.distribution.in_ranges`: the size range on ``metric`` in ``unit``."""
    f = check_filters(filters)
    out = {}
    if f["size"] != (None, None):
        out[metric_column(pd.DataFrame(), metric, unit)] = f["size"]
    for k in ("circularity", "aspect_ratio"):
        if f[k] != (None, None):
            out[k] = f[k]
    return out


def filters_active(filters):
    return any(v != (None, None) for v in check_filters(filters).values())


# --- the combined distribution ------------------------------------------------------------------

def sample_unit(nm_per_pixels):
    """"nm" when every image has a calibration (positive nm per pixel), else "px"."""
    vals = list(nm_per_pixels)
    ok = [v is not None and isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in vals]
    return "nm" if vals and all(ok) else "px"


def unit_tables(tables, nm_per_pixels, unit="auto"):
    """Each image's pixel table with physical columns in the sample's unit, and that unit.

    Parameters
    ----------
    tables : dict
        Image name -> particle table in pixel units (:func:`saemi.measure.particle_table`).
    nm_per_pixels : dict
        Image name -> calibration (nm per pixel) or None.
    unit : {'auto', 'nm', 'um'}
        With every image calibrated: "auto" is µm when the median particle is
        1 µm or larger (:func:`saemi.measure.preferred_unit`).

    Returns
    -------
    (dict, str, str)
        Tables, the unit ('px', 'nm' or 'um') and a note ("" when all agree).
    """
    base = sample_unit([nm_per_pixels.get(n) for n in tables])
    if base == "px":
        calibrated = sum(sample_unit([nm_per_pixels.get(n)]) == "nm" for n in tables)
        note = (f"sizes in px: {calibrated} of {len(tables)} images have a calibration, so nm cannot be combined"
                if calibrated else "")
        return {n: t.copy() for n, t in tables.items()}, "px", note
    if unit not in ("nm", "um"):
        d = np.concatenate([t["equivalent_diameter_px"].to_numpy(float) * nm_per_pixels[n]
                            for n, t in tables.items()] + [np.array([])])
        unit = preferred_unit(d)
    return {n: add_physical_columns(t.copy(), nm_per_pixels[n], unit) for n, t in tables.items()}, unit, ""


def _finite(v):
    return None if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else float(v)


def _clean(d):
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in d.items()}


def sample_statistics(tables, nm_per_pixels, metric="equivalent_diameter", weighting="number", filters=None,
                      unit="auto", curve_points=200):
    """The combined distribution of a sample, as the page draws it and the CSVs report it.

    Parameters
    ----------
    tables : dict
        Image name -> particle table in pixel units, the user's exclusions
        already dropped (:func:`saemi.measure.kept_particles`).
    nm_per_pixels : dict
        Image name -> calibration in force (nm per pixel) or None.
    metric : str
        One of :data:`saemi.measure.METRICS`.
    weighting : {'number', 'volume'}
        Volume weights each particle by d³ (of the equivalent diameter).
    filters : dict, optional
        See :func:`check_filters`; the size range is in the sample's unit.
    unit : {'auto', 'nm', 'um'}
    curve_points : int
        Points of the fitted curves.

    Returns
    -------
    dict
        ``unit`` (of the metric: px, nm, um, px^2...), ``length_unit``,
        ``note``, ``summary`` (:func:`saemi.measure.summarize` of the particles
        that pass the filters; with ``volume`` weighting D10/D50/D90 are
        volume-weighted while count, mean, median and std still count
        particles, and ``weighting`` says which), ``values``
        (their metric, for the histogram), ``weights`` (per value, summing to
        1), ``cumulative`` (``x``, ``f``), ``lognormal`` and ``normal`` (fits
        of the values, see :mod:`saemi.distribution`, each with ``x`` and
        ``pdf`` to draw), ``per_image`` (one summary per image, with
        ``found``, ``counted`` and ``filtered``), ``filtered`` (image name ->
        labels the filters leave out) and ``table`` (the combined table that
        passes, an ``image`` column first).
    """
    if metric not in METRICS:
        raise SaemiError(f"metric must be one of {', '.join(METRICS)}", code="bad_parameter")
    if weighting not in WEIGHTINGS:
        raise SaemiError(f"weighting must be one of {', '.join(WEIGHTINGS)}", code="bad_parameter")
    tables, length_unit, note = unit_tables(tables, nm_per_pixels, unit)
    ranges = filter_ranges(filters, metric, length_unit)
    passed, filtered, per_image = {}, {}, []
    for name, t in tables.items():
        keep = in_ranges(t, ranges) if len(t) else np.ones(0, bool)
        passed[name] = t[keep].reset_index(drop=True)
        filtered[name] = [int(v) for v in t.loc[~keep, "label"]] if len(t) else []
        s = summarize(passed[name], metric, length_unit)
        per_image.append({"image": name, **_clean(s), "found": int(len(t)), "counted": int(keep.sum()),
                          "filtered": int((~keep).sum()), "nm_per_pixel": _finite(nm_per_pixels.get(name))})
    table = sample_table(passed)
    col = metric_column(table, metric, length_unit)
    values = table[col].to_numpy(float) if col in table else np.array([])
    summary = _clean(summarize(table, metric, length_unit)) if len(table) else \
        {"metric": metric, "unit": per_image[0]["unit"] if per_image else length_unit, "count": 0}
    diam_col = metric_column(table, "equivalent_diameter", length_unit)
    diam = table[diam_col].to_numpy(float) if diam_col in table else np.array([])
    weights = _weights(values, diam, weighting)
    if weighting != "number" and values.size:
        d10, d50, d90 = _weighted_percentiles(values, weights, [10, 50, 90])
        summary.update({"d10": d10, "d50": d50, "d90": d90})
    summary["weighting"] = weighting
    order = np.argsort(values, kind="stable")
    out = {"unit": summary.get("unit", length_unit), "length_unit": length_unit, "note": note, "summary": summary,
           "values": values.tolist(), "weights": weights.tolist(),
           "cumulative": {"x": values[order].tolist(), "f": np.cumsum(weights[order]).tolist()},
           "lognormal": _fit_curve(lognormal_fit(values), values, "lognormal", curve_points),
           "normal": _fit_curve(normal_fit(values), values, "normal", curve_points),
           "per_image": per_image, "filtered": filtered, "table": table}
    return out


def _weights(values, diameters, weighting):
    """Per-particle weights summing to 1: ones, or d³ of the equivalent diameter for ``volume``."""
    if not values.size:
        return np.zeros(0)
    w = np.ones(values.size) if weighting == "number" else np.asarray(diameters, float) ** 3
    total = w.sum()
    return w / total if total > 0 else np.full(values.size, 1 / values.size)


def _weighted_percentiles(values, weights, percents):
    """Percentiles of ``values`` under ``weights`` (Hazen's rule, as
    :func:`saemi.distribution.weighted_percentiles`); here the weights come from the equivalent
    diameter, so an area histogram is volume-weighted by d³ too, not by area³."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    c = np.cumsum(w) - w / 2
    return [float(x) for x in np.interp(np.asarray(percents, float) / 100, c, v)]


def _fit_curve(fit, values, kind, points):
    """A fit's parameters (JSON-safe) and its density on ``points`` sizes across the data."""
    out = _clean({k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in fit.items()})
    ok = values[np.isfinite(values)]
    if ok.size < 3 or any(out.get(k) is None for k in (("median", "gsd") if kind == "lognormal" else ("mean", "std"))):
        return {**out, "x": [], "pdf": []}
    lo, hi = float(ok.min()), float(ok.max())
    span = hi - lo or max(hi, 1.0)
    if kind == "lognormal":
        x = np.geomspace(max(lo / 1.5, 1e-12), hi * 1.5, points)
        pdf = lognormal_pdf(x, fit)
    else:
        x = np.linspace(lo - 0.25 * span, hi + 0.25 * span, points)
        std = fit["std"] or span / 10
        pdf = np.exp(-((x - fit["mean"]) ** 2) / (2 * std * std)) / (std * math.sqrt(2 * math.pi))
    return {**out, "x": x.tolist(), "pdf": pdf.tolist()}


def summary_rows(stats, sample_name="sample"):
    """The sample summary CSV's rows: one per image, then the pooled ``sample`` row."""
    rows = [{"image": r["image"], "status": "image", **{k: v for k, v in r.items() if k != "image"}}
            for r in stats["per_image"]]
    s = stats["summary"]
    logn, norm = stats["lognormal"], stats["normal"]
    rows.append({"image": f"{sample_name} ({len(rows)} image{'s' if len(rows) != 1 else ''})", "status": "sample",
                 **{k: v for k, v in s.items()}, "counted": s.get("count", 0),
                 "found": sum(r["found"] for r in stats["per_image"]),
                 "filtered": sum(r["filtered"] for r in stats["per_image"]),
                 "lognormal_median": logn.get("median"), "lognormal_gsd": logn.get("gsd"), "lognormal_ks":
                     logn.get("ks"), "lognormal_p": logn.get("p_value"), "normal_mean": norm.get("mean"),
                 "normal_std": norm.get("std"), "normal_ks": norm.get("ks"), "normal_p": norm.get("p_value"),
                 "note": stats.get("note") or ""})
    return rows


# --- session files ------------------------------------------------------------------------------

def check_session(doc):
    """A session file's document, checked: ``images`` (list of dicts with ``image_id`` and ``filename``),
    ``sample`` (dict), ``current`` (int).

    Raises
    ------
    SaemiError
        ``bad_session`` naming what is wrong.
    """
    if isinstance(doc, (bytes, str)):
        try:
            doc = json.loads(doc)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SaemiError(f"the session file is not JSON ({exc})", code="bad_session") from None
    if not isinstance(doc, dict) or doc.get("format") != SESSION_FORMAT:
        raise SaemiError("not a SAEMI session file (it lacks \"format\": \"saemi-session\")", code="bad_session")
    if doc.get("version") != SESSION_VERSION:
        raise SaemiError(f"session file version {doc.get('version')!r}; this SAEMI reads version {SESSION_VERSION}",
                         code="bad_session")
    images = doc.get("images")
    if not isinstance(images, list) or not images:
        raise SaemiError("the session file lists no images", code="bad_session")
    if len(images) > MAX_SAMPLE_IMAGES:
        raise SaemiError(f"the session file lists {len(images)} images; at most {MAX_SAMPLE_IMAGES}",
                         code="bad_session")
    for i, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("image_id"), str) or \
                not isinstance(im.get("filename"), str):
            raise SaemiError(f"image {i + 1} of the session file lacks an image_id or a filename", code="bad_session")
        for key, kind in (("edits", list), ("settings", dict), ("removed", list)):
            if im.get(key) is not None and not isinstance(im[key], kind):
                raise SaemiError(f"image {i + 1} ({im['filename']}): {key} must be a {kind.__name__}",
                                 code="bad_session")
    sample = doc.get("sample") or {}
    if not isinstance(sample, dict):
        raise SaemiError("the session file's sample must be an object", code="bad_session")
    check_filters(sample.get("filters"))
    current = doc.get("current", 0)
    if not isinstance(current, int) or not 0 <= current < len(images):
        current = 0
    return {**doc, "images": images, "sample": sample, "current": current}


SAMPLE_FORMATS = ("json", "particles.csv", "summary.csv")


def sample_csv(stats, kind, sample_name="sample"):
    """A sample's CSV text: ``particles.csv`` (one row per particle that passes, ``image`` column first)
    or ``summary.csv`` (one row per image, then the pooled ``sample`` row)."""
    from .export import csv_text

    if kind == "particles.csv":
        return csv_text(stats["table"], float_format="%.6g")
    if kind == "summary.csv":
        return csv_text(pd.DataFrame(summary_rows(stats, sample_name)), float_format="%.6g")
    raise SaemiError(f"format must be one of {', '.join(SAMPLE_FORMATS)}", code="bad_parameter")


def public(stats):
    """The JSON answer of :func:`sample_statistics`: everything but the table (sent as CSV on request)."""
    return {k: v for k, v in stats.items() if k != "table"}
