"""`saemi analyze --scheduler / --workers`: a batch on a Dask cluster writes what a serial run writes.

Independent of the shared data: saemi/ui/assets/demo.png and small synthetic micrographs. The fast
tests run the CLI in-process against an in-process cluster (worker threads) with the Otsu
baseline in place of the network; the slow ones run real worker processes with the shipped
weights, one of them killed mid-run.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from livesrv import free_port
from synth import disc_labels, micrograph
from test_cli import REPO, cli_env, run_cli_process as run_cli

import saemi.cli
import saemi.pipeline

distributed = pytest.importorskip("distributed")


def synthetic(path, seed, shape=(256, 320)):
    rng = np.random.default_rng(seed)
    discs = [(int(rng.integers(25, shape[0] - 25)), int(rng.integers(25, shape[1] - 25)), int(rng.integers(8, 18)))
             for _ in range(10)]
    Image.fromarray(micrograph(disc_labels(shape, discs), seed=seed)).save(path)
    return path


def make_inputs(folder, n_good, bad=True):
    folder.mkdir()
    shutil.copy(REPO / "saemi" / "ui" / "assets" / "demo.png", folder / "demo.png")
    for k in range(n_good - 1):
        synthetic(folder / f"s{k}.png", k)
    if bad:
        (folder / "notes.png").write_text("a text file renamed to .png")
        (folder / "empty.tif").write_bytes(b"")
        (folder / "mem.png").symlink_to("/proc/self/mem")  # a regular file whose read fails with EIO
    return folder


def same_outputs(a, b):
    """Every per-image file byte for byte, and summary.csv but for the timing column."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name != "summary.csv":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = (pd.read_csv(d / "summary.csv", keep_default_na=False) for d in (a, b))
    assert sa.columns.tolist() == sb.columns.tolist()
    pd.testing.assert_frame_equal(sa.drop(columns="seconds"), sb.drop(columns="seconds"))
    return sa


@pytest.fixture
def thread_cluster():
    """A cluster whose two workers are threads of this process (so monkeypatches reach them)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        yield cluster


def test_scheduler_and_workers_together_are_refused(tmp_path, capsys):
    make_inputs(tmp_path / "in", 1, bad=False)
    with pytest.raises(SystemExit) as exit_:
        saemi.cli.main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                        "--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    for bad in ["0", "-1", "two"]:
        with pytest.raises(SystemExit) as exit_:
            saemi.cli.main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--workers", bad])
        assert exit_.value.code == 2
        assert "--workers: must be a whole number of at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_a_clear_error_and_writes_nothing(tmp_path):
    make_inputs(tmp_path / "in", 1, bad=False)
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    proc = subprocess.run([sys.executable, "-m", "saemi.cli", "analyze", str(tmp_path / "in"), "--out",
                           str(tmp_path / "out"), "--scheduler", address],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=cli_env(DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"saemi: error: cannot reach the Dask scheduler at {address}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_cluster_run_writes_what_a_serial_run_writes(tmp_path, otsu_cli, thread_cluster):
    inputs = make_inputs(tmp_path / "in", 4)
    (inputs / "sub.png").mkdir()  # skipped, listed after the images
    code_serial, out_serial, err_serial = otsu_cli(inputs, "--out", tmp_path / "serial")
    code, out, err = otsu_cli(inputs, "--out", tmp_path / "cluster", "--scheduler", thread_cluster.scheduler_address)
    assert code == code_serial == 1
    assert out.replace(str(tmp_path / "cluster"), str(tmp_path / "serial")) == out_serial
    assert "Traceback" not in err
    for line in err_serial.splitlines():
        if line.startswith("saemi: "):
            assert line in err.splitlines()
    summary = same_outputs(tmp_path / "serial", tmp_path / "cluster")
    assert summary.file.tolist() == [str(inputs / n) for n in
                                     ["demo.png", "empty.tif", "mem.png", "notes.png", "s0.png", "s1.png",
                                      "s2.png", "sub.png"]] + ["sample of 4 images"]
    assert summary.status.tolist() == ["ok", "error", "error", "error", "ok", "ok", "ok", "skipped", "sample"]
    assert summary.error[2] == "OSError: Input/output error"  # read by the client, reported as a serial run does


def test_at_most_two_images_per_worker_thread_are_in_flight(tmp_path, otsu_cli, thread_cluster, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(12):
        synthetic(inputs / f"s{k:02d}.png", k, shape=(96, 128))
    read, written, most = [0], [0], [0]
    real_read, real_write = saemi.cli.read_input, saemi.cli.write_outputs

    def counting_read(f):
        read[0] += 1
        most[0] = max(most[0], read[0] - written[0])
        return real_read(f)

    def counting_write(plan, files):
        written[0] += 1
        return real_write(plan, files)

    monkeypatch.setattr(saemi.cli, "read_input", counting_read)
    monkeypatch.setattr(saemi.cli, "write_outputs", counting_write)
    code, out, err = otsu_cli(inputs, "--out", tmp_path / "out", "--scheduler", thread_cluster.scheduler_address)
    assert code == 0, err
    assert read[0] == written[0] == 12
    assert most[0] <= 2 * 2  # two worker threads


def test_ctrl_c_on_the_client_writes_the_summary_and_exits_130(tmp_path, otsu_cli, thread_cluster, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(6):
        synthetic(inputs / f"s{k}.png", k, shape=(96, 128))
    real_write, calls = saemi.cli.write_outputs, [0]

    def ctrl_c_at_the_second(plan, files):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real_write(plan, files)

    monkeypatch.setattr(saemi.cli, "write_outputs", ctrl_c_at_the_second)
    code, out, err = otsu_cli(inputs, "--out", tmp_path / "out", "--scheduler", thread_cluster.scheduler_address)
    assert code == 130 and "interrupted" in out
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary.status.tolist().count("ok") == 1 and summary.status.tolist().count("interrupted") == 5
    assert summary.file.tolist() == [str(inputs / f"s{k}.png") for k in range(6)] + ["sample of 1 image"]
    assert len(list((tmp_path / "out").glob("*_labels.png"))) == 1


def test_an_image_its_workers_keep_dying_on_is_an_error_row(tmp_path, otsu_cli, thread_cluster, monkeypatch):
    import saemi.distributed

    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):
        synthetic(inputs / f"s{k}.png", k, shape=(96, 128))
    real = saemi.distributed.analyse_image

    def poison_s1(data, file, *args):
        if file.endswith("s1.png"):  # what the client sees after allowed-failures + 1 worker deaths
            raise distributed.KilledWorker("saemi-analyse-s1", types.SimpleNamespace(address="tcp://w:1"), 3)
        return real(data, file, *args)

    monkeypatch.setattr(saemi.distributed, "analyse_image", poison_s1)
    code, out, err = otsu_cli(inputs, "--out", tmp_path / "out", "--scheduler", thread_cluster.scheduler_address)
    assert code == 1 and "2 of 3 images analysed" in out
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary.status.tolist() == ["ok", "error", "ok", "sample"]
    assert summary.error[1].startswith("the Dask workers analysing it died repeatedly")
    assert f"failed {inputs / 's1.png'}: the Dask workers analysing it died" in err


def test_workers_that_cannot_load_the_model_stop_the_run_before_writing(tmp_path, thread_cluster):
    make_inputs(tmp_path / "in", 1, bad=False)
    (tmp_path / "w").mkdir()
    code = saemi.cli.main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet",
                           "--weights", str(tmp_path / "w"), "--scheduler", thread_cluster.scheduler_address])
    assert code == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_local_worker_processes_give_the_labels_of_a_serial_run(tmp_path):
    inputs = make_inputs(tmp_path / "in", 3)
    serial = run_cli("analyze", inputs, "--out", tmp_path / "serial", "--nm-per-pixel", "2.0", "--quiet")
    local = run_cli("analyze", inputs, "--out", tmp_path / "local", "--nm-per-pixel", "2.0", "--workers", "2")
    assert serial.returncode == local.returncode == 1, local.stderr
    assert "Traceback" not in local.stderr
    summary = same_outputs(tmp_path / "serial", tmp_path / "local")
    assert summary.status.tolist() == ["ok", "error", "error", "error", "ok", "ok", "sample"]
    for stem in ["demo", "s0", "s1"]:
        labels = np.asarray(Image.open(tmp_path / "local" / f"{stem}_labels.png"))
        assert labels.max() > 0


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_no_image(tmp_path):
    inputs = make_inputs(tmp_path / "in", 6, bad=False)
    out = tmp_path / "out"
    killed = {}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  env={"PYTHONPATH": str(REPO)}) as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        proc = subprocess.Popen([sys.executable, "-m", "saemi.cli", "analyze", str(inputs), "--out", str(out),
                                 "--quiet", "--scheduler", cluster.scheduler_address],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)

        def kill_after_the_first_result():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                if any(out.glob("*_labels.png")):
                    busy = {w: keys for w, keys in client.processing().items() if keys}
                    if busy:
                        worker, keys = sorted(busy.items())[0]
                        pid = client.run(os.getpid, workers=[worker])[worker]
                        killed.update(worker=worker, keys=list(keys), pid=pid,
                                      done=len(list(out.glob("*_labels.png"))))
                        os.kill(pid, signal.SIGKILL)
                        return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_after_the_first_result)
        killer.start()
        stdout, stderr = proc.communicate(timeout=600)
        killer.join()
    assert killed, "no worker was busy after the first result: nothing was killed"
    assert killed["done"] < 6 and killed["keys"]
    assert proc.returncode == 0, stderr
    summary = pd.read_csv(out / "summary.csv")
    assert summary.status.tolist() == ["ok"] * 6 + ["sample"]
    for f in summary.file[summary.status == "ok"]:
        stem = os.path.basename(f)[:-4]
        for kind in saemi.cli.OUTPUT_KINDS:
            assert (out / f"{stem}_{kind}").is_file()
    assert "6 of 6 images analysed" in stdout
