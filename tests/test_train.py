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


@pytest.mark.slow
def test_cli_run_with_the_v2_recipe_writes_loadable_weights_records_it_and_resumes(tmp_path):
    """`saemi train` as a real process with every v2 flag: loadable weights, the flags on the card,
    the recipe and running losses in the checkpoint, and `--resume` continuing (with a changed recipe noted)."""
    from pathlib import Path

    import torch

    from saemi.augment import Recipe
    from saemi.model import load_segmenter
    from test_cli import run_cli_process

    data = Path(__file__).resolve().parent / "fixtures" / "emps"
    out, ck = tmp_path / "w", tmp_path / "ck"
    common = ["train", "--data", data, "--size", "64", "--batch-size", "2", "--val-every", "1",
              "--val-fraction", "0.34", "--device", "cpu", "--limit-images", "3", "--out", out,
              "--checkpoint-dir", ck, "--intensity-aug", "--scale-aug", "--hard-sampling"]
    r = run_cli_process(*common, "--epochs", "1", "--copy-paste", "1", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "copy-paste:" in r.stdout and "pasted into 100 % of the crops" in r.stdout
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["recipe"] == json.loads(json.dumps(Recipe(copy_paste=1.0).card()))
    assert card["training"]["copy_paste_bank"] > 0 and card["training"]["steps"] == 1
    seg = load_segmenter(out, device="cpu")
    img = np.random.default_rng(0).integers(0, 255, (70, 90, 3)).astype(np.uint8)
    assert seg.predict(img).shape == (3, 70, 90)
    state = torch.load(ck / "train_state.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 1 and state["recipe"]["copy_paste"] == 1.0
    split = json.loads((out / "split.json").read_text())
    assert state["image_names"] == split["train"] and len(state["image_loss"]) == 2
    assert sum(np.isfinite(state["image_loss"])) >= 1  # the drawn images have a running loss

    r = run_cli_process(*common, "--epochs", "2", "--copy-paste", "0", "--resume", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout and "at step 1" in r.stdout
    assert "note: the checkpoint was trained with the recipe" in r.stdout
    state = torch.load(ck / "train_state.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["recipe"]["copy_paste"] == 0.0
    load_segmenter(out, device="cpu")
