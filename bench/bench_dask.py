"""Batch throughput on local Dask workers against a serial run, in one run.

Run:  python bench/bench_dask.py [--images 12] [--dir FOLDER] [--workers 1 2 4]

The same N images (default: N copies of assets/demo.png, 630x512; or the first N
images of --dir) are analysed by ``saemi analyze``'s own code paths with the shipped
weights on the CPU: serially in this process (the path without --scheduler/--workers),
then on a ``LocalCluster`` of 1, 2 and 4 worker processes (``--workers N``: one task
thread per worker, max(1, cores // N) PyTorch threads each). Every run writes the full
outputs into a temporary folder.

Reported per mode: startup (loading the model; for a cluster also starting the workers,
each of which loads the model), the batch time from the first image read to the last
file written, images per second over the batch, and that rate as a ratio against the
serial rate measured in the same run. Startup is reported apart because it is paid once
per run, however many images the run has.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saemi.card import read_card  # noqa: E402
from saemi.cli import _run_serial, collect_inputs, plan_outputs  # noqa: E402
from saemi.distributed import connect, cpu_count, run_batch  # noqa: E402
from saemi.pipeline import Settings, default_segmenter  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12, help="number of images (default 12)")
    ap.add_argument("--dir", default=None, help="take the first N images of this folder instead of demo.png copies")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="saemi-bench-dask-"))
    inputs = tmp / "in"
    inputs.mkdir()
    if args.dir:
        files, _ = collect_inputs([args.dir])
        for f in files[:args.images]:
            shutil.copy(f, inputs / f.name)
    else:
        for k in range(args.images):
            shutil.copy(REPO / "assets" / "demo.png", inputs / f"demo{k:03d}.png")
    files, _ = collect_inputs([inputs])
    settings = Settings.from_dict(None, defaults=read_card()["postprocess"])
    print(f"{len(files)} images, {cpu_count()} cores; CPU, shipped weights")

    results = []
    t = time.perf_counter()
    segmenter = default_segmenter(None, "cpu")
    startup = time.perf_counter() - t
    plans = plan_outputs(files, tmp / "serial")
    (tmp / "serial").mkdir()
    t = time.perf_counter()
    rows, failed, _ = _run_serial(files, plans, settings, segmenter, "outline", quiet=True)
    results.append(("serial", startup, time.perf_counter() - t, failed))

    for n in args.workers:
        out = tmp / f"workers{n}"
        out.mkdir()
        plans = plan_outputs(files, out)
        t = time.perf_counter()
        with connect(workers=n, device="cpu") as cluster:
            startup = time.perf_counter() - t
            t = time.perf_counter()
            rows, failed, _ = run_batch(cluster, files, plans, settings, quiet=True)
            results.append((f"--workers {n}", startup, time.perf_counter() - t, failed))

    serial_rate = len(files) / results[0][2]
    print(f"{'mode':<12} {'startup s':>9} {'batch s':>8} {'images/s':>9} {'vs serial':>9}")
    for mode, startup, seconds, failed in results:
        rate = len(files) / seconds
        print(f"{mode:<12} {startup:>9.1f} {seconds:>8.1f} {rate:>9.2f} {rate / serial_rate:>8.2f}x"
              + (f"  ({failed} failed)" if failed else ""))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
