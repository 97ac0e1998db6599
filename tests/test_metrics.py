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


def _hand_made():
    """True and predicted labels drawn by hand, with every case of the bins and the touching score.

    true: 1 a 3x3 square (d 3.4, under 15); 2 and 3 two touching 20x20 squares (d 22.6, 15-25);
    4 a 133x133 square (d 150.1, over 150) with 5, a 30x30 square (d 33.9, 25-150), one background
    pixel to its right; 6 an isolated 30x30 square.
    pred: 1 exact; 2+3 fused into one 20x40 blob (IoU 0.5 with each: no match); 4 cut into a 133x125
    piece (matched) and a 133x8 fragment; 5 two rows short (matched); 6 missed; a 4x4 blob on background.
    """
    t = np.zeros((200, 320), np.int32)
    t[170:173, 20:23] = 1
    t[160:180, 160:180], t[160:180, 180:200] = 2, 3
    t[10:143, 10:143] = 4
    t[10:40, 144:174] = 5
    t[100:130, 200:230] = 6
    p = np.zeros_like(t)
    p[170:173, 20:23] = 11
    p[160:180, 160:200] = 12
    p[10:143, 10:135], p[10:143, 135:143] = 13, 14
    p[10:38, 144:174] = 15
    p[185:189, 250:254] = 16
    return t, p


def test_size_bins_and_touching_particles_are_exact_on_hand_made_labels():
    from saemi.metrics import detailed_scores, touching_ids

    t, p = _hand_made()
    assert list(touching_ids(t)) == [2, 3, 4, 5]          # 4 and 5: one background pixel apart
    assert list(touching_ids(t, gap=0)) == [2, 3]         # adjacency only
    row, ratios = detailed_scores(t, p)
    # overall: TP 1, 4, 5; FP the fused blob, the fragment, the background blob; FN 2, 3, 6
    assert (row["ap50"], row["n_true"], row["n_pred"]) == (pytest.approx(3 / 9), 6, 6)
    expected = {  # bin: (n_true, tp, fp, fn); an unmatched prediction is binned by its own diameter
        "under15": (1, 1, 1, 0),    # 1 matched; the 4x4 background blob (d 4.5)
        "15to25": (2, 0, 0, 2),     # 2 and 3 missed; their fused blob (d 31.9) is an FP of 25-150
        "25to150": (2, 1, 2, 1),    # 5 matched, 6 missed; the fused blob and the fragment (d 36.8)
        "over150": (1, 1, 0, 0),    # 4 matched by its larger piece
    }
    for b, (n, tp, fp, fn) in expected.items():
        assert (row[f"n_true_{b}"], row[f"tp_{b}"], row[f"fp_{b}"], row[f"fn_{b}"]) == (n, tp, fp, fn), b
        assert row[f"ap50_{b}"] == pytest.approx(tp / (tp + fp + fn)), b
    assert sum(row[f"tp_{b}"] for b in expected) == 3 and sum(row[f"fp_{b}"] for b in expected) == 3
    # touching: 4, 5 matched; 2, 3 missed; FP: the fused blob (on 2 and 3) and the fragment (on 4);
    # the background blob overlaps no particle and does not count
    assert (row["n_touching"], row["tp_touching"], row["fp_touching"], row["fn_touching"]) == (4, 2, 2, 2)
    assert row["ap50_touching"] == pytest.approx(2 / 6)
    strict, _ = detailed_scores(t, p, touch_gap=0)  # only 2 and 3 touch: the fragment's particle 4 does not
    assert (strict["tp_touching"], strict["fp_touching"], strict["fn_touching"]) == (0, 1, 2)
    assert strict["ap50_touching"] == 0
    # diameter ratios of the matched pairs 1, 4, 5
    assert sorted(ratios) == pytest.approx(sorted([1.0, np.sqrt(125 / 133), np.sqrt(28 / 30)]))
    assert row["n_matched"] == 3 and row["d_ratio_median"] == pytest.approx(np.sqrt(125 / 133))


def test_empty_bins_and_no_touching_particles_are_nan():
    from saemi.metrics import detailed_scores

    t = np.zeros((60, 60), np.int32)
    t[10:30, 10:30] = 1  # one isolated 15-25 px particle, found exactly
    row, ratios = detailed_scores(t, t.copy())
    assert row["ap50_15to25"] == 1 and row["ap50"] == 1
    for b in ("under15", "25to150", "over150"):
        assert np.isnan(row[f"ap50_{b}"]) and row[f"n_true_{b}"] == 0
    assert row["n_touching"] == 0 and np.isnan(row["ap50_touching"])
    row, ratios = detailed_scores(t, np.zeros_like(t))
    assert row["ap50_15to25"] == 0 and len(ratios) == 0 and np.isnan(row["d_ratio_median"])
    # a lone FP makes its bin's AP 0 even without a true particle there
    p = t.copy()
    p[50:53, 50:53] = 2
    row, _ = detailed_scores(t, p)
    assert row["n_true_under15"] == 0 and row["fp_under15"] == 1 and row["ap50_under15"] == 0
