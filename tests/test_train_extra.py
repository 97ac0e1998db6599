"""`saemi train --extra DIR`: a lab's corrected masks (images/ + segmaps/) as extra training data.

The extra folder is written the way the page writes a corrected pair: the image as a PNG
(cv2, 8-bit grey or RGB) and its labels as a 16-bit PNG (`saemi.overlay.png_bytes`, what the
service sends as ``labels_png``; the same contract as the CLI's ``<name>_labels.png``).
The short training runs use the committed sample (tests/fixtures/emps) as ``--data``, so they
need no ../shared; one more uses ../shared when it is there.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from synth import disc_labels, micrograph
from test_cli import run_cli, run_cli_process

FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "emps"
EXTRA_NAMES = ["lab_a", "lab_b"]
SHORT = ["--epochs", "1", "--size", "64", "--batch-size", "2", "--val-every", "1", "--val-fraction", "0.34",
         "--device", "cpu"]


def lab_pair(seed, shape=(160, 200)):
    """A synthetic micrograph with touching discs, and its instance labels."""
    rng = np.random.default_rng(seed)
    discs = [(int(rng.integers(20, shape[0] - 20)), int(rng.integers(20, shape[1] - 20)), int(rng.integers(9, 18)))
             for _ in range(12)]
    labels = disc_labels(shape, discs)
    labels = np.unique(labels, return_inverse=True)[1].reshape(shape)  # 1..N, as the page numbers them
    return micrograph(labels, seed=seed), labels


def write_pair(folder, stem, image, labels, suffix=".png"):
    """One corrected pair as the page writes it: ``images/<stem><suffix>`` and 16-bit ``segmaps/<stem>.png``."""
    from saemi.overlay import png_bytes

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "segmaps").mkdir(parents=True, exist_ok=True)
    img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(folder / "images" / f"{stem}{suffix}"), img)
    (folder / "segmaps" / f"{stem}.png").write_bytes(png_bytes(labels))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder: a failed run must leave nothing behind, there or here."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def extra(tmp_path):
    """A two-image extra folder: one grey 8-bit PNG, one RGB PNG."""
    folder = tmp_path / "corrected"
    (img_a, lab_a), (img_b, lab_b) = lab_pair(1), lab_pair(2)
    write_pair(folder, "lab_a", img_a[..., 0], lab_a)
    write_pair(folder, "lab_b", img_b, lab_b)
    return folder


# --------------------------------------------------------------------------- loading


def test_extra_folder_loads_through_the_one_loader(extra):
    from saemi.dataset import list_pairs, load_dataset, read_label_image

    assert list_pairs(extra, strict=True) == EXTRA_NAMES
    labels = read_label_image(extra / "segmaps" / "lab_a.png")
    assert cv2.imread(str(extra / "segmaps" / "lab_a.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    items = load_dataset(extra, EXTRA_NAMES, scale=0.5)
    assert [it["name"] for it in items] == EXTRA_NAMES
    assert items[0]["image"].shape == (80, 100, 3) and items[0]["labels"].max() == labels.max()
    assert set(np.unique(items[1]["target"])) == {0, 1, 2}


def test_16_bit_grey_tiff_images_are_read_as_the_analysis_reads_them(tmp_path):
    import tifffile

    from saemi.dataset import list_pairs, load_dataset
    from saemi.io import load_image

    image, labels = lab_pair(3)
    deep = (image[..., 0].astype(np.uint16) * 16 + 100)  # a 12-bit detector image stored in 16 bits
    folder = tmp_path / "tif"
    write_pair(folder, "deep", image, labels)  # writes the PNG masks and folders ...
    (folder / "images" / "deep.png").unlink()  # ... the image is the TIFF
    tifffile.imwrite(folder / "images" / "deep.tif", deep)
    assert list_pairs(folder, strict=True) == ["deep"]
    [item] = load_dataset(folder, ["deep"], scale=1.0)
    assert np.array_equal(item["image"], load_image(folder / "images" / "deep.tif"))
    assert item["image"].max() == 255 and item["image"].min() == 0  # stretched, not shifted down to 8 bits


def test_sampling_weight_and_share():
    import random

    from saemi.train import extra_share, make_batch

    assert extra_share(311, 2, 4) == pytest.approx(8 / 319)
    assert extra_share(0, 2, 4) == 1.0
    items = [{"image": np.full((40, 40, 3), i, np.uint8), "target": np.full((40, 40), i, np.uint8)} for i in range(3)]
    rng = random.Random(0)
    picks = rng.choices(range(3), weights=[1, 1, 8], k=4000)
    assert 0.75 < picks.count(2) / 4000 < 0.85
    x, y = make_batch(items, 4, 32, random.Random(0), weights=[0, 0, 1])
    assert (y == 2).all()  # every crop came from the one image with weight


# --------------------------------------------------------------------------- errors: exit 2, one line


def _fails(*args, expect):
    r = run_cli("train", "--data", FIXTURE_DATA, *args, "--out", "unused-out", "--checkpoint-dir", "unused-ck")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saemi: error: "), r.stderr
    assert "Traceback" not in r.stderr and expect in lines[0], lines[0]
    assert not Path("unused-out").exists() and not Path("unused-ck").exists()
    return lines[0]


def test_error_missing_folder(tmp_path):
    line = _fails("--extra", tmp_path / "nope", expect="no such folder")
    assert str(tmp_path / "nope") in line


def test_error_no_images_or_segmaps(tmp_path, extra):
    (tmp_path / "only_masks" / "segmaps").mkdir(parents=True)
    _fails("--extra", tmp_path / "only_masks", expect="has no images/ folder")
    (tmp_path / "only_images" / "images").mkdir(parents=True)
    _fails("--extra", tmp_path / "only_images", expect="has no segmaps/ folder")
    (tmp_path / "a_file").write_text("x")
    _fails("--extra", tmp_path / "a_file", expect="is a file, not a folder")


def test_error_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _fails("--extra", tmp_path / "empty", expect="has no images/ folder")
    for sub in ("images", "segmaps"):
        (tmp_path / "empty" / sub).mkdir()
    (tmp_path / "empty" / "images" / "notes.txt").write_text("not an image")
    _fails("--extra", tmp_path / "empty", expect="holds no images (.png, .tif or .tiff)")


def test_error_image_without_its_mask_names_it(extra):
    (extra / "segmaps" / "lab_b.png").rename(extra / "segmaps" / "lab_b_labels.png")
    line = _fails("--extra", extra, expect=f"{extra / 'images' / 'lab_b.png'}: no mask segmaps/lab_b.png")
    assert "found segmaps/lab_b_labels.png: rename it lab_b.png" in line


def test_error_mask_without_its_image(extra):
    (extra / "images" / "lab_b.png").unlink()
    _fails("--extra", extra, expect=f"{extra / 'segmaps' / 'lab_b.png'}: a mask without its image")


def test_error_two_images_with_one_name(extra):
    cv2.imwrite(str(extra / "images" / "lab_a.tif"), lab_pair(1)[0])
    _fails("--extra", extra, expect="two images named 'lab_a'")


def test_error_mask_shape_differs(extra):
    from saemi.overlay import png_bytes

    (extra / "segmaps" / "lab_b.png").write_bytes(png_bytes(lab_pair(2, shape=(80, 100))[1]))
    _fails("--extra", extra, expect=f"{extra / 'segmaps' / 'lab_b.png'}: the mask is 100x80 pixels "
                                    "but its image lab_b.png is 200x160")


def test_error_mask_not_an_integer_label_image(extra):
    import tifffile

    path = extra / "segmaps" / "lab_a.png"
    tifffile.imwrite(path, lab_pair(1)[1].astype(np.float32))  # float pixels under a .png name
    _fails("--extra", extra, expect=f"{path}: not an integer label image (pixels are float32")
    colour = cv2.applyColorMap((lab_pair(1)[1] * 20).astype(np.uint8), cv2.COLORMAP_JET)  # a colour picture
    cv2.imwrite(str(path), colour)
    _fails("--extra", extra, expect=f"{path}: a colour image, not an integer label image")
    path.write_text("not a PNG at all")
    _fails("--extra", extra, expect=f"{path}: not a readable PNG label image")


def test_error_extra_is_the_data_folder_or_given_twice(extra):
    _fails("--extra", FIXTURE_DATA, expect="is the --data folder")
    _fails("--extra", extra, "--extra", extra, expect="is given twice")


def test_error_extra_image_is_a_validation_image(extra):
    import shutil

    from saemi.dataset import list_pairs
    from saemi.train import make_split

    [val] = make_split(list_pairs(FIXTURE_DATA), 0.34, 0)["val"]
    for sub in ("images", "segmaps"):
        shutil.copy(FIXTURE_DATA / sub / f"{val}.png", extra / sub / f"{val}.png")
    _fails("--extra", extra, "--val-fraction", "0.34",
           expect=f"the extra image {val} is the validation image {val} of --data")


def test_error_bad_data_folder(tmp_path, extra):
    r = run_cli("train", "--data", tmp_path / "nodata", "--extra", extra)
    assert r.returncode == 2 and r.stderr == f"saemi: error: {tmp_path / 'nodata'}: no such folder\n"


def test_error_bad_extra_weight(extra):
    r = run_cli("train", "--data", FIXTURE_DATA, "--extra", extra, "--extra-weight", "0")
    assert r.returncode == 2 and "--extra-weight: must be a number above 0" in r.stderr


def test_error_as_a_process_is_one_line_without_traceback(tmp_path):
    r = run_cli_process("train", "--data", FIXTURE_DATA, "--extra", tmp_path / "missing",
                        "--out", tmp_path / "w", "--checkpoint-dir", tmp_path / "ck", timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"saemi: error: {tmp_path / 'missing'}: no such folder"
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- short training runs


def _spy(monkeypatch):
    """Record the names of every image validated and the weights every batch was drawn with."""
    import saemi.train

    seen = {"val": set(), "batch_weights": []}
    real_validate, real_batch = saemi.train.validate, saemi.train.make_batch

    def validate(net, items, *a, **k):
        seen["val"].update(it["name"] for it in items)
        return real_validate(net, items, *a, **k)

    def make_batch(items, batch_size, crop, rng, weights=None, **recipe):
        seen["batch_weights"].append((tuple(it["name"] for it in items), tuple(weights or ())))
        return real_batch(items, batch_size, crop, rng, weights, **recipe)

    monkeypatch.setattr(saemi.train, "validate", validate)
    monkeypatch.setattr(saemi.train, "make_batch", make_batch)
    return seen


def _check_weights(out):
    from saemi.model import load_segmenter

    seg = load_segmenter(out, device="cpu")
    img = np.random.default_rng(0).integers(0, 255, (70, 90, 3)).astype(np.uint8)
    assert seg.predict(img).shape == (3, 70, 90)


@pytest.mark.slow
def test_short_run_with_extra_trains_on_it_and_validates_without_it(tmp_path, extra, monkeypatch):
    from saemi.dataset import carve_test, list_pairs
    from saemi.train import make_split

    seen = _spy(monkeypatch)
    out = tmp_path / "w"
    r = run_cli("train", "--data", FIXTURE_DATA, "--extra", extra, *SHORT, "--out", out,
                "--checkpoint-dir", tmp_path / "ck")
    assert r.returncode == 0, r.stderr
    _check_weights(out)
    split = json.loads((out / "split.json").read_text())
    # the split is the one a run without extras makes: --data's images only (too few held out for a test list)
    assert split == carve_test(make_split(list_pairs(FIXTURE_DATA), 0.34, 0), FIXTURE_DATA) and split["test"] == []
    assert seen["val"] == set(split["val"]) and not seen["val"] & set(EXTRA_NAMES)
    # the extra images were in every batch's pool, each drawn 4 times as often
    names, weights = seen["batch_weights"][0]
    assert set(EXTRA_NAMES) <= set(names) and not set(split["val"]) & set(names)
    assert weights == tuple(4.0 if n in EXTRA_NAMES else 1.0 for n in names)
    card = json.loads((out / "model_card.json").read_text())["training"]
    assert card["extra"] == [{"folder": str(extra), "images": 2, "names": EXTRA_NAMES}]
    assert card["extra_weight"] == 4.0 and card["extra_crop_share"] == pytest.approx(8 / 10, abs=1e-4)
    assert card["n_train"] == 2 and card["n_val"] == 1


@pytest.mark.slow
def test_extra_only_run_gives_the_lab_folder_as_data(tmp_path, extra, monkeypatch):
    """Without shared data a lab trains on its folder alone as --data (split into train and validation)."""
    seen = _spy(monkeypatch)
    out = tmp_path / "w"
    r = run_cli("train", "--data", extra, *SHORT, "--out", out, "--checkpoint-dir", tmp_path / "ck")
    assert r.returncode == 0, r.stderr
    _check_weights(out)
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == EXTRA_NAMES and len(split["val"]) == 1
    assert seen["val"] == set(split["val"])
    assert "extra" not in json.loads((out / "model_card.json").read_text())["training"]


@pytest.mark.slow
def test_short_run_on_shared_data_with_extra(tmp_path, extra, emps_dir, monkeypatch):
    from saemi.train import train

    seen = _spy(monkeypatch)
    card = train(emps_dir, tmp_path / "w", epochs=1, crop=64, batch_size=2, limit_images=6, val_fraction=0.34,
                 checkpoint_dir=tmp_path / "ck", val_every=1, device="cpu", log=lambda *_: None,
                 extra_dirs=[extra], extra_weight=2)
    _check_weights(tmp_path / "w")
    split = json.loads((tmp_path / "w" / "split.json").read_text())
    assert len(split["train"]) == 4 and len(split["val"]) == 2
    assert seen["val"] == set(split["val"]) and not seen["val"] & set(EXTRA_NAMES)
    assert card["training"]["extra"][0]["images"] == 2 and card["training"]["extra_weight"] == 2.0


def _data_with_a_test_list(tmp_path, n=14):
    """A --data folder of ``n`` synthetic pairs; --val-fraction 0.8 holds out 11: 4 validation, 7 test images."""
    folder = tmp_path / "data"
    for i in range(n):
        write_pair(folder, f"s{i:02d}", *lab_pair(100 + i, shape=(96, 112)))
    return folder


def test_error_extra_image_is_a_test_image(tmp_path, extra):
    import shutil

    from saemi.dataset import carve_test, list_pairs
    from saemi.train import make_split

    data = _data_with_a_test_list(tmp_path)
    split = carve_test(make_split(list_pairs(data), 0.8, 0), data)
    assert len(split["test"]) == 7 and len(split["val"]) == 4
    name = split["test"][0]
    for sub in ("images", "segmaps"):
        shutil.copy(data / sub / f"{name}.png", extra / sub / f"{name}.png")
    r = run_cli("train", "--data", data, "--extra", extra, "--val-fraction", "0.8", "--out", "unused-out",
                "--checkpoint-dir", "unused-ck")
    assert r.returncode == 2 and f"the extra image {name} is the test image {name} of --data" in r.stderr
    assert not Path("unused-out").exists()


@pytest.mark.slow
def test_training_validates_on_val_and_never_reads_the_test_images(tmp_path, monkeypatch):
    import saemi.train

    data = _data_with_a_test_list(tmp_path)
    seen = _spy(monkeypatch)
    loaded = set()
    real_load = saemi.train.load_dataset

    def load_dataset(folder, names, *a, **k):
        loaded.update(names)
        return real_load(folder, names, *a, **k)

    monkeypatch.setattr(saemi.train, "load_dataset", load_dataset)
    out = tmp_path / "w"
    r = run_cli("train", "--data", data, "--epochs", "1", "--size", "64", "--batch-size", "2", "--val-every", "1",
                "--val-fraction", "0.8", "--device", "cpu", "--out", out, "--checkpoint-dir", tmp_path / "ck")
    assert r.returncode == 0, r.stderr
    split = json.loads((out / "split.json").read_text())
    assert len(split["test"]) == 7 and len(split["val"]) == 4 and len(split["train"]) == 3
    assert seen["val"] == set(split["val"])
    assert not loaded & set(split["test"]) and loaded == set(split["train"]) | set(split["val"])
    card = json.loads((out / "model_card.json").read_text())["training"]
    assert (card["n_train"], card["n_val"], card["n_test"]) == (3, 4, 7)
