"""The Otsu + watershed baseline (saemi.baseline): synthetic micrographs with known discs."""

import numpy as np
import pytest

from saemi.baseline import OtsuSegmenter
from saemi.pipeline import analyze
from synth import disc_labels, micrograph

SHAPE = (240, 320)
# six separate discs of known radii, well inside the image
DISCS = [(50, 50, 12), (50, 150, 16), (50, 260, 20), (170, 60, 22), (170, 160, 14), (170, 260, 18)]


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("bright", [True, False])
def test_predict_marks_the_particles_whichever_phase_is_brighter(bright):
    labels = disc_labels(SHAPE, DISCS)
    prob = OtsuSegmenter().predict(micrograph(labels, bright_particles=bright))
    assert prob.shape == (2,) + SHAPE and prob.dtype == np.float32
    assert set(np.unique(prob)) == {0.0, 1.0}
    np.testing.assert_array_equal(prob.sum(axis=0), 1.0)
    # the particles (the minority phase) are class 1, bright or dark
    assert iou(prob[1] > 0.5, labels > 0) > 0.97


def test_minority_phase_is_the_particle_class_even_when_it_is_bright_background():
    # dark discs covering more than half the image: the bright phase is the minority, so it is "particle"
    labels = disc_labels(SHAPE, [(120, 160, 150)])
    assert (labels > 0).mean() > 0.5
    prob = OtsuSegmenter().predict(micrograph(labels, bright_particles=False))
    assert iou(prob[1] > 0.5, labels == 0) > 0.97


def test_pipeline_on_the_baseline_counts_and_sizes_known_discs():
    labels = disc_labels(SHAPE, DISCS)
    a = analyze(micrograph(labels), settings={"watershed": True, "min_distance": 7, "min_size": 20, "scale_bar": "none",
                                              "remove_banner": False}, segmenter=OtsuSegmenter())
    table = a.table.sort_values("equivalent_diameter_px")
    assert len(table) == len(DISCS) == a.summary["count"]
    expected = sorted(2 * r for _, _, r in DISCS)
    # a digital disc of radius r has an area close to pi r^2: the equivalent diameter is within a pixel of 2r
    np.testing.assert_allclose(table.equivalent_diameter_px.to_numpy(), expected, atol=1.0)
    assert not table.touches_edge.any()


def test_watershed_splits_two_touching_discs_and_without_it_they_are_one():
    labels = disc_labels(SHAPE, [(120, 130, 24), (120, 172, 24)])  # overlapping by 6 px
    image = micrograph(labels)
    base = {"min_distance": 7, "min_size": 20, "scale_bar": "none", "remove_banner": False}
    split = analyze(image, settings={**base, "watershed": True}, segmenter=OtsuSegmenter())
    joined = analyze(image, settings={**base, "watershed": False}, segmenter=OtsuSegmenter())
    assert len(joined.table) == 1
    assert len(split.table) == 2
    assert split.table.area_px.sum() == pytest.approx(joined.table.area_px.sum(), rel=0.02)
