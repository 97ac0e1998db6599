"""Full pipeline on a 1024x768 micrograph: the torch path against the CPU engine, in one run.

Run:  python bench/bench_inference.py [--repeats 5] [--image PATH] [--threads N]

The image (an EMPS micrograph, the shared one or the committed fixture, resized to
1024x768 and PNG-encoded) goes through the whole pipeline — decode, scale-bar
reading, data bar, network, splitting, table: ``segment`` + ``split_and_measure``
with the model card's settings — once per segmenter:

* ``torch``: the path before the engine (torch, bf16 autocast + channels-last where
  the CPU has native bf16, else fp32), and ``torch fp32`` beside it on a bf16 CPU;
* every CPU engine installed (OpenVINO bf16/f32, ONNX Runtime fp32), on the ONNX
  export of the same weights (:mod:`saemi.engine`);
* ``default``: what ``load_segmenter()`` picks here (``SAEMI_ENGINE=auto``).

Runs are interleaved (one of each per round) and the minimum over rounds is
reported, because the machine is shared; the median is printed beside it. Ratios
are each segmenter's time over the torch path's, measured in the same run. The
foreground agreement and the particle count against the torch path are printed
too. The issue's target (#17): <= 0.35 s for the full pipeline on 2 cores.
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saemi.pipeline import Settings, segment, split_and_measure  # noqa: E402
from bench_pipeline import demo_image as image_1024x768  # noqa: E402  (the same 1024x768 image)

SHARED = REPO.parent / "shared" / "data" / "emps-train" / "images" / "2ee0518d7a.png"
FIXTURE = REPO / "tests" / "fixtures" / "emps" / "images" / "aa309f6cec.png"
STAGES = ("load", "scale", "banner", "network", "watershed", "table")


def segmenters(weights):
    from saemi.engine import available_engines
    from saemi.model import load_segmenter

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out["torch"] = load_segmenter(weights, "cpu", engine="torch")
            if out["torch"].precision != "fp32":  # what a CPU without native bf16 would run
                out["torch fp32"] = load_segmenter(weights, "cpu", "fp32", engine="torch")
        except Exception as exc:  # a serving install without torch
            print(f"torch path not measured: {exc}")
        for engine in available_engines():
            for precision in (("bf16", "fp32") if engine == "openvino" else ("fp32",)):
                seg = load_segmenter(weights, "cpu", precision, engine=engine)
                out.setdefault(f"{engine} {seg.precision}", seg)
        default = load_segmenter(weights, "cpu")
    name = getattr(default, "engine", "torch") + " " + default.precision
    return out, name if name in out else None, default


def run_once(data, seg, settings):
    t = time.perf_counter()
    s = segment(data, seg)
    a = split_and_measure(s, settings)
    total = time.perf_counter() - t
    return total, dict(a.timings), a


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=None, help=f"default: {SHARED.name} from shared/, else the fixture {FIXTURE.name}")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="threads per forward pass (OMP_NUM_THREADS; default: all cores)")
    ap.add_argument("--weights", default=None)
    args = ap.parse_args(argv)
    import os

    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    image = Path(args.image) if args.image else (SHARED if SHARED.exists() else FIXTURE)
    data = image_1024x768(image)
    segs, default_name, default = segmenters(args.weights)
    if "torch" in segs:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    from saemi.engine import cpu_threads

    print(f"image: {image} resized to 1024x768; engine threads {cpu_threads()}; {args.repeats} rounds, interleaved")
    print(f"default engine here (SAEMI_ENGINE=auto): {default_name or type(default).__name__}")
    settings = Settings.from_dict(None, defaults=next(iter(segs.values())).card["postprocess"])
    for seg in segs.values():
        run_once(data, seg, settings)  # warm-up: first pass allocates, compiles shapes
    totals = {k: [] for k in segs}
    stages = {k: {s: [] for s in STAGES} for k in segs}
    results = {}
    for _ in range(args.repeats):
        for k, seg in segs.items():
            total, timings, a = run_once(data, seg, settings)
            totals[k].append(total)
            for s in STAGES:
                stages[k][s].append(timings.get(s, float("nan")))
            results[k] = a
    base = "torch" if "torch" in segs else next(iter(segs))
    ref = results[base]
    print(f"\n{'segmenter':<18}{'total min':>10}{'median':>9}{'network':>9}{'split':>8}{'other':>8}"
          f"{'speedup':>8}{'fg agree':>10}{'count':>7}")
    for k in segs:
        t, st = min(totals[k]), {s: min(v) for s, v in stages[k].items()}
        other = t - st["network"] - st["watershed"]
        agree = float(((results[k].labels > 0) == (ref.labels > 0)).mean())
        mark = " (default)" if k == default_name else ""
        print(f"{k:<18}{t:>10.3f}{statistics.median(totals[k]):>9.3f}{st['network']:>9.3f}{st['watershed']:>8.3f}"
              f"{other:>8.3f}{min(totals[base]) / t:>7.2f}x{agree:>10.5f}{results[k].summary['count']:>7}{mark}")
    if default_name:
        t = min(totals[default_name])
        print(f"\nfull pipeline, 1024x768: {base} {min(totals[base]):.3f} s -> default ({default_name}) {t:.3f} s, "
              f"{min(totals[base]) / t:.2f}x faster; target 0.35 s ({'met' if t <= 0.35 else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
