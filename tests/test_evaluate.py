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
    grid = {"threshold": [0.4, 0.6], "min_distance_fraction": [0.2, 0.6], "merge_threshold": [0.0, 0.6],
            "min_size_fraction": [0, 0.05], "min_relative_size": [0.0, 0.3]}
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


def test_subset_figures_pool_the_particles_of_every_image():
    """summarize_scores: a bin's AP sums TP, FP and FN over images; its image mean skips images without the bin."""
    from test_metrics import _hand_made

    from saemi.evaluate import summarize_scores
    from saemi.metrics import detailed_scores

    t, p = _hand_made()
    small = np.zeros((40, 40), np.int32)
    small[5:8, 5:8], small[20:23, 20:23] = 1, 2       # two isolated under-15 particles, one found
    found = np.where(small == 1, 7, 0)
    rows, ratios = [], []
    for truth, pred in ((t, p), (small, found)):
        row, r = detailed_scores(truth, pred)
        rows.append({**row, "seconds": 1.0})
        ratios.append(r)
    s = summarize_scores(pd.DataFrame(rows), ratios)
    under = s["bins"]["under15"]   # image 1: TP 1, FP 1; image 2: TP 1, FN 1
    assert (under["tp"], under["fp"], under["fn"], under["n_true"], under["images"]) == (2, 1, 1, 3, 2)
    assert under["ap50"] == pytest.approx(2 / 4) and under["ap50_image_mean"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    over = s["bins"]["over150"]    # only image 1 has one
    assert over["images"] == 1 and over["ap50"] == 1 and over["ap50_image_mean"] == 1
    assert s["touching"]["images"] == 1 and s["touching"]["ap50"] == pytest.approx(2 / 6)
    # the median over all four matched pairs, not the median of the images' medians
    assert s["d_ratio_median"] == pytest.approx(np.median([1.0, np.sqrt(125 / 133), np.sqrt(28 / 30), 1.0]))
    assert s["ap50"] == pytest.approx((3 / 9 + 1 / 2) / 2) and s["images"] == 2


def _fixture_split(tmp_path):
    import json

    from samples import FIXTURE_EMPS

    split = {"train": [], "val": ["aa309f6cec"], "test": ["70f9f13af4_crop", "7fabcfe23f_crop"]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    return FIXTURE_EMPS, split, path


def _weights_copy(tmp_path, monkeypatch):
    import shutil

    from saemi.card import DEFAULT_WEIGHTS_DIR

    weights = tmp_path / "w"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, weights)
    monkeypatch.setenv("SAEMI_WEIGHTS", str(weights))
    return weights


def test_tune_refuses_the_test_subset_and_test_images(tmp_path, monkeypatch):
    import json

    from test_cli import run_cli

    data, split, path = _fixture_split(tmp_path)
    weights = _weights_copy(tmp_path, monkeypatch)
    card_before = (weights / "model_card.json").read_text()
    proc = run_cli("evaluate", "--data", data, "--split", path, "--subset", "test", "--tune", "--csv", tmp_path / "e.csv")
    assert proc.returncode == 2 and "refuses the test subset" in proc.stderr
    # a split whose validation list holds a test image: refused too
    path.write_text(json.dumps({**split, "val": ["aa309f6cec", "70f9f13af4_crop"]}))
    proc = run_cli("evaluate", "--data", data, "--split", path, "--tune", "--csv", tmp_path / "e.csv")
    assert proc.returncode == 2 and "refuses test images: 70f9f13af4_crop" in proc.stderr
    assert (weights / "model_card.json").read_text() == card_before and not (tmp_path / "e.csv").exists()


def test_tune_on_both_chooses_on_validation_images_and_scores_test_apart(tmp_path, monkeypatch):
    """--tune (subset both): tune_postprocess sees the val images only; the card gets val and test figures."""
    import json

    import saemi.evaluate
    import saemi.pipeline
    from saemi.baseline import OtsuSegmenter
    from test_cli import run_cli

    data, split, path = _fixture_split(tmp_path)
    weights = _weights_copy(tmp_path, monkeypatch)
    monkeypatch.setattr(saemi.pipeline, "default_segmenter", lambda *a, **k: OtsuSegmenter())  # no network: fast
    tuned_on = []
    real_tune = saemi.evaluate.tune_postprocess

    def spy(data_dir, segmentations, grid=None):
        tuned_on.extend(segmentations)
        return real_tune(data_dir, segmentations, {"min_distance": [15], "merge_threshold": [0.0, 0.5]})

    monkeypatch.setattr(saemi.evaluate, "tune_postprocess", spy)
    proc = run_cli("evaluate", "--data", data, "--split", path, "--tune", "--csv", tmp_path / "e.csv")
    assert proc.returncode == 0, proc.stderr
    assert tuned_on == split["val"]
    scores = json.loads(proc.stdout[proc.stdout.index("{\n"):proc.stdout.rindex("}") + 1])
    assert list(scores) == ["val", "test"] and scores["test"]["images"] == 2
    card = json.loads((weights / "model_card.json").read_text())
    assert card["validation_full_pipeline"]["images"] == 1 and card["test_full_pipeline"]["images"] == 2
    assert card["test_full_pipeline"]["ap50"] == pytest.approx(scores["test"]["ap50"])
    rows = pd.read_csv(tmp_path / "e.csv")
    assert sorted(rows[rows.subset == "test"].name) == split["test"]
    # tuning on val alone drops the card's test figures: they were scored with other settings
    proc = run_cli("evaluate", "--data", data, "--split", path, "--subset", "val", "--tune", "--csv", tmp_path / "e.csv")
    assert proc.returncode == 0 and "test_full_pipeline" not in json.loads((weights / "model_card.json").read_text())


@pytest.mark.slow
def test_evaluate_writes_per_image_csvs_and_a_summary(tmp_path, monkeypatch):
    """The shipped network through the CLI on the committed sample: one CSV per subset and summary.json."""
    import json

    from test_cli import run_cli

    from saemi.metrics import SIZE_BINS

    data, split, path = _fixture_split(tmp_path)
    weights = _weights_copy(tmp_path, monkeypatch)
    card_before = (weights / "model_card.json").read_text()
    proc = run_cli("evaluate", "--data", data, "--split", path, "--csv", tmp_path / "all.csv", "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["subsets"]) == {"val", "test"} and summary["tuned_on"] is None
    for subset in ("val", "test"):
        rows = pd.read_csv(tmp_path / "r" / f"{subset}.csv")
        s = summary["subsets"][subset]
        assert sorted(rows.name) == split[subset] and s["images"] == len(rows)
        assert s["ap50"] == pytest.approx(rows.ap50.mean(), abs=1e-4)
        assert s["dice"] == pytest.approx(rows.dice.mean(), abs=1e-4)
        assert s["seconds_per_image"] == pytest.approx(rows.seconds.mean(), abs=1e-4)
        for b, _, _ in SIZE_BINS:
            assert s["bins"][b]["tp"] == rows[f"tp_{b}"].sum() and s["bins"][b]["n_true"] == rows[f"n_true_{b}"].sum()
        assert s["touching"]["fn"] == rows.fn_touching.sum()
        assert {"ap50_touching", "d_ratio_median", "mean_d_rel_err", "ap50_under15", "ap50_over150"} <= set(rows)
        assert 0.5 < s["d_ratio_median"] < 2
    assert len(pd.read_csv(tmp_path / "all.csv")) == 3
    assert (weights / "model_card.json").read_text() == card_before  # no --tune: the card is untouched
