"""Slow clients and the deadline, on the server as the Procfile starts it.

    python bench/bench_safety.py [--stalled 8] [--timeout 2]

1. Slow clients: with N connections that sent half a request header and wait,
   how long ``GET /api/v1/health`` takes, for SAEMI's buffering worker and, as
   the baseline in the same run, gunicorn's stock ``gthread`` worker (the
   same config with ``--worker-class gthread``). Also: when a stalled client is
   answered 408 (``SAEMI_CLIENT_TIMEOUT``).
2. Deadline: with ``SAEMI_TIMEOUT`` = ``--timeout`` s, how long an upload of a
   2400x2400 micrograph takes to be answered (503), and whether the next
   request succeeds on the same worker.
"""

import argparse
import io
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from livesrv import Server, free_port, procfile_command  # noqa: E402

PARTIAL = b"POST /api/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Le"


def start(extra_env, args=""):
    port = free_port()
    srv = Server(procfile_command("web") + args, port=port,
                 env={"SAEMI_DEVICE": "cpu", "SAEMI_THREADS": "4", **extra_env})
    srv.wait("/api/v1/ready", timeout=300)
    return srv


def health_seconds(srv, n_stalled, tries=3, limit=30.0):
    socks = []
    for _ in range(n_stalled):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(PARTIAL)
        socks.append(s)
    time.sleep(0.5)
    times = []
    try:
        for _ in range(tries):
            t = time.perf_counter()
            try:
                requests.get(srv.url + "/api/v1/health", timeout=limit).raise_for_status()
                times.append(time.perf_counter() - t)
            except requests.RequestException:
                times.append(float("inf"))
                break
    finally:
        for s in socks:
            s.close()
    return statistics.median(times)


def seconds_to_408(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    s.sendall(PARTIAL)
    t = time.perf_counter()
    data = s.recv(100)
    s.close()
    return time.perf_counter() - t, data.split(b"\r\n", 1)[0].decode()


def big_png(side=2400):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    img = 60 + 140 * ((np.sin(yy / 9.0) * np.sin(xx / 9.0)) > 0.6) + rng.normal(0, 8, (side, side))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stalled", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=2.0, help="SAEMI_TIMEOUT for the deadline check")
    args = ap.parse_args(argv)

    results = {}
    for name, extra in (("stock gthread", " --worker-class gthread"), ("SAEMI worker", "")):
        srv = start({"SAEMI_CLIENT_TIMEOUT": "5"}, extra)
        try:
            idle = health_seconds(srv, 0)
            stalled = health_seconds(srv, args.stalled)
            results[name] = stalled
            line = f"{name:14s}: /health {idle * 1000:6.1f} ms idle, "
            line += f"{stalled * 1000:8.1f} ms" if stalled != float("inf") else "no answer in 30 s"
            line += f" with {args.stalled} stalled clients"
            if name == "SAEMI worker":
                wait, status = seconds_to_408(srv)
                line += f"; a stalled client gets '{status}' after {wait:.1f} s (SAEMI_CLIENT_TIMEOUT=5)"
            print(line, flush=True)
        finally:
            srv.stop()
    base, ours = results["stock gthread"], results["SAEMI worker"]
    print(f"ratio stock/SAEMI, /health time under {args.stalled} stalled clients: "
          + ("stock never answered" if base == float("inf") else f"{base / ours:.0f}x"))

    srv = start({"SAEMI_TIMEOUT": str(args.timeout), "SAEMI_THREADS": "2"})
    try:
        data = big_png()
        t = time.perf_counter()
        r = requests.post(srv.url + "/api/v1/segment", files={"file": ("big.png", data)}, timeout=120)
        elapsed = time.perf_counter() - t
        code = r.json().get("error", {}).get("code")
        t = time.perf_counter()
        nxt = requests.get(srv.url + "/api/v1/health", timeout=10)
        print(f"deadline {args.timeout:g} s: 2400x2400 upload answered {r.status_code} ({code}) after {elapsed:.1f} s; "
              f"next request {nxt.status_code} in {(time.perf_counter() - t) * 1000:.0f} ms; "
              f"worker restarts: {'WORKER TIMEOUT' in srv.log()}")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
