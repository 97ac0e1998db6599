"""The splitting stages alone (no network), on a 1024x768 EMPS image and the 12-megapixel mosaic.

    .venv/bin/python bench/bench_split.py --repeats 3

Each image is segmented once with the bundled weights (not timed); then, with
the model card's settings, the minimum over ``--repeats`` of:

- ``estimate``: the typical-diameter estimate on the network's first pass
  (:func:`saemi.size.estimate_diameter`, a split of its own; part of the
  ``network`` stage of the pipeline's timings);
- ``split``: :func:`saemi.pipeline.split` (distance transform, h-maxima,
  watershed and filters at the working scale, then mapped back and fitted to
  the full-resolution mask);
- ``table``: :func:`saemi.measure.particle_table` of those labels.

Only public functions that predate issue 17's splitting work are called, so
the same script times an older checkout (``PYTHONPATH=OLD_TREE``): run the two
alternately for a before/after measured in one session (docs/results/split-stages.md).
``--json FILE`` writes the figures.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from samples import SHARED_DATA, emps_mosaic  # noqa: E402


def image_1024x768(path):
    """PNG bytes of ``path`` resized to 1024x768 (as bench_pipeline's, without its import of this tree's saemi)."""
    import io

    import cv2
    import numpy as np
    from PIL import Image

    img = cv2.resize(np.asarray(Image.open(path).convert("RGB")), (1024, 768), interpolation=cv2.INTER_LINEAR)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from saemi.card import read_card
    from saemi.measure import particle_table
    from saemi.pipeline import default_segmenter, particle_region, segment, split, working_probability
    from saemi.settings import Settings
    from saemi.size import estimate_diameter

    if not (SHARED_DATA / "images").is_dir():
        sys.exit(f"no EMPS images under {SHARED_DATA}: this benchmark needs ../shared")
    images = {"1024x768": image_1024x768(SHARED_DATA / "images" / "2ee0518d7a.png"), "12 MP mosaic": emps_mosaic()}
    settings = Settings.from_dict(None, defaults=read_card()["postprocess"])
    import saemi

    figures = {"saemi": str(Path(saemi.__file__).resolve().parent)}
    print(f"saemi from {figures['saemi']}")
    for name, data in images.items():
        seg = segment(data, default_segmenter(), filename="image.png")
        prob, scale = working_probability(seg)
        valid = particle_region(seg, prob.shape[-2:], scale)
        times = {"estimate": [], "split": [], "table": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            estimate_diameter(prob, scale, valid)
            times["estimate"].append(time.perf_counter() - t)
            t = time.perf_counter()
            labels = split(seg, settings)
            times["split"].append(time.perf_counter() - t)
            t = time.perf_counter()
            particle_table(labels)
            times["table"].append(time.perf_counter() - t)
        figures[name] = {k: round(min(v), 4) for k, v in times.items()}
        figures[name]["particles"] = int(labels.max())
        print(f"{name:14s} " + ", ".join(f"{k} {v:.3f} s" for k, v in figures[name].items() if k != "particles")
              + f"  ({figures[name]['particles']} particles, min of {args.repeats})", flush=True)
    figures["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
