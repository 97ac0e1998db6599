"""Manual corrections on hand-made label images: each edit, exactly (saemi.edits)."""

import numpy as np
import pytest

from saemi.edits import apply_edits, changed_labels, check_edit, label_points, polygon_from_path
from saemi.errors import SaemiError


def two_discs(touching=True):
    """A 60x100 labelling: a disc of label 1 and one of label 2 (touching, or apart)."""
    yy, xx = np.mgrid[:60, :100]
    labels = np.zeros((60, 100), np.int32)
    labels[(yy - 30) ** 2 + (xx - 25) ** 2 <= 15 ** 2] = 1
    cx = 55 if touching else 75
    labels[((yy - 30) ** 2 + (xx - cx) ** 2 <= 15 ** 2) & (labels == 0)] = 2
    return labels


def edited(labels, *edits):
    return apply_edits(labels, [check_edit(e, labels.shape) for e in edits])


def test_add_makes_a_new_particle_that_takes_over_what_it_covers():
    labels = two_discs(touching=False)
    out = edited(labels, {"op": "add", "polygon": [[40, 0], [60, 0], [60, 10], [40, 10]]})
    assert out.labels.max() == 3 and out.origins == {3: "added"}
    assert (out.labels[0:11, 40:61] == 3).all() and (out.labels == 3).sum() == 21 * 11
    assert np.array_equal(out.labels[out.labels != 3], labels[out.labels != 3])
    # an outline over half of particle 2: it keeps the rest, marked edited
    out = edited(labels, {"op": "add", "polygon": [[75, 0], [99, 0], [99, 59], [75, 59]]})
    assert out.origins == {2: "edited", 3: "added"}
    assert (out.labels == 2).sum() == ((labels == 2) & (np.arange(100) < 75)[None, :]).sum()
    # covering a particle whole removes it
    out = edited(labels, {"op": "add", "polygon": [[55, 10], [99, 10], [99, 50], [55, 50]]})
    assert 2 not in out.labels and out.origins == {3: "added"}


def test_erase_removes_the_particle_under_the_point():
    labels = two_discs()
    out = edited(labels, {"op": "erase", "points": [[25, 30]]})
    assert set(np.unique(out.labels)) == {0, 2} and np.array_equal(out.labels == 2, labels == 2)
    assert changed_labels(labels, out.labels) == [1]


def test_merge_joins_particles_under_the_smallest_label():
    labels = two_discs()
    out = edited(labels, {"op": "merge", "points": [[55, 30], [25, 30]]})
    assert set(np.unique(out.labels)) == {0, 1} and np.array_equal(out.labels > 0, labels > 0)
    assert out.origins == {1: "merged"}


def test_split_cuts_along_the_line_and_keeps_every_pixel():
    yy, xx = np.mgrid[:60, :100]
    labels = (((yy - 30) ** 2 + (xx - 50) ** 2) <= 20 ** 2).astype(np.int32)
    out = edited(labels, {"op": "split", "line": [[50, 0], [50, 59]]})
    assert set(np.unique(out.labels)) == {0, 1, 2}
    assert np.array_equal(out.labels > 0, labels > 0)  # the cut's pixels joined a side
    left, right = out.labels[:, :50], out.labels[:, 51:]
    assert set(np.unique(left[left > 0])) | set(np.unique(right[right > 0])) == {1, 2}
    assert len(set(np.unique(left[left > 0]))) == 1 and len(set(np.unique(right[right > 0]))) == 1
    assert out.origins == {1: "split", 2: "split"}
    # a diagonal cut separates too (the line raster is 4-connected)
    diag = edited(labels, {"op": "split", "line": [[30, 10], [70, 50]]})
    assert diag.labels.max() == 2 and diag.dropped == []


def test_a_line_that_only_clips_a_particle_or_stops_inside_does_nothing():
    yy, xx = np.mgrid[:60, :100]
    labels = (((yy - 30) ** 2 + (xx - 50) ** 2) <= 20 ** 2).astype(np.int32)
    for line in ([[50, 0], [50, 30]], [[68, 0], [68, 59]]):  # stops inside; clips a sliver of under 2 %
        out = edited(labels, {"op": "split", "line": line})
        assert out.labels.max() == 1 and len(out.dropped) == 1 and "cuts no particle" in out.dropped[0]["reason"]


def test_replay_on_another_labelling_keeps_what_still_applies_and_reports_the_rest():
    touching = two_discs()
    edits = [check_edit(e, touching.shape) for e in (
        {"op": "add", "polygon": [[90, 0], [99, 0], [99, 9], [90, 9]]},
        {"op": "merge", "points": [[25, 30], [55, 30]]},
        {"op": "erase", "points": [[5, 5]]})]
    out = apply_edits(touching, edits)
    assert [d["index"] for d in out.dropped] == [2] and "no particle" in out.dropped[0]["reason"]
    # the same edits on a labelling where the two discs are one particle already: the merge drops
    fused = (touching > 0).astype(np.int32)
    out = apply_edits(fused, edits)
    assert [d["index"] for d in out.dropped] == [1, 2]
    assert out.origins == {2: "added"}


def test_incremental_replay_equals_the_full_replay():
    labels = two_discs()
    edits = [check_edit(e, labels.shape) for e in (
        {"op": "split", "line": [[25, 0], [25, 59]]},
        {"op": "add", "polygon": [[90, 0], [99, 0], [99, 9]]},
        {"op": "merge", "points": [[20, 30], [55, 30]]})]
    full = apply_edits(labels, edits)
    part = apply_edits(labels, edits[:2])
    step = apply_edits(labels, edits, start=part)
    assert np.array_equal(full.labels, step.labels) and full.origins == step.origins
    assert np.array_equal(part.labels, apply_edits(labels, edits[:2]).labels)  # the start was not changed


def test_label_points_fall_inside_their_particles():
    labels = two_discs()
    points = label_points(labels, [2, 1])
    assert [labels[int(y), int(x)] for x, y in points] == [2, 1]
    with pytest.raises(SaemiError, match="no particle 7"):
        label_points(labels, [7])


@pytest.mark.parametrize("edit, message", [
    ({"op": "paint"}, "op must be one of"),
    ({"op": "add", "polygon": [[1, 1], [2, 2]]}, "at least 3"),
    ({"op": "add", "polygon": [[1, 1], [2, "x"], [3, 3]]}, "pixel coordinates"),
    ({"op": "split", "line": [[1, 1], [float("nan"), 2]]}, "finite"),
    ({"op": "erase", "points": [[500, 5]]}, "outside the 100x60 image"),
    ({"op": "add", "polygon": [[-50, -50], [-40, -50], [-40, -40]]}, "entirely outside"),
    ({"op": "merge", "points": [[1, 1]], "colour": "red"}, "not colour"),
    ("erase", "JSON object"),
])
def test_bad_edits_are_refused_with_the_problem_named(edit, message):
    with pytest.raises(SaemiError, match=message):
        check_edit(edit, (60, 100))


def test_polygon_from_a_plotly_path():
    assert polygon_from_path("M10.5,2L20,2.25L20,12Z") == [[10.5, 2.0], [20.0, 2.25], [20.0, 12.0]]
    assert polygon_from_path("M1e1,2L3,-4Z") == [[10.0, 2.0], [3.0, -4.0]]
