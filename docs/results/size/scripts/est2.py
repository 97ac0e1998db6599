import sys, json, numpy as np
sys.path.insert(0, "/work/wt-scale")
subset = sys.argv[1]
R = json.load(open(f"/tmp/scale/est_{subset}.json"))
scales = [0.125, 0.25, 0.5, 1.0]
def err(vals): 
    e = np.array([abs(np.log(v/t)) for v, t in vals]); return "med %.3f mean %.3f w15 %d/%d" % (np.median(e), e.mean(), (e < np.log(1.15)).sum(), len(e))
print("E1@0.5", err([(r["0.5"]["E1"], r["true"]) for r in R.values()]))
for T in [24, 32, 48, 64, 96]:
    vals = []
    for r in R.values():
        d = r["0.5"]["E1"]
        s = min(scales, key=lambda s: abs(np.log(d * s / T)))
        d2 = r[str(s)]["E1"]
        vals.append((d2, r["true"]))
    print("fixed-point T", T, err(vals))
print("median over scales", err([(np.nanmedian([r[str(s)]["E1"] for s in scales]), r["true"]) for r in R.values()]))
print("median .125-.5", err([(np.nanmedian([r[str(s)]["E1"] for s in scales[:3]]), r["true"]) for r in R.values()]))
