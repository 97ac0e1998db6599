"""Numbers for people: significant digits, thousands separators and unit symbols on the page."""

import math

import numpy as np


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


def display_unit(unit):
    """'px^2' -> 'px²' for people (CSV and API keep the ASCII form)."""
    return (unit or "").replace("^2", "²").replace("um", "µm")


def round_for_reading(v):
    """At least 4 significant digits, at most 3 decimals (None for NaN/inf)."""
    v = float(v)
    if not math.isfinite(v):
        return None
    if v == 0:
        return 0.0
    decimals = max(0, min(3, 3 - math.floor(math.log10(abs(v)))))
    return round(v, decimals)
