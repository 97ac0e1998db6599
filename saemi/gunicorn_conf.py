"""Gunicorn settings shared by every way SAEMI is served.

Used by the Procfile (``gunicorn app:server``), the GPU backend
(``gunicorn "saemi.api:create_app()"``), Docker and ``saemi serve``.
Shipped in the package so an installed saemi has it; ``gunicorn.conf.py`` at the
repository root imports it (gunicorn reads ``./gunicorn.conf.py`` by itself when
started there; ``-c gunicorn.conf.py`` makes it explicit). Command-line flags
override what is set here.

Environment (see docs/deploy.md):

``PORT``              port to bind on 0.0.0.0 (Heroku sets it); default 8050 on 127.0.0.1
``HOST``              interface to bind (default 0.0.0.0 when PORT is set, else 127.0.0.1)
``WEB_CONCURRENCY``   worker processes (default 1). Each worker holds its own model
                      (~0.5-0.7 GB resident on CPU), so size this by memory, not cores.
``SAEMI_THREADS``     threads per worker (default 4): one forward pass runs at a time per
                      worker (the service's inference lock), the other threads serve health
                      checks, re-analyses and downloads meanwhile.
``SAEMI_TIMEOUT``     seconds one analysis may take (default 180: a large micrograph on a small
                      CPU takes tens of seconds); past it the request gets a 503 JSON error and
                      the worker goes on serving (saemi/budget.py).
``SAEMI_CLIENT_TIMEOUT`` seconds a client may take to send a whole request (default 30); a slower
                      one gets 408 and is closed. It never holds a thread meanwhile.
``SAEMI_LOG_LEVEL``   gunicorn log level (default info).
``SAEMI_*``           read by the app itself (saemi/api/config.py).
"""

import multiprocessing
import os


def _int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


_port = os.environ.get("PORT")
_host = os.environ.get("HOST") or ("0.0.0.0" if _port else "127.0.0.1")
bind = [f"{_host}:{_port or 8050}"]

workers = max(1, _int("WEB_CONCURRENCY", 1))
# gthread, with each request read in full in the event loop before a thread sees it: a few
# threads per worker share one model in memory (processes would each need a copy), and a
# client that sends half a request and waits holds no thread (saemi/api/worker.py).
worker_class = "saemi.api.worker.BufferingThreadWorker"
threads = max(1, _int("SAEMI_THREADS", 4))
# The worker's heartbeat: the event loop notifies the master every second even while threads
# analyse, so this only catches a hung loop. SAEMI_TIMEOUT itself is the analysis deadline,
# enforced by the app (503 past it, the worker stays up).
timeout = max(30, _int("SAEMI_TIMEOUT", 180) + 60)
graceful_timeout = 30
keepalive = 5

# Off on purpose: with preload the master would import torch and load the network before
# forking, and CUDA cannot be used across fork; each worker loads its own model instead.
preload_app = False

# Share the cores between workers' PyTorch thread pools instead of letting each worker
# start one thread per core (W workers x N threads on N cores only thrash). Set here, in the
# master, so the workers inherit it before they import torch.
_cores = multiprocessing.cpu_count()
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // workers)))
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

# gunicorn >= 24 opens a control socket at one fixed path per user: two servers on one host
# (backend + front end, tests) would fight over it, and nothing here uses it.
control_socket_disable = True

accesslog = os.environ.get("SAEMI_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("SAEMI_LOG_LEVEL", "info")
# Heroku's router and most load balancers terminate TLS; trust their X-Forwarded-* headers.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")


def post_fork(server, worker):
    # Threaded workers give each thread its own glibc malloc arena, and the freed image
    # buffers scattered over them keep the worker's RSS high: capping the arenas at 2 cut the
    # peak RSS of a loaded worker under 8 concurrent clients from 2179 to about 1900 MB (measured,
    # bench/bench_api_load.py). MALLOC_ARENA_MAX in the environment wins, as glibc reads it.
    if "MALLOC_ARENA_MAX" not in os.environ:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
        except (OSError, AttributeError):  # not glibc: nothing to tune
            pass


def post_worker_init(worker):
    # one line per worker once its app (and model, with SAEMI_LOAD=eager) is ready
    worker.log.info("worker %s ready", worker.pid)
