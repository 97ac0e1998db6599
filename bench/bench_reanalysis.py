"""First analysis vs re-analysis (``image_id``, new settings): the cost of moving a slider.

    .venv/bin/python bench/bench_reanalysis.py --images 6 --repeats 3 [--resize 1024x768]

Starts the backend under gunicorn on loopback (bundled weights or
``$SAEMI_WEIGHTS``), then, one request at a time, for each of a few EMPS
images: ``POST /analyze`` with the file (load, banner removal, network,
watershed, table, pictures), then ``--repeats`` re-analyses with the returned
``image_id`` and other splitting settings (watershed, table, pictures; no
network). Both are measured in the same run, client-side (HTTP round trip)
and server-side (``timings.total``). Prints the medians and the ratio
re-analysis / first analysis; ``--json FILE`` writes them too.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from livesrv import SHARED_DATA, start_backend  # noqa: E402

SETTINGS = [{"min_distance": 4}, {"min_distance": 11, "min_size": 40}, {"watershed": False},
            {"threshold": 0.6, "exclude_edge": True}]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--resize", default=None, metavar="WxH",
                    help="send each image resized to W x H (issue 17's target is on 1024x768); default: as it is")
    args = ap.parse_args(argv)

    def upload(path):
        if not args.resize:
            return path.read_bytes()
        import io

        import cv2
        import numpy as np
        from PIL import Image

        w, h = (int(v) for v in args.resize.lower().split("x"))
        img = cv2.resize(np.asarray(Image.open(path).convert("RGB")), (w, h), interpolation=cv2.INTER_LINEAR)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()

    files = sorted((SHARED_DATA / "images").glob("*.png"))
    files = files[:: max(1, len(files) // args.images)][: args.images]  # spread over the collection
    import tempfile

    # a fresh cache: a first analysis of an image an earlier run stored would skip the network
    cache = tempfile.TemporaryDirectory(prefix="saemi-bench-cache-")
    srv = start_backend(env={"SAEMI_DEVICE": args.device, "SAEMI_ACCESS_LOG": "", "SAEMI_CACHE_DIR": cache.name},
                        threads=2, log_path="/tmp/saemi-bench-reanalysis.log")
    first, again, first_srv, again_srv, sizes = [], [], [], [], []
    try:
        srv.wait("/api/v1/ready", timeout=300)
        s = requests.Session()
        # one untimed request: the first forward pass pays one-off allocation costs
        s.post(srv.url + "/api/v1/segment", files={"file": ("warm.png", upload(files[-1]))}, timeout=600)
        for f in files:
            t0 = time.perf_counter()
            r = s.post(srv.url + "/api/v1/analyze", files={"file": (f.name, upload(f))}, timeout=600)
            first.append(time.perf_counter() - t0)
            r.raise_for_status()
            out = r.json()
            first_srv.append(out["timings"]["total"])
            sizes.append(f"{out['width']}x{out['height']}")
            for k in range(args.repeats):
                t0 = time.perf_counter()
                r = s.post(srv.url + "/api/v1/analyze", timeout=600,
                           json={"image_id": out["image_id"], **SETTINGS[k % len(SETTINGS)]})
                again.append(time.perf_counter() - t0)
                r.raise_for_status()
                assert "network" not in r.json()["timings"]
                again_srv.append(r.json()["timings"]["total"])
    finally:
        srv.stop()
        cache.cleanup()

    res = {"images": len(files), "sizes": sizes, "repeats": args.repeats, "device": args.device,
           "first_median_s": round(statistics.median(first), 3), "again_median_s": round(statistics.median(again), 3),
           "first_server_median_s": round(statistics.median(first_srv), 3),
           "again_server_median_s": round(statistics.median(again_srv), 3)}
    res["ratio"] = round(res["again_median_s"] / res["first_median_s"], 3)
    res["ratio_server"] = round(res["again_server_median_s"] / res["first_server_median_s"], 3)
    print(f"{len(files)} EMPS images ({', '.join(sorted(set(sizes)))}), {args.repeats} re-analyses each, "
          f"{args.device}; medians, HTTP round trip (server-side total)")
    print(f"first analysis  {res['first_median_s']:.3f} s ({res['first_server_median_s']:.3f} s)")
    print(f"re-analysis     {res['again_median_s']:.3f} s ({res['again_server_median_s']:.3f} s)")
    print(f"ratio           {res['ratio']:.3f} ({res['ratio_server']:.3f}) = re-analysis / first analysis")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
