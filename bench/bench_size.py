"""Size-normalised inference against the fixed-scale pipeline it replaced, in the same run.

For each image of a split.json subset, interleaved (so both see the same load):

* **fixed**: the shipped path before issue 20 — the network at the card's
  ``input_scale``, probabilities resized to full resolution, split there with
  v1's absolute settings (min_distance 60 px, min_size 20 px, merging 0.6,
  fragments under 10 % dropped);
* **normalised**: :func:`saemi.pipeline.network_pass` (estimate, working
  scale) and :func:`saemi.pipeline.split` (at the working scale, mapped back)
  with the card's defaults.

Both start from the same loaded, banner-filled image and end with the particle
table; loading and scale-bar reading (the same for both) are left out. Prints
the per-image seconds, the typical diameter and working scale chosen, and the
mean seconds and their ratio.

    python bench/bench_size.py --data ../shared/data/emps-train --subset test
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saemi.banner import find_banner, remove_banner  # noqa: E402
from saemi.card import read_card  # noqa: E402
from saemi.dataset import image_file  # noqa: E402
from saemi.evaluate import evaluation_subsets  # noqa: E402
from saemi.instances import split_touching  # noqa: E402
from saemi.io import read_micrograph  # noqa: E402
from saemi.measure import particle_table  # noqa: E402
from saemi.pipeline import Segmentation, default_segmenter, network_pass, particle_region, split  # noqa: E402
from saemi.probability import resize_probability  # noqa: E402
from saemi.settings import Settings, SplitSettings  # noqa: E402

FIXED = SplitSettings(min_distance=60, min_size=20, merge_threshold=0.6, threshold=0.5, min_relative_size=0.1)


def fixed(segmenter, cleaned, box):
    seg = Segmentation(cleaned, cleaned, segmenter.predict(cleaned), box)
    labels = split_touching(seg.probability, FIXED, particle_region(seg))
    return particle_table(labels)


def normalised(segmenter, cleaned, box, settings):
    prob, scale, d, source = network_pass(segmenter, cleaned, box)
    network = prob if prob.shape[1:] != cleaned.shape[:2] else None
    seg = Segmentation(cleaned, cleaned, resize_probability(prob, cleaned.shape[:2]), box,
                       network_probability=network, network_scale=scale, diameter=d, diameter_source=source)
    return particle_table(split(seg, settings)), d, scale


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/emps-train"))
    ap.add_argument("--subset", default="test", choices=("val", "test", "train"))
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    names = evaluation_subsets(args.data, subsets=[args.subset]).get(args.subset, [])[:args.limit]
    segmenter = default_segmenter()
    settings = Settings.from_dict(None, defaults=read_card()["postprocess"])
    images = []
    for name in names:
        img, _ = read_micrograph(str(image_file(Path(args.data), name)))
        images.append((name, *remove_banner(img, find_banner(img))))
    fixed(segmenter, images[0][1], images[0][2])  # warm-up: the first call loads the engine
    totals = {"fixed": 0.0, "normalised": 0.0}
    print(f"{'image':12s} {'fixed s':>8s} {'normalised s':>12s} {'diameter':>9s} {'scale':>6s} "
          f"{'n fixed':>7s} {'n norm':>6s}")
    for name, cleaned, box in images:
        t = time.perf_counter()
        a = fixed(segmenter, cleaned, box)
        t_fixed = time.perf_counter() - t
        t = time.perf_counter()
        b, d, scale = normalised(segmenter, cleaned, box, settings)
        t_norm = time.perf_counter() - t
        totals["fixed"] += t_fixed
        totals["normalised"] += t_norm
        print(f"{name:12s} {t_fixed:8.3f} {t_norm:12.3f} {d if d else float('nan'):9.1f} {scale:6.3f} "
              f"{len(a):7d} {len(b):6d}", flush=True)
    n = max(1, len(images))
    print(f"mean s/image: fixed {totals['fixed'] / n:.3f}, normalised {totals['normalised'] / n:.3f}; "
          f"ratio normalised/fixed {totals['normalised'] / max(totals['fixed'], 1e-9):.3f} ({len(images)} images, "
          f"{args.subset})")


if __name__ == "__main__":
    main()
