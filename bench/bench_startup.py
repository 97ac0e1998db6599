"""Cold start and resident memory of one gunicorn worker with the model loaded.

    .venv/bin/python bench/bench_startup.py --repeats 2

For each layout — the Procfile's one-process app (``app:server``: page + API +
model) and the backend alone (``saemi.api:create_app()``) — starts gunicorn
with one worker on loopback, times spawn -> ``/api/v1/ready`` = 200 (the cold
start: imports, network build, weights), then reads the worker's resident
memory (VmRSS) with the model loaded, and again after one analysis of a real
EMPS image (and its peak, VmHWM). Bundled weights, or ``$SAEMI_WEIGHTS``.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from livesrv import SHARED_DATA, Server, free_port, procfile_command, rss_kb, start_backend  # noqa: E402


def measure(start, image):
    srv = start()
    try:
        cold = srv.wait("/api/v1/ready", timeout=300)
        (pid,) = srv.worker_pids()
        loaded = rss_kb(pid) / 1024
        r = requests.post(srv.url + "/api/v1/analyze", files={"file": (image.name, image.read_bytes())}, timeout=300)
        r.raise_for_status()
        after, peak = rss_kb(pid) / 1024, rss_kb(pid, "VmHWM") / 1024
    finally:
        srv.stop()
    return {"cold_start_s": cold, "rss_loaded_mb": loaded, "rss_after_analysis_mb": after, "peak_mb": peak}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    image = SHARED_DATA / "images" / "aa309f6cec.png"
    env = {"WEB_CONCURRENCY": "1", "SAEMI_ACCESS_LOG": "", "SAEMI_DEVICE": "cpu"}

    def procfile():
        port = free_port()
        return Server(procfile_command("web"), env=env, port=port, log_path="/tmp/saemi-bench-startup.log")

    def backend():
        return start_backend(env=env, log_path="/tmp/saemi-bench-startup.log")

    out = {}
    for name, start in (("procfile app:server", procfile), ("backend saemi.api:create_app()", backend)):
        runs = [measure(start, image) for _ in range(args.repeats)]
        out[name] = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
        out[name]["cold_start_all_s"] = [round(r["cold_start_s"], 2) for r in runs]
        m = out[name]
        print(f"{name:32s} cold start {m['cold_start_s']:.1f} s {m['cold_start_all_s']}, RSS loaded "
              f"{m['rss_loaded_mb']:.0f} MB, after one analysis {m['rss_after_analysis_mb']:.0f} MB "
              f"(peak {m['peak_mb']:.0f} MB)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
