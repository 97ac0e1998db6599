import sys, json, numpy as np, cv2
from scipy import ndimage as ndi
sys.path.insert(0, "/work/wt-scale")
from saemi.instances import split_touching, typical_area, distance_map
from saemi.settings import SplitSettings
from skimage.morphology import h_maxima
subset = sys.argv[1]
meta = json.load(open(f"/tmp/scale/{subset}.json"))
scales = [0.125, 0.25, 0.5, 1.0]
def wmedian(v, w):
    o = np.argsort(v); v, w = v[o], w[o]; c = np.cumsum(w); return v[np.searchsorted(c, c[-1]/2)]
def est(p, s):
    fg = (1 - p[0]) > 0.5
    res = {}
    # E1 split labels typical area
    lab = split_touching(p, SplitSettings(min_distance=max(1, int(60*s)), merge_threshold=0.6, min_size=max(1,int(20*s*s)), min_relative_size=0.1))
    ta = typical_area(lab); res["E1"] = 2*np.sqrt(ta/np.pi)/s if ta else np.nan
    # E3 per fg component max DT, area-weighted median
    comp, n = ndi.label(fg)
    if n == 0: return {k: np.nan for k in ["E1","E3","E2","E4"]} | {"fgfrac": 0.0}
    dist = distance_map(fg)
    mx = ndi.maximum(dist, comp, np.arange(1, n+1)); ar = np.bincount(comp.ravel())[1:]
    res["E3"] = 2*wmedian(mx, ar)/s
    # E2 h-maxima peaks of DT (h=1px), weighted by r^2
    q = np.round(dist*4).astype(np.uint16)
    pk = h_maxima(q, 4).astype(bool)
    pl, m = ndi.label(pk)
    if m:
        r = ndi.maximum(dist, pl, np.arange(1, m+1)); res["E2"] = 2*wmedian(r, r**2)/s
    else: res["E2"] = np.nan
    # E4: 2*3*mean DT over fg (disc: mean dist = r/3)
    res["E4"] = 6*dist[fg].mean()/s
    res["fgfrac"] = float(fg.mean())
    res["conf"] = float(np.mean(np.max(p, 0)[fg])) if fg.any() else 0.0
    return res
rows = {}
for n, m in meta.items():
    rows[n] = {s: est(np.load(f"/tmp/scale/{n}_{s}.npy").astype(np.float32)/255, s) for s in scales}
    rows[n]["true"] = m["true_median_d"]
json.dump({n: {str(k): v for k, v in r.items()} for n, r in rows.items()}, open(f"/tmp/scale/est_{subset}.json","w"), default=float)
for key in ["E1","E2","E3","E4"]:
    for s in scales:
        err = [abs(np.log(r[s][key]/r["true"])) for r in rows.values() if np.isfinite(r[s][key])]
        print(key, s, "median|log err| %.3f  within15%% %d/%d" % (np.median(err), sum(e < np.log(1.15) for e in err), len(rows)))
for n, r in rows.items():
    print(n, "%.0f" % r["true"], " ".join("%s:%s" % (s, ",".join("%.0f" % r[s][k] for k in ["E1","E2","E3"])) for s in scales), " conf", ",".join("%.2f" % r[s]["conf"] for s in scales))
