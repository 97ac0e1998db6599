import sys, pickle, copy, time
sys.path.insert(0, "/work/wt-scale")
import numpy as np
from pathlib import Path
import saemi.pipeline as P
from saemi.evaluate import rescore
from saemi.settings import Settings
from saemi.card import read_card
D = Path("/work/shared/data/emps-train")
segs, secs = pickle.load(open(sys.argv[1], "rb"))
base = read_card()["postprocess"]
def show(tag, st, segs):
    t = time.perf_counter(); per, summ = rescore(D, segs, st, secs); t = (time.perf_counter() - t) / len(segs)
    b = summ["bins"]
    print(f"{tag:28s} AP {summ['ap50']:.4f} dice {summ['dice']:.4f} dErrMed {summ['mean_d_rel_err_median']:.4f} "
          f"<15 {b['under15']['ap50']:.3f} 15-25 {b['15to25']['ap50']:.3f} 25-150 {b['25to150']['ap50']:.3f} >150 {b['over150']['ap50']:.3f} "
          f"touch {summ['touching']['ap50']:.3f} split+score s {t:.3f}", flush=True)
full = {}
for n, s in segs.items():
    f = copy.copy(s); f.network_probability = None; f.network_scale = 1.0; full[n] = f
for spec in sys.argv[2:]:
    where, kv = spec.split("/")
    vals = dict(x.split("=") for x in kv.split(",")) if kv else {}
    st = Settings.from_dict({k: float(v) if "." in v else int(v) for k, v in vals.items()}, defaults=base)
    show(spec, st, full if where == "full" else segs)
