"""Writing results: CSV text that is safe to open in a spreadsheet, and atomic file writes.

Every CSV the product writes (the CLI's, the API's and the page's) goes through
:func:`csv_text`, and every file the CLI writes through :func:`write_atomic` or
:func:`write_atomic_many` (an image's three outputs replaced together).
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
    file at ``path`` as it was. An existing symbolic link at ``path`` is
    replaced by the file, never written through.

    Parameters
    ----------
    path : str or Path
    data : bytes or str
        Text is written as UTF-8.
    """
    write_atomic_many({path: data})


def _new_file_mode(path):
    """The permissions a plain ``open(path, "w")`` would give: the old file's, or 0o666 less the umask.

    (``mkstemp`` makes its files private, 0o600.)
    """
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        pass
    try:
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)  # no /proc: read it by setting it, and put it back
        os.umask(umask)
    return 0o666 & ~umask


def write_atomic_many(files):
    """Write several files so that either all of them are replaced or none is.

    Every file is first written in full to a temporary file beside its target
    (``.<name>.<random>.tmp``); only when all are written are they renamed
    into place, in order. A failure while writing (disk full, I/O error,
    interrupt) removes the temporary files and leaves every target as it was.
    (A rename itself failing midway, which needs the folder to change under
    the run, can still leave the earlier targets replaced.)

    Parameters
    ----------
    files : dict of {str or Path: bytes or str}
        Target path to contents; text is written as UTF-8.
    """
    staged = []
    try:
        for path, data in files.items():
            path = Path(path)
            if isinstance(data, str):
                data = data.encode("utf-8")
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), _new_file_mode(path))
                f.write(data)
        while staged:
            tmp, path = staged[0]
            os.replace(tmp, path)
            staged.pop(0)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
