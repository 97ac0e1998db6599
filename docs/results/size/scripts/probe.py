import sys, json, time, numpy as np, cv2
from pathlib import Path
sys.path.insert(0, "/work/wt-scale")
from saemi.pipeline import default_segmenter, segment
from saemi.dataset import image_file, read_label_image
from saemi.evaluate import evaluation_subsets
from saemi.banner import find_banner, remove_banner
from saemi.io import read_micrograph
D = Path("/work/shared/data/emps-train")
subset = sys.argv[1]
scales = [float(s) for s in sys.argv[2].split(",")]
names = evaluation_subsets(D, subsets=[subset])[subset]
seg = default_segmenter()
out = {}
for n in names:
    img, _ = read_micrograph(str(image_file(D, n)))
    cleaned, box = remove_banner(img, find_banner(img))
    truth = read_label_image(D / "segmaps" / f"{n}.png")
    areas = np.bincount(truth.ravel())[1:]; areas = areas[areas > 0]
    d = 2 * np.sqrt(areas / np.pi)
    rec = {"true_median_d": float(np.median(d)), "n": int(len(d)), "shape": list(img.shape[:2])}
    for s in scales:
        h, w = img.shape[:2]; sh, sw = max(32, round(h*s)), max(32, round(w*s))
        small = cv2.resize(cleaned, (sw, sh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        t = time.perf_counter(); p = seg.predict_resized(small); t = time.perf_counter() - t
        np.save(f"/tmp/scale/{n}_{s}.npy", (p * 255).round().astype(np.uint8))
        rec[f"t_{s}"] = t
    out[n] = rec
    print(n, rec, flush=True)
json.dump(out, open(f"/tmp/scale/{subset}.json", "w"))
