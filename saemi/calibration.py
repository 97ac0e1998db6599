"""The calibration record: one per image, saying what a size in nm rests on.

Every number SAEMI reports in physical units comes with a :class:`Calibration`:
the value (nm per pixel), where it came from (``source``: ``"file"``,
``"scale_bar"`` or ``"user"``), a human-readable ``details`` string
("Zeiss CZ_SEM, 50.00 kX"), a ``confidence`` and, when the file names them,
the instrument, magnification, high voltage and detector. Problems are never
resolved silently: a file value and a scale bar that disagree by more than
:data:`AGREEMENT_TOLERANCE` give a warning; an implausible value in the
metadata is reported in ``warnings`` and not applied.

Precedence (:func:`effective_calibration`): a value the user typed wins; else
the file's; else, with ``scale='auto'``, the scale bar read in the image.

This module is pure: no web framework, no torch, no image decoding.
"""

import math
import re
from dataclasses import asdict, dataclass, field

#: Where a calibration may come from, best first (after a value the user typed).
SOURCES = ("user", "file", "scale_bar")
#: File and scale bar (or file and typed value) may differ by this fraction before a warning.
AGREEMENT_TOLERANCE = 0.03
#: Pixel sizes outside this range (nm) are reported but not applied: no electron
#: microscope image has pixels under 0.1 pm or over 1 mm.
PLAUSIBLE_NM = (1e-4, 1e6)

#: Length units found in microscope metadata, in nm.
UNIT_NM = {
    "m": 1e9, "meter": 1e9, "metre": 1e9, "mm": 1e6, "millimeter": 1e6,
    "µm": 1e3, "um": 1e3, "μm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "å": 0.1, "a": 0.1, "angstrom": 0.1, "ångström": 0.1, "ang": 0.1,
    "pm": 1e-3, "picometer": 1e-3,
}


def unit_to_nm(unit):
    """Size of a length unit in nm, or None when ``unit`` is not a length.

    Examples
    --------
    >>> unit_to_nm("µm"), unit_to_nm("nm"), unit_to_nm("Å"), unit_to_nm("m")
    (1000.0, 1.0, 0.1, 1000000000.0)
    >>> unit_to_nm("1/nm") is None, unit_to_nm("") is None, unit_to_nm(None) is None
    (True, True, True)
    """
    if unit is None:
        return None
    u = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("μ", "µ")
    u = u.strip("[]").replace("_", "")  # Berkeley EMD writes units as "[n_m]"
    if not u:
        return None
    return UNIT_NM.get(u.lower() if u not in ("A", "Å") else "å")


def parse_length(text):
    """A length such as ``"5um"``, ``"500 nm"``, ``"1.5 µm"`` in nm, or None.

    Examples
    --------
    >>> parse_length("5um"), parse_length("500 nm"), parse_length("0.5µm")
    (5000.0, 500.0, 500.0)
    >>> parse_length("five") is None
    True
    """
    m = re.fullmatch(r"\s*([-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?)\s*([^\d\s]+)\s*", str(text or ""))
    if not m:
        return None
    per = unit_to_nm(m.group(2))
    if per is None:
        return None
    return float(m.group(1).replace(",", ".")) * per


def format_nm(value):
    """A pixel size for reading: 4 significant digits, no exponent for usual sizes.

    >>> format_nm(7.344), format_nm(0.0123456), format_nm(1234.5)
    ('7.344', '0.01235', '1234')
    """
    if value is None:
        return ""
    v = float(value)
    if v == 0 or not math.isfinite(v):
        return str(v)
    digits = max(0, 3 - int(math.floor(math.log10(abs(v)))))
    text = f"{v:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def relative_difference(a, b):
    """|a - b| / b."""
    return abs(float(a) - float(b)) / float(b)


@dataclass
class Calibration:
    """One image's calibration, or the reasons it has none.

    Attributes
    ----------
    nm_per_pixel : float or None
        The value in force (None: sizes stay in pixels).
    source : {"file", "scale_bar", "user"} or None
    details : str
        What the value rests on, for people: "Zeiss CZ_SEM, 50.00 kX",
        "scale bar 200 nm = 150.0 px", "typed by the user".
    confidence : float or None
        0..1. A file's own pixel size and a typed value are 1; a scale bar's
        is its detection confidence.
    reader : str
        Which metadata reader produced the file value (``"zeiss_cz_sem"``,
        ``"fei"``, ``"imagej"``, ``"ome"``, ``"olympus_sis"``, ``"tescan"``,
        ``"hitachi_txt"``, ``"jeol_txt"``, ``"digitalmicrograph"``, ``"emd"``,
        ``"mrc"``), "" when none applies.
    instrument, detector : str or None
    magnification : float or None
        Nominal magnification as the instrument states it (50000 for "50.00 kX").
    high_voltage_kv : float or None
    file_nm_per_pixel, scale_bar_nm_per_pixel : float or None
        In an effective record (:func:`effective_calibration`): what the file
        and the scale bar said, whichever was used.
    warnings : list of str
        Problems: disagreement, implausible or unreadable metadata (with the
        reason it was not applied).
    notes : list of str
        Facts worth knowing that are no problem: other pages of a multi-page
        file, frames of a stack.
    """

    nm_per_pixel: float = None
    source: str = None
    details: str = ""
    confidence: float = None
    reader: str = ""
    instrument: str = None
    magnification: float = None
    high_voltage_kv: float = None
    detector: str = None
    file_nm_per_pixel: float = None
    scale_bar_nm_per_pixel: float = None
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def to_dict(self):
        """JSON-safe dict (floats, strings, lists, None)."""
        d = asdict(self)
        for k in ("nm_per_pixel", "confidence", "magnification", "high_voltage_kv", "file_nm_per_pixel",
                  "scale_bar_nm_per_pixel"):
            v = d[k]
            d[k] = None if v is None or not math.isfinite(float(v)) else float(v)
        d["warnings"], d["notes"] = [str(w) for w in d["warnings"]], [str(n) for n in d["notes"]]
        d["text"] = self.describe()
        return d

    @classmethod
    def from_dict(cls, d):
        """The inverse of :meth:`to_dict` (unknown keys, such as ``text``, are ignored).

        >>> c = Calibration(7.344, "file", "Zeiss CZ_SEM", 1.0, warnings=["w"])
        >>> Calibration.from_dict(c.to_dict()) == c
        True
        """
        from dataclasses import fields

        d = d or {}
        known = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in d.items() if k in known})
        out.warnings, out.notes = list(out.warnings or []), list(out.notes or [])
        return out

    def describe(self):
        """One line for people.

        >>> Calibration(7.344, "file", "Zeiss CZ_SEM, 50.00 kX").describe()
        '7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)'
        >>> Calibration().describe()
        'not calibrated: sizes in pixels'
        """
        if not self.nm_per_pixel:
            return "not calibrated: sizes in pixels"
        where = {"file": "from the file", "scale_bar": "from the scale bar", "user": "typed by the user"}.get(
            self.source, "")
        text = f"{format_nm(self.nm_per_pixel)} nm/px {where}".rstrip()
        if self.details and self.source != "user":
            text += f" ({self.details})"
        return text


def checked(record, value_nm, what):
    """Put ``value_nm`` into a file record if it is a plausible pixel size; else explain why not.

    Parameters
    ----------
    record : Calibration
        Gets ``nm_per_pixel`` and ``source='file'``, or a warning.
    value_nm : float or None
    what : str
        Where the value was read, for the warning ("FEI [Scan] PixelWidth").

    Returns
    -------
    Calibration
        ``record``, changed in place; the value is rounded to 10 significant
        digits (unit-conversion noise, far below any calibration's precision).
    """
    try:
        v = float(value_nm)
    except (TypeError, ValueError):
        record.warnings.append(f"{what} is not a number ({value_nm!r}); the file's calibration is not applied")
        return record
    if not math.isfinite(v) or not PLAUSIBLE_NM[0] <= v <= PLAUSIBLE_NM[1]:
        record.warnings.append(f"{what} gives {v:g} nm per pixel, which is implausible for a micrograph; "
                               "the file's calibration is not applied")
        return record
    # 10 significant digits: metres to nm (3.37e-09 * 1e9 = 3.3700000000000006) must read 3.37
    record.nm_per_pixel, record.source, record.confidence = float(f"{v:.10g}"), "file", 1.0
    return record


def effective_calibration(file_record=None, scale=None, user_nm_per_pixel=None, scale_mode="auto"):
    """The calibration in force for one analysis, and what the other sources said.

    Parameters
    ----------
    file_record : Calibration or None
        What the file carries (:func:`saemi.io.read_micrograph`).
    scale : saemi.scalebar.Scale or None
        The scale bar read in the image.
    user_nm_per_pixel : float or None
        A value the user typed (or measured by drawing a line).
    scale_mode : {"auto", "none"}
        "none": the scale bar is never used (the file's value still is).

    Returns
    -------
    Calibration

    Examples
    --------
    >>> f = Calibration(2.0, "file", "FEI/Thermo FEI_HELIOS", 1.0)
    >>> effective_calibration(f, None, 2.5).describe()
    '2.5 nm/px typed by the user'
    >>> effective_calibration(f, None, 2.5).warnings[0][:30]
    'The file says 2 nm/px (FEI/The'
    """
    f = file_record or Calibration()
    bar_nm = getattr(scale, "nm_per_pixel", None) if scale is not None else None
    rec = Calibration(reader=f.reader, instrument=f.instrument, magnification=f.magnification,
                      high_voltage_kv=f.high_voltage_kv, detector=f.detector, file_nm_per_pixel=f.nm_per_pixel,
                      scale_bar_nm_per_pixel=bar_nm, warnings=list(f.warnings), notes=list(f.notes))
    if user_nm_per_pixel:
        rec.nm_per_pixel, rec.source, rec.details, rec.confidence = (float(user_nm_per_pixel), "user",
                                                                     "typed by the user", 1.0)
        if f.nm_per_pixel and relative_difference(user_nm_per_pixel, f.nm_per_pixel) > AGREEMENT_TOLERANCE:
            rec.warnings.append(
                f"The file says {format_nm(f.nm_per_pixel)} nm/px ({f.details}); the typed "
                f"{format_nm(user_nm_per_pixel)} nm/px differs by "
                f"{100 * relative_difference(user_nm_per_pixel, f.nm_per_pixel):.0f} % and is used")
    elif f.nm_per_pixel:
        rec.nm_per_pixel, rec.source, rec.details, rec.confidence = (f.nm_per_pixel, "file", f.details,
                                                                     f.confidence if f.confidence is not None
                                                                     else 1.0)
        if bar_nm and scale_mode == "auto" and relative_difference(bar_nm, f.nm_per_pixel) > AGREEMENT_TOLERANCE:
            rec.warnings.append(
                f"The scale bar reads {format_nm(bar_nm)} nm/px ({scale_text(scale)}) but the file says "
                f"{format_nm(f.nm_per_pixel)} nm/px ({f.details}): they differ by "
                f"{100 * relative_difference(bar_nm, f.nm_per_pixel):.0f} %. The file's value is used; "
                "check whether the image was resized or the bar misread, and type the right value if needed")
    elif bar_nm and scale_mode == "auto":
        rec.nm_per_pixel, rec.source, rec.details = float(bar_nm), "scale_bar", scale_text(scale)
        rec.confidence = float(getattr(scale, "confidence", 0.0) or 0.0)
    return rec


def scale_text(scale):
    """'scale bar 200 nm = 150.0 px' for a read scale bar."""
    if scale is None:
        return ""
    value, unit, length = getattr(scale, "value", None), getattr(scale, "unit", None), scale.bar_length_px
    label = f"{value:g} {unit}" if value is not None and unit else "unread label"
    return f"scale bar {label} = {float(length):.1f} px"


def calibration_columns(record):
    """The record as flat columns for a summary CSV row.

    >>> calibration_columns(Calibration(7.344, "file", "Zeiss CZ_SEM, 50.00 kX", 1.0))["calibration_source"]
    'file'
    """
    r = record or Calibration()
    return {"nm_per_pixel": r.nm_per_pixel if r.nm_per_pixel else "",
            "calibration_source": r.source or "",
            "calibration_details": r.details or "",
            "calibration_confidence": "" if r.confidence is None or not r.nm_per_pixel else round(r.confidence, 3),
            "file_nm_per_pixel": r.file_nm_per_pixel or "",
            "scale_bar_nm_per_pixel": r.scale_bar_nm_per_pixel or "",
            "magnification": r.magnification or "",
            "high_voltage_kv": r.high_voltage_kv or "",
            "instrument": r.instrument or "",
            "calibration_warnings": " | ".join(r.warnings),
            "calibration_notes": " | ".join(r.notes)}


def scale_bar_columns(scale):
    """The scale bar read in an image as flat summary-CSV columns, so that a batch can be audited.

    ``scale_bar_text`` is what OCR read (also when the value was not accepted),
    ``scale_bar_value``/``scale_bar_unit`` what was accepted, with the bar's
    length in pixels and the reader's confidence; empty without a bar.

    >>> scale_bar_columns(None)["scale_bar_text"]
    ''
    """
    if scale is None:
        return {"scale_bar_text": "", "scale_bar_value": "", "scale_bar_unit": "", "scale_bar_length_px": "",
                "scale_bar_confidence": ""}
    return {"scale_bar_text": getattr(scale, "text", "") or "",
            "scale_bar_value": "" if scale.value is None else scale.value,
            "scale_bar_unit": scale.unit or "",
            "scale_bar_length_px": round(float(scale.bar_length_px), 2),
            "scale_bar_confidence": round(float(scale.confidence), 3)}


def with_calibration_columns(table, record):
    """A particle table with two constant columns naming its calibration.

    The per-particle CSV carries the record as columns, ``nm_per_pixel`` and
    ``calibration_source``, not as ``#`` comment lines: comment lines break
    plain CSV readers (pandas without ``comment=``, Excel, R's ``read.csv``),
    while two constant columns cost little and keep every row self-describing.
    The full record (details, warnings) is in the summary CSV and the JSON.
    """
    r = record or Calibration()
    out = table.copy()
    out["nm_per_pixel"] = r.nm_per_pixel if r.nm_per_pixel else float("nan")
    out["calibration_source"] = r.source or ""
    return out
