import numpy as np
import pytest
from scipy import ndimage as ndi

from saemi.errors import SaemiError
from saemi.instances import SplitSettings, remove_labels, split_touching
from saemi.measure import particle_table
from synth import disc_labels, micrograph

# three isolated discs and two touching pairs
DISCS = [(40, 40, 18), (40, 120, 12), (130, 50, 25),
         (120, 150, 20), (120, 188, 20),   # pair A, overlapping slightly
         (200, 80, 15), (200, 108, 15)]    # pair B


def test_connected_components_merge_touching_pairs_watershed_splits_them():
    truth = disc_labels((240, 240), DISCS)
    mask = truth > 0
    cc = split_touching(mask, SplitSettings(watershed=False, min_size=0))
    ws = split_touching(mask, SplitSettings(watershed=True, min_distance=8, min_size=0))
    assert cc.max() == 5
    assert ws.max() == 7


@pytest.mark.parametrize("bright", [True, False])
def test_equivalent_diameters_within_3_percent_on_ground_truth_mask(bright):
    truth = disc_labels((240, 240), DISCS)
    img = micrograph(truth, bright_particles=bright, noise=10, seed=3)
    grey = img[..., 0].astype(float)
    # the ground-truth mask path: a plain threshold between the known particle
    # and background shades stands in for the network, so the test checks
    # splitting and measuring on either polarity
    mask = grey > 125 if bright else grey < 120
    assert (mask == (truth > 0)).mean() > 0.999
    labels = split_touching(mask, SplitSettings(min_distance=8, min_size=0))
    table = particle_table(labels)
    assert len(table) == len(DISCS)
    for cy, cx, r in DISCS:
        row = table.iloc[((table.centroid_y_px - cy) ** 2 + (table.centroid_x_px - cx) ** 2).argmin()]
        true_area = (truth == DISCS.index((cy, cx, r)) + 1).sum()
        # compare with the diameter of the drawn disc; touching discs lose a sliver to their neighbour
        assert row.equivalent_diameter_px == pytest.approx(2 * r, rel=0.03) or \
            row.equivalent_diameter_px == pytest.approx(np.sqrt(4 * true_area / np.pi), rel=0.03)


def test_min_distance_controls_splitting():
    # a peanut (two fused discs, a wide neck): small min_distance splits it, large keeps it whole
    mask = disc_labels((80, 120), [(40, 45, 20), (40, 75, 20)]) > 0
    assert split_touching(mask, SplitSettings(min_distance=3, min_size=0)).max() == 2
    assert split_touching(mask, SplitSettings(min_distance=40, min_size=0)).max() == 1


def test_ragged_outline_does_not_shatter_a_particle():
    rng = np.random.default_rng(0)
    mask = disc_labels((120, 120), [(60, 60, 40)]) > 0
    edge = mask ^ ndi.binary_erosion(mask, iterations=3)
    mask[edge & (rng.random(mask.shape) < 0.5)] = False  # a noisy rim
    assert split_touching(mask, SplitSettings(min_distance=7, min_size=20)).max() == 1


def test_three_class_probabilities_use_interior_markers():
    truth = disc_labels((120, 200), [(60, 60, 30), (60, 118, 30)])
    prob = np.zeros((3,) + truth.shape, np.float32)
    prob[0] = truth == 0
    boundary = np.zeros(truth.shape, bool)
    boundary[:, 87:92] = truth[:, 87:92] > 0  # the contact zone
    prob[2] = boundary
    prob[1] = (truth > 0) & ~boundary
    labels = split_touching(prob, SplitSettings(min_distance=5, min_size=0))
    assert labels.max() == 2
    assert ((labels > 0) == (truth > 0)).all()


def test_min_size_and_exclude_edge():
    truth = disc_labels((100, 100), [(50, 50, 10), (20, 80, 2), (0, 0, 8)])
    base = split_touching(truth > 0, SplitSettings(watershed=False, min_size=0))
    assert base.max() == 3
    assert split_touching(truth > 0, SplitSettings(watershed=False, min_size=30)).max() == 2
    kept = split_touching(truth > 0, SplitSettings(watershed=False, min_size=0, exclude_edge=True))
    assert kept.max() == 2 and kept[0, 0] == 0


def test_empty_probability_gives_no_particles():
    assert split_touching(np.zeros((3, 50, 50), np.float32) + [[[1]], [[0]], [[0]]]).max() == 0


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(threshold=0), dict(min_distance=0), dict(min_size=-1)])
def test_bad_settings_raise(bad):
    with pytest.raises(SaemiError):
        split_touching(np.zeros((20, 20), bool), SplitSettings(**bad))


def test_remove_labels_renumber_or_keep_ids():
    labels = np.array([[1, 2, 3, 4]])
    assert remove_labels(labels, [2]).tolist() == [[1, 0, 2, 3]]
    assert remove_labels(labels, [2], renumber=False).tolist() == [[1, 0, 3, 4]]
    assert remove_labels(labels, [99]).tolist() == [[1, 2, 3, 4]]


def three_class(labels, boundary_width=2):
    """A crisp background / interior / boundary stack for instance labels: each
    particle's outer ring (including the contact lines) is boundary."""
    fg = labels > 0
    inner = np.zeros_like(fg)
    for i in range(1, int(labels.max()) + 1):
        inner |= ndi.binary_erosion(labels == i, iterations=boundary_width)
    prob = np.zeros((3,) + labels.shape, np.float32)
    prob[0] = ~fg
    prob[1] = inner
    prob[2] = fg & ~inner
    return prob


def test_merge_joins_pieces_with_no_boundary_between_them_and_keeps_real_contacts():
    # a peanut the network saw as ONE particle (no boundary across the neck) ...
    peanut = (disc_labels((100, 240), [(50, 45, 22), (50, 80, 22)]) > 0).astype(np.int32)
    # ... and two discs it saw as TWO (a boundary line where they touch)
    pair = disc_labels((100, 240), [(50, 150, 22), (50, 192, 22)])
    prob = np.maximum(three_class(peanut), three_class(pair))
    prob[0] = np.minimum(three_class(peanut)[0], three_class(pair)[0])
    over = split_touching(prob, SplitSettings(min_distance=3, min_size=0))
    merged = split_touching(prob, SplitSettings(min_distance=3, min_size=0, merge_threshold=0.5))
    assert over.max() == 4          # the distance map alone splits the peanut too
    assert merged.max() == 3        # merging restores it, the real pair stays split
    assert len(np.unique(merged[50, 30:100])) == 1


def test_merge_needs_three_class_probabilities():
    mask = disc_labels((100, 120), [(50, 45, 22), (50, 80, 22)]) > 0
    s = SplitSettings(min_distance=3, min_size=0, merge_threshold=0.9)
    assert split_touching(mask, s).max() == 2   # no interior evidence: nothing to merge on


def test_relative_size_drops_fragments_and_letters_but_not_the_particles():
    discs = [(40, 40, 25), (40, 120, 22), (120, 60, 24), (120, 140, 26)]
    labels = disc_labels((200, 200), discs)
    labels[180:186, 10:14] = 5      # a letter-sized speck (24 px)
    labels[170:180, 180:190] = 6    # a fragment (100 px)
    kept = split_touching(labels > 0, SplitSettings(min_distance=8, min_size=0, min_relative_size=0.1))
    assert kept.max() == 4
    assert split_touching(labels > 0, SplitSettings(min_distance=8, min_size=0)).max() == 6


def test_typical_area_ignores_many_small_fragments():
    from saemi.instances import typical_area

    labels = disc_labels((200, 200), [(100, 100, 40)])
    for k in range(20):                 # twenty 4-pixel specks
        labels[2 + 5 * (k // 10), 2 + 5 * (k % 10):4 + 5 * (k % 10)] = 0
        labels[2 + 5 * (k // 10):4 + 5 * (k // 10), 2 + 5 * (k % 10):4 + 5 * (k % 10)] = k + 2
    assert typical_area(labels) == (labels == 1).sum()


@pytest.mark.parametrize("field,value", [("merge_threshold", 1.0), ("merge_threshold", -0.1),
                                         ("min_relative_size", 1.5), ("min_relative_size", -1)])
def test_new_settings_are_validated(field, value):
    with pytest.raises(SaemiError, match=field):
        split_touching(np.zeros((10, 10), bool), SplitSettings(**{field: value}))


def _quarter_distances(mask):
    from saemi.instances import distance_map

    return np.round(distance_map(mask) * 4).astype(np.uint16)


@pytest.fixture(params=["integer ranks", "skimage per crop"])
def reconstruction(request, monkeypatch):
    """Both ways h_maxima_by_component reconstructs a crop: its own integer ranks, or skimage's h_maxima."""
    import saemi.instances as inst

    if request.param == "skimage per crop":
        monkeypatch.setattr(inst, "_reconstruction_loop", None)
    else:
        assert inst._reconstruction_loop is not None  # the installed skimage has the loop: the fast path runs
    return request.param


@pytest.mark.parametrize("h", [2, 9, 20, 45, 120, 400])
def test_h_maxima_by_component_equals_skimage_on_touching_discs_and_a_ragged_blob(h, reconstruction):
    from skimage.morphology import h_maxima

    from saemi.instances import h_maxima_by_component

    rng = np.random.default_rng(1)
    mask = disc_labels((240, 260), DISCS + [(60, 220, 30), (60, 236, 14)]) > 0
    mask[rng.random(mask.shape) < 0.02] = False  # ragged: many local maxima in every component
    mask[230:, 200:] = True  # a component on the image border
    mask[5, 5] = mask[5, 7] = True  # single pixels, 8-connected only through nothing
    quarter = _quarter_distances(mask)
    got = h_maxima_by_component(quarter, h)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, h_maxima(quarter, h).astype(bool))


def test_h_maxima_by_component_equals_skimage_on_random_integer_images(reconstruction):
    from skimage.morphology import h_maxima

    from saemi.instances import h_maxima_by_component

    rng = np.random.default_rng(2)
    for trial in range(30):
        img = rng.integers(0, 6, (30, 40)).astype(np.uint8 if trial % 3 == 0 else np.uint16)
        img[rng.random(img.shape) < 0.3] = 0
        img = ndi.uniform_filter(img * 10, 3).astype(np.uint16) if trial % 2 else img
        if trial == 29:
            img[img == 0] = 1  # no zero pixel: the whole image at once
        for h in (1, 2, 3, 7):
            np.testing.assert_array_equal(h_maxima_by_component(img, h), h_maxima(img, h).astype(bool))


def _noisy_three_class(shape=(200, 240), seed=4):
    """A smooth, noisy background / interior / boundary stack of touching discs (not a clean mask)."""
    rng = np.random.default_rng(seed)
    truth = disc_labels(shape, DISCS)
    inner = ndi.binary_erosion(truth > 0, iterations=2)
    boundary = (truth > 0) & ~inner
    logits = np.stack([(truth == 0) * 3.0, inner * 3.0, boundary * 3.0]) + rng.normal(0, 1.2, (3,) + shape)
    logits = ndi.gaussian_filter(logits, (0, 1.5, 1.5))
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


SETTING_MOVES = [{}, {"min_distance": 6}, {"min_distance": 14}, {"threshold": 0.6}, {"threshold": 0.4},
                 {"min_size": 80}, {"min_relative_size": 0.3}, {"merge_threshold": 0.0}, {"merge_threshold": 0.8},
                 {"watershed": False}, {"exclude_edge": True}, {}, {"min_distance": 6, "threshold": 0.6}]


@pytest.mark.parametrize("max_bytes", [10 ** 9, 300_000])  # everything kept / entries dropped on the way
def test_stage_memo_gives_a_fresh_split_s_labels_whatever_setting_moves(max_bytes):
    from saemi.instances import StageMemo

    prob = _noisy_three_class()
    valid = np.ones(prob.shape[1:], bool)
    valid[:, -10:] = False
    base = dict(min_distance=10, min_size=20, merge_threshold=0.6, min_relative_size=0.1, threshold=0.5)
    memo = StageMemo(max_bytes=max_bytes)
    counts = set()
    for move in SETTING_MOVES + SETTING_MOVES[::-1]:
        s = SplitSettings(**{**base, **move})
        got = split_touching(prob, s, valid, scale=0.5, memo=memo)
        fresh = split_touching(prob, s, valid, scale=0.5)
        np.testing.assert_array_equal(got, fresh)
        assert got.flags.writeable  # the caller's own array, not the memo's
        counts.add(int(fresh.max()))
    assert len(counts) > 3  # the moves do change the labels: the memo could have served stale ones
    assert memo.nbytes <= max(max_bytes, 250_000)


def test_stage_memo_runs_again_only_the_stages_a_setting_changes(monkeypatch):
    import saemi.instances as inst

    calls = {"label_particles": 0, "distance_stage": 0}
    for name in calls:
        original = getattr(inst, name)

        def counted(*a, _original=original, _name=name, **k):
            calls[_name] += 1
            return _original(*a, **k)
        monkeypatch.setattr(inst, name, counted)
    prob = _noisy_three_class()
    memo = inst.StageMemo()
    base = dict(min_distance=10, min_size=20, merge_threshold=0.6, threshold=0.5)

    def run(**move):
        before = dict(calls)
        split_touching(prob, SplitSettings(**{**base, **move}), memo=memo)
        return {k: calls[k] - before[k] for k in calls}

    assert run() == {"label_particles": 1, "distance_stage": 1}
    assert run(min_size=60) == {"label_particles": 0, "distance_stage": 0}  # size filter only
    assert run(merge_threshold=0.3) == {"label_particles": 0, "distance_stage": 0}  # merge again only
    assert run(min_distance=16) == {"label_particles": 1, "distance_stage": 0}  # same distance transform
    assert run(threshold=0.6) == {"label_particles": 1, "distance_stage": 1}
    assert run(watershed=False) == {"label_particles": 1, "distance_stage": 0}
    assert run() == {"label_particles": 0, "distance_stage": 0}


def test_fill_holes_is_scipy_s_binary_fill_holes():
    from saemi.instances import fill_holes

    rng = np.random.default_rng(3)
    for trial in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random(shape) < (0.4 + 0.5 * rng.random())
        if trial % 3 == 0:
            mask = ndi.binary_opening(mask)
        np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
    ring = disc_labels((40, 40), [(20, 20, 15)]) > 0
    ring[14:27, 14:27] = False
    ring[20, 5:14] = False  # a diagonal-free channel: the hole joins the outside only here
    np.testing.assert_array_equal(fill_holes(ring), ndi.binary_fill_holes(ring))


def test_filter_particles_in_one_pass_equals_size_then_edge_filter():
    from saemi.instances import _filter, filter_particles, remove_small

    rng = np.random.default_rng(6)
    for trial in range(60):
        lab = rng.integers(0, 12, tuple(int(v) for v in rng.integers(1, 30, 2)))
        if trial % 3 == 0:
            lab[lab == 5] = 0  # numbers not consecutive
        for min_size in (0, 1, 3, 8):
            for exclude_edge in (False, True):
                np.testing.assert_array_equal(filter_particles(lab, min_size, 0.0, exclude_edge),
                                              _filter(remove_small(lab, min_size), 0, exclude_edge))
