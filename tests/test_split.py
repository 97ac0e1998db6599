"""The shipped split: a test list carved out of the old validation images, never trained or tuned on."""

import json

import cv2
import numpy as np
import pytest

from saemi.card import DEFAULT_WEIGHTS_DIR
from saemi.dataset import carve_test, typical_diameter

SHIPPED = json.loads((DEFAULT_WEIGHTS_DIR / "split.json").read_text())


def test_shipped_split_has_35_test_images_apart_from_train_and_val():
    train, val, test = set(SHIPPED["train"]), set(SHIPPED["val"]), set(SHIPPED["test"])
    assert len(test) >= 35 and len(SHIPPED["test"]) == len(test)
    assert not test & train and not test & val and not val & train
    assert len(train) == 311 and len(val) + len(test) == 55  # the weights' training names, unchanged
    card = json.loads((DEFAULT_WEIGHTS_DIR / "model_card.json").read_text())
    assert card["test_full_pipeline"]["images"] == len(test)
    assert card["validation_full_pipeline"]["images"] == len(val)


def test_shipped_split_is_what_training_makes_of_the_shared_data(emps_dir):
    """`saemi train --data emps-train` (seed 0) writes this very file: train, val and test alike."""
    from saemi.dataset import list_pairs
    from saemi.train import make_split

    assert carve_test(make_split(list_pairs(emps_dir), 0.15, 0), emps_dir) == SHIPPED


def _folder(tmp_path, diameters):
    (tmp_path / "segmaps").mkdir()
    names = []
    for i, d in enumerate(diameters):
        lab = np.zeros((64, 64), np.uint16)
        cv2.circle(lab, (32, 32), int(d // 2), 1, -1)
        names.append(f"im{i:02d}")
        cv2.imwrite(str(tmp_path / "segmaps" / f"{names[-1]}.png"), lab)
    return names


def test_carving_is_deterministic_and_balanced_in_size(tmp_path):
    diameters = [4 + 2 * (i % 25) for i in range(25)]
    names = _folder(tmp_path, diameters)
    split = {"seed": 0, "train": ["other"], "val": names}
    a = carve_test(split, tmp_path)
    assert a == carve_test({**split, "val": list(reversed(names))}, tmp_path)
    assert a["train"] == ["other"] and sorted(a["val"] + a["test"]) == names
    assert len(a["test"]) == round(0.64 * 25) and len(a["val"]) == 25 - len(a["test"])
    d = {n: typical_diameter(cv2.imread(str(tmp_path / "segmaps" / f"{n}.png"), -1)) for n in names}
    ranks = {n: r for r, n in enumerate(sorted(names, key=lambda n: (d[n], n)))}
    # one validation image per group of consecutive sizes: spread over the whole range
    val_ranks = sorted(ranks[n] for n in a["val"])
    assert val_ranks[0] <= 2 and val_ranks[-1] >= 22 and max(np.diff(val_ranks)) <= 5


def test_a_small_held_out_set_keeps_every_image_for_validation(tmp_path):
    names = _folder(tmp_path, [10, 20, 30])
    a = carve_test({"train": [], "val": names}, tmp_path)
    assert a["val"] == names and a["test"] == []
