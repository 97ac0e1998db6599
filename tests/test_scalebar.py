"""Scale-bar detection: synthetic micrographs with drawn bars and labels, and real EMPS images.

Tests that read labels need the Tesseract binary (Debian package ``tesseract-ocr``)
and skip with that reason when it is missing; bar measurement and the no-bar
cases run everywhere.
"""

import json
import logging
import shutil
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from saemi import scalebar
from saemi.scalebar import Scale, detect_scale, find_bars, parse_label

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "scalebars.json"
REAL_DIR = Path(__file__).resolve().parents[2] / "shared/data/emps-train/images"
FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation")]

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="the Tesseract OCR binary is not installed (apt-get install tesseract-ocr); labels cannot be read")


def font(name, size):
    """A TrueType font by file name, or PIL's built-in scalable default."""
    for d in FONT_DIRS:
        if (d / name).is_file():
            return ImageFont.truetype(str(d / name), size)
    return ImageFont.load_default(size=size)


def micrograph(h=512, w=640, seed=0, bright_particles=False, n=25):
    """Noisy grey background with blurred round particles: (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 125.0) + 8 * np.sin(xx / 37.0) + 6 * np.cos(yy / 53.0)
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 40)
        d = np.hypot(yy - cy, xx - cx)
        shade = rng.uniform(190, 235) if bright_particles else rng.uniform(25, 70)
        img = np.where(d < r, shade + 10 * (d / r), img)
    img += rng.normal(0, 9, img.shape)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def draw_scale(img, x0, y, length, thick, colour, label, fnt, where="above", ticks=False,
               box=None):
    """Draw a bar (columns x0:x0+length, rows y:y+thick) and its label; returns the image."""
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    if box is not None:  # a plain box behind bar and label
        d.rectangle(box, fill=box_fill(colour))
    d.rectangle([x0, y, x0 + length - 1, y + thick - 1], fill=colour)
    if ticks:
        th = 3 * thick + 4
        for tx in (x0, x0 + length - 2):
            d.rectangle([tx, y + thick // 2 - th // 2, tx + 1, y + thick // 2 + th // 2], fill=colour)
    l, t, r, b = d.textbbox((0, 0), label, font=fnt)
    cx = x0 + length / 2 - (r + l) / 2
    gap = max(4, thick)
    ty = (y - gap - b) if where == "above" else (y + thick + gap - t)
    d.text((cx, ty), label, fill=colour, font=fnt)
    return np.asarray(pil).copy()


def box_fill(colour):
    return (255, 255, 255) if colour == (0, 0, 0) else (0, 0, 0)


# (id, value, unit text, expected unit, font file, font size, bar length, thickness,
#  colour, label position, banner, ticks, bright particles)
CASES = [
    ("white-sans-nm", "200", " nm", "nm", "DejaVuSans.ttf", 22, 150, 6, "white", "above", None, False, False),
    ("black-serif-um", "2", " µm", "µm", "DejaVuSerif-Bold.ttf", 26, 180, 8, "black", "below", None, False, True),
    ("white-liberation-500nm", "500", "nm", "nm", "LiberationSans-Bold.ttf", 24, 120, 5, "white", "below", None, False, False),
    ("black-mono-0.5um", "0.5", " μm", "µm", "DejaVuSansMono-Bold.ttf", 22, 96, 4, "black", "above", None, True, True),
    ("white-1um-ascii", "1", "um", "µm", "LiberationSans-Regular.ttf", 24, 210, 7, "white", "above", None, False, False),
    ("thin-line-ticks-10nm", "10", " nm", "nm", "DejaVuSans-Bold.ttf", 20, 64, 2, "white", "above", None, True, False),
    ("banner-black-100nm", "100", " nm", "nm", "DejaVuSans.ttf", 20, 140, 5, "white", "above", "black", False, False),
    ("banner-white-5um", "5", " µm", "µm", "LiberationSerif-Bold.ttf", 22, 160, 6, "black", "below", "white", False, True),
    ("default-font-50nm", "50", " nm", "nm", "(pil-default)", 24, 110, 6, "black", "above", None, False, True),
    ("boxed-black-on-white-20nm", "20", " nm", "nm", "DejaVuSans-Bold.ttf", 20, 100, 6, "black", "below", "box", False, False),
]


def make_case(case, h=512, w=640):
    """Render a synthetic micrograph for one CASES row; returns (image, truth dict)."""
    (_, value, unit_text, unit, font_file, size, length, thick, colour, where, banner, ticks, bright) = case
    img = micrograph(h, w, seed=zlib.crc32(case[0].encode()) % 1000, bright_particles=bright)
    rgb = (255, 255, 255) if colour == "white" else (0, 0, 0)
    fnt = font(font_file, size)
    x0 = w - length - 40
    y = h - 60 if where == "above" else h - 95
    box = None
    if banner in ("black", "white"):
        band = 0 if banner == "black" else 255
        img[h - 80:] = band
        pil = Image.fromarray(img)
        ImageDraw.Draw(pil).text((12, h - 55), "15.0kV  x50,000  WD 8.1mm", fill=rgb, font=font("DejaVuSans.ttf", 16))
        img = np.asarray(pil).copy()
        y = h - 30 if where == "above" else h - 70
    elif banner == "box":
        box = [x0 - 14, y - 8, x0 + length + 14, y + thick + size + 24]
    img = draw_scale(img, x0, y, length, thick, rgb, value + unit_text, fnt, where, ticks, box)
    nm = float(value) * (1000.0 if unit == "µm" else 1.0)
    # a bracket bar |—| is measured between the outer edges of its ticks (they sit at the very ends)
    measured = float(length)
    return img, {"value": float(value), "unit": unit, "length": measured, "nm_per_pixel": nm / measured,
                 "box": (y, y + thick, x0, x0 + length)}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bar_is_measured_without_ocr(case):
    img, truth = make_case(case)
    s = detect_scale(img, ocr=False)
    assert s is not None
    assert abs(s.bar_length_px - truth["length"]) <= 2
    y0, y1, x0, x1 = s.bar_box
    ty0, ty1, tx0, tx1 = truth["box"]
    assert abs(x0 - tx0) <= 2 and abs(x1 - tx1) <= 2 and y0 <= ty1 and y1 >= ty0
    assert s.value is None and s.unit is None and s.nm_per_pixel is None


@needs_tesseract
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_synthetic_scale_is_read(case):
    img, truth = make_case(case)
    s = detect_scale(img)
    assert s is not None, "no scale bar found"
    assert abs(s.bar_length_px - truth["length"]) <= 2
    assert s.unit == truth["unit"], s.text
    assert s.value == truth["value"], s.text
    assert s.nm_per_pixel == pytest.approx(truth["nm_per_pixel"], rel=0.01)
    assert s.label_box is not None and 0 < s.confidence <= 1


def bracket_image(left, right, tick_width, thick=2, tick_reach=8, factor=4, bright=True, ticks=True, seed=11):
    """A micrograph with a bracket bar |—| drawn at ``factor`` times the resolution and area-averaged down.

    ``left``/``right`` are the outer ends, ``tick_width`` the tick width, all in
    final pixels (fractions allowed); returns (image, distance between tick centres).
    The reader measures a bracket between the outer edges: ``right - left``.
    """
    h, w = 256, 480
    big = np.repeat(np.repeat(micrograph(h, w, seed=seed, bright_particles=not bright, n=12)[..., 0]
                              .astype(np.float64), factor, 0), factor, 1)
    ink = 255.0 if bright else 0.0
    y = 220 * factor
    L, R, T = (int(round(v * factor)) for v in (left, right, tick_width))
    big[y:y + thick * factor, L:R] = ink
    if ticks:
        for tx in (L, R - T):
            big[y - tick_reach * factor:y + (thick + tick_reach) * factor, tx:tx + T] = ink
    small = big.reshape(h, factor, w, factor).mean(axis=(1, 3))
    img = np.repeat(np.clip(np.round(small), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    centres = (R - T / 2) / factor - (L + T / 2) / factor
    return img, centres


@pytest.mark.parametrize("left,right,tick_width,thick,bright", [
    (300, 420, 2, 2, True), (300.25, 420.75, 1.5, 1, True), (250.5, 330, 3, 2, False), (200, 450.5, 2.25, 3, True),
])
def test_bracket_bar_is_measured_between_outer_tick_edges(left, right, tick_width, thick, bright):
    img, centres = bracket_image(left, right, tick_width, thick, bright=bright)
    s = detect_scale(img, ocr=False)
    assert s is not None
    assert abs(s.bar_length_px - (right - left)) <= 0.25, (s.bar_length_px, centres, right - left)
    # a plain bar of the same outer length is still measured end to end
    plain, _ = bracket_image(left, right, tick_width, thick, bright=bright, ticks=False)
    p = detect_scale(plain, ocr=False)
    assert abs(p.bar_length_px - (right - left)) <= 0.25, (p.bar_length_px, right - left)


def test_text_beside_a_bar_end_is_no_tick():
    img = micrograph(seed=9)
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    d.rectangle([420, 450, 579, 455], fill=(255, 255, 255))
    d.text((540, 420), "1 µm", fill=(255, 255, 255), font=font("DejaVuSans.ttf", 22))  # label over the right end
    s = detect_scale(np.asarray(pil), ocr=False)
    assert s is not None and abs(s.bar_length_px - 160) <= 1


@pytest.mark.parametrize("seed,bright", [(1, False), (2, True), (3, False)])
def test_no_bar_gives_none(seed, bright):
    img = micrograph(seed=seed, bright_particles=bright, n=40)
    assert detect_scale(img) is None


def test_text_without_bar_gives_none():
    img = micrograph(seed=4)
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((400, 440), "200 nm", fill=(255, 255, 255), font=font("DejaVuSans.ttf", 24))
    assert detect_scale(np.asarray(pil)) is None


def test_frame_lines_and_banner_edges_are_not_bars():
    img = micrograph(seed=5)
    img[0:2] = 255          # a frame line along the top edge
    img[:, 300:302] = 0     # a vertical line
    img[440:] = 0           # a dark data bar with text but no scale bar
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((20, 465), "SEM HV 15.0 kV", fill=(255, 255, 255), font=font("DejaVuSans.ttf", 18))
    assert detect_scale(np.asarray(pil), ocr=False) is None


def test_missing_tesseract_is_a_warning_and_the_bar_is_kept(monkeypatch, caplog):
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    scalebar.tesseract_available.cache_clear()
    try:
        img, truth = make_case(CASES[0])
        with caplog.at_level(logging.WARNING, logger="saemi.scalebar"):
            first = detect_scale(img)
            second = detect_scale(img)
        warnings = [r for r in caplog.records if "Tesseract" in r.getMessage()]
        assert len(warnings) == 1 and "tesseract-ocr" in warnings[0].getMessage()
        for s in (first, second):
            assert s is not None and abs(s.bar_length_px - truth["length"]) <= 2
            assert s.value is None and s.unit is None and s.nm_per_pixel is None
    finally:
        scalebar.tesseract_available.cache_clear()


@pytest.mark.parametrize("text,expected", [
    ("200 nm", (200.0, "nm")), ("500nm", (500.0, "nm")), ("2 µm", (2.0, "µm")), ("0.5 μm", (0.5, "µm")),
    ("1um", (1.0, "µm")), ("10 nm", (10.0, "nm")), ("2,5 um", (2.5, "µm")), ("1 pm", (1.0, "µm")),
    ("05um", (0.5, "µm")), ("1.0 µm", (1.0, "µm")), ("nm", None), ("200", None), ("", None),
])
def test_parse_label(text, expected):
    assert parse_label(text) == expected


def test_to_dict_is_json_safe():
    s = Scale(np.float32(100.5), 200.0, "nm", 1.99, (np.int64(1), 5, 10, 110), None, 0.9, "200 nm")
    d = json.loads(json.dumps(s.to_dict()))
    assert d["bar_box"] == [1, 5, 10, 110] and d["unit"] == "nm" and d["label_box"] is None
    assert set(d) == {"bar_length_px", "value", "unit", "nm_per_pixel", "bar_box", "label_box", "confidence", "text",
                      "status", "reason"}
    assert d["status"] == "read" and Scale(10.0).status == "unread"


def test_bar_search_is_fast():
    img, _ = make_case(CASES[0], h=768, w=1024)
    find_bars(img)  # warm-up
    t = time.perf_counter()
    for _ in range(3):
        find_bars(img)
    assert (time.perf_counter() - t) / 3 < 0.5


# --------------------------------------------------------------------------- real images

def _load_fixture():
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


# The 12 labelled bars, 1 unlabelled bar and 4 bar-less images test_real_images_hit_rate was
# written for (2 % tolerance, 80 %); the whole fixture is judged by test_real_read_and_wrong_rates.
ORIGINAL = {"00655d9628.png", "032bd4a6b1.png", "15a3ba1c51.png", "1206963ed7.png", "22c776b059.png",
            "1b935635dd.png", "7988097925.png", "7ecd3c2ab9.png", "7f1a5b0782.png", "7f50b86c4b.png",
            "80d6a1f25a.png", "82b9b9c2af.png", "0144266d21.png", "0fa38de2c7.png", "7ab1f4b7ba.png",
            "85743c45d1.png", "0113230c21.png"}


def split_of(entry):
    """The fixture's split: 'holdout' when sha1(filename) is odd, else 'tune'."""
    import hashlib

    return entry.get("split") or ("holdout" if int(hashlib.sha1(entry["filename"].encode()).hexdigest(), 16) % 2
                                  else "tune")


@pytest.fixture(scope="module")
def real_dir():
    if not REAL_DIR.is_dir():
        pytest.skip(f"EMPS images not found at {REAL_DIR} (shared data folder absent)")
    return REAL_DIR


def _real(real_dir, name):
    return np.asarray(Image.open(real_dir / name).convert("RGB"))


_READS = {}


def _read(real_dir, name, ocr=True):
    """detect_scale of a real image, computed once per test session."""
    if (name, ocr) not in _READS:
        _READS[name, ocr] = detect_scale(_real(real_dir, name), ocr=ocr)
    return _READS[name, ocr]


@needs_tesseract
@pytest.mark.slow
def test_real_images_hit_rate(real_dir, capsys):
    """A hit: value and unit exact, nm_per_pixel within 2 %. At least 80 % of the original 12 must hit."""
    entries = [e for e in _load_fixture()["scalebars"] if e["filename"] in ORIGINAL]
    hits, lines = 0, []
    for e in entries:
        s = _read(real_dir, e["filename"])
        ok = (s is not None and s.value == e["value"] and s.unit == e["unit"]
              and s.nm_per_pixel is not None and abs(s.nm_per_pixel / e["nm_per_pixel"] - 1) <= 0.02)
        hits += ok
        got = "none" if s is None else f"{s.bar_length_px:.1f} px, {s.value} {s.unit}, text {s.text!r}"
        lines.append(f"{'hit ' if ok else 'MISS'} {e['filename']}: truth {e['bar_length_px']} px "
                     f"{e['value']} {e['unit']}; got {got}")
    rate = hits / len(entries)
    with capsys.disabled():
        print(f"\nscale bars on the original real images: {hits} of {len(entries)} ({rate:.0%})\n  "
              + "\n  ".join(lines))
    assert rate >= 0.8, "\n".join(lines)


def _verdict(s, e):
    """'hit', 'wrong' (a value >3 % off, or a value where the truth has none) or 'unread'."""
    value = None if s is None else s.value
    if e.get("nm_per_pixel") is None:
        return "wrong" if value is not None else "none-ok"
    if value is None or s.nm_per_pixel is None:
        return "unread"
    ok = value == e["value"] and s.unit == e["unit"] and abs(s.nm_per_pixel / e["nm_per_pixel"] - 1) <= 0.03
    return "hit" if ok else "wrong"


# Measured on the fixture and asserted at the measured values (the test prints the figures
# per split). Tune and holdout: 84 labelled bars, 11 unlabelled bars and 34 bar-less images;
# fresh (labelled for reader v4 after holdout image 2b9ccd5679 had informed a rule): 24
# labelled bars, 2 unlabelled, 5 bar-less; fresh2 (labelled blind for reader v5: 27/37 with v5
# before any of its images was looked at, 28/37 with the thick-bar change, then its misses informed
# the ruler fixes of v5.1): 37 labelled bars, 1 unlabelled, 4 bar-less; fresh3 and fresh4 (labelled
# blind, measured once with v5.1, no rule made from them): 41 labelled bars, 5 bar-less; 33 labelled
# bars, 1 unlabelled, 3 bar-less. The issue's
# targets are >= 90 % hits and <= 2 % wrong: met on tune + holdout, not on the fresh splits
# (misses: bars not found (bars ending on particles, faint bars), labels over particles, in a box
# apart, stacked, pixel-font and blurred labels, Hitachi points too faint to find).
REAL_MIN_HIT_RATE = 0.916  # tune + holdout: measured 77 of 84 (91.7 %): tune 40/42, holdout 37/42; v4 75, v3 73, v2 64, v1 61
REAL_MIN_HIT_RATE_FRESH = {  # measured (v5.1; v4 in brackets)
    "fresh": 0.75,  # 18 of 24 (15)
    "fresh2": 0.81,  # 30 of 37 (27)
    "fresh3": 0.756,  # 31 of 41 (28), blind
    "fresh4": 0.727,  # 24 of 33 (22), blind
}
REAL_MAX_WRONG_RATE = 0.0  # measured 0 of 285 images (v4 0 of 285); v3 1 of 160 (fresh ef6bbe7612), v2 0 of 129, v1 7 of 129


@needs_tesseract
@pytest.mark.slow
def test_real_read_and_wrong_rates(real_dir, capsys):
    """Hits among labelled bars (tune + holdout, and each fresh split) and wrong reads among all real images."""
    fx = _load_fixture()
    tally, lines = {}, []
    for kind in ("scalebars", "unlabelled", "none"):
        for e in fx.get(kind, []):
            s = _read(real_dir, e["filename"])
            v = _verdict(s, e)
            for g in (split_of(e), "all"):
                tally.setdefault(g, {}).setdefault(v, 0)
                tally[g][v] += 1
            if v in ("wrong", "unread"):
                got = "none" if s is None else f"{s.bar_length_px:.1f} px {s.value} {s.unit} {s.status} {s.text!r}"
                lines.append(f"{v:6s} {split_of(e):7s} {e['filename']}: truth {e.get('value')} {e.get('unit')}; "
                             f"got {got} {'' if s is None else s.reason}")
    report = []
    for g in ("tune", "holdout", *REAL_MIN_HIT_RATE_FRESH, "all"):
        t = tally.get(g, {})
        n = sum(t.values())
        report.append(f"{g}: {n} images, hit {t.get('hit', 0)}, wrong {t.get('wrong', 0)}, "
                      f"unread {t.get('unread', 0)}, no value where none {t.get('none-ok', 0)}")
    with capsys.disabled():
        print("\nreal images (hit: value+unit exact, nm/px within 3 %):\n  " + "\n  ".join(report + lines))
    msg = "\n".join(report + lines)
    original = sum(tally.get(g, {}).get("hit", 0) for g in ("tune", "holdout"))
    n_original = sum(split_of(e) in ("tune", "holdout") for e in fx["scalebars"])
    assert original / n_original >= REAL_MIN_HIT_RATE, msg
    for split, rate in REAL_MIN_HIT_RATE_FRESH.items():
        n = sum(split_of(e) == split for e in fx["scalebars"])
        assert tally.get(split, {}).get("hit", 0) / n >= rate, msg
    t = tally["all"]
    assert t.get("wrong", 0) / sum(t.values()) <= REAL_MAX_WRONG_RATE, msg


@pytest.mark.slow
def test_real_bar_lengths(real_dir):
    """Bar measurement alone (no OCR): the detected bar matches the truth within 2 px (81 of 84 measured).

    On the tune and holdout splits it was measured on; the fresh split's bars are judged
    by test_real_read_and_wrong_rates only (several are not found: rulers without a base
    line, bars whose end lies on a particle of their shade).

    The misses: 3 bars with the label inside them (only one half is found without the
    label; detect_scale joins the halves when it reads the label). Bracket bars are measured
    between the outer edges of their ticks, as the fixture is (77 of 84 when the reader
    measured tick centres).
    """
    entries = [e for e in _load_fixture()["scalebars"] if split_of(e) in ("tune", "holdout")]
    good = 0
    for e in entries:
        s = _read(real_dir, e["filename"], ocr=False)
        good += s is not None and abs(s.bar_length_px - e["bar_length_px"]) <= 2
    assert good / len(entries) >= 0.96


@pytest.mark.slow
def test_real_images_without_a_bar(real_dir):
    """Tune and holdout images without a bar give None; their unlabelled bars are measured and left unread.

    The fresh splits' images are judged by test_real_read_and_wrong_rates (no value where
    there is none); a panel letter's serif or a rod-shaped particle (95e201a1fe) there may come
    back as an unread bar candidate.
    """
    fx = _load_fixture()
    for e in [e for e in fx["none"] if split_of(e) in ("tune", "holdout")]:
        assert _read(real_dir, e["filename"]) is None, e["filename"]
    for e in [e for e in fx["unlabelled"] if split_of(e) in ("tune", "holdout")]:
        s = _read(real_dir, e["filename"])
        assert s is not None and abs(s.bar_length_px - e["bar_length_px"]) <= 2, (e["filename"], s)
        assert s.value is None and s.nm_per_pixel is None and s.status == "unread", (e["filename"], s)


# --------------------------------------------------------------------------- varied synthetic set

SYN_FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
             "DejaVuSansCondensed.ttf", "DejaVuSansMono.ttf", "LiberationSans-Regular.ttf",
             "LiberationSans-Bold.ttf", "LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf",
             "LiberationSansNarrow-Regular.ttf", "LiberationMono-Regular.ttf"]
SYN_VALUES = [(10, "nm"), (20, "nm"), (50, "nm"), (100, "nm"), (200, "nm"), (250, "nm"), (300, "nm"),
              (500, "nm"), (0.5, "µm"), (1, "µm"), (2, "µm"), (3, "µm"), (5, "µm"), (10, "µm"), (1.0, "µm")]
TABLE_ROWS = ["HV 15.0 kV   WD 5.1 mm   HFW {hfw}   mag 50 000 x   det ETD",
              "EHT = 5.00 kV   WD = 8.2 mm   Mag = 25.00 K X   Signal A = InLens",
              "HFW {hfw}   spot 3.0   HV 20.00 kV   12/03/2019 14:22"]


def _fmt_value(value, unit, rng):
    v = f"{value:g}" if not (isinstance(value, float) and value == 1.0 and rng.random() < 0.3) else "1.0"
    u = unit if unit == "nm" else ["µm", "μm", "um"][int(rng.integers(3))]
    return v + (" " if rng.random() < 0.7 else "") + u


def synthetic_scale(seed, table=False, decoy=False, unlabelled=False):
    """A random micrograph with a scale bar and label (varied font, size, place, contrast, box, ticks, blur).

    With ``table`` an SEM data table row (HV, WD, HFW, mag ...) is drawn in a data bar next
    to the scale bar, its HFW value a plausible decoy; with ``decoy`` too, the row ends just
    left of the bar, at its height ("HFW 1.8 µm  ____"). ``unlabelled`` draws no label
    (truth value None). Returns (image, truth dict).
    """
    rng = np.random.default_rng(seed)
    h, w = int(rng.choice([480, 600, 768])), int(rng.choice([640, 800, 1024]))
    img = micrograph(h, w, seed=seed % 997, bright_particles=bool(rng.random() < 0.5), n=int(rng.integers(10, 35)))
    if rng.random() < 0.3:  # lower contrast background
        img = np.clip(0.6 * img.astype(float) + 50, 0, 255).astype(np.uint8)
    value, unit = SYN_VALUES[int(rng.integers(len(SYN_VALUES)))]
    label = _fmt_value(value, unit, rng)
    fnt_size = int(rng.integers(14, 34))
    fnt = font(SYN_FONTS[int(rng.integers(len(SYN_FONTS)))], fnt_size)
    length = int(rng.integers(max(60, 3 * fnt_size), min(320, w // 3)))
    thick = int(rng.integers(2, 10))
    colour = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
    where = "above" if rng.random() < 0.5 else "below"
    ticks = bool(rng.random() < 0.2)
    box = None
    if table:
        band_h = int(fnt_size * 3.2)
        band = 0 if colour == (255, 255, 255) else 255
        img[h - band_h:] = band
        x0 = w - length - int(rng.integers(20, 60))
        y = h - band_h + int(0.55 * band_h) if where == "above" else h - band_h + int(0.25 * band_h)
        pil = Image.fromarray(img)
        row = TABLE_ROWS[int(rng.integers(len(TABLE_ROWS)))].format(hfw=f"{rng.choice([1.8, 3.2, 6.4, 12.7])} µm")
        tf = font(SYN_FONTS[int(rng.integers(len(SYN_FONTS)))], max(12, fnt_size - 4))
        d = ImageDraw.Draw(pil)
        if decoy:  # the row's last entry, an HFW, ends one glyph height left of the bar, at its height
            row = row.split("HFW")[0] + "HFW " + row.split("HFW ")[1].split()[0] + " µm" if "HFW" in row else row
            l, t, r, b = d.textbbox((0, 0), row, font=tf)
            tx, ty = x0 - fnt_size - r, y + thick / 2 - (t + b) / 2
        else:
            tx, ty = 10, h - band_h + band_h // 3
        d.text((tx, ty), row, fill=colour, font=tf)
        img = np.asarray(pil).copy()
        # keep the table row clear of the scale bar
        l, t, r, b = d.textbbox((tx, ty), row, font=tf)
        if not decoy and r > x0 - 20:
            img[h - band_h:, x0 - 20 - 2 * fnt_size:] = band
    else:
        x0 = int(rng.integers(30, w - length - 30)) if rng.random() < 0.4 else w - length - int(rng.integers(25, 70))
        y = h - int(rng.integers(fnt_size + 30, fnt_size + 80)) if where == "above" else h - int(rng.integers(2 * fnt_size + 30, 2 * fnt_size + 70))
        if rng.random() < 0.3:
            box = [x0 - 12, y - fnt_size - 16, x0 + length + 12, y + thick + 10] if where == "above" else \
                  [x0 - 12, y - 10, x0 + length + 12, y + thick + fnt_size + 20]
    img = draw_scale(img, x0, y, length, thick, colour, " " if unlabelled else label, fnt, where, ticks, box)
    if rng.random() < 0.4:  # a softer, resampled image
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.0)))
    measured = float(length)  # brackets too: outer tick edges
    nm = float(value) * (1000.0 if unit == "µm" else 1.0)
    if unlabelled:
        value = unit = nm = None
    return img, {"value": None if value is None else float(value), "unit": unit, "length": measured,
                 "nm_per_pixel": None if nm is None else nm / measured, "label": label, "table": table}


# --------------------------------------------------------------------------- cross-checks

@pytest.mark.parametrize("text,expected", [
    ("2O0 nrn", (200.0, "nm")), ("1 urn", (1.0, "µm")), ("l00 nm", (100.0, "nm")), ("1O nm", (10.0, "nm")),
    ("5 ym", (5.0, "µm")), ("0.5 jm", (0.5, "µm")), ("3yum", (3.0, "µm")), ("200 NM", (200.0, "nm")),
    ("lµm", (1.0, "µm")), ("50 nn", (50.0, "nm")), ("50nn", (50.0, "nm")), ("HFW 1.8 um", None),
    ("HFW: 12.7 µm", None), ("FW 3.2um", None),
    ("WD 5.1 mm", None), ("HFW1.8um", None), ("HV 15.0 kV", None), ("x1000nm", None),
    ("HFW 1.8 um  500 nm", (500.0, "nm")), ("Tum", (1.0, "µm")), ("SO nm", (50.0, "nm")), ("lO nm", (10.0, "nm")),
    ("Sum", None),
])
def test_parse_label_confusions_and_tables(text, expected):
    assert parse_label(text) == expected


@pytest.mark.parametrize("parsed,expected", [
    ((188.0, "nm"), (100.0, "nm")), ((168.0, "nm"), (100.0, "nm")), ((588.0, "nm"), (500.0, "nm")),
    ((100.0, "nm"), None), ((1.8, "µm"), None), ((86.0, "nm"), None), ((8.0, "nm"), None), (None, None),
])
def test_slashed_zero(parsed, expected):
    # pixel fonts slash the zero ("1ØØ nm"); Tesseract reads 8, 6 or 9 for it
    assert scalebar._slashed_zero(parsed) == expected


@pytest.mark.parametrize("value,expected", [
    (200, 1.0), (0.5, 1.0), (2.5, 1.0), (25, 1.0), (3, 1.0), (1000, 1.0), (400, 0.5), (1.5, 0.5),
    (188, 0.0), (299, 0.0), (8.24, 0.0), (60, 0.0), (7, 0.0),
])
def test_canonical_value(value, expected):
    assert scalebar.canonical_value(value) == expected


def _decoy_table(label=True, hfw="HFW 1.8 µm", seed=3):
    """A white SEM data bar: an HFW entry ends just left of the scale bar, at its height."""
    img = micrograph(480, 640, seed=seed, bright_particles=False)
    img[420:] = 255
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    fnt = font("DejaVuSans.ttf", 16)
    d.text((20, 430), "HV 20.00 kV  WD 5.1 mm", fill=(0, 0, 0), font=fnt)
    d.rectangle([450, 452, 589, 457], fill=(0, 0, 0))
    l, t, r, b = d.textbbox((0, 0), hfw, font=fnt)
    d.text((450 - 16 - r, 455 - (t + b) / 2), hfw, fill=(0, 0, 0), font=fnt)
    if label:
        d.text((490, 426), "500 nm", fill=(0, 0, 0), font=fnt)
    return np.asarray(pil).copy()


@needs_tesseract
@pytest.mark.parametrize("hfw", ["HFW 1.8 µm", "HFW 2.00 µm", "HFW: 5 µm"])
def test_data_table_field_width_is_never_the_scale(hfw):
    s = detect_scale(_decoy_table(label=False, hfw=hfw))
    assert s is not None and abs(s.bar_length_px - 140) <= 2
    assert s.value is None and s.nm_per_pixel is None, s
    s = detect_scale(_decoy_table(label=True, hfw=hfw))
    assert (s.value, s.unit) == (500.0, "nm"), s
    assert s.nm_per_pixel == pytest.approx(500 / 140, rel=0.02)


@needs_tesseract
def test_label_piece_is_not_taken_for_the_bar():
    # no scale bar: a label whose dash and a short underline are bar-like strokes
    img = micrograph(seed=6)
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    d.text((360, 420), "2 — 5 µm", fill=(255, 255, 255), font=font("DejaVuSans-Bold.ttf", 34))
    d.rectangle([372, 462, 386, 465], fill=(255, 255, 255))  # a 15 px stroke under the "2"
    stats = {}
    s = detect_scale(np.asarray(pil), stats=stats)
    assert s is None or s.value is None, s
    assert {"bar in text", "short bar"} & set(stats.get("geometry", [])), stats.get("geometry")


@needs_tesseract
@pytest.mark.parametrize("label", ["188 nm", "299 µm", "740 nm"])
def test_unusual_value_is_rejected(label):
    img = micrograph(seed=7)
    img = draw_scale(img, 440, 450, 150, 6, (255, 255, 255), label, font("DejaVuSans.ttf", 22))
    s = detect_scale(img)
    assert s is not None and abs(s.bar_length_px - 150) <= 2
    assert s.value is None and s.status == "rejected", s
    assert label.split()[0] in s.text  # what was read stays visible
    # the same label with a usual value is read
    ok = detect_scale(draw_scale(micrograph(seed=7), 440, 450, 150, 6, (255, 255, 255), "200 nm",
                                 font("DejaVuSans.ttf", 22)))
    assert (ok.value, ok.unit, ok.status) == (200.0, "nm", "read") and ok.confidence > s.confidence


@needs_tesseract
def test_image_without_label_lines_makes_no_tesseract_call():
    img = micrograph(seed=8)
    img[450:456, 420:580] = 255  # a bar, no label
    stats = {}
    s = detect_scale(img, stats=stats)
    assert s is not None and s.value is None and s.status == "unread"
    assert stats.get("tesseract_calls", 0) <= 2


@needs_tesseract
def test_label_inside_the_bar_joins_both_halves():
    # FEI style: |——— 200 nm ———| in a black data bar, the label interrupting the line
    img = micrograph(480, 640, seed=12)
    img[430:] = 0
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    fnt = font("DejaVuSans.ttf", 16)
    l, t, r, b = d.textbbox((0, 0), "200 nm", font=fnt)
    y, x0, x1 = 455, 380, 620
    cx = (x0 + x1) / 2
    d.rectangle([x0, y, cx - (r - l) / 2 - 6, y + 1], fill=(255, 255, 255))
    d.rectangle([cx + (r - l) / 2 + 6, y, x1 - 1, y + 1], fill=(255, 255, 255))
    d.text((cx - (r + l) / 2, y + 1 - (t + b) / 2), "200 nm", fill=(255, 255, 255), font=fnt)
    s = detect_scale(np.asarray(pil))
    assert s is not None and (s.value, s.unit) == (200.0, "nm"), s
    assert abs(s.bar_length_px - (x1 - x0)) <= 2, s
    assert s.nm_per_pixel == pytest.approx(200 / (x1 - x0), rel=0.02)


# --------------------------------------------------------------------------- v4: failing kinds of the real set

def label_touching_particle(seed, font_file, shade=(0, 0, 0), radius=11):
    """A dark bar with "200 nm" above it whose second zero is touched from above by a disc of the label's shade.

    As on real TEM images where a particle overlaps the label's top: the zero and the
    particle are one blob, far taller than the line.
    """
    img = micrograph(seed=seed, bright_particles=shade != (0, 0, 0), n=10)
    fnt = font(font_file, 20)
    x0, y, length = 60, 470, 90
    img = draw_scale(img, x0, y, length, 4, shade, "200 nm", fnt, "above")
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    l, t, r, b = d.textbbox((0, 0), "200 nm", font=fnt)
    origin = (x0 + length / 2 - (r + l) / 2, y - 4 - b)  # where draw_scale put the label
    _, _, r2, _ = d.textbbox(origin, "20", font=fnt)
    _, top, r3, _ = d.textbbox(origin, "200", font=fnt)
    cx = (r2 + r3) / 2
    d.ellipse([cx - radius, top - 2 * radius + 2, cx + radius, top + 2], fill=shade)
    return np.asarray(pil).copy()


@needs_tesseract
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_label_glyph_touching_a_particle_is_read(seed):
    # the zero is cut to the line's text band, the particle's solid body erased
    for font_file in ("DejaVuSerif.ttf", "DejaVuSans.ttf"):
        s = detect_scale(label_touching_particle(seed, font_file))
        assert s is not None and (s.value, s.unit, s.status) == (200.0, "nm", "read"), (font_file, s)
        assert s.nm_per_pixel == pytest.approx(200 / 90, rel=0.02)
    # where it is not read, no wrong value comes back (read 2 alone, "20nm" from "20U nm", is refused)
    s = detect_scale(label_touching_particle(seed, "LiberationSans-Regular.ttf"))
    assert s is not None and s.value in (None, 200.0), s


def small_font_table(size, seed=31, font_file="DejaVuSans.ttf"):
    """A white instrument table under the image: a bar, "50 nm" in a tiny font below it, then HV and Mag rows."""
    img = micrograph(seed=seed, n=10)
    img[430:] = 255
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    d.rectangle([400, 440, 462, 443], fill=(0, 0, 0))
    fnt = font(font_file, size)
    for k, text in enumerate(("50 nm", "HV=120.0kV", "Direct Mag: 60000x")):
        d.text((400, 446 + 12 * k), text, fill=(0, 0, 0), font=fnt)
    return np.asarray(pil).copy()


@needs_tesseract
@pytest.mark.parametrize("size", [8, 9])
def test_small_font_label_is_read(size):
    # "nm" of a 8-9 px font is 4-5 px tall: too small for a glyph blob, it joins the line on its baseline
    s = detect_scale(small_font_table(size))
    assert s is not None and (s.value, s.unit, s.status) == (50.0, "nm", "read"), s
    assert abs(s.bar_length_px - 63) <= 1


def bar_end_in_particle(seed=13, disc=True, font_file="DejaVuSans.ttf"):
    """A white 150 px bar with "200 nm" above whose right end lies in a bright particle (``disc``)."""
    img = micrograph(seed=seed, n=8)
    img = draw_scale(img, 400, 450, 150, 6, (255, 255, 255), "200 nm", font(font_file, 22))
    if disc:  # a bright particle swallows the right end: the run goes on to its far side
        pil = Image.fromarray(img)
        ImageDraw.Draw(pil).ellipse([530, 425, 590, 485], fill=(250, 250, 250))
        img = draw_scale(np.asarray(pil).copy(), 400, 450, 150, 6, (255, 255, 255), "200 nm", font(font_file, 22))
    return img


@needs_tesseract
def test_bar_ending_in_a_particle_of_its_shade_is_not_read():
    s = detect_scale(bar_end_in_particle(disc=True))
    assert s is not None and s.value is None and s.nm_per_pixel is None and s.status == "rejected", s
    assert "particle" in s.reason
    ok = detect_scale(bar_end_in_particle(disc=False))
    assert (ok.value, ok.unit, ok.status) == (200.0, "nm", "read") and abs(ok.bar_length_px - 150) <= 2, ok


def fei_bracket(tick, seed=12):
    """An FEI-style data bar: a two-tone 2 px line |—— 5 µm ——| with end ticks of grey ``tick``, label inside."""
    img = micrograph(480, 640, seed=seed)
    img[430:] = 45
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    fnt = font("DejaVuSans.ttf", 16)
    l, t, r, b = d.textbbox((0, 0), "5 µm", font=fnt)
    y, x0, x1 = 455, 380, 560
    cx = (x0 + x1) / 2
    d.rectangle([x0, y, x1 - 1, y], fill=(127,) * 3)
    d.rectangle([x0, y + 1, x1 - 1, y + 1], fill=(163,) * 3)
    d.rectangle([cx - (r - l) / 2 - 4, y - 8, cx + (r - l) / 2 + 4, y + 9], fill=(45,) * 3)  # the label's gap
    for tx in (x0, x1 - 2):
        d.rectangle([tx, y - 7, tx + 1, y + 8], fill=(tick,) * 3)
    d.text((cx - (r + l) / 2, y + 1 - (t + b) / 2), "5 µm", fill=(230,) * 3, font=fnt)
    d.text((20, 445), "HV 5.00 kV  spot 4.0  HFW 20.7 µm", fill=(230,) * 3, font=fnt)
    return np.asarray(pil).copy()


@needs_tesseract
@pytest.mark.parametrize("tick", [100, 230])
def test_bracket_half_with_its_tick_is_no_label_glyph(tick):
    # v3 chained the left half and its bright tick into the label line ("}——— 5 um") and read
    # the right half alone as the 5 µm bar: a third of its length
    s = detect_scale(fei_bracket(tick))
    assert s is not None and (s.value, s.unit, s.status) == (5.0, "µm", "read"), s
    assert abs(s.bar_length_px - 180) <= 2.5, s


# --------------------------------------------------------------------------- tick rulers

def hitachi_ruler(label="10.0um", n_ticks=11, spacing=16, tick=(2, 6), size=15, factor=4, seed=41, dotted=False,
                  long_ticks=False, strip=0):
    """A Hitachi-style data bar: a row of ``n_ticks`` white ticks (no base line), ``label`` below its right end.

    Drawn ``factor`` times larger, then shrunk with area averaging, so tick edges are
    partly covered pixels and the decimal point is a faint speck. ``dotted`` draws a
    dotted line of 2x2 dots 4 px apart instead of ticks; ``long_ticks`` draws the end and
    middle ticks twice as long (their tops shared); ``strip`` is the data bar's grey level
    (0: black; 170: a translucent strip the white ticks stand out of by about 85).
    Returns (image, outer length).
    """
    img = micrograph(480, 640, seed=seed)
    img[440:] = strip
    big = Image.fromarray(img).resize((640 * factor, 480 * factor), Image.NEAREST)
    d = ImageDraw.Draw(big)
    tw, th = tick
    x0, y0 = 620.25 - spacing * (n_ticks - 1) - tw, 444.5
    if dotted:
        for k in range(40):
            x = x0 + 4 * k
            d.rectangle([x * factor, y0 * factor, (x + 2) * factor - 1, (y0 + 2) * factor - 1], fill=(255, 255, 255))
        length = None
    else:
        for k in range(n_ticks):
            x = x0 + spacing * k
            tall = 2 * th if long_ticks and k in (0, n_ticks // 2, n_ticks - 1) else th
            d.rectangle([x * factor, y0 * factor, (x + tw) * factor - 1, (y0 + tall) * factor - 1], fill=(255, 255, 255))
        length = spacing * (n_ticks - 1) + tw
    fnt = font("DejaVuSans.ttf", size * factor)
    right = (x0 + spacing * (n_ticks - 1) + tw) * factor
    l, t, r, b = d.textbbox((0, 0), label, font=fnt)
    d.text((right - r, (y0 + th + 4) * factor - t), label, fill=(255, 255, 255), font=fnt)
    small = big.resize((640, 480), Image.BOX)
    return np.asarray(small).copy(), length


@pytest.mark.parametrize("spacing,tick", [(16, (2, 6)), (22, (3, 8)), (9, (1, 3))])
def test_tick_ruler_is_measured_between_outer_tick_edges(spacing, tick):
    img, length = hitachi_ruler(spacing=spacing, tick=tick, label=" ")
    rulers = scalebar._tick_rulers(scalebar._grey(img))
    assert len(rulers) == 1, rulers
    assert rulers[0].bracket and abs(rulers[0].length - length) <= 0.5, (rulers[0], length)
    s = detect_scale(img, ocr=False)
    assert s is not None and abs(s.bar_length_px - length) <= 0.5, s


@pytest.mark.parametrize("long_ticks,strip", [(True, 0), (False, 170), (True, 170)])
def test_ruler_with_long_end_ticks_or_on_a_grey_strip_is_measured(long_ticks, strip):
    img, length = hitachi_ruler(label=" ", long_ticks=long_ticks, strip=strip)
    rulers = scalebar._tick_rulers(scalebar._grey(img))
    assert len(rulers) == 1 and abs(rulers[0].length - length) <= 0.5, (rulers, length)


def test_dotted_line_and_text_are_no_ruler():
    img, _ = hitachi_ruler(dotted=True, label="S-4800 3.0kV 14.9mm x20.0k SE(M)")
    assert scalebar._tick_rulers(scalebar._grey(img)) == []
    assert scalebar._tick_rulers(scalebar._grey(micrograph(seed=5))) == []


@needs_tesseract
@pytest.mark.parametrize("label,value", [("10.0um", 10.0), ("2.00um", 2.0), ("500nm", 500.0)])
def test_tick_ruler_label_is_read_with_its_decimal_point(label, value):
    """Never 100 or 200 µm for "10.0um" or "2.00um": a dropped point is found in the label's pixels."""
    img, length = hitachi_ruler(label=label)
    s = detect_scale(img)
    unit = "nm" if label.endswith("nm") else "µm"
    assert s is not None and s.value in (value, None), s
    assert (s.value, s.unit, s.status) == (value, unit, "read"), s
    assert abs(s.nm_per_pixel / (value * scalebar.UNITS_NM[unit] / length) - 1) <= 0.01, s


@pytest.mark.parametrize("text,k,expected", [
    ("2 00um", 1, "2.00um"), ("100um", 2, "10.0um"), ("10 Oum", 2, "10.Oum"), ("0.5 um", 1, "0.5 um"),
    ("5 um", 1, "5 um"), ("S-4800 x20k", 1, "S-4800 x20k")])
def test_a_found_decimal_point_goes_into_the_read_number(text, k, expected):
    assert scalebar._with_decimal_point(text, k) == expected


@pytest.mark.parametrize("text,expected", [
    ("100 n=", (100.0, "nm")), ("50 nim", (50.0, "nm")), ("2 pa", (2.0, "µm")), ("50 rst", None),
    ("HFW 1.8 u?", None), ("Mag 5 n", None), ("100nm", (100.0, "nm"))])
def test_a_garbled_unit_keeps_its_number_and_first_letter(text, expected):
    assert scalebar._garbled_unit_read(text) == expected


@pytest.mark.parametrize("text,expected", [("20:-nm", (20.0, "nm")), ("5 ~ µm", (5.0, "µm")),
                                           ("20::-nm", None)])
def test_specks_between_number_and_unit(text, expected):
    assert parse_label(text) == expected


@needs_tesseract
@pytest.mark.parametrize("label", ["200nm", "500nm", "100nm"])
def test_a_speck_between_tight_digits_is_no_decimal_point(label):
    img, length = hitachi_ruler(label=label)
    grey = scalebar._grey(img)
    # a bright 2x2 speck on the baseline in the gap between the first two digits, where a point would go
    ys, xs = np.nonzero(grey[455:485, 540:640] > 128)
    cols = np.zeros(100, bool)
    cols[xs] = True
    first = int(xs.min())
    gap = first + int(np.argmin(cols[first:]))  # first empty column after the first digit
    base = 455 + int(ys.max())
    img[base - 1:base + 1, 540 + gap:540 + gap + 2] = 200
    s = detect_scale(img)
    assert s is not None and s.value in (float(label[:3]), None), s
