"""Load benchmark of the REST backend under gunicorn on loopback.

    .venv/bin/python bench/bench_api_load.py --clients 8 --requests 64

Starts ``gunicorn -c gunicorn.conf.py "saemi.api:create_app()"`` on a free
loopback port (bundled weights, or ``$SAEMI_WEIGHTS``), waits for /ready
(the cold start), then runs N concurrent clients for a fixed number of
requests. Each client behaves like a user of the page: it uploads a new EMPS
image (``POST /analyze`` with the file: load, banner, network, watershed,
pictures) and then moves sliders (``POST /analyze`` with the ``image_id`` and
new settings: no network), ``--reanalyses`` times per new image.

Prints throughput, p50/p95 latency (all requests and per kind), resident memory
per worker (after the model loaded, and the peak, VmHWM), the cold-start time
and the error count; ``--json FILE`` also writes them as JSON.
"""

import argparse
import concurrent.futures
import json
import os
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from livesrv import SHARED_DATA, rss_kb, start_backend  # noqa: E402


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def plan(n_requests, n_clients, reanalyses):
    """Per client, a list of ("new", image index) / ("again", settings) steps; n_requests in all."""
    steps = [[] for _ in range(n_clients)]
    image = 0
    for i in range(n_requests):
        client = i % n_clients
        mine = steps[client]
        if len(mine) % (reanalyses + 1) == 0:
            mine.append(("new", image))
            image += 1
        else:
            k = len(mine) % (reanalyses + 1)
            mine.append(("again", {"min_distance": 3 + 2 * k, "min_size": 10 * k, "watershed": k % 3 != 0}))
    return steps, image


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=64, help="total requests over all clients")
    ap.add_argument("--reanalyses", type=int, default=3, help="re-analyses per new image")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    folder = SHARED_DATA / "images"
    steps, n_new = plan(args.requests, args.clients, args.reanalyses)
    files = sorted(folder.glob("*.png"))[: n_new]
    if len(files) < n_new:
        sys.exit(f"need {n_new} images in {folder}, found {len(files)}")
    blobs = [f.read_bytes() for f in files]

    env = {"SAEMI_DEVICE": args.device, "SAEMI_CACHE_BYTES": str(2**30),
           "SAEMI_ACCESS_LOG": ""}
    srv = start_backend(env=env, threads=args.threads, workers=args.workers, log_path="/tmp/saemi-bench-load.log")
    try:
        cold = srv.wait("/api/v1/ready", timeout=300)
        # every worker must have its model before timing starts: poll until all answer ready
        time.sleep(1.0)
        pids = srv.worker_pids()
        loaded_rss = {p: rss_kb(p) for p in pids}
        peak = {p: rss_kb(p, "VmHWM") for p in pids}
        stop = threading.Event()

        def sample():  # VmHWM already is the peak; sampling also catches workers that restart
            while not stop.is_set():
                for p in srv.worker_pids():
                    try:
                        peak[p] = max(peak.get(p, 0), rss_kb(p, "VmHWM"))
                    except OSError:
                        pass
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        results = []  # (kind, seconds, status)
        lock = threading.Lock()

        def run_client(my_steps):
            session = requests.Session()
            image_id = None
            for kind, arg in my_steps:
                t0 = time.perf_counter()
                if kind == "new" or image_id is None:
                    r = session.post(srv.url + "/api/v1/analyze", files={"file": (files[arg].name, blobs[arg])},
                                     timeout=600) if kind == "new" else None
                else:
                    r = session.post(srv.url + "/api/v1/analyze", json={"image_id": image_id, **arg}, timeout=600)
                dt = time.perf_counter() - t0
                if r is not None and r.status_code == 200:
                    image_id = r.json()["image_id"] if kind == "new" else image_id
                with lock:
                    results.append((kind, dt, r.status_code if r is not None else 0))

        t_start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(run_client, steps))
        wall = time.perf_counter() - t_start
        stop.set()
        sampler.join()
        for p in srv.worker_pids():
            peak[p] = max(peak.get(p, 0), rss_kb(p, "VmHWM"))
    finally:
        srv.stop()

    lat = [dt for _, dt, _ in results]
    by_kind = {k: [dt for kk, dt, _ in results if kk == k] for k in ("new", "again")}
    errors = [(k, s) for k, _, s in results if s != 200]
    out = {
        "clients": args.clients, "requests": len(results), "workers": args.workers, "threads": args.threads,
        "device": args.device, "cpu_cores": os.cpu_count(), "wall_s": round(wall, 2),
        "throughput_rps": round(len(results) / wall, 3),
        "p50_s": round(percentile(lat, 50), 3), "p95_s": round(percentile(lat, 95), 3),
        "new_images": len(by_kind["new"]), "reanalyses": len(by_kind["again"]),
        "new_p50_s": round(percentile(by_kind["new"], 50), 3), "new_p95_s": round(percentile(by_kind["new"], 95), 3),
        "again_p50_s": round(percentile(by_kind["again"], 50), 3),
        "again_p95_s": round(percentile(by_kind["again"], 95), 3),
        "cold_start_s": round(cold, 2),
        "rss_loaded_mb": {str(p): round(v / 1024) for p, v in loaded_rss.items()},
        "peak_rss_mb": {str(p): round(v / 1024) for p, v in peak.items()},
        "errors": len(errors), "error_statuses": sorted({s for _, s in errors}),
    }
    print(f"{out['requests']} requests ({out['new_images']} new images, {out['reanalyses']} re-analyses), "
          f"{args.clients} clients, gunicorn {args.workers} worker(s) x {args.threads} threads, "
          f"{args.device}, {os.cpu_count()} cores")
    print(f"throughput      {out['throughput_rps']:.2f} requests/s over {out['wall_s']:.1f} s")
    print(f"latency all     p50 {out['p50_s']:.2f} s   p95 {out['p95_s']:.2f} s")
    print(f"  new image     p50 {out['new_p50_s']:.2f} s   p95 {out['new_p95_s']:.2f} s")
    print(f"  re-analysis   p50 {out['again_p50_s']:.2f} s   p95 {out['again_p95_s']:.2f} s")
    print(f"cold start      {out['cold_start_s']:.1f} s (spawn to /ready)")
    print(f"RSS per worker  loaded {out['rss_loaded_mb']} MB, peak {out['peak_rss_mb']} MB")
    print(f"errors          {out['errors']} {out['error_statuses'] or ''}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
