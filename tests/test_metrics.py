import numpy as np
import pytest

from saemi.metrics import dice, match_instances, mean_diameter, score_image


def test_perfect_and_empty():
    t = np.zeros((10, 10), int)
    t[1:4, 1:4], t[6:9, 6:9] = 1, 2
    assert match_instances(t, t)["ap"] == 1.0
    assert match_instances(t, np.zeros_like(t)) == {"tp": 0, "fp": 0, "fn": 2, "ap": 0.0, "f1": 0.0}
    assert match_instances(np.zeros_like(t), np.zeros_like(t))["ap"] == 1.0


def test_known_counts():
    t = np.zeros((20, 20), int)
    t[0:4, 0:4], t[10:14, 10:14], t[0:4, 10:14] = 1, 2, 3
    p = np.zeros_like(t)
    p[0:4, 0:4] = 5            # exact match
    p[10:14, 10:12] = 7        # IoU 0.5 exactly: not > 0.5, no match
    p[16:20, 16:20] = 9        # false positive
    m = match_instances(t, p)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 2)
    assert m["ap"] == pytest.approx(1 / 5)
    assert m["f1"] == pytest.approx(2 / 6)


def test_merged_prediction_matches_at_most_one():
    t = np.zeros((10, 20), int)
    t[:, :10], t[:, 10:] = 1, 2
    m = match_instances(t, (t > 0).astype(int))
    assert m["tp"] == 0 and m["fp"] == 1 and m["fn"] == 2


def test_dice_and_diameter():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    b = np.zeros_like(a)
    b[:, :5] = True
    assert dice(a, b) == pytest.approx(0.5)
    lab = np.zeros((100, 100), int)
    lab[:10, :10] = 1
    assert mean_diameter(lab) == pytest.approx(np.sqrt(400 / np.pi))
    s = score_image(lab, lab)
    assert s["mean_d_rel_err"] == 0 and s["n_true"] == 1 and s["dice"] == 1
