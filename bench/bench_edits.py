"""What a manual edit costs the server, against an exclusion click measured in the same run.

    .venv/bin/python bench/bench_edits.py --images 4 --repeats 5

For each of a few EMPS images (``../shared``, else the committed fixtures), and
the first one tiled to 4000x3000 (``--large``: 12 megapixels, particles of the
same size), in-process on
:class:`saemi.service.AnalysisService` (the page's default backend):

* **click**: what the page's server does when a particle is excluded: the
  particle layer without the hover grid;
* **add / erase / split / merge**: the edit, the re-analysis (table and
  summary) and the layer with its hover grid, which is what the page does after
  an edit.

Prints medians (ms) and the ratio to the click; ``--json FILE`` writes them.
The browser test ``test_particles_are_corrected_by_mouse_and_keyboard`` prints
the same comparison end to end (gesture to new count).
"""

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from livesrv import SHARED_DATA  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "emps"


#: Real micrographs with many particles, some touching (the page's and the API tests' images).
NAMES = ["70f9f13af4", "2ee0518d7a", "aa309f6cec", "7fabcfe23f"]


def images(n):
    folder = SHARED_DATA / "images" if (SHARED_DATA / "images").is_dir() else FIXTURES / "images"
    named = [folder / f"{name}.png" for name in NAMES if (folder / f"{name}.png").exists()]
    rest = [f for f in sorted(folder.glob("*.png")) if f not in named]
    return (named + rest)[:n]


def tiled(path, size=(4000, 3000)):
    """The image repeated (mirrored) to ``size``: a 12-megapixel micrograph of particles of the same size."""
    from PIL import Image

    a = np.asarray(Image.open(path).convert("RGB"))
    reps = (-(-size[1] // a.shape[0]), -(-size[0] // a.shape[1]))
    row = np.concatenate([a if j % 2 == 0 else a[:, ::-1] for j in range(reps[1])], axis=1)
    big = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps[0])], axis=0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(big[:size[1], :size[0]])).save(buf, format="PNG")
    return buf.getvalue()


def background_square(labels, side):
    from scipy import ndimage as ndi

    free = ndi.minimum_filter((labels == 0).astype(np.uint8), size=side + 6, mode="constant") > 0
    ys, xs = np.nonzero(free)
    if not len(ys):
        return None
    x, y = int(xs[len(xs) // 2]) - side // 2, int(ys[len(ys) // 2]) - side // 2
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def one_image(svc, data, name, repeats):
    from PIL import Image
    from scipy import ndimage as ndi

    iid = svc.segment(data, name)["image_id"]
    found = svc.analyze(image_id=iid, include_images=False)["summary"]["count"]
    times = {k: [] for k in ("click", "add", "erase", "split", "merge")}

    def after_edit():
        svc.analyze(image_id=iid, include_images=False)
        svc.particle_layer(iid, {}, grid=True)

    for _ in range(repeats):
        png, _ = svc.labels_png(iid)
        labels = np.asarray(Image.open(io.BytesIO(png))).astype(np.int32)
        areas = np.bincount(labels.ravel())
        present = np.flatnonzero(areas[1:]) + 1
        if len(present) < 4:
            break
        lab = int(present[np.argmax(areas[present])])
        times["click"].append(timed(lambda: svc.particle_layer(iid, {"removed_labels": [lab]}, grid=False)))
        side = max(8, int(np.sqrt(np.median(areas[present]))))
        square = background_square(labels, side)
        if square is not None:
            times["add"].append(timed(lambda: (svc.edit(iid, {"op": "add", "polygon": square}), after_edit())))
        times["erase"].append(timed(lambda: (svc.edit(iid, {"op": "erase", "labels": [int(present[0])]}),
                                             after_edit())))
        sl = ndi.find_objects(labels)[lab - 1]
        mid = (sl[1].start + sl[1].stop) // 2
        line = [[mid, sl[0].start - 2], [mid, sl[0].stop + 2]]
        try:
            times["split"].append(timed(lambda: (svc.edit(iid, {"op": "split", "line": line}), after_edit())))
        except Exception:  # a particle the vertical line does not cut in two: not timed
            pass
        times["merge"].append(timed(lambda: (svc.edit(iid, {"op": "merge", "labels": [int(present[1]),
                                                                                     int(present[2])]}),
                                             after_edit())))
    return times, found, labels.shape


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--large", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the first image tiled to 4000x3000 (12 megapixels)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from saemi.cache import DiskStore
    from saemi.service import AnalysisService

    with tempfile.TemporaryDirectory() as tmp:
        svc = AnalysisService(store=DiskStore(tmp, 2 * 2**30, 3600))
        svc.load()
        cases = [(f.name, f.read_bytes()) for f in images(args.images)]
        if args.large:
            cases.append((f"{cases[0][0]} tiled to 4000x3000", tiled(images(1)[0])))
        results = {}
        for name, data in cases:
            times, n, shape = one_image(svc, data, name, args.repeats)
            med = {k: statistics.median(v) * 1000 for k, v in times.items() if v}
            results[name] = {"particles": n, "shape": list(shape), "median_ms": med,
                             "ratio_to_click": {k: v / med["click"] for k, v in med.items() if k != "click"}}
            print(f"{name} ({shape[1]}x{shape[0]}, {n} particles): "
                  + ", ".join(f"{k} {v:.0f} ms" for k, v in med.items())
                  + " | vs click: " + ", ".join(f"{k} {v:.2f}x" for k, v in results[name]["ratio_to_click"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
