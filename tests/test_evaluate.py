import numpy as np
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


def _synthetic_set(folder, n=3):
    """Label images of touching discs and a three-class probability stack made from each, with noise."""
    import cv2
    from scipy import ndimage as ndi

    from saemi.pipeline import Segmentation

    rng = np.random.default_rng(7)
    (folder / "segmaps").mkdir(parents=True)
    segmentations = {}
    yy, xx = np.mgrid[:96, :128]
    for k in range(n):
        labels = np.zeros((96, 128), np.int32)
        for i in range(6):
            cy, cx, r = rng.uniform(15, 80), rng.uniform(15, 112), rng.uniform(7, 14)
            labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = i + 1
        cv2.imwrite(str(folder / "segmaps" / f"img{k}.png"), labels.astype(np.uint16))
        boundary = (ndi.maximum_filter(labels, 3) != ndi.minimum_filter(labels, 3)) & (labels > 0)
        interior = (labels > 0) & ~boundary
        prob = np.stack([labels == 0, interior, boundary]).astype(np.float32)
        prob = ndi.gaussian_filter(prob, (0, 1.2, 1.2)) + rng.uniform(0, 0.25, prob.shape)
        prob /= prob.sum(0, keepdims=True)
        image = np.zeros((96, 128, 3), np.uint8)
        segmentations[f"img{k}"] = Segmentation(image, image, prob.astype(np.float32))
    return segmentations


def test_tuned_ap_is_the_ap_of_the_shipped_splitting(tmp_path):
    """tune_postprocess calls split_touching's stages: rescoring its choice gives the AP it tuned."""
    from saemi.evaluate import TUNED_KEYS, rescore, tune_postprocess
    from saemi.settings import Settings

    segmentations = _synthetic_set(tmp_path)
    grid = {"threshold": [0.4, 0.6], "min_distance": [5, 15], "merge_threshold": [0.0, 0.6], "min_size": [0, 40],
            "min_relative_size": [0.0, 0.3]}
    best, table, per_image = tune_postprocess(tmp_path, segmentations, grid)
    assert len(table) == 2 * 2 * 2 * 2 * 2 + 2 * 2 * 2  # watershed on: every combination; off: no merge
    _, summary = rescore(tmp_path, segmentations, Settings.from_dict({k: best[k] for k in TUNED_KEYS}))
    assert summary["ap50"] == pytest.approx(best["ap50"], abs=1e-12)
    for _, row in table.iloc[[1, len(table) // 2, -1]].iterrows():  # and so does every other row
        _, s = rescore(tmp_path, segmentations, Settings.from_dict({k: getattr(row[k], "item", lambda k=k: row[k])() for k in TUNED_KEYS}))
        assert s["ap50"] == pytest.approx(row["ap50"], abs=1e-12)


def test_evaluation_reads_its_data_without_torch():
    """The data loaders live in saemi.dataset: scoring PNGs does not import torch (only the network does)."""
    import subprocess
    import sys

    code = "import sys, saemi.evaluate, saemi.dataset; assert 'torch' not in sys.modules, 'torch'; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-1500:]
