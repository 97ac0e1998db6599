"""`saemi analyze` end to end, the shipped weights: in-process through ``saemi.cli.main`` (one
network for the whole session), plus one smoke test of the installed ``saemi`` console script."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from samples import DEMO, labelled_sample, real_image
from test_io import png_header_only


REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra):
    """The environment of a CLI process: this tree's ``saemi`` first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}


def run_cli_process(*args, timeout=600):
    """``python -m saemi.cli ARGS`` as a real process (for what only a process shows)."""
    return subprocess.run([sys.executable, "-m", "saemi.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=cli_env(), cwd=REPO)


def run_cli(*args):
    """``saemi ARGS`` in this process: (returncode, stdout, stderr) like a finished subprocess."""
    import saemi.cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = saemi.cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    inputs = tmp_path_factory.mktemp("in")
    for name in ["2ee0518d7a", "70f9f13af4"]:  # shared, else committed stand-ins (samples.py)
        shutil.copy(real_image(name), inputs / f"{name}.png")
    (inputs / "notes.png").write_text("this is a text file renamed to .png")
    (inputs / "empty.tif").write_bytes(b"")
    (inputs / "huge.png").write_bytes(png_header_only(30000, 30000))
    (inputs / "mem.png").symlink_to("/proc/self/mem")  # a regular file whose read fails with EIO
    (inputs / "x.png").mkdir()
    (inputs / "loop.png").symlink_to("loop.png")
    out = tmp_path_factory.mktemp("out")
    proc = run_cli("analyze", inputs, "--out", out, "--nm-per-pixel", "2.0", "--quiet")
    return inputs, out, proc


@pytest.mark.slow
def test_good_images_write_the_contract_files(analysed):
    inputs, out, proc = analysed
    for name in ["2ee0518d7a", "70f9f13af4"]:
        src = np.asarray(Image.open(inputs / f"{name}.png"))
        labels_img = Image.open(out / f"{name}_labels.png")
        labels = np.asarray(labels_img)
        assert labels_img.mode.startswith("I;16") and labels.shape == src.shape[:2]
        table = pd.read_csv(out / f"{name}_particles.csv")
        ids = np.unique(labels[labels > 0])
        assert len(table) == len(ids) > 0
        assert sorted(table.label) == sorted(ids.tolist())
        assert table.equivalent_diameter_nm.tolist() == pytest.approx((table.equivalent_diameter_px * 2.0).tolist())
        overlay = np.asarray(Image.open(out / f"{name}_overlay.png"))
        assert overlay.shape == src.shape[:2] + (3,)


@pytest.mark.slow
def test_bad_files_are_reported_skipped_and_fail_the_run(analysed):
    inputs, out, proc = analysed
    assert proc.returncode == 1
    assert "notes.png" in proc.stderr and "not an image" in proc.stderr
    assert "empty" in proc.stderr and "megapixels" in proc.stderr
    assert f"failed {inputs / 'mem.png'}: OSError: Input/output error" in proc.stderr
    assert f"skipped {inputs / 'x.png'}: a folder" in proc.stderr
    assert f"skipped {inputs / 'loop.png'}: symbolic link loop" in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 9
    assert sorted(summary.status) == ["error"] * 4 + ["ok"] * 2 + ["sample"] + ["skipped"] * 2
    ok = summary[summary.status == "ok"]
    for _, row in ok.iterrows():
        table = pd.read_csv(out / f"{row.file.rsplit('/', 1)[-1][:-4]}_particles.csv")
        assert row["count"] == len(table)
    assert set(ok.unit) == {"nm"}
    sample = summary.iloc[-1]  # the two images pooled, in nm as both are calibrated
    assert sample.status == "sample" and sample["count"] == ok["count"].sum() and sample.unit == "nm"


@pytest.mark.slow
def test_all_good_run_exits_zero_and_settings_apply(tmp_path):
    img = tmp_path / "70f9f13af4.png"
    shutil.copy(real_image("70f9f13af4"), img)
    plain = run_cli("analyze", img, "--out", tmp_path / "a", "--quiet", "--no-watershed")
    strict = run_cli("analyze", img, "--out", tmp_path / "b", "--quiet", "--no-watershed", "--exclude-edge",
                     "--min-size", "400")
    assert plain.returncode == 0 and strict.returncode == 0, plain.stderr + strict.stderr
    n_plain = len(pd.read_csv(tmp_path / "a" / "70f9f13af4_particles.csv"))
    t = pd.read_csv(tmp_path / "b" / "70f9f13af4_particles.csv")
    assert len(t) < n_plain and not t.touches_edge.any() and (t.area_px >= 400).all()


def test_bad_arguments_are_clear(tmp_path):
    proc = run_cli("analyze", tmp_path / "missing-folder", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty-folder").mkdir()
    proc = run_cli("analyze", tmp_path / "empty-folder", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "no image files" in proc.stderr
    proc = run_cli("analyze", tmp_path, "--out", tmp_path / "o", "--min-distance", "0")
    assert proc.returncode == 2 and "min_distance" in proc.stderr


@pytest.mark.slow
def test_evaluate_and_tune_on_two_images(tmp_path, monkeypatch):
    import json

    from saemi.card import DEFAULT_WEIGHTS_DIR

    data, names = labelled_sample(["70f9f13af4", "0a30487a4e"])  # shared, else tests/fixtures/emps
    weights = tmp_path / "w"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, weights)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": names}))
    monkeypatch.setenv("SAEMI_WEIGHTS", str(weights))
    proc = run_cli("evaluate", "--data", data, "--split", split, "--tune", "--csv", tmp_path / "eval.csv")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout[proc.stdout.index("{\n"):proc.stdout.rindex("}") + 1])["val"]
    assert scores["images"] == 2 and 0 <= scores["ap50"] <= 1 and 0 <= scores["dice"] <= 1
    per_image = pd.read_csv(tmp_path / "eval.csv")
    assert sorted(per_image.name) == sorted(names)
    assert scores["ap50"] == pytest.approx(per_image.ap50.mean(), abs=1e-4)
    card = json.loads((weights / "model_card.json").read_text())
    assert card["validation_full_pipeline"]["images"] == 2
    assert set(card["postprocess"]) == {"watershed", "threshold", "min_distance_fraction", "min_size_fraction",
                                        "merge_threshold", "min_relative_size"}
    assert "cross-validated AP@0.5" in proc.stdout


@pytest.mark.slow
def test_installed_console_script_smoke(tmp_path):
    """The ``saemi`` console script of this environment, as a real process (this tree's code)."""
    exe = Path(sys.executable).with_name("saemi")
    if not exe.exists():
        pytest.fail(f"no saemi console script beside {sys.executable}: pip install -e . (or the wheel)")
    shutil.copy(DEMO, tmp_path / "demo.png")
    proc = subprocess.run([str(exe), "analyze", tmp_path / "demo.png", "--out", tmp_path / "out", "--quiet"],
                          capture_output=True, text=True, timeout=600, env=cli_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 1 images analysed" in proc.stdout + proc.stderr
    table = pd.read_csv(tmp_path / "out" / "demo_particles.csv")
    assert len(table) > 20 and (tmp_path / "out" / "summary.csv").exists()
    assert "Traceback" not in proc.stderr
    bad = subprocess.run([str(exe), "analyze", tmp_path / "missing", "--out", tmp_path / "o"],
                         capture_output=True, text=True, timeout=120, env=cli_env())
    assert bad.returncode == 2 and "no such file or folder" in bad.stderr
