"""Start real gunicorn servers on loopback for the API, deploy tests and benchmarks.

Nothing here is a fixture: ``tests/test_api.py``, ``tests/test_deploy.py`` and
``bench/*.py`` wrap it in their own set-up, so each starts the exact command it
means to test.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "emps-train"
WEIGHTS_FILE = REPO / "saemi" / "model_weights" / "saemi_unet_resnet18.pt"


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn_exe():
    exe = Path(sys.executable).parent / "gunicorn"
    return str(exe) if exe.exists() else "gunicorn"


def weights_available():
    """True when the model the servers will load exists (``$SAEMI_WEIGHTS`` or the bundled file)."""
    env = os.environ.get("SAEMI_WEIGHTS")
    if env:
        p = Path(env)
        return (p / "saemi_unet_resnet18.pt").exists() if p.is_dir() else p.exists()
    return WEIGHTS_FILE.exists()


class Server:
    """One gunicorn master started with ``command`` (a shell string or argv list).

    Parameters
    ----------
    command : str or list of str
        A shell string runs through ``bash -c`` (so ``$PORT`` expands as in a Procfile).
    env : dict
        Extra environment variables over ``os.environ``.
    port : int
    log_path : Path
        stdout and stderr of gunicorn (read it when a test fails).
    """

    def __init__(self, command, env=None, port=None, log_path=None, cwd=REPO):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PORT": str(self.port), **(env or {})}
        # the venv's gunicorn and python first, as `heroku run` would find them
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.log_path = Path(log_path or f"/tmp/saemi-gunicorn-{self.port}.log")
        self.command = command
        self._log = open(self.log_path, "wb")
        argv = ["bash", "-c", f"exec {command}"] if isinstance(command, str) else list(command)
        # a new session: stop() signals only this gunicorn master's group, never anything else
        self.proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.started = time.perf_counter()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, path="/api/v1/health", timeout=180.0, status=200):
        """Poll ``path`` until it answers ``status``; returns seconds since start."""
        deadline = time.perf_counter() + timeout
        last = None
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                r = requests.get(self.url + path, timeout=5)
                if r.status_code == status:
                    return time.perf_counter() - self.started
                last = f"HTTP {r.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(0.25)
        raise RuntimeError(f"{self.url}{path} not {status} after {timeout:.0f} s (last: {last}):\n"
                           f"{self.log()[-4000:]}")

    def worker_pids(self):
        """PIDs of the gunicorn workers (children of the master)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group of the master we started
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def rss_kb(pid, field="VmRSS"):
    """Resident memory of a process in kB (``VmHWM`` for its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def procfile_command(name="web"):
    """The command of a Procfile process type, as a shell string."""
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip().startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(f"no {name!r} process in the Procfile")


def gunicorn_command(app, threads=3, workers=1, port=None):
    """argv for ``gunicorn -c gunicorn.conf.py`` on loopback serving ``app``."""
    return [gunicorn_exe(), "-c", str(REPO / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--threads", str(threads), app]


def start_backend(env=None, threads=3, workers=1, log_path=None):
    """The GPU-server command, ``gunicorn "saemi.api:create_app()"``, on a free loopback port."""
    port = free_port()
    return Server(gunicorn_command("saemi.api:create_app()", threads, workers, port), env=env, port=port,
                  log_path=log_path)


