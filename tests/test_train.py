import json

import numpy as np
import pytest

from saemi.train import class_targets, make_split


def test_targets_separate_touching_particles():
    labels = np.zeros((20, 40), int)
    labels[5:15, 5:20], labels[5:15, 20:35] = 1, 2
    t = class_targets(labels, boundary_width=1)
    assert set(np.unique(t)) == {0, 1, 2}
    assert (t[labels == 0] == 0).all()
    assert (t[10, 19:21] == 2).all()  # the contact is boundary on both sides
    from scipy import ndimage as ndi
    assert ndi.label(t == 1)[1] == 2  # interiors are two separate regions


def test_split_is_seeded_and_disjoint():
    names = [f"img{i:03d}" for i in range(100)]
    a, b = make_split(names, 0.2, seed=3), make_split(list(reversed(names)), 0.2, seed=3)
    assert a == b
    assert len(a["val"]) == 20 and not set(a["val"]) & set(a["train"])
    assert make_split(names, 0.2, seed=4)["val"] != a["val"]


@pytest.mark.slow
def test_one_short_epoch_produces_loadable_weights(tmp_path, emps_dir):
    from saemi.model import load_segmenter
    from saemi.train import train

    card = train(emps_dir, tmp_path / "w", epochs=1, crop=64, batch_size=2, limit_images=6,
                 val_fraction=0.34, checkpoint_dir=tmp_path / "ck", val_every=1, log=lambda *_: None)
    assert card["training"]["steps"] >= 1 and card["training"]["n_val"] == 2
    split = json.loads((tmp_path / "w" / "split.json").read_text())
    assert len(split["train"]) == 4
    seg = load_segmenter(tmp_path / "w", device="cpu")
    img = np.random.default_rng(0).integers(0, 255, (70, 90, 3)).astype(np.uint8)
    assert seg.predict(img).shape == (3, 70, 90)
    assert (tmp_path / "ck" / "train_state.pt").exists()
