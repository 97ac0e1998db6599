import pandas as pd
import pytest

from saemi.evaluate import cross_validated_ap


def test_cross_validation_scores_each_half_with_the_other_halfs_choice():
    # setting 0 is best on images a, c (fold 0); setting 1 on b, d (fold 1)
    per_image = pd.DataFrame({"a": [1.0, 0.0], "b": [0.2, 0.6], "c": [0.9, 0.1], "d": [0.0, 0.8]})
    # fold {a, c} is scored with fold {b, d}'s best (setting 1) and vice versa
    expected = (0.0 + 0.1 + 0.2 + 0.0) / 4
    assert cross_validated_ap(per_image) == pytest.approx(expected)


def test_cross_validation_equals_the_best_when_one_setting_wins_everywhere():
    per_image = pd.DataFrame({"a": [0.5, 0.9], "b": [0.4, 0.7], "c": [0.1, 0.3]})
    assert cross_validated_ap(per_image, folds=3) == pytest.approx((0.9 + 0.7 + 0.3) / 3)
