import sys, json, numpy as np
from scipy import ndimage as ndi
sys.path.insert(0, "/work/wt-scale")
from saemi.instances import split_touching, distance_map
from saemi.settings import SplitSettings
from saemi.size import typical_diameter
subset = sys.argv[1]; s = 0.5
meta = json.load(open(f"/tmp/scale/{subset}.json"))
def wmedian(v, w):
    o = np.argsort(v); v, w = v[o], w[o]; c = np.cumsum(w); return v[np.searchsorted(c, c[-1]/2)]
for f in [0.3, 0.5, 0.7, None]:
    errs = []
    for n, m in meta.items():
        p = np.load(f"/tmp/scale/{n}_{s}.npy").astype(np.float32)/255
        fg = (1 - p[0]) > 0.5
        comp, k = ndi.label(fg)
        if f is None:
            md = max(1, round(60*s))
        else:
            dist = distance_map(fg); mx = ndi.maximum(dist, comp, np.arange(1, k+1)); ar = np.bincount(comp.ravel())[1:]
            md = max(1, round(f * 2 * wmedian(mx, ar)))
        lab = split_touching(p, SplitSettings(min_distance=md, min_size=max(1, round(20*s*s)), merge_threshold=0.6, min_relative_size=0.1), diameter=1.0)
        errs.append(abs(np.log(typical_diameter(lab)/s/m["true_median_d"])))
    e = np.array(errs); print(subset, f, "med %.3f mean %.3f w15 %d/%d" % (np.median(e), e.mean(), (e < np.log(1.15)).sum(), len(e)))
