"""The package outside the checkout: build the wheel, install it into a fresh venv, run it from /tmp.

The venv gets this environment's installed dependencies through a ``.pth`` line (no network
needed) and the wheel itself with ``--no-deps``; the commands run with ``PYTHONPATH`` unset and
from a folder outside the repository, so only the installed package (with its package data:
weights, model card, the page's assets) can answer.
"""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, environment, a work folder outside the repository) with the wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SAEMI_WEIGHTS")}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist", REPO],
        cwd=base, env=env)
    wheel, = (base / "dist").glob("saemi-*.whl")
    venv.create(base / "venv", with_pip=False)
    py = base / "venv" / "bin" / "python"
    purelib = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base, env)
                   .stdout.strip())
    # this environment's packages (torch, dash, ...) after the venv's own; its .pth files (the
    # editable saemi of a checkout) are not processed from there
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", wheel], cwd=base, env=env)
    work = base / "work"
    work.mkdir()
    return py, env, work, purelib


def test_wheel_carries_its_data_and_analyses_outside_the_checkout(installed):
    py, env, work, purelib = installed
    probe = ("import saemi, saemi.card, saemi.ui, saemi.launch; "
             "print(saemi.__file__); print(saemi.card.DEFAULT_WEIGHTS_DIR); print(saemi.ui.ASSETS); "
             "print(saemi.launch.CONFIG)")
    where = run([py, "-c", probe], work, env).stdout.split()
    for path in where:
        assert Path(path).is_relative_to(purelib) and Path(path).exists(), where
    for name in ("saemi_unet_resnet18.pt", "model_card.json", "split.json"):
        assert (Path(where[1]) / name).is_file(), name
    for name in ("demo.png", "saemi.css", "saemi-upload.js", "favicon.ico"):
        assert (Path(where[2]) / name).is_file(), name
    # the console script, on the demo image the wheel ships
    exe = py.with_name("saemi")
    run([exe, "analyze", Path(where[2]) / "demo.png", "--out", work / "out", "--quiet", "--device", "cpu"], work, env)
    import pandas as pd

    table = pd.read_csv(work / "out" / "demo_particles.csv")
    assert len(table) > 20
    assert pd.read_csv(work / "out" / "summary.csv").status.tolist() == ["ok", "sample"]


def test_installed_page_serves_its_assets_and_the_demo(installed):
    py, env, work, purelib = installed
    # what `saemi serve` starts (saemi.wsgi:server), through Flask's test client: page, assets, API
    probe = """
import json, saemi.wsgi as w
c = w.server.test_client()
page, css = c.get("/"), c.get("/assets/saemi.css")
health = c.get("/api/v1/health")
print(json.dumps({"page": page.status_code, "css": css.status_code, "css_len": len(css.data),
                  "assets": w.app.config.assets_folder, "health": health.status_code}))
"""
    out = run([py, "-c", probe], work, {**env, "SAEMI_LOAD": "lazy"}).stdout.strip().splitlines()[-1]
    import json

    got = json.loads(out)
    assert got["page"] == 200 and got["css"] == 200 and got["css_len"] > 100 and got["health"] == 200, got
    assert Path(got["assets"]).is_relative_to(purelib), got
    cmd = run([py, "-c", "from saemi.launch import gunicorn_command; print(gunicorn_command('all'))"], work, env).stdout
    assert "saemi.wsgi:server" in cmd and str(purelib / "saemi" / "gunicorn_conf.py") in cmd
