"""Writing results: CSV text that is safe to open in a spreadsheet, and atomic file writes.

Every CSV the product writes (the CLI's, the API's and the page's) goes through
:func:`csv_text`, and every file the CLI writes through :func:`write_atomic`.
"""

import os
import tempfile
from pathlib import Path

import pandas as pd

#: A text cell starting with one of these is read as a formula by Excel, LibreOffice
#: and Google Sheets (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value):
    """A text value made inert for spreadsheets: a leading formula character gets a ``'``.

    Numbers are returned unchanged (a negative number is data, not a formula).

    Examples
    --------
    >>> escape_cell('=HYPERLINK("http://x","y").png')
    '\\'=HYPERLINK("http://x","y").png'
    >>> escape_cell("a.png"), escape_cell(-1.5)
    ('a.png', -1.5)
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def escape_formulas(table):
    """A copy of a DataFrame whose text cells (and column names) are escaped.

    Parameters
    ----------
    table : pandas.DataFrame

    Returns
    -------
    pandas.DataFrame
    """
    out = table.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(escape_cell)
    out.columns = [escape_cell(str(c)) for c in out.columns]
    return out


def csv_text(table, **kwargs):
    """A DataFrame as CSV text with formula-like text cells escaped.

    Parameters
    ----------
    table : pandas.DataFrame or list of dict
    **kwargs
        Passed to :meth:`pandas.DataFrame.to_csv` (``index=False`` by default).

    Returns
    -------
    str
    """
    if not isinstance(table, pd.DataFrame):
        table = pd.DataFrame(table)
    kwargs.setdefault("index", False)
    return escape_formulas(table).to_csv(**kwargs)


def write_atomic(path, data):
    """Write bytes or text to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and a failure leaves any earlier
    file at ``path`` as it was.

    Parameters
    ----------
    path : str or Path
    data : bytes or str
        Text is written as UTF-8.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
