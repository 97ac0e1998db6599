"""``saemi serve``: run the web app, the REST backend or the front end under gunicorn.

The plain-Python alternative to the Procfile and Docker: it builds the same
gunicorn command line (with the package's ``gunicorn_conf.py``, which the
repository's ``gunicorn.conf.py`` imports) and
replaces the current process with it, so signals (Ctrl-C, SIGTERM from
systemd) reach gunicorn directly.

Modes
-----
all
    ``saemi.wsgi:server`` (the same app as ``app:server``): the Dash page with the
    backend blueprint in-process.
backend
    ``saemi.api:create_app()``: only the REST API (the GPU-server role).
frontend
    ``saemi.wsgi:server`` with ``SAEMI_BACKEND_URL`` set: the page, calling a remote backend.
"""

import os
import shutil
import sys
from pathlib import Path

# the folder holding the saemi package: the checkout, or site-packages when installed
ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().parent / "gunicorn_conf.py"
APPS = {"all": "saemi.wsgi:server", "frontend": "saemi.wsgi:server", "backend": "saemi.api:create_app()"}


def gunicorn_command(mode="all", host="127.0.0.1", port=8050, workers=None, threads=None):
    """The gunicorn argv for a mode (nothing is started).

    Parameters
    ----------
    mode : {'all', 'backend', 'frontend'}
    host, port : str, int
        Interface and port to bind.
    workers : int, optional
        Worker processes; default ``$WEB_CONCURRENCY`` or 1 (from gunicorn.conf.py).
    threads : int, optional
        Threads per worker; default ``$SAEMI_THREADS`` or 4.

    Returns
    -------
    list of str
    """
    if mode not in APPS:
        raise ValueError(f"mode must be one of {', '.join(APPS)}, got {mode!r}")
    exe = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or shutil.which("gunicorn")
    cmd = [exe] if exe else [sys.executable, "-m", "gunicorn"]
    if CONFIG.exists():
        cmd += ["-c", str(CONFIG)]
    # chdir beside the package so "saemi" imports even from a checkout that is not installed
    cmd += ["--chdir", str(ROOT), "--bind", f"{host}:{int(port)}"]
    if workers:
        cmd += ["--workers", str(int(workers))]
    if threads:
        cmd += ["--threads", str(int(threads))]
    return cmd + [APPS[mode]]


def run(mode="all", host="127.0.0.1", port=8050, workers=None, exec_=True):
    """Start gunicorn for ``mode``; with ``exec_`` (default) this process becomes gunicorn.

    Returns
    -------
    int
        gunicorn's exit status (only when ``exec_`` is false).
    """
    cmd = gunicorn_command(mode, host, port, workers)
    env = dict(os.environ)
    if mode == "frontend" and not env.get("SAEMI_BACKEND_URL"):
        print("saemi serve --frontend: set SAEMI_BACKEND_URL to the backend's base URL "
              "(e.g. http://gpu-host:8000); without it the page runs the model in-process.", file=sys.stderr)
    if mode == "all":
        # one process does everything: a stray SAEMI_BACKEND_URL would send work elsewhere
        env.pop("SAEMI_BACKEND_URL", None)
    print("starting:", " ".join(cmd), file=sys.stderr, flush=True)
    if exec_:
        os.execve(cmd[0], cmd, env)
    import subprocess

    return subprocess.call(cmd, env=env)
