"""Per-stage CPU time of the full pipeline on a 1024x768 micrograph, against a baseline.

Run:  python bench/bench_pipeline.py [--repeats 3] [--image PATH] [--threads N]

Stages: load (decode PNG bytes), banner, network, watershed, table; the network
is the torch path, timed in fp32 and bf16 (autocast). The CPU engines (OpenVINO,
ONNX Runtime) against it: bench/bench_inference.py. The baseline, measured in the same run on
the same image, is the textbook pipeline: Otsu threshold + distance-transform
watershed + the same table. Ratios are SAEMI time / baseline time.
"""

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
STAGES = ("load", "scale", "banner", "network", "watershed", "table")
sys.path.insert(0, str(REPO))

from saemi.instances import SplitSettings, split_touching  # noqa: E402
from saemi.measure import particle_table  # noqa: E402
from saemi.pipeline import Settings, segment, split_and_measure  # noqa: E402


def demo_image(path):
    img = np.asarray(Image.open(path).convert("RGB"))
    img = cv2.resize(img, (1024, 768), interpolation=cv2.INTER_LINEAR)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def otsu_watershed(data):
    from skimage.filters import threshold_otsu

    img = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    mask = img > threshold_otsu(img)
    if mask.mean() > 0.5:  # particles are the minority phase
        mask = ~mask
    labels = split_touching(mask, SplitSettings(min_distance=7, min_size=20))
    return particle_table(labels)


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(REPO.parent / "shared/data/emps-train/images/2ee0518d7a.png"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()

    import torch

    from saemi.model import load_segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    data = demo_image(args.image)
    print(f"image: {args.image} resized to 1024x768; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, repeats {args.repeats} (min of repeats shown)")

    base, _, base_table = best_of(lambda: otsu_watershed(data), args.repeats)
    results = {}
    for precision in ("fp32", "bf16"):
        seg_model = load_segmenter(args.weights, "cpu", precision, engine="torch")
        segment(data, seg_model)  # warm-up: first pass allocates
        stage = {k: [] for k in STAGES}
        for _ in range(args.repeats):
            s = segment(data, seg_model)
            a = split_and_measure(s, Settings.from_dict(None, defaults=seg_model.card["postprocess"]))
            for k in stage:
                stage[k].append(a.timings[k])
        results[precision] = ({k: min(v) for k, v in stage.items()}, a)

    print(f"\n{'stage':<12}{'fp32 s':>10}{'bf16 s':>10}")
    for k in STAGES:
        print(f"{k:<12}{results['fp32'][0][k]:>10.3f}{results['bf16'][0][k]:>10.3f}")
    for precision, (st, a) in results.items():
        total = sum(st.values())
        split = st["network"] + st["watershed"]
        print(f"\n{precision}: total {total:.3f} s/image, network+splitting {split:.3f} s, "
              f"{a.summary['count']} particles")
        print(f"  ratio to Otsu+watershed baseline ({base:.3f} s, {len(base_table)} particles): {total / base:.1f}x")
    fp, bf = results["fp32"][1], results["bf16"][1]
    agree = float(((fp.labels > 0) == (bf.labels > 0)).mean())
    print(f"\nbf16 vs fp32: foreground agreement {agree:.4f}, counts {bf.summary['count']} vs {fp.summary['count']}")


if __name__ == "__main__":
    main()
