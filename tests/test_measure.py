import math

import numpy as np
import pytest

from saemi.errors import SaemiError
from saemi.measure import feret_diameters, particle_table, summarize
from synth import disc_labels


def test_disc_measurements():
    labels = disc_labels((200, 200), [(100, 100, 40)])
    row = particle_table(labels).iloc[0]
    assert row.area_px == pytest.approx(math.pi * 40 ** 2, rel=0.01)
    assert row.equivalent_diameter_px == pytest.approx(80, rel=0.01)
    assert row.feret_max_px == pytest.approx(81, abs=1.0)
    assert row.feret_min_px == pytest.approx(81, abs=1.5)
    assert row.perimeter_px == pytest.approx(2 * math.pi * 40, rel=0.03)
    assert row.circularity > 0.95
    assert row.aspect_ratio == pytest.approx(1, abs=0.03)
    assert (row.centroid_x_px, row.centroid_y_px) == pytest.approx((100, 100), abs=0.01)
    assert not row.touches_edge


def test_rectangle_feret_and_aspect():
    mask = np.zeros((60, 100), bool)
    mask[10:20, 10:70] = True  # 60 x 10 pixels
    fmax, fmin = feret_diameters(mask)
    assert fmin == pytest.approx(10)
    assert fmax == pytest.approx(math.hypot(60, 10))
    row = particle_table(mask.astype(int)).iloc[0]
    assert row.aspect_ratio == pytest.approx(math.hypot(60, 10) / 10)
    assert row.circularity < 0.6


def test_edge_flag_and_physical_units():
    labels = disc_labels((100, 100), [(50, 50, 10), (0, 50, 8)])
    t = particle_table(labels, nm_per_pixel=2.5)
    assert t.touches_edge.tolist() == [False, True]
    assert t.equivalent_diameter_nm.tolist() == pytest.approx((t.equivalent_diameter_px * 2.5).tolist())
    assert t.area_nm2.tolist() == pytest.approx((t.area_px * 6.25).tolist())


def test_summary_statistics():
    labels = disc_labels((400, 400), [(50 + 60 * (i % 6), 50 + 60 * (i // 6), 5 + i) for i in range(20)])
    t = particle_table(labels)
    s = summarize(t, "equivalent_diameter")
    d = t.equivalent_diameter_px.to_numpy()
    assert s["count"] == 20
    assert s["mean"] == pytest.approx(d.mean()) and s["median"] == pytest.approx(np.median(d))
    assert s["std"] == pytest.approx(d.std(ddof=1))
    assert s["d10"] < s["d50"] < s["d90"]
    assert summarize(t, "area")["unit"] == "px^2"


def test_summary_of_no_particles_and_bad_requests():
    t = particle_table(np.zeros((50, 50), int))
    assert len(t) == 0 and summarize(t)["count"] == 0 and math.isnan(summarize(t)["mean"])
    with pytest.raises(SaemiError, match="calibration"):
        summarize(t, unit="nm")
    with pytest.raises(SaemiError, match="unknown metric"):
        summarize(t, metric="volume")
    with pytest.raises(SaemiError, match="positive"):
        particle_table(np.ones((5, 5), int), nm_per_pixel=-1)


def test_a_table_reusing_an_earlier_labelling_s_rows_equals_a_fresh_one():
    import pandas as pd

    from synth import disc_labels

    before = disc_labels((120, 160), [(20, 20, 10), (20, 60, 12), (70, 40, 15), (70, 100, 14), (100, 140, 9)])
    before[before == 3] = 0
    after = before.copy()
    after[before == 1] = 5          # the same pixels under another label: reused
    after[before == 2] = 1
    after[before == 4] = 0          # a particle cut in two: neither half is the old one
    after[(before == 4) & (np.arange(160)[None, :] < 100)] = 2
    after[(before == 4) & (np.arange(160)[None, :] >= 100)] = 3
    after[before == 5] = 4
    after[100, 140] = 0             # one pixel fewer: measured again
    after[5:12, 120:130] = 6        # a new particle where there was none
    before[110:112, 0:5], before[110:112, 5:10] = 7, 8  # two 10-pixel blocks side by side ...
    after[110, 0:10], after[111, 0:10] = 7, 8           # ... cut the other way: as large, other pixels
    fresh = particle_table(after)
    reused = particle_table(after, previous=(before, particle_table(before)))
    pd.testing.assert_frame_equal(reused, fresh, check_exact=True)
    other = np.zeros_like(before)  # an unrelated labelling first: the rows come from the next one
    other[5:12, 120:130] = 1
    several = particle_table(after, previous=[(other, particle_table(other)), (before, particle_table(before))])
    pd.testing.assert_frame_equal(several, fresh, check_exact=True)
    # a table of another image size, or none, is ignored
    pd.testing.assert_frame_equal(particle_table(after, previous=(before[:-1], particle_table(before))), fresh)
    pd.testing.assert_frame_equal(particle_table(after, previous=(before, particle_table(before).iloc[:0])), fresh)


def test_crofton_perimeter_is_skimage_s_to_the_last_bit():
    from scipy import ndimage as ndi
    from skimage.measure import perimeter_crofton

    from saemi.measure import crofton_perimeter

    rng = np.random.default_rng(0)
    for trial in range(300):
        shape = tuple(int(v) for v in rng.integers(1, 30, 2))
        mask = rng.random(shape) < rng.random()
        if trial % 2:
            mask = ndi.binary_opening(mask) | (rng.random(shape) < 0.05)
        assert crofton_perimeter(mask) == float(perimeter_crofton(np.pad(mask, 1), 4))
