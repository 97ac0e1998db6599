import sys, time, json
sys.path.insert(0, "/work/wt-scale")
import numpy as np
from pathlib import Path
from saemi.pipeline import default_segmenter, segment, split_and_measure
from saemi.dataset import image_file
from saemi.evaluate import evaluation_subsets, rescore
from saemi.settings import Settings
from saemi.card import read_card
D = Path("/work/shared/data/emps-train")
subset = sys.argv[1]; Ts = [tuple(float(v) for v in t.split(":")) for t in sys.argv[2].split(",")]; fracs = [float(f) for f in sys.argv[3].split(",")]
names = evaluation_subsets(D, subsets=[subset])[subset]
seg = default_segmenter()
seg.predict_resized(np.zeros((64, 64, 3), np.uint8))
base = read_card()["postprocess"]
for T in Ts:
    seg.card["size_normalisation"] = {**seg.card.get("size_normalisation", {}), "network_diameter": list(T)}
    segs, secs = {}, {}
    for n in names:
        t = time.perf_counter(); s = segment(image_file(D, n), seg); 
        split_and_measure(s, Settings.from_dict({}, defaults=base)); secs[n] = time.perf_counter() - t; segs[n] = s
    import pickle; pickle.dump((segs, secs), open(f"/tmp/scale/segs_{subset}_{T[0]:g}_{T[1]:g}.pkl", "wb"))
    for f in fracs:
        st = Settings.from_dict({"min_distance_fraction": f}, defaults=base)
        per, summ = rescore(D, segs, st, secs)
        b = summ["bins"]
        print(f"band={T} md={f:g} AP {summ['ap50']:.4f} dice {summ['dice']:.4f} dErrMed {summ['mean_d_rel_err_median']:.4f} "
              f"<15 {b['under15']['ap50']:.3f} 15-25 {b['15to25']['ap50']:.3f} 25-150 {b['25to150']['ap50']:.3f} >150 {b['over150']['ap50']:.3f} "
              f"touch {summ['touching']['ap50']:.3f} s/img {summ['seconds_per_image']:.3f}", flush=True)
