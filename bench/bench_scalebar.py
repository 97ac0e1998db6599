"""Scale-bar reader: accuracy, seconds and Tesseract calls per image, old (git main) against new.

Run:  python bench/bench_scalebar.py [--synthetic N] [--hard M] [--ref main] [--no-real] [--dump FILE]

The old reader is ``saemi/scalebar.py`` as committed on ``--ref`` (default ``main``),
loaded from a temporary copy; the new one is the working tree's. Both run in the
same process on the same images, in turn per image:

* real: the labelled EMPS images of tests/fixtures/scalebars.json ("scalebars",
  "unlabelled" and "none"), reported per split ("tune", "holdout", "fresh" to "fresh4") and in all;
* synthetic: ``N`` images of tests/test_scalebar.py's ``synthetic_scale`` (a
  quarter with an SEM data table, some with an HFW decoy beside the bar or no label);
* hard (``--hard M``): ``M`` synthetic images of the kinds the real set's misses are
  made of, in turn: a label whose zero a particle touches ("hard-touching"), "50 nm"
  in an 8-10 px font in an instrument table ("hard-small"), and a bar whose end lies in
  a particle of its shade ("hard-buried": right is no value; a value is wrong, its
  length is not the bar's).

A hit: value and unit exact and nm_per_pixel within 3 %. Wrong: a value returned
that is more than 3 % off, or any value where the truth has none. Tesseract
calls are counted by wrapping ``pytesseract.image_to_data``. ``--dump`` writes the
new reader's label candidates (reads, features, right or wrong) as JSON, for
fitting the confidence map.
"""

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import pytesseract  # noqa: E402

from saemi import scalebar as new  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "scalebars.json"
IMAGES = REPO.parent / "shared" / "data" / "emps-train" / "images"
if not IMAGES.is_dir():
    IMAGES = Path("/work/shared/data/emps-train/images")

CALLS = {"n": 0}
_image_to_data = pytesseract.image_to_data


def _counting(*args, **kwargs):
    CALLS["n"] += 1
    return _image_to_data(*args, **kwargs)


pytesseract.image_to_data = _counting


def load_old(ref):
    """The scale-bar module as committed on ``ref``, imported from a temporary copy."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:saemi/scalebar.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "_old_scalebar.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("saemi._old_scalebar", path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "saemi"
    spec.loader.exec_module(mod)
    return mod


def judge(s, truth):
    """'hit', 'wrong', 'unread' (no value where there is one), 'ok-none' or 'wrong-none' (a value, none expected)."""
    value = None if s is None else s.value
    if truth.get("nm_per_pixel") is None:
        return "ok-none" if value is None else "wrong-none"
    if value is None or s.nm_per_pixel is None:
        return "unread"
    ok = (value == truth["value"] and s.unit == truth["unit"]
          and abs(s.nm_per_pixel / truth["nm_per_pixel"] - 1) <= 0.03)
    return "hit" if ok else "wrong"


def split_of(filename):
    """The fixture's rule: 'holdout' when sha1(filename) is odd, else 'tune'."""
    return "holdout" if int(hashlib.sha1(filename.encode()).hexdigest(), 16) % 2 else "tune"


def items(args):
    """(name, group, image, truth) of every image to run."""
    out = []
    if not args.no_real and FIXTURE.is_file() and IMAGES.is_dir():
        fx = json.loads(FIXTURE.read_text(encoding="utf-8"))
        for kind in ("scalebars", "unlabelled", "none"):
            for e in fx.get(kind, []):
                if args.split and e.get("split", split_of(e["filename"])) != args.split:
                    continue
                img = np.asarray(Image.open(IMAGES / e["filename"]).convert("RGB"))
                truth = {"value": e.get("value"), "unit": e.get("unit"), "nm_per_pixel": e.get("nm_per_pixel"),
                         "length": e.get("bar_length_px")}
                if truth["value"] is not None:
                    truth["value"] = float(truth["value"])
                out.append((e["filename"], "real-" + e.get("split", split_of(e["filename"])), img, truth))
    if args.synthetic:
        import test_scalebar as T

        for k in range(args.synthetic):
            kind = ("plain", "plain", "table", ["decoy", "unlabelled-decoy", "table"][(k // 4) % 3])[k % 4]
            img, truth = T.synthetic_scale(20000 + k, table=kind != "plain", decoy="decoy" in kind,
                                           unlabelled=kind.startswith("unlabelled"))
            out.append((f"syn{k}", "syn-" + kind, img, truth))
    if args.hard:
        import test_scalebar as T

        fonts = T.SYN_FONTS
        for k in range(args.hard):
            kind = ("touching", "small", "buried")[k % 3]
            f = fonts[(k // 3) % len(fonts)]
            if kind == "touching":
                img = T.label_touching_particle(40 + k, f)
                truth = {"value": 200.0, "unit": "nm", "nm_per_pixel": 200 / 90, "length": 90.0}
            elif kind == "small":
                img = T.small_font_table(8 + (k // 3) % 3, seed=40 + k, font_file=f)
                truth = {"value": 50.0, "unit": "nm", "nm_per_pixel": 50 / 63, "length": 63.0}
            else:
                img = T.bar_end_in_particle(40 + k, font_file=f)
                truth = {"value": 200.0, "unit": "nm", "nm_per_pixel": 200 / 150, "length": 150.0}
            out.append((f"hard{k}", "hard-" + kind, img, truth))
    return out


def candidate_record(c, truth):
    ln = c["line"]
    value = c["value"]
    right = None
    if value is not None:
        nm = value[0] * new.UNITS_NM[value[1]] / ln.bar.length
        right = (truth.get("nm_per_pixel") is not None and value[0] == truth["value"] and value[1] == truth["unit"]
                 and abs(nm / truth["nm_per_pixel"] - 1) <= 0.03)
    return {"reads": c["reads"], "value": value, "parsed": c["parsed"], "features": c["features"],
            "confidence": c["confidence"], "right": right, "where": ln.where, "mode": ln.mode,
            "height": ln.height, "bar_length": ln.bar.length, "bracket": ln.bar.bracket,
            "tick_width": ln.bar.tick_width}


def ablate(name):
    """Switch one cross-check of the new reader off (to measure what it removes)."""
    import dataclasses
    import re

    if name == "geometry":  # short bar, bar in text, wide label: every line near a bar is read
        orig = new._label_lines
        new._label_lines = lambda *a, **k: [dataclasses.replace(ln, reason="") for ln in orig(*a, **k)]
    elif name == "value-prior":
        new.canonical_value = lambda value: 1.0
    elif name == "table":
        orig_matches = new.label_matches
        new.label_matches = lambda text: [(v, u, False) for v, u, _ in orig_matches(text)]
        new._TABLE_TOKEN_RE = re.compile(r"(?!x)x")
    elif name == "agreement":
        new.CONFIDENCE_WEIGHTS = dict(new.CONFIDENCE_WEIGHTS, agree=0.0, disagree=0.0)
    elif name == "bracket":  # the v2 convention: brackets between tick centres
        orig_edges = new._tick_edges

        def centres(*a, **k):
            r = orig_edges(*a, **k)
            return None if r is None else (r[0] + r[2] / 2, r[1] - r[2] / 2, r[2])
        new._tick_edges = centres
    elif name == "confusions":  # digits and "nm"/"µm"/"um" only
        new._DIGIT_LOOKALIKES = str.maketrans({})
        new._LABEL_RE = re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)?)\s?(nm|[µu]m)(?![A-Za-z])")
    elif name == "join-halves":
        new._join_halves = lambda line, bars, grey: line
    elif name == "threshold":
        new.ACCEPT_CONFIDENCE = 0.0
    else:
        raise SystemExit(f"unknown cross-check {name!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", type=int, default=40, help="synthetic images (default 40)")
    ap.add_argument("--ref", default="main", help="git ref of the old reader (default main)")
    ap.add_argument("--hard", type=int, default=0,
                    help="synthetic images of the real misses' kinds: touching particle, small font, buried end")
    ap.add_argument("--no-real", action="store_true", help="skip the real fixture images")
    ap.add_argument("--no-old", action="store_true", help="run the new reader only")
    ap.add_argument("--dump", help="write the new reader's label candidates to this JSON file")
    ap.add_argument("--split", choices=("tune", "holdout", "fresh", "fresh2", "fresh3", "fresh4"), help="real images of this split only")
    ap.add_argument("--ablate", action="append", default=[],
                    help="switch a cross-check off: geometry, value-prior, table, agreement, bracket, "
                         "confusions, join-halves, threshold (repeatable)")
    args = ap.parse_args()
    for name in args.ablate:
        ablate(name)
    readers = {"new": new.detect_scale}
    if not args.no_old:
        readers = {"old": load_old(args.ref).detect_scale, **readers}
    runs = items(args)
    tally = {r: {} for r in readers}
    times = {r: [] for r in readers}
    calls = {r: [] for r in readers}
    group_times = {r: {} for r in readers}
    dump, lines = [], []
    for name, group, img, truth in runs:
        row = []
        for r, detect in readers.items():
            stats = {}
            CALLS["n"] = 0
            t = time.perf_counter()
            s = detect(img, stats=stats) if r == "new" else detect(img)
            times[r].append(time.perf_counter() - t)
            for g in (group.split("-")[0] + "-all", "all"):
                group_times[r].setdefault(g, []).append(times[r][-1])
            calls[r].append(CALLS["n"])
            verdict = judge(s, truth)
            for g in (group, group.split("-")[0] + "-all", "all"):
                tally[r].setdefault(g, {}).setdefault(verdict, 0)
                tally[r][g][verdict] += 1
            row.append(f"{r}: {verdict:7s} {None if s is None else (s.value, s.unit, s.text)}")
            if r == "new" and args.dump:
                dump.append({"name": name, "group": group, "truth": truth,
                             "candidates": [candidate_record(c, truth) for c in stats.get("candidates", [])]})
        lines.append(f"  {name:16s} {group:18s} truth {truth.get('value')} {truth.get('unit')}: " + " | ".join(row))
    print("per image:\n" + "\n".join(lines))
    print("\naccuracy (hit: value+unit exact and nm/px within 3 %; wrong: a value >3 % off or where none is)")
    groups = sorted({g for r in tally for g in tally[r]})
    for g in groups:
        for r in readers:
            t = tally[r].get(g, {})
            labelled = t.get("hit", 0) + t.get("wrong", 0) + t.get("unread", 0)
            n = sum(t.values())
            wrong = t.get("wrong", 0) + t.get("wrong-none", 0)
            print(f"  {g:22s} {r}: {n:3d} images, {labelled:3d} labelled: hit {t.get('hit', 0):3d} "
                  f"({t.get('hit', 0) / max(labelled, 1):6.1%}), wrong {wrong:3d} ({wrong / max(n, 1):5.1%} of images; "
                  f"{t.get('wrong-none', 0)} on images without a label), unread {t.get('unread', 0):3d}, "
                  f"no value where none {t.get('ok-none', 0):3d}")
    print("\nspeed (mean per image, same images, same run)")
    for r in readers:
        print(f"  {r}: {np.mean(times[r]):.3f} s/image, {np.mean(calls[r]):.2f} Tesseract calls/image "
              f"(max {max(calls[r])}), {len(times[r])} images; "
              + ", ".join(f"{g} {np.mean(v):.3f} s" for g, v in sorted(group_times[r].items()) if g != "all"))
    if args.dump:
        Path(args.dump).write_text(json.dumps(dump, ensure_ascii=False, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
