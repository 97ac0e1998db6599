"""`saemi analyze` never destroys input, reports every path it passes over, and writes safe CSVs.

Independent of the shared data: small synthetic micrographs. Most tests run the CLI
in-process (``saemi.cli.main``) with the Otsu baseline in place of the network, so that a
run takes a fraction of a second; the refusals also run as a real process.
"""

import csv
import errno
import os

import pandas as pd
import pytest
from PIL import Image

from synth import disc_labels, micrograph
from test_cli import run_cli, run_cli_process

import saemi.cli
import saemi.pipeline
from saemi.export import FORMULA_PREFIXES


def write_image(path, seed=0):
    labels = disc_labels((96, 128), [(30, 30, 12), (60, 80, 16), (25, 100, 8)])
    Image.fromarray(micrograph(labels, seed=seed)).save(path)
    return path


def snapshot(folder):
    """{name: bytes} of the plain files in a folder (links not followed)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


@pytest.mark.slow
def test_refusals_in_a_real_process_write_nothing(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "a.png")
    write_image(inputs / "a_overlay.png", seed=1)  # a user's own image, not a SAEMI output
    before = snapshot(inputs)
    proc = run_cli_process("analyze", inputs, "--out", inputs)
    assert proc.returncode == 2, proc.stderr
    assert "would overwrite the input" in proc.stderr and "a_overlay.png" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(inputs) == before

    (tmp_path / "a-file").write_text("not a folder")
    for out, words in [(tmp_path / "a-file", "is a file"), (tmp_path / "a-file" / "sub", "cannot create"),
                       ("/proc/self", "cannot write"), (inputs / "a.png", "is a file")]:
        proc = run_cli_process("analyze", inputs / "a.png", "--out", out)
        assert proc.returncode == 2, (out, proc.stderr)
        assert proc.stderr.startswith("saemi: error: --out") and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert snapshot(inputs) == before
    assert (tmp_path / "a-file").read_text() == "not a folder"

    proc = run_cli_process("analyze", inputs / "a.png", "--out", tmp_path / "o", "--metric", "bogus")
    assert proc.returncode == 2 and "invalid choice: 'bogus'" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_outputs_onto_inputs_are_refused_however_they_are_reached(tmp_path, otsu_cli):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_labels.png").symlink_to(inputs / "b.png")  # an output path that is a link to the input
    code, _, err = otsu_cli(inputs / "b.png", "--out", out)
    assert code == 2 and "would overwrite the input" in err
    (out / "b_labels.png").unlink()
    os.link(inputs / "b.png", out / "b_overlay.png")  # a hard link: the same file under another name
    code, _, err = otsu_cli(inputs / "b.png", "--out", out)
    assert code == 2 and "would overwrite the input" in err
    (out / "b_overlay.png").unlink()
    (out / "summary.csv").mkdir()
    code, _, err = otsu_cli(inputs / "b.png", "--out", out)
    assert code == 2 and "exists and is not a file" in err
    (out / "summary.csv").rmdir()
    (out / "summary.csv").write_bytes((inputs / "b.png").read_bytes())
    code, _, err = otsu_cli(inputs / "b.png", out / "summary.csv", "--out", out)  # an input that is an output
    assert code == 2 and "would overwrite the input" in err
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]
    assert (out / "summary.csv").read_bytes() == (inputs / "b.png").read_bytes()


def test_rerun_into_the_input_folder_skips_earlier_outputs(tmp_path, otsu_cli):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png")
    original = (folder / "a.png").read_bytes()
    code, _, err = otsu_cli(folder, "--out", folder)
    assert code == 0, err
    first = snapshot(folder)
    assert {"a_labels.png", "a_overlay.png", "a_particles.csv", "summary.csv"} <= set(first)
    code, _, err = otsu_cli(folder, "--out", folder)
    assert code == 0, err
    for name in ["a_labels.png", "a_overlay.png", "a_particles.csv", "summary.csv"]:
        assert f"skipped {folder / name}: an output of an earlier SAEMI run" in err
    assert (folder / "a.png").read_bytes() == original
    summary = pd.read_csv(folder / "summary.csv")
    assert summary.status.tolist() == ["ok"] + ["skipped"] * 4 + ["sample"]
    assert summary.file[0] == str(folder / "a.png")
    assert (folder / "a_labels.png").read_bytes() == first["a_labels.png"]  # the same result again
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ["a_labels.png", "a_particles.csv", "summary.csv"]:  # as open() would make them, not 0600
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_every_skipped_path_is_reported_and_listed(tmp_path, otsu_cli):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "good.png")
    (folder / "x.png").mkdir()
    (folder / "loop.png").symlink_to("loop.png")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(folder / "pipe.tif")  # reading it would block forever
    (folder / "good.txt").write_text("pixel size 2 nm")
    (folder / "same.png").symlink_to(folder / "good.png")
    code, out, err = otsu_cli(folder, "--out", tmp_path / "out")
    assert code == 0, err
    reasons = {"x.png": "a folder", "loop.png": "symbolic link loop", "gone.png": "broken symbolic link",
               "pipe.tif": "not a regular file", "good.txt": "not an image file name",
               "same.png": "the same file as the input"}
    for name, reason in reasons.items():
        assert f"skipped {folder / name}: {reason}" in err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False)
    skipped = summary[summary.status == "skipped"]
    assert sorted(skipped.file) == sorted(str(folder / n) for n in reasons)
    for _, row in skipped.iterrows():
        assert reasons[row.file.rsplit("/", 1)[-1]] in row.error
    assert summary.status.tolist().count("ok") == 1
    assert "6 paths skipped" in out


def test_per_file_errors_of_any_kind_are_rows_and_the_batch_goes_on(tmp_path, otsu_cli, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png")
    (folder / "b.png").symlink_to("/proc/self/mem")  # a regular file; reading it fails with EIO
    write_image(folder / "c.png")
    write_image(folder / "d.png")
    (folder / "e.png").write_text("text, not an image")
    real = saemi.pipeline.analyze

    def flaky(image, *args, **kwargs):
        if str(image).endswith("c.png"):
            raise RuntimeError("a bug in the pipeline")
        return real(image, *args, **kwargs)

    monkeypatch.setattr(saemi.pipeline, "analyze", flaky)
    code, out, err = otsu_cli(folder, "--out", tmp_path / "out")
    assert code == 1
    assert "Traceback" not in err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False)
    assert summary.status.tolist() == ["ok", "error", "error", "ok", "error", "sample"]
    counts = summary["count"]
    assert int(counts.iloc[-1]) == int(counts.iloc[0]) + int(counts.iloc[3]) > 0  # the images analysed, pooled
    assert summary.error[1] == "OSError: Input/output error"
    assert summary.error[2] == "unexpected RuntimeError: a bug in the pipeline"
    assert "not an image" in summary.error[4]
    assert f"failed {folder / 'b.png'}: OSError" in err and f"failed {folder / 'c.png'}: unexpected" in err
    assert summary["count"][0] == "3" and summary["width"][0] == "128"  # integers, not 128.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_labels.png", "a_overlay.png", "a_particles.csv", "d_labels.png", "d_overlay.png", "d_particles.csv",
        "summary.csv"]
    assert "2 of 5 images analysed" in out and "3 failed" in out

    code, _, _ = otsu_cli(folder / "e.png", "--out", tmp_path / "all-failed")
    assert code == 1
    assert pd.read_csv(tmp_path / "all-failed" / "summary.csv").status.tolist() == ["error"]


def test_a_failed_write_leaves_earlier_outputs_whole(tmp_path, otsu_cli, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "a.png")
    write_image(inputs / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    for name in ["a_labels.png", "a_particles.csv", "a_overlay.png"]:
        (out / name).write_text("earlier")
    mkstemp = saemi.export.tempfile.mkstemp

    def disk_full_for_a_overlay(*args, prefix="", **kwargs):
        if prefix.startswith(".a_overlay.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(saemi.export.tempfile, "mkstemp", disk_full_for_a_overlay)
    code, _, err = otsu_cli(inputs, "--out", out)
    assert code == 1
    for name in ["a_labels.png", "a_particles.csv", "a_overlay.png"]:
        assert (out / name).read_text() == "earlier"  # all three are replaced together, or none
    summary = pd.read_csv(out / "summary.csv")
    assert summary.status.tolist() == ["error", "ok", "sample"]
    assert "No space left on device" in summary.error[0]
    assert (out / "b_overlay.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_an_interrupted_run_still_writes_its_summary(tmp_path, otsu_cli, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in "abc":
        write_image(inputs / f"{name}.png")
    real = saemi.pipeline.analyze

    def ctrl_c_at_b(image, *args, **kwargs):
        if str(image).endswith("b.png"):
            raise KeyboardInterrupt
        return real(image, *args, **kwargs)

    monkeypatch.setattr(saemi.pipeline, "analyze", ctrl_c_at_b)
    code, out, _ = otsu_cli(inputs, "--out", tmp_path / "out")
    assert code == 130 and "interrupted" in out
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary.status.tolist() == ["ok", "interrupted", "interrupted", "sample"]


def test_formula_like_cells_are_escaped_in_every_csv(tmp_path, otsu_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ["=1+2.png", "@SUM(A1).png", "+3.png"]
    for name in names:
        write_image(tmp_path / name)
    (tmp_path / "=HYPERLINK(x).txt").write_text("sidecar")
    (tmp_path / "-2.png").write_text("not an image")
    code, _, err = otsu_cli(*names, "./-2.png", ".", "--out", "out")
    assert code == 1, err
    text = (tmp_path / "out" / "summary.csv").read_text()
    cells = [c for row in csv.reader(text.splitlines()) for c in row]
    assert not [c for c in cells if c.startswith(FORMULA_PREFIXES)], text
    assert "'=1+2.png" in cells and "'@SUM(A1).png" in cells and "'+3.png" in cells
    assert "'=HYPERLINK(x).txt" in cells and "'-2.png" in cells  # a skipped path; a failed one
    for csv_file in (tmp_path / "out").glob("*_particles.csv"):
        first = next(csv.reader(csv_file.read_text().splitlines()))
        assert first[0] == "label"
    assert (tmp_path / "out" / "=1+2_particles.csv").is_file()


def test_evaluate_refuses_a_csv_path_it_cannot_write(tmp_path):
    proc = run_cli("evaluate", "--data", tmp_path, "--csv", tmp_path / "missing" / "eval.csv")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
