"""Peak memory of one analysis per image pixel: the figure behind SAEMI_MEMORY_MB.

    python bench/bench_memory.py [--sizes 1 4 9]

For each size (megapixels) a fresh process loads the model, analyses a small
image once (so torch's buffers and the allocator are warm), then runs one full
API-style analysis (segment, split, measure, overlay and label PNGs) of a
synthetic micrograph of that size, and reports its peak resident memory
(VmHWM) above the warm baseline (VmRSS before). Each point is compared with
``saemi.budget.analysis_memory_mb``, the bound the server uses to turn a memory
budget into a pixel limit, and a least-squares line is printed.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import io, json, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from PIL import Image

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

from saemi.service import AnalysisService
from saemi.pipeline import default_segmenter

side = int(float(sys.argv[1]) ** 0.5 * 1000)
rng = np.random.default_rng(0)
def micrograph(h, w):
    yy, xx = np.mgrid[:h, :w]
    img = 60 + 140 * ((np.sin(yy / 9.0) * np.sin(xx / 9.0)) > 0.6) + rng.normal(0, 8, (h, w))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()

service = AnalysisService(lambda: default_segmenter(None, "cpu"), max_pixels=60_000_000)
service.load()
service.analyze(data=micrograph(256, 256), filename="warm.png")
import ctypes
ctypes.CDLL("libc.so.6").malloc_trim(0)
data = micrograph(side, side)
base = rss("VmRSS")
# reset the high-water mark to now, so VmHWM is this analysis's peak
open("/proc/self/clear_refs", "w").write("5")
out = service.analyze(data=data, filename="big.png")
print(json.dumps({"pixels": side * side, "baseline": base, "peak": rss("VmHWM"),
                  "count": out["summary"]["count"]}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 9], help="megapixels")
    args = ap.parse_args(argv)
    from saemi.budget import analysis_memory_mb

    rows = []
    for mp in args.sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(mp), str(ROOT)], capture_output=True, text=True,
                             check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["extra"] = row["peak"] - row["baseline"]
        rows.append(row)
        print(f"{row['pixels'] / 1e6:5.1f} MP: baseline {row['baseline'] / 2**20:6.0f} MB, peak {row['peak'] / 2**20:6.0f}"
              f" MB, extra {row['extra'] / 2**20:6.0f} MB = {row['extra'] / row['pixels']:5.1f} B/px "
              f"({row['count']} particles); saemi.budget bound {analysis_memory_mb(row['pixels']):6.0f} MB "
              f"({'holds' if analysis_memory_mb(row['pixels']) * 2**20 >= row['extra'] else 'EXCEEDED'})",
              flush=True)
    if len(rows) >= 2:
        import numpy as np

        x = np.array([r["pixels"] for r in rows], float)
        y = np.array([r["extra"] for r in rows], float)
        slope, intercept = np.polyfit(x, y, 1)
        print(f"least-squares line: {slope:.1f} bytes per pixel + {intercept / 2**20:.0f} MB")
        print(f"model-loaded baseline RSS: {max(r['baseline'] for r in rows) / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
