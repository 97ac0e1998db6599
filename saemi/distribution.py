"""Size distributions as papers report them: weighting, fits, cumulative curves, filters, samples.

Pure functions on particle tables (:func:`saemi.measure.particle_table`) and
arrays of sizes. A *sample* is several images analysed under the same
settings; its table is the images' tables stacked, with an ``image`` column.

Conventions
-----------
* Sizes are equivalent diameters (or any length metric) in one unit, > 0.
* ``number`` weighting counts particles; ``volume`` weights each particle by
  d³ (a sphere's volume up to a constant), as laser diffraction reports.
* A log-normal fit is the maximum-likelihood one: ``mu`` and ``sigma`` are the
  mean and (population) standard deviation of ln d, the median is exp(mu) and
  the geometric standard deviation exp(sigma). Its goodness of fit is the
  Kolmogorov-Smirnov distance between the data and the fitted curve, with the
  KS test's p-value (an approximation once the parameters are fitted on the
  same data: read it as a guide, not a test).
"""

import math

import numpy as np
import pandas as pd

from .errors import SaemiError

WEIGHTINGS = ("number", "volume")


def size_weights(sizes, weighting="number"):
    """Weights of each particle for a ``number`` or ``volume`` distribution (they sum to 1).

    Examples
    --------
    >>> size_weights([1.0, 2.0], "volume").round(3).tolist()
    [0.111, 0.889]
    """
    d = np.asarray(sizes, dtype=float)
    if weighting not in WEIGHTINGS:
        raise SaemiError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}",
                         code="bad_parameter")
    w = np.ones_like(d) if weighting == "number" else d ** 3
    total = w.sum()
    return w / total if total > 0 else w


def weighted_percentiles(sizes, percents, weighting="number"):
    """Percentiles of a number- or volume-weighted size distribution (D10, D50, D90 for 10, 50, 90).

    Number weighting is ``numpy.percentile``'s default (what
    :func:`saemi.measure.summarize` reports). Volume weighting places each
    particle at the middle of its step of the weighted CDF (Hazen's rule) and
    interpolates linearly between particles.

    Examples
    --------
    >>> weighted_percentiles([1, 2, 3, 4, 5], [10, 50, 90]).tolist()
    [1.4, 3.0, 4.6]
    """
    d = np.sort(np.asarray(sizes, dtype=float))
    if d.size == 0:
        return np.full(len(np.atleast_1d(percents)), np.nan)
    if weighting == "number":
        return np.percentile(d, percents)
    w = size_weights(d, weighting)
    c = np.cumsum(w) - w / 2
    return np.interp(np.asarray(percents, dtype=float) / 100, c, d)


def cumulative(sizes, weighting="number"):
    """The cumulative distribution: sorted sizes and the fraction at or below each (0-1].

    Examples
    --------
    >>> x, f = cumulative([3, 1, 2]); x.tolist(), f.round(3).tolist()
    ([1.0, 2.0, 3.0], [0.333, 0.667, 1.0])
    """
    d = np.asarray(sizes, dtype=float)
    order = np.argsort(d, kind="stable")
    return d[order], np.cumsum(size_weights(d, weighting)[order])


def lognormal_fit(sizes):
    """The maximum-likelihood log-normal fit of some sizes, with its goodness of fit.

    Returns
    -------
    dict
        ``mu``, ``sigma`` (of ln d), ``median`` (exp mu), ``gsd`` (geometric
        standard deviation, exp sigma), ``mean`` (exp(mu + sigma²/2)), ``n``,
        ``ks`` (Kolmogorov-Smirnov distance, 0-1), ``p_value``. NaN with fewer
        than 3 sizes or a size that is not positive.
    """
    from scipy import stats

    d = np.asarray(sizes, dtype=float)
    d = d[np.isfinite(d)]
    nan = float("nan")
    if d.size < 3 or (d <= 0).any():
        return {"mu": nan, "sigma": nan, "median": nan, "gsd": nan, "mean": nan, "n": int(d.size), "ks": nan,
                "p_value": nan}
    logs = np.log(d)
    mu, sigma = float(logs.mean()), float(logs.std())
    if sigma == 0:
        ks, p = 0.0, 1.0
    else:
        test = stats.kstest(d, stats.lognorm(s=sigma, scale=math.exp(mu)).cdf)
        ks, p = float(test.statistic), float(test.pvalue)
    return {"mu": mu, "sigma": sigma, "median": math.exp(mu), "gsd": math.exp(sigma),
            "mean": math.exp(mu + sigma ** 2 / 2), "n": int(d.size), "ks": ks, "p_value": p}


def normal_fit(sizes):
    """The maximum-likelihood normal fit (``mean``, ``std``), with ``ks`` and ``p_value`` as :func:`lognormal_fit`."""
    from scipy import stats

    d = np.asarray(sizes, dtype=float)
    d = d[np.isfinite(d)]
    nan = float("nan")
    if d.size < 3:
        return {"mean": nan, "std": nan, "n": int(d.size), "ks": nan, "p_value": nan}
    mean, std = float(d.mean()), float(d.std())
    if std == 0:
        return {"mean": mean, "std": 0.0, "n": int(d.size), "ks": 0.0, "p_value": 1.0}
    test = stats.kstest(d, stats.norm(loc=mean, scale=std).cdf)
    return {"mean": mean, "std": std, "n": int(d.size), "ks": float(test.statistic), "p_value": float(test.pvalue)}


def lognormal_pdf(x, fit):
    """The fitted log-normal's density at sizes ``x`` (to draw over a histogram: times n and the bin width)."""
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    ok = x > 0
    s, mu = fit["sigma"], fit["mu"]
    out[ok] = np.exp(-((np.log(x[ok]) - mu) ** 2) / (2 * s * s)) / (x[ok] * s * math.sqrt(2 * math.pi))
    return out


def in_ranges(table, ranges):
    """Which particles pass ImageJ-style range filters (inclusive), as a boolean array.

    Parameters
    ----------
    table : pandas.DataFrame
        A particle table.
    ranges : dict
        Column -> (low, high); either end may be None (open). For example
        ``{"equivalent_diameter_nm": (20, 80), "circularity": (0.6, None),
        "aspect_ratio": (None, 2)}``.

    Examples
    --------
    >>> t = pd.DataFrame({"circularity": [0.5, 0.8, 0.95], "aspect_ratio": [1.1, 3.0, 1.2]})
    >>> in_ranges(t, {"circularity": (0.6, None), "aspect_ratio": (None, 2)}).tolist()
    [False, False, True]
    """
    keep = np.ones(len(table), bool)
    for col, (lo, hi) in (ranges or {}).items():
        if col not in table:
            raise SaemiError(f"cannot filter on {col!r}: the table has no such column", code="bad_parameter")
        v = table[col].to_numpy(dtype=float)
        if lo is not None:
            keep &= v >= float(lo)
        if hi is not None:
            keep &= v <= float(hi)
    return keep


def sample_table(tables):
    """The particle tables of a sample's images stacked, with an ``image`` column first.

    Parameters
    ----------
    tables : dict
        Image name -> particle table (in the same units).
    """
    parts = [t.assign(image=name)[["image", *t.columns]] for name, t in tables.items() if len(t)]
    if not parts:
        return pd.DataFrame({"image": pd.Series(dtype=str)})
    return pd.concat(parts, ignore_index=True)
