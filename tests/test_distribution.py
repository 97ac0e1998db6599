"""Size-distribution tools (saemi.distribution) on distributions with known answers."""

import numpy as np
import pandas as pd
import pytest

from saemi.distribution import (cumulative, in_ranges, lognormal_fit, lognormal_pdf, normal_fit, sample_table,
                                size_weights, weighted_percentiles)
from saemi.errors import SaemiError


def test_the_lognormal_fit_recovers_median_and_gsd_and_tells_a_bad_fit():
    rng = np.random.default_rng(0)
    d = rng.lognormal(np.log(50), np.log(1.3), 4000)
    fit = lognormal_fit(d)
    assert fit["median"] == pytest.approx(50, rel=0.02) and fit["gsd"] == pytest.approx(1.3, rel=0.02)
    assert fit["ks"] < 0.03 and fit["p_value"] > 0.01
    bimodal = np.concatenate([rng.normal(20, 1, 2000), rng.normal(80, 2, 2000)])
    assert lognormal_fit(bimodal)["ks"] > 0.15  # two populations are not one log-normal
    assert np.isnan(lognormal_fit([1.0, 2.0])["median"]) and np.isnan(lognormal_fit([1.0, -2.0, 3.0])["gsd"])
    x = np.linspace(1, 400, 40000)
    assert np.trapezoid(lognormal_pdf(x, fit), x) == pytest.approx(1, abs=1e-3)


def test_the_normal_fit():
    d = np.random.default_rng(1).normal(30, 4, 3000)
    fit = normal_fit(d)
    assert fit["mean"] == pytest.approx(30, abs=0.3) and fit["std"] == pytest.approx(4, rel=0.05)
    assert fit["ks"] < 0.03


def test_volume_weighting_equals_counting_each_particle_d_cubed_times():
    d = np.array([1.0, 2.0, 3.0])
    replicated = np.repeat(d, (d ** 3).astype(int))  # 1, 8 and 27 copies
    w = size_weights(d, "volume")
    assert w.sum() == pytest.approx(1) and w.tolist() == pytest.approx([1 / 36, 8 / 36, 27 / 36])
    x, f = cumulative(d, "volume")
    assert f.tolist() == pytest.approx([1 / 36, 9 / 36, 1.0])
    assert weighted_percentiles(d, [50], "volume")[0] == pytest.approx(np.median(replicated), abs=0.5)
    assert weighted_percentiles(d, [10, 90], "number").tolist() == np.percentile(d, [10, 90]).tolist()
    with pytest.raises(SaemiError, match="weighting"):
        size_weights(d, "mass")


def test_range_filters_and_sample_tables():
    t = pd.DataFrame({"label": [1, 2, 3], "equivalent_diameter_nm": [10.0, 50.0, 90.0],
                      "circularity": [0.9, 0.5, 0.95]})
    keep = in_ranges(t, {"equivalent_diameter_nm": (20, None), "circularity": (0.6, 1.0)})
    assert keep.tolist() == [False, False, True]
    with pytest.raises(SaemiError, match="no such column"):
        in_ranges(t, {"feret_nm": (1, 2)})
    s = sample_table({"a.png": t, "b.png": t.iloc[:1], "empty.png": t.iloc[:0]})
    assert s.columns[0] == "image" and s.image.tolist() == ["a.png"] * 3 + ["b.png"]
    assert sample_table({}).columns.tolist() == ["image"]
