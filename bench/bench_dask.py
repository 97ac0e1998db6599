"""Batch throughput on local Dask workers against a serial run, in one run.

Run:  python bench/bench_dask.py [--images 12] [--dir FOLDER] [--workers 1 2 4] [--rounds 2]

The same N images (default: N copies of saemi/ui/assets/demo.png, 630x512; or the first N
images of --dir) are analysed by ``saemi analyze``'s own code paths with the shipped
weights on the CPU: serially in this process (the path without --scheduler/--workers),
and again with one PyTorch thread ('serial 1t', to show what OpenMP threads cost on
a machine whose cores are busy with other work), then on a ``LocalCluster`` of 1, 2 and
4 worker processes (``--workers N``: one task
thread per worker, max(1, cores // N) PyTorch threads each). Every run writes the full
outputs into a temporary folder.

Reported per mode: startup (loading the model; for a cluster also starting the workers,
each of which loads the model), the batch time from the first image read to the last
file written, images per second over the batch, and that rate as a ratio against the
serial rate measured in the same run. Startup is reported apart because it is paid once
per run, however many images the run has. All modes run ``--rounds`` times, in
alternating order, and the medians are reported: on a machine shared with other work
one round alone can be off by a factor of two. The load average is printed before and
after.
"""

import argparse
import os
import shutil
import statistics
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
    ap.add_argument("--rounds", type=int, default=2, help="rounds of all modes, in alternating order (default 2)")
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
            shutil.copy(REPO / "saemi" / "ui" / "assets" / "demo.png", inputs / f"demo{k:03d}.png")
    files, _ = collect_inputs([inputs])
    settings = Settings.from_dict(None, defaults=read_card()["postprocess"])
    import torch

    print(f"{len(files)} images, {cpu_count()} cores; CPU, shipped weights; serial: {torch.get_num_threads()} "
          "PyTorch threads ('serial 1t': one)")

    def serial(out):
        plans = plan_outputs(files, out)
        t = time.perf_counter()
        segmenter = default_segmenter(None, "cpu")  # loaded once per process: the first round pays it
        startup = time.perf_counter() - t
        t = time.perf_counter()
        _, failed, _ = _run_serial(files, plans, settings, segmenter, "outline", quiet=True)
        return startup, time.perf_counter() - t, failed

    def serial_one_thread(out):
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return serial(out)
        finally:
            torch.set_num_threads(threads)

    def local(n, out):
        plans = plan_outputs(files, out)
        t = time.perf_counter()
        with connect(workers=n, device="cpu") as cluster:
            startup = time.perf_counter() - t
            t = time.perf_counter()
            _, failed, _ = run_batch(cluster, files, plans, settings, quiet=True)
            return startup, time.perf_counter() - t, failed

    modes = [("serial", serial), ("serial 1t", serial_one_thread)] + [(f"--workers {n}", lambda out, n=n: local(n, out)) for n in args.workers]
    runs = {name: [] for name, _ in modes}
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        order = modes if r % 2 == 0 else modes[::-1]  # alternate the order, so that drift in load evens out
        for name, fn in order:
            out = tmp / f"r{r}-{name.strip('-').replace(' ', '')}"
            out.mkdir()
            runs[name].append(fn(out))
            print(f"round {r + 1}: {name:<12} {len(files) / runs[name][-1][1]:.2f} images/s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    serial_rate = len(files) / statistics.median(b for _, b, _ in runs["serial"])
    print(f"\nmedian of {args.rounds} rounds; startup of the last round")
    print(f"{'mode':<12} {'startup s':>9} {'batch s':>8} {'images/s':>9} {'vs serial':>9}")
    for name, _ in modes:
        seconds = statistics.median(b for _, b, _ in runs[name])
        rate = len(files) / seconds
        failed = sum(f for _, _, f in runs[name])
        print(f"{name:<12} {runs[name][-1][0]:>9.1f} {seconds:>8.1f} {rate:>9.2f} {rate / serial_rate:>8.2f}x"
              + (f"  ({failed} failed)" if failed else ""))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
