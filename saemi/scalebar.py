"""Reading the scale bar of a micrograph: bar length in pixels, label, nm per pixel.

A scale bar is a long, thin, uniform horizontal bar or line (sometimes with end
ticks), white on a dark surround or black on a light one, usually in the bottom
data bar or in a corner, with a label such as "200 nm" or "2 µm" above, below
or beside it. A plain bar is measured end to end.

**Bracket convention.** A bracket bar (``|—|``, ``|__|``, ``H``: a line with a
vertical tick at each end) is measured from the outer edge of one end tick to
the outer edge of the other, i.e. over the whole drawn figure, exactly as a
plain bar. Decided from the crops of the labelled set: instrument software
(Zeiss SmartSEM, FEI, JEOL) draws the bar graphic over the pixels it stands for
with the ticks as its first and last columns, and a person dragging a line over
the bar from end to end measures the same. Two uncropped Zeiss images with a
magnification in their data table (37ce835fb2, 1b3c6536a3: Mag x image width x
nm/px must be one constant) agree within 0.3-1.5 % under this convention and
only within 1.5-3.4 % between tick centres. Between centres, a 2.5 px tick on a
60 px bar is 4 % short: more than a read may be off. The earlier reader (v2)
measured tick centres and declined brackets with wide ticks; it no longer
declines them.

The search has four stages:

1. **Bar candidates** (pure numpy/OpenCV, a few milliseconds): the grey image is
   thresholded at both extremes; a horizontal opening keeps only long horizontal
   runs; every connected piece is cut down to its block of full-length rows and
   kept when it is a thin, crisp, uniform rectangle that stands out from the
   rows above and below it. Its length is measured with sub-pixel precision
   from the partial coverage of its end pixels. Tick rulers (a row of six or more
   evenly spaced short ticks without a base line, as Hitachi draws them) are
   found apart, in the bottom of the image (:func:`_tick_rulers`), and measured
   between the outer edges of their end ticks.
2. **Label lines** (no OCR): around each of the best bars, glyph-like blobs of the
   bar's shade (or the opposite one) are chained into text lines; a line is a label
   candidate when it sits above, below or beside the bar and its geometry fits a
   scale label (see :func:`_label_lines`: the bar is much longer than a glyph is
   tall, is not inside the text, and the label is not far wider than the bar).
   A blob far taller than its line (a glyph a particle touches) is cut to the
   line's text band after the particle's solid body is erased
   (:func:`_clip_tall_outliers`); blobs too small to be glyphs on their own (the
   letters of a 5 px font, broken glyph pieces) join a line in its band
   (:func:`_join_band`).
3. **Two reads** (Tesseract): all candidate lines of an image are read in at
   most two calls, each line a row of one stacked image, in two preprocessings
   (soft ink at 40 px without a whitelist, binarised by adaptive Otsu; the same
   at 30 px with a digits-and-units whitelist, global Otsu); the second call
   reads only the lines in which the first saw any text. :func:`parse_label`
   corrects common OCR confusions, lets noise specks stand between number and
   unit, and skips values of instrument data-table fields (HFW, WD, Mag ...). A
   decimal point too faint for Tesseract ("2.00um" read "200um") is found in
   the label's pixels (:func:`_decimal_point`); read 1's number with a garbled
   unit ("100 n=") still confirms read 2's value (:func:`_garbled_unit_read`).
4. **Cross-checks and a calibrated confidence**: agreement of the two reads,
   the value prior (mantissa 1, 2, 2.5, 3, 5), data-table tokens, glyph count
   and geometry feed a logistic map (``CONFIDENCE_WEIGHTS``, fitted on the tune
   split of tests/fixtures/scalebars.json and synthetic labels) to the
   probability that the read is right. The best candidate's value is returned
   only from ``ACCEPT_CONFIDENCE`` up, with a usual value, never when the two reads
   parse to different values, and never for a bar
   whose end lies in a particle of its own shade (:func:`_buried_end`); otherwise the bar
   comes back with ``status`` "rejected", value None and the text read. A wrong value is worse than none.

Without the Tesseract binary the bar is still measured: :func:`detect_scale`
then logs one warning and returns the bar with ``value``, ``unit`` and
``nm_per_pixel`` set to None, so that a user can type the value.
"""

import functools
import logging
import re
import shutil
import dataclasses
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

from .banner import find_banner

log = logging.getLogger(__name__)

# Units a label may carry, and their size in nanometres.
UNITS_NM = {"nm": 1.0, "µm": 1000.0}
# Characters Tesseract may return on a label: digits, decimal marks, unit letters.
# Tesseract's English model reads "µ" as "p" or "u" more often than as "µ":
# those letters are allowed and read as micro.
WHITELIST = "0123456789.,nmuµμpy"

# Bar geometry limits.
MIN_LENGTH_PX = 12          # shortest bar, pixels
MIN_LENGTH_FRACTION = 0.02  # ... or this share of the image width, whichever is larger
MAX_LENGTH_FRACTION = 0.8   # a run longer than this share of the width is a frame line
MAX_THICKNESS_FRACTION = 0.08
# length / thickness: JEOL TEM software draws thick bars ("1 µm" over 60 x 22 px). 3.5 (v1-v4)
# lost them; 2.5 adds no wrong read on the fixture or the synthetic sets (the label checks
# still apply: a block is no bar without a label beside it that reads as a scale)
MIN_ASPECT = 2.5
MIN_CONTRAST = 50           # grey levels between the bar and its surround
# Shades seeding the candidate masks; contrast is checked afterwards.
BRIGHT_SEED, DARK_SEED = 190, 65
LOCAL_SEED = 45             # ... or this much brighter/darker than the local mean
# Shape score a bar needs to be reported without a readable label.
UNLABELLED_MIN_SCORE = 0.75
# Label lines of at most this many bar candidates (best first) are read ...
MAX_OCR_CANDIDATES = 5
# ... and at most this many lines in all (each a row of the two stacked OCR images).
MAX_LABEL_LINES = 8
# Label geometry: a bar is at least this many glyph heights long (shorter "bars" are
# pieces of the label text, dashes or glyph strokes) ...
BAR_MIN_GLYPHS = 1.5
# ... and a label is at most this many bar lengths wide (wider rows are data tables).
LABEL_MAX_BARS = 4.0
# Glyphs closer than this many glyph heights are one text line ("200 nm" in a wide
# serif font has a space of 1.3 glyph heights; data-table fields are further apart).
WORD_GAP = 1.6
# Blobs under this height are no glyphs on their own (decimal points, specks); see
# _add_small_glyphs for the letters of small fonts.
MIN_GLYPH_PX = 5
# A piece inside a label line's box is kept for OCR when at least this share of the line's
# height wide or tall, or within 2 px of one of its blobs (other small ones are noise specks,
# which OCR reads as ':' or '.').
PIECE_SHARE = 0.3
# Mantissas of usual scale-bar values (see canonical_value).
CANONICAL_MANTISSAS = (1.0, 2.0, 2.5, 3.0, 5.0)
USUAL_MANTISSAS = (1.5, 4.0)
# A read is returned as a value only at this calibrated confidence or above. Chosen on
# the tune split and 120 synthetic images (best candidate per image, value prior and
# bracket check applied): thresholds 0.3-0.7 read 32/42 tune bars (0 wrong of 63 images)
# and 97/110 synthetic (4 wrong of 120, 3.3 %); 0.8 reads 32/42 (0 wrong) and 96/110 (2
# wrong, 1.7 %); 0.9 reads 32/42 and 94/110 (2 wrong); 0.95 only 22/42 and 59/110. 0.8
# is the lowest threshold with at most 2 % wrong on both. (Measured on v2 of the reader;
# kept for v3, whose changes left 0 wrong of 129 real and 1 of 120 synthetic images at 0.8,
# for v4: 0 wrong of 160 real (tune, holdout, fresh) and 0 of 120 synthetic; and for v5: 0 wrong
# of 202 real (tune, holdout, fresh, fresh2) and 0 of 156 synthetic.)
ACCEPT_CONFIDENCE = 0.8


@dataclass
class Scale:
    """A detected scale bar.

    Attributes
    ----------
    bar_length_px : float
        Length of the bar in pixels (sub-pixel, end to end).
    value : float or None
        The number on the label (200 for "200 nm"); None when unread.
    unit : {"nm", "µm"} or None
        The unit on the label; None when unread.
    nm_per_pixel : float or None
        ``value`` in nm divided by ``bar_length_px``; None when unread.
    bar_box : tuple of int (y0, y1, x0, x1)
        The bar's pixels: rows ``y0:y1``, columns ``x0:x1`` (half-open).
    label_box : tuple of int (y0, y1, x0, x1) or None
        Where the label was read, same convention; None when unread.
    confidence : float
        0..1. For a read label (``status`` "read" or "rejected"): the calibrated
        probability that the value is right (see ``CONFIDENCE_WEIGHTS``); a
        value is returned only from ``ACCEPT_CONFIDENCE`` up. For a bar without
        a label: half the bar's shape score.
    text : str
        The raw OCR text of the label ("" when none was read); kept when the
        read was rejected, so that a user can see it.
    status : {"read", "unread", "rejected"}
        "read": value, unit and nm_per_pixel are set. "unread": no label was
        read (none found, no Tesseract, ``ocr=False``). "rejected": a label was
        read but failed the cross-checks or the confidence threshold; value,
        unit and nm_per_pixel are None.
    reason : str
        Why a bar is "unread" or "rejected" ("" when read).
    """

    bar_length_px: float
    value: float = None
    unit: str = None
    nm_per_pixel: float = None
    bar_box: tuple = None
    label_box: tuple = None
    confidence: float = 0.0
    text: str = ""
    status: str = None
    reason: str = ""

    def __post_init__(self):
        if self.status is None:
            self.status = "read" if self.value is not None else "unread"

    def to_dict(self):
        """JSON-safe dict (plain floats, ints, lists, strings and None)."""
        d = asdict(self)
        for key in ("bar_box", "label_box"):
            if d[key] is not None:
                d[key] = [int(v) for v in d[key]]
        for key in ("bar_length_px", "value", "nm_per_pixel", "confidence"):
            if d[key] is not None:
                d[key] = float(d[key])
        return d


@dataclass
class _Bar:
    """A bar candidate before OCR (internal)."""

    y0: int
    y1: int
    x0: int
    x1: int
    length: float
    bright: bool
    shade: float
    surround: float
    score: float
    bracket: bool = False  # has end ticks (measured between their outer edges)
    tick_width: float = 0.0  # a bracket's mean end-tick width, pixels
    buried_end: bool = False  # an end lies in a region of the bar's shade: its length is not seen

    @property
    def box(self):
        return (self.y0, self.y1, self.x0, self.x1)


# --------------------------------------------------------------------------- bars

def _grey(image):
    """(H, W, 3) or (H, W) uint8 -> (H, W) float32 grey."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32).mean(axis=2)
    return a.astype(np.float32)


def find_bars(image):
    """Scale-bar candidates of an image, best first (no OCR).

    Parameters
    ----------
    image : ndarray, shape (H, W, 3) or (H, W), uint8

    Returns
    -------
    list of _Bar
        Each with its box (``y0, y1, x0, x1``, half-open pixels), sub-pixel
        ``length`` (pixels), polarity, shades and a shape ``score`` in 0..1.
    """
    grey = _grey(image)
    h, w = grey.shape
    min_len = max(MIN_LENGTH_PX, int(round(MIN_LENGTH_FRACTION * w))) | 1  # odd: no shift
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (min_len, 1))
    # Local background: a bar is thin, so a wide box mean barely sees it.
    local = cv2.blur(grey, (31, 31))
    bars = []
    for bright in (True, False):
        if bright:
            seed = (grey >= BRIGHT_SEED) | (grey - local >= LOCAL_SEED)
        else:
            seed = (grey <= DARK_SEED) | (local - grey >= LOCAL_SEED)
        opened = cv2.morphologyEx(seed.astype(np.uint8), cv2.MORPH_OPEN, kernel)
        n, cc, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=4)
        for i in range(1, n):
            x, y, bw, bh, _ = stats[i]
            if bw < min_len or bw > MAX_LENGTH_FRACTION * w or bh > 0.5 * h:
                continue
            bar = _bar_from_component(grey, cc[y:y + bh, x:x + bw] == i, x, y, bright)
            if bar is not None:
                bars.append(bar)
    bars.extend(_tick_rulers(grey))
    bars.sort(key=lambda b: -b.score)
    return bars


# Tick rulers (Hitachi S-4800 and others: a row of short vertical ticks at equal spacing and
# no base line, the label below or beside one end): at least this many ticks ...
RULER_MIN_TICKS = 6
# ... each at most this many pixels wide and this tall, spaced this evenly (the largest
# deviation from the median spacing, as a share of it) ...
RULER_MAX_TICK_WIDTH, RULER_MAX_TICK_HEIGHT = 6, 16
RULER_SPACING_TOLERANCE = 0.12
# ... standing out by this much from their row (as a bar: MIN_CONTRAST; rulers drawn over the
# image in a translucent strip stand out by 60-100) ...
RULER_MIN_CONTRAST = 50
# ... in the bottom RULER_ROWS of the image (rulers are drawn in the instrument's data bar
# there; the search costs 0.15 s per megapixel, so it is kept to the rows where they are) ...
RULER_ROWS = 0.3
# ... and a ruler's shape score (below a plain bar's best: a ruler is an unusual form).
RULER_SCORE = 0.8


def _tick_rulers(grey):
    """Tick rulers of an image as bar candidates (``bracket`` True, measured between outer tick edges).

    A tick is a narrow vertical blob (at most ``RULER_MAX_TICK_WIDTH`` px wide and
    no wider than tall) standing out by ``RULER_MIN_CONTRAST`` in a horizontal
    top-hat (bright ticks) or black-hat (dark ticks) of the image, with nothing of
    half its contrast in the columns just beside it. Ticks whose tops (or bottoms)
    lie within 1 px of each other and whose spacings all lie within
    ``RULER_SPACING_TOLERANCE`` of their median form a ruler when there are
    ``RULER_MIN_TICKS`` or more. Its length runs from the outer edge of the first
    tick to that of the last; each edge lies half a tick width (coverage summed
    across the tick) outwards of the tick's coverage-weighted centre, as for the
    end ticks of a bracket (:func:`_tick_edges`).

    Returns
    -------
    list of _Bar
    """
    full_h, w = grey.shape
    first_row = int(full_h * (1 - RULER_ROWS))
    grey = grey[first_row:]
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * RULER_MAX_TICK_WIDTH + 3, 1))
    out, seen = [], set()
    for bright in (True, False):
        hat = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT if bright else cv2.MORPH_BLACKHAT, kernel)
        n, cc, stats, _ = cv2.connectedComponentsWithStats((hat >= RULER_MIN_CONTRAST).astype(np.uint8),
                                                           connectivity=8)
        sx, sy, sw, sh = (stats[1:, k] for k in range(4))
        keep = (sw <= RULER_MAX_TICK_WIDTH) & (sh >= 2) & (sh <= RULER_MAX_TICK_HEIGHT) & (sw <= sh)
        keep &= (sx >= 5) & (sx + sw + 5 <= w)
        if not keep.any():
            continue
        on = cc > 0
        peaks = np.zeros(n, np.float32)
        np.maximum.at(peaks, cc[on], hat[on])  # each blob's contrast (ndimage.maximum sorts: 5x slower)
        peak = peaks[1:][keep]
        sx, sy, sw, sh = sx[keep], sy[keep], sw[keep], sh[keep]
        # a tick stands alone: nothing of half its own contrast in 3 columns either side of it
        # (beyond the 2 its blurred edges may cover), over its rows; noise specks, text and particle
        # edges have neighbours. Half the contrast is taken in steps of RULER_MIN_CONTRAST / 2.
        step = RULER_MIN_CONTRAST / 2
        level = np.floor(peak / 2 / step).astype(int)
        alone = np.zeros(len(sx), bool)
        for lv in np.unique(level):
            ii = cv2.integral((hat >= lv * step).astype(np.uint8))
            m = level == lv
            x, y, bw, bh = sx[m], sy[m], sw[m], sh[m]

            def count(x0, x1):
                return ii[y + bh, x1] - ii[y, x1] - ii[y + bh, x0] + ii[y, x0]

            alone[m] = (count(x - 5, x - 2) == 0) & (count(x + bw + 2, x + bw + 5) == 0)
        ticks = [tuple(row) for row in np.stack([sx, sy, sw, sh], axis=1)[alone].tolist()]
        # a ruler's ticks share their top or their bottom (Hitachi draws the end and middle ticks longer)
        for edge in (lambda t: t[1], lambda t: t[1] + t[3]):
            by_edge = {}
            for t in ticks:
                by_edge.setdefault(edge(t), []).append(t)
            for y in sorted(by_edge):
                row = sorted((t for dy in (-1, 0, 1) for t in by_edge.get(y + dy, ())), key=lambda t: t[0])
                for run in _even_runs(row) if len(row) >= RULER_MIN_TICKS else ():
                    bar = _ruler_bar(grey, run, bright)
                    if bar is not None:
                        bar = dataclasses.replace(bar, y0=bar.y0 + first_row, y1=bar.y1 + first_row)
                    if bar is not None and bar.box not in seen:
                        seen.add(bar.box)
                        out.append(bar)
    # a run from the second tick on (found again among the shared bottoms) is part of a ruler, not one
    return [r for r in out if not any(o is not r and o.bright == r.bright and o.x0 <= r.x0 and r.x1 <= o.x1
                                      and o.length > r.length and min(o.y1, r.y1) > max(o.y0, r.y0) for o in out)]


def _even_runs(row):
    """Runs of at least RULER_MIN_TICKS blobs (sorted by x) at even spacing, left to right."""
    runs, k = [], 0
    while k + RULER_MIN_TICKS <= len(row):
        best = None
        for m in range(k + 1, len(row)):  # the spacing is set by the first tick and one of the next
            gap = row[m][0] - row[k][0]
            if gap < 3 * row[k][2]:  # ticks stand apart: a dotted line's dots are closer
                continue
            run, last = [row[k], row[m]], row[m]
            for t in row[m + 1:]:
                d = t[0] - last[0]
                if abs(d - gap) <= RULER_SPACING_TOLERANCE * gap:
                    run.append(t)
                    last = t
                elif d > gap * (1 + RULER_SPACING_TOLERANCE):
                    break
            if best is None or len(run) > len(best):
                best = run
            break
        if best is not None and len(best) >= RULER_MIN_TICKS:
            gaps = np.diff([t[0] for t in best])
            if np.abs(gaps - np.median(gaps)).max() <= RULER_SPACING_TOLERANCE * np.median(gaps):
                runs.append(best)
                k = row.index(best[-1]) + 1
                continue
        k += 1
    return runs


def _ruler_bar(grey, run, bright):
    """The _Bar of a run of ticks (see :func:`_tick_rulers`), or None when its ends do not stand out."""
    h, w = grey.shape
    y0, y1 = min(t[1] for t in run), max(t[1] + t[3] for t in run)
    xa, xb = run[0][0], run[-1][0] + run[-1][2]
    if xa <= 2 or xb >= w - 2 or y1 >= h:  # cut by the image edge: the ticks of a cropped-off ruler
        return None
    band = grey[y0:y1, xa:xb]
    tick_cols = np.zeros(xb - xa, bool)
    for x, _, tw, _ in run:
        tick_cols[max(0, x - xa - 1):x - xa + tw + 1] = True
    if tick_cols.all():
        return None
    surround = float(np.median(band[:, ~tick_cols]))
    # each tick over its own rows (the end and middle ticks may be longer than the others)
    peaks = [float(np.max(np.median(grey[ty:ty + th, x:x + tw], axis=0))) for x, ty, tw, th in run]
    shade = float(np.median(peaks))
    if abs(shade - surround) < MIN_CONTRAST:
        return None
    edges, widths = [], []
    for (x, ty, tw, th), side in ((run[0], -1), (run[-1], 1)):
        a, b = x - 2, min(w, x + tw + 2)
        cover = np.clip((np.median(grey[ty:ty + th, a:b], axis=0) - surround) / (shade - surround), 0, 1)
        if cover.sum() <= 0:
            return None
        xs = np.arange(a, b) + 0.5
        centre, width = float((cover * xs).sum() / cover.sum()), float(cover.sum())
        edges.append(centre + side * width / 2)
        widths.append(width)
    gaps = np.diff([t[0] for t in run])
    regular = 1 - float(np.abs(gaps - np.median(gaps)).max() / np.median(gaps)) / RULER_SPACING_TOLERANCE
    score = RULER_SCORE * (0.9 + 0.1 * regular)
    return _Bar(int(y0), int(y1), int(xa), int(xb), edges[1] - edges[0], bright, shade, surround, float(score),
                True, float(np.mean(widths)))


def _bar_from_component(grey, comp, ox, oy, bright):
    """Cut a component of long runs down to its bar, or None if it is no bar.

    The seed mask only locates the bar roughly (background specks may touch
    it); its rows, ends and straightness are then measured on the grey image,
    thresholded halfway between the bar's shade and its surround.
    """
    h, w = grey.shape
    counts = comp.sum(axis=1)
    peak = int(np.argmax(counts))
    full = counts >= 0.9 * counts[peak]
    r0 = peak
    while r0 > 0 and full[r0 - 1]:
        r0 -= 1
    r1 = peak + 1
    while r1 < len(full) and full[r1]:
        r1 += 1
    y0, y1 = oy + r0, oy + r1
    cols = np.flatnonzero(comp[peak])
    x0, x1 = ox + int(cols[0]), ox + int(cols[-1]) + 1
    if x0 <= 0 or x1 >= w or y0 <= 0 or y1 >= h:  # touches the image edge: a frame or a cut bar
        return _reject("edge", ox, oy, comp)
    band = grey[y0:y1, x0:x1]
    shade = float(np.median(band))
    # The rows above and below (skipping the one next to the bar, which
    # anti-aliasing blends into it) must be of another shade over most of the length.
    above = grey[max(0, y0 - 4):max(0, y0 - 1), x0:x1]
    below = grey[y1 + 1:y1 + 4, x0:x1]
    outside = np.concatenate([above.ravel(), below.ravel()])
    if outside.size == 0:
        return _reject("no surround", ox, oy, comp)
    surround = float(np.median(outside))
    contrast = abs(shade - surround)
    if contrast < MIN_CONTRAST:
        return _reject(f"contrast {contrast:.0f}", ox, oy, comp)
    # Re-threshold the bar's neighbourhood close to the bar's own shade (noise
    # in a bright or dark surround rarely gets there): exact rows and ends.
    mid = (shade + surround) / 2
    strict = shade + 0.3 * (surround - shade)
    ya, yb = max(0, y0 - 3), min(h, y1 + 3)
    xa, xb = max(0, x0 - 6), min(w, x1 + 6)
    on = (grey[ya:yb, xa:xb] > strict) if bright else (grey[ya:yb, xa:xb] < strict)
    cx = (x0 + x1) // 2 - xa
    starts, ends = _runs_through(on, cx)
    length_rows = ends - starts
    good = length_rows >= 0.9 * length_rows.max()
    pk = int(np.argmax(length_rows))
    q0 = pk
    while q0 > 0 and good[q0 - 1]:
        q0 -= 1
    q1 = pk + 1
    while q1 < len(good) and good[q1]:
        q1 += 1
    starts, ends = starts[q0:q1], ends[q0:q1]
    s_med, e_med = np.median(starts), np.median(ends)
    straight = (np.abs(starts - s_med) <= 1) & (np.abs(ends - e_med) <= 1)
    if straight.mean() < 0.7:
        return _reject("ragged", ox, oy, comp)
    y0, y1 = ya + q0, ya + q1
    x0, x1 = xa + int(s_med), xa + int(e_med)
    length, thick = x1 - x0, y1 - y0
    if thick > max(3, MAX_THICKNESS_FRACTION * h) or length < MIN_ASPECT * thick:
        return _reject(f"shape thick={thick} len={length}", ox, oy, comp)
    if length < MIN_LENGTH_PX or length > MAX_LENGTH_FRACTION * w:
        return _reject(f"length {length}", ox, oy, comp)
    if x0 <= 0 or x1 >= w:
        return _reject("edge", ox, oy, comp)
    band = grey[y0:y1, x0:x1]
    fill = float(((band > strict) if bright else (band < strict)).mean())
    if fill < 0.9:
        return _reject(f"fill {fill:.2f}", ox, oy, comp)
    above = grey[max(0, y0 - 4):max(0, y0 - 1), x0:x1]
    below = grey[y1 + 1:y1 + 4, x0:x1]
    # Both sides must differ from the bar (an edge of a flat band is no bar).
    spills = [float(((side > mid) if bright else (side < mid)).mean()) for side in (above, below) if side.size]
    spill = max(spills) if spills else 1.0
    if spill > 0.5:
        return _reject(f"spill {spill:.2f}", ox, oy, comp)
    uniform = float(np.clip(1 - band.std() / contrast * 2, 0, 1))
    length_sub, x0, x1 = _subpixel_length(grey, y0, y1, x0, x1, shade, surround)
    ticks = _tick_edges(grey, y0, y1, x0, x1, shade, surround)
    buried = _buried_end(grey, y0, y1, x0, x1, mid, bright, ticks is not None)
    tick_width = 0.0
    if ticks is not None:  # a bracket |—|: from the outer edge of one end tick to that of the other
        length_sub, tick_width = ticks[1] - ticks[0], ticks[2]
    # Score: uniformity, contrast, isolation, aspect, and where bars usually are.
    aspect = min(1.0, length / (8.0 * thick))
    position = 1.0 if (y0 > 0.6 * h or y1 < 0.25 * h) else 0.8
    size = min(1.0, length / (0.1 * w))
    score = (0.25 * uniform + 0.2 * min(1.0, contrast / 150) + 0.2 * (1 - spill)
             + 0.15 * aspect + 0.2 * size) * position * (0.85 + 0.15 * fill)
    return _Bar(int(y0), int(y1), int(x0), int(x1), length_sub, bright, shade, surround, float(score),
                ticks is not None, float(tick_width), buried)


def _buried_end(grey, y0, y1, x0, x1, mid, bright, bracket=False):
    """True when an end of the bar lies in a region of its own shade (a particle), so its end is not seen.

    A bar drawn into a bright particle (a white bar) runs on into it: the run,
    and so the measured length, ends inside the particle or at its far side.
    At the bar's last few columns (for a bracket, inwards of its end ticks) the
    rows just above and just below the bar are then both of the bar's shade
    over most of the columns; a label glyph touching the bar covers one side only.
    """
    h = grey.shape[0]
    L, thick = x1 - x0, y1 - y0
    if bracket:
        inner, outer = int(max(8, 0.06 * L)), int(max(6, 2 * thick)) + 1
        if inner <= outer:
            inner = outer + 3
    else:
        inner, outer = int(max(4, 2 * thick)), 0
    for a, b in ((x0 + outer, x0 + inner), (x1 - inner, x1 - outer)):
        sides = [grey[max(0, y0 - 4):max(0, y0 - 1), a:b], grey[min(h, y1 + 1):min(h, y1 + 4), a:b]]
        if all(side.size and float(((side > mid) if bright else (side < mid)).mean()) > 0.5 for side in sides):
            return True
    return False


def _runs_through(on, cx):
    """Per row of a boolean array, the run of True through column ``cx``: (starts, ends).

    Rows where ``on[:, cx]`` is False get an empty run (start = end = cx).
    """
    n, m = on.shape
    starts = np.full(n, cx)
    ends = np.full(n, cx)
    for r in range(n):
        row = on[r]
        if not row[cx]:
            continue
        off_left = np.flatnonzero(~row[:cx])
        off_right = np.flatnonzero(~row[cx:])
        starts[r] = off_left[-1] + 1 if off_left.size else 0
        ends[r] = cx + off_right[0] if off_right.size else m
    return starts, ends


def _reject(reason, ox, oy, comp):
    """Log why a bar candidate was dropped (``logging`` at DEBUG level); returns None."""
    log.debug("bar candidate at y=%d x=%d shape %s rejected: %s", oy, ox, comp.shape, reason)
    return None


def _tick_edges(grey, y0, y1, x0, x1, shade, surround):
    """Sub-pixel outer edges of the end ticks of a bracket bar ``|—|`` and their mean width, or None.

    A tick is a narrow vertical stroke of the bar's shade at an end of the bar,
    joined to it (ink in the row next to the bar) and standing out above or
    below it by at least 3 px and the bar's thickness, with the bar's middle
    clear in those rows. Both ends need one. Each tick's centre is the
    coverage-weighted mean column (pixel ``c`` spans ``[c, c + 1)``) over the
    rows the tick spans, its width the coverage summed across it; its outer edge
    lies half a width outwards of the centre.

    Returns
    -------
    (left_outer, right_outer, mean_tick_width) or None
        ``right_outer - left_outer`` is the bar's length (the module's bracket
        convention: outer edge to outer edge).
    """
    h, w = grey.shape
    thick = y1 - y0
    reach = max(3, thick)          # how far a tick must stand out
    max_width = max(6, 2 * thick)  # wider is no tick (a block, a letter)
    span = max(reach + 2, 3 * thick + 4)
    centres, end_widths = [], []
    for end in ("left", "right"):
        found, widths = [], []
        for rows in (range(max(0, y0 - span), y0), range(y1, min(h, y1 + span))):
            rows = list(rows)
            if len(rows) < reach:
                continue
            a, b = (max(0, x0 - 2), min(w, x0 + max_width + 2)) if end == "left" else (
                max(0, x1 - max_width - 2), min(w, x1 + 2))
            cover = np.clip((grey[rows][:, a:b] - surround) / (shade - surround), 0, 1)
            on = cover >= 0.5
            # rows, counted from the bar outwards, in which the end columns hold ink
            order = rows[::-1] if rows[0] < y0 else rows
            idx = [rows.index(r) for r in order]
            # grow the stroke outwards from the bar, row by row, keeping to the columns it holds
            # (a label's glyphs nearby are not joined to it)
            cols = on[idx[0]].copy()
            run = 0
            for i in idx:
                grown = on[i] & (cols | np.roll(cols, 1) | np.roll(cols, -1))
                if not grown.any():
                    break
                cols |= grown
                run += 1
            if run < reach:
                continue
            used = idx[:run]
            if cols.sum() > max_width:
                continue
            mid = (x0 + x1) // 2
            if (np.clip((grey[[rows[i] for i in used], mid] - surround) / (shade - surround), 0, 1) >= 0.5).any():
                continue  # the bar itself is thicker there: no tick
            near = cols | np.roll(cols, 1) | np.roll(cols, -1)  # the tick and its partly covered neighbours
            prof = cover[used].mean(axis=0) * near  # background noise elsewhere would pull the centre inwards
            xs = np.arange(a, b) + 0.5
            found.append(float((prof * xs).sum() / prof.sum()))
            widths.append(float(prof.sum()))  # coverage summed across: the tick's width in pixels
        if not found:
            return None
        centres.append(float(np.mean(found)))
        end_widths.append(float(np.mean(widths)))
    if not centres[1] - centres[0] > 0.5 * (x1 - x0):
        return None
    return (centres[0] - end_widths[0] / 2, centres[1] + end_widths[1] / 2, float(np.mean(end_widths)))


def _subpixel_length(grey, y0, y1, x0, x1, shade, surround):
    """Sub-pixel end-to-end length and the bar's columns (x0, x1).

    The median profile across the bar's rows is turned into coverage
    (0 = surround, 1 = bar); the run of mostly covered pixels through the bar's
    middle is counted in full and the first partly covered pixel beyond each
    end adds its coverage.
    """
    w = grey.shape[1]
    a, b = max(0, x0 - 4), min(w, x1 + 4)
    prof = np.median(grey[y0:y1, a:b], axis=0)
    cover = np.clip((prof - surround) / (shade - surround), 0, 1)
    mid = (x0 + x1) // 2 - a
    lo = mid
    while lo > 0 and cover[lo - 1] >= 0.5:
        lo -= 1
    hi = mid + 1
    while hi < len(cover) and cover[hi] >= 0.5:
        hi += 1
    length = float(cover[lo:hi].sum())
    if lo > 0:
        length += float(cover[lo - 1])
    if hi < len(cover):
        length += float(cover[hi])
    return length, a + lo, a + hi


# --------------------------------------------------------------------------- OCR

@functools.lru_cache(maxsize=1)
def tesseract_available():
    """True when pytesseract and the Tesseract binary can be used (checked once).

    A missing binary or package is logged once as a warning; detection then
    measures the bar but reads no label.
    """
    try:
        import pytesseract
    except ImportError:
        log.warning("scale bar: the Python package 'pytesseract' is not installed; "
                    "the bar is measured but its label is not read (type the value instead)")
        return False
    cmd = pytesseract.pytesseract.tesseract_cmd
    if shutil.which(cmd) is None:
        log.warning("scale bar: the Tesseract OCR program (%r) was not found; install the "
                    "Debian package 'tesseract-ocr'. The bar is measured but its label is "
                    "not read (type the value instead)", cmd)
        return False
    try:
        pytesseract.get_tesseract_version()
    except Exception as exc:  # a broken install
        log.warning("scale bar: Tesseract OCR does not run (%s); labels are not read", exc)
        return False
    return True


# ------------------------------------------------------------------ label text

# Characters OCR puts for a digit (only inside a number: "2O0", "l00", "1O").
_DIGIT_LOOKALIKES = str.maketrans({"O": "0", "o": "0", "D": "0", "Q": "0", "l": "1", "I": "1", "|": "1",
                                   "i": "1", "!": "1", "T": "1", "S": "5"})
_NUM = r"[0-9OoDQlI|i!TS]"
# <number> <unit>: the number may not follow a letter or digit ("HFW1.8um", "x1000nm").
# Units: nm (also "nrn", "NM", and "nn": the m of a small font whose middle stroke blurs into
# the others); micro as µ/u/p/y/j/q/w or "ji"/"pu" and m/rn/n ("urn", "pm", "µn").
# Up to two specks may stand between number and unit: noise dots on a grainy background come
# back as ":", "-", "~" or quotes ("20:-nm"), which read 2's whitelist drops.
_SPECKS = r"(?:[:;\-~'\"_‘’]{1,2}\s?)?"
# the number and what may stand before the unit (group 1: the number), for both patterns below
_NUMBER_BEFORE_UNIT = r"(?<![\w.,])(" + _NUM + r"+(?:[.,]" + _NUM + r"+)?)\s?" + _SPECKS
_LABEL_RE = re.compile(
    _NUMBER_BEFORE_UNIT +
    r"(n\s?(?:m|rn|n)|N\s?M|(?:[µuUpyjqw]{1,2}|j[iu])\s?(?:m|rn|n)(?![a-z]))(?![A-Za-z])")
# A number and the first letter of a unit whose rest OCR garbled ("100 n=", "50 nim"): read 1
# without a whitelist spells what it cannot read, so only its number and the unit's first
# letter (n: nano; µ and its look-alikes: micro) are taken, to confirm read 2 (see _features).
_GARBLED_UNIT_RE = re.compile(_NUMBER_BEFORE_UNIT + r"([nµuUpyjqw])\S{0,3}(?!\S)")
# Instrument data-table keys (SEM info bars). A value right after one of these is a
# table value (horizontal field width, working distance ...), never the scale label.
_TABLE_KEY_RE = re.compile(
    r"(?:^|[^A-Za-z])(HFW|HFOV|FOV|FW|HV|WD|EHT|Mag|MAG|mag|Det|det|Spot|spot|Width|width|Field|field|"
    r"View|view|Pixel|pixel|Tilt|tilt|Curr|Signal|Dwell|Scan|Frame)\s*[:=]?\s*$")
# Other table tokens anywhere in a line: kV, mm, magnifications (x50,000; 50kx), dates, times, Pa.
_TABLE_TOKEN_RE = re.compile(
    r"(\d\s?[kK][vV]\b|\bkV\b|\d\s?mm\b|\bmm\b|[xX]\s?\d[\d,.]*\s?[kK]?\b|\b\d[\d,.]*\s?[kK]?[xX]\b|"
    r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}\b|\b\d{1,2}:\d{2}\b|\b(?:HFW|HFOV|FOV|HV|WD|EHT|Mag|Det|Spot|ETD|TLD|"
    r"BSE|SE2?|InLens|Tilt|Pa|Torr|nA|pA)\b)")


def _number(raw):
    """A label number as float, OCR look-alikes corrected; None when it is no number."""
    if not any(c.isdigit() for c in raw) and raw not in ("l", "I", "|", "T") and not (
            len(raw) >= 2 and raw[0] in "lIS"):  # "lO", "SO": 10, 50
        return None
    number = raw.translate(_DIGIT_LOOKALIKES).replace(",", ".")
    if "." not in number and len(number) > 1 and number[0] == "0":
        number = number[0] + "." + number[1:]  # "05 um": a dropped decimal point after a leading zero
    try:
        value = float(number)
    except ValueError:
        return None
    return value if value > 0 else None


def label_matches(text):
    """Every ``<number> <unit>`` in an OCR text, with whether a data-table key precedes it.

    Returns
    -------
    list of (value, unit, table) : (float, {"nm", "µm"}, bool)
        ``table`` is True when the number follows an instrument data-table key
        ("HFW 1.8 um", "FW: 2 µm", "WD 5 mm" never matches: mm is no label unit).
    """
    t = text.replace("μ", "µ").replace("\n", " ")
    out = []
    for m in _LABEL_RE.finditer(t):
        value = _number(m.group(1))
        if value is None:
            continue
        unit_text = m.group(2).replace(" ", "")
        unit = "nm" if unit_text[0] in "nN" else "µm"
        out.append((value, unit, _after_table_key(t[:m.start()])))
    return out


def _after_table_key(before):
    """True when the text before a number ends with a data-table key or any word of two letters or more.

    ("HFEW 1.8 pm", "Width 2 µm"): a scale label is a number and a unit alone.
    """
    before = before.rstrip()
    word = re.search(r"([A-Za-zµ]{2,})\s*[:=]?$", before)
    return (_TABLE_KEY_RE.search(before) is not None
            or (word is not None and word.group(1) not in ("nm", "um", "µm", "mm", "pm")))


def parse_label(text):
    """Value and unit of a scale-bar label.

    Common OCR confusions are corrected: micro read as "u", "p", "y", "j" or "q";
    "m" read as "rn" ("nrn", "urn"); "O" for 0 and "l", "I" or "|" for 1 inside
    the number; "," for the decimal point. A value that follows an instrument
    data-table key (HFW, FW, WD, HV, Mag, ...) is no label and is skipped.

    Parameters
    ----------
    text : str
        OCR output, e.g. ``"200 nm"``, ``"0.5 μm"``, ``"1um"``, ``"2,5 µm"``.

    Returns
    -------
    (value, unit) : (float, {"nm", "µm"}) or None
        None when no ``<number> <unit>`` outside a data-table entry is found.

    Examples
    --------
    >>> parse_label("500nm")
    (500.0, 'nm')
    >>> parse_label("0.5 μm")
    (0.5, 'µm')
    >>> parse_label("n 05 um")  # a dropped decimal point after a leading zero
    (0.5, 'µm')
    >>> parse_label("1 pm")  # Tesseract's usual reading of "1 µm"
    (1.0, 'µm')
    >>> parse_label("2O0 nrn")
    (200.0, 'nm')
    >>> parse_label("HFW 1.8 um") is None
    True
    >>> parse_label("42") is None
    True
    """
    for value, unit, table in label_matches(text):
        if not table:
            return value, unit
    return None


def canonical_value(value):
    """How usual a scale-bar value is: 1.0 for a mantissa of 1, 2, 2.5, 3 or 5 (x 10^k), 0.5 for 4 or 1.5, else 0.

    Scale bars are drawn at round lengths. On the tune split of the real fixtures
    and all synthetic labels every value has a mantissa in CANONICAL_MANTISSAS;
    4 and 1.5 occur on some instruments and are kept as "less usual".
    """
    if not value or value <= 0:
        return 0.0
    k = np.floor(np.log10(value) + 1e-9)
    m = round(value / 10 ** k, 6)
    if any(abs(m - c) < 1e-6 for c in CANONICAL_MANTISSAS):
        return 1.0
    if any(abs(m - c) < 1e-6 for c in USUAL_MANTISSAS):
        return 0.5
    return 0.0


# ---------------------------------------------------------------- label lines

def _label_window(bar, shape):
    """Rows where a bar's label may be and the columns searched for it: (y0, y1, x0, x1).

    The column range is wide (the whole text row of a data table must be seen
    to recognise its keys); label lines are then kept only near the bar.
    """
    h, w = shape
    L, t = bar.x1 - bar.x0, bar.y1 - bar.y0
    s = float(np.clip(max(4 * t, 0.3 * L), 18, 0.15 * h))  # rough label height scale
    y0 = int(max(0, bar.y0 - 2.2 * s))
    y1 = int(min(h, bar.y1 + 2.2 * s))
    x0 = int(max(0, bar.x0 - max(2.0 * L, 12 * s)))
    x1 = int(min(w, bar.x1 + max(2.0 * L, 12 * s)))
    return y0, y1, x0, x1


def _ink(crop, bar, mode):
    """Ink map in 0..1 of a crop (0.5 = the text/background threshold).

    Parameters
    ----------
    crop : ndarray (h, w) float32, grey levels
    bar : _Bar
    mode : {"bar", "strict", "loose", "inverse"}
        ``"bar"``: text of the bar's shade, threshold halfway between bar and
        surround. ``"strict"``: the same, threshold three quarters of the way
        to the bar's shade (text over bright particles or a busy surround).
        ``"loose"``: the same, threshold 30 % of the way from the surround (thin,
        small or blurred glyphs that never reach halfway); :func:`_label_lines`
        tries it, as ``"inverse"``, only when the first two found no label line.
        ``"inverse"``: text of the opposite shade (a white bar with
        dark grey text, white text in a black box next to a black bar), from
        the crop's median towards its darkest (or brightest) pixels.
    """
    if mode == "inverse":
        med = float(np.median(crop))
        if bar.bright:  # dark text
            ext = float(np.percentile(crop, 0.5))
            ink = (med - crop) / max(med - ext, 20.0)
        else:
            ext = float(np.percentile(crop, 99.5))
            ink = (crop - med) / max(ext - med, 20.0)
    else:
        ink = (crop - bar.surround) / (bar.shade - bar.surround)
        if mode == "strict":
            ink = (ink - 0.5) * 2
        elif mode == "loose":
            ink = ink / 0.6
    return np.clip(ink, 0, 1)


def _solid_blob(comp):
    """True for a compact, convex, roundish blob (a particle; glyphs are strokes).

    Letters like "n" or "u" are as wide as tall and hole-free but concave;
    digits like "0" have holes.
    """
    bh, bw = comp.shape
    if not 0.6 <= bw / bh <= 1.7:
        return False
    area = float(comp.sum())
    if area < 0.65 * bh * bw:
        return False
    contours, _ = cv2.findContours(comp.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.contourArea(cv2.convexHull(np.concatenate(contours)))
    # Pixel areas exceed contour areas by about half the perimeter.
    solidity = area / (hull + 0.5 * cv2.arcLength(cv2.convexHull(np.concatenate(contours)), True) + 1)
    return solidity >= 0.9 and ndi.binary_fill_holes(comp).sum() <= area * 1.03


@dataclass
class _Line:
    """A row of glyph-like blobs near a bar: a label candidate (internal)."""

    bar: _Bar
    mode: str
    box: tuple            # (y0, y1, x0, x1) in image pixels
    height: float         # glyph (cap) height, pixels
    n_blobs: int
    where: str            # "above", "below", "beside"
    ink: np.ndarray       # soft ink map of the line's box (0..1), other blobs erased
    grey: np.ndarray      # grey crop of the line's box
    reason: str = ""      # why the geometry check rejected it ("" = accepted)
    in_banner: bool = False  # the line lies in the instrument data bar


def _glyph_blobs(ink, bar_local, h_img):
    """Glyph-like connected pieces of an ink map: (stats rows [x, y, w, h, area], labels, kept ids)."""
    by0, by1, bx0, bx1 = bar_local
    mask = (ink > 0.5).astype(np.uint8)
    mask[max(0, by0 - 1):by1 + 1, max(0, bx0 - 1):bx1 + 1] = 0  # the bar itself (a descender may touch it)
    n, cc, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    max_h = max(45, 0.12 * h_img)
    glyphs, dots = [], []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if bh > max_h or area < 4:
            continue
        if bh < MIN_GLYPH_PX:
            if bh >= 2 and 0.5 <= bw / bh <= (3 if bh >= 3 else 2):
                dots.append(i)  # a decimal point, or a letter of a small font, if it sits on a line
            continue
        if bw > 6 * bh:  # a line, not a glyph
            continue
        if bw >= 2.5 * bh and y <= by0 and y + bh >= by1:
            rows = cc[by0:by1, x:x + bw] == i
            if rows.any(axis=0).mean() >= 0.8:  # a piece of the bar in its rows, with an end tick: "|——"
                continue
        touches_bar = y <= by1 + 1 and y + bh >= by0 - 1
        near_end = min(abs(x + bw / 2 - bx0), abs(x + bw / 2 - bx1)) <= 4
        if touches_bar and near_end and bw <= 6:  # an end tick
            continue
        if _solid_blob(cc[y:y + bh, x:x + bw] == i):
            dots.append(i)  # a particle, or a decimal point: decided per line
            continue
        glyphs.append(i)
    return stats, cc, glyphs, dots


def _chain(stats, glyphs):
    """Group glyph blobs into text lines: lists of blob ids, left to right."""
    order = sorted(glyphs, key=lambda i: stats[i][0])
    parent = {i: i for i in order}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a_pos, a in enumerate(order):
        xa, ya, wa, ha, _ = stats[a]
        for b in order[a_pos + 1:]:
            xb, yb, wb, hb, _ = stats[b]
            hmax = max(ha, hb)
            gap = xb - (xa + wa)
            if gap > WORD_GAP * hmax:
                if xb > xa + wa + WORD_GAP * max(ha, 45):
                    break
                continue
            overlap = min(ya + ha, yb + hb) - max(ya, yb)
            if overlap < 0.5 * min(ha, hb) or not 0.35 <= ha / hb <= 2.9:
                continue
            parent[root(b)] = root(a)
    lines = {}
    for i in order:
        lines.setdefault(root(i), []).append(i)
    return [sorted(v, key=lambda i: stats[i][0]) for v in lines.values()]


# A blob of a text line more than this many times the line's median blob height is no
# glyph of it alone: a particle the chain picked up, or a glyph a particle touches.
# Glyphs of a label differ by at most about 1.45x (cap height against x-height).
OUTLIER_HEIGHT = 1.6
# Such a blob is cut to the line's text band: from CAP_HEIGHT median glyph heights above
# the line's baseline (room for digits over a line of x-height letters) to DESCENDER
# below it (the tail of a µ); what is left is a glyph when at least half a glyph tall.
CAP_HEIGHT, DESCENDER = 1.45, 0.35


def _stroke_width(cc, stats, i):
    """Stroke width of blob ``i`` of a label image ``cc``, pixels: twice its largest inner distance."""
    x, y, bw, bh, _ = stats[i]
    mine = np.pad(cc[y:y + bh, x:x + bw] == i, 1).astype(np.uint8)
    return 2.0 * float(cv2.distanceTransform(mine, cv2.DIST_L2, 3).max())


def _clip_tall_outliers(stats, cc, lines):
    """Lines of three or more blobs with their far too tall blobs cut to the line's text band.

    A glyph touching a particle ("200 nm" whose second zero touches a dark
    sphere) is one blob far taller than the line. Its pixels outside the band
    of the line's other blobs (baseline and cap height, see CAP_HEIGHT) are
    erased from ``cc`` and its row of ``stats`` is re-measured, in place; a blob
    with less than half a glyph left in the band is dropped. Lines that lost or
    changed a blob are chained again.
    """
    out = []
    for ids in lines:
        if len(ids) >= 3:
            med = float(np.median([stats[i][3] for i in ids]))
            tall = [i for i in ids if stats[i][3] > OUTLIER_HEIGHT * med]
            if tall:
                rest = [i for i in ids if i not in tall]
                base = float(np.median([stats[i][1] + stats[i][3] for i in rest]))
                top, bottom = int(round(base - CAP_HEIGHT * med)), int(round(base + DESCENDER * med))
                # a particle is solid where glyphs are strokes: what a disc twice the line's
                # stroke width fits into is erased first (the glyph strokes next to it stay)
                stroke = float(np.median([_stroke_width(cc, stats, i) for i in rest]))
                disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(2 * stroke) + 3,) * 2)
                for i in tall:
                    x, y, bw, bh, _ = stats[i]
                    box = cc[y:y + bh, x:x + bw]
                    mine = box == i
                    body = cv2.morphologyEx(mine.astype(np.uint8), cv2.MORPH_OPEN, disc)
                    body = body.astype(bool) & mine
                    box[body] = 0
                    mine &= ~body
                    rows = np.arange(y, y + bh)[:, None]
                    outside = mine & ((rows < top) | (rows >= bottom))
                    box[outside] = 0
                    left = mine & ~outside
                    if left.sum() < 4 or not left.any(axis=1).sum() >= 0.5 * med:
                        box[left] = 0
                        continue
                    ys, xs = np.nonzero(left)
                    stats[i] = (x + xs.min(), y + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1,
                                int(left.sum()))
                    rest.append(i)
                out.extend(_chain(stats, rest))
                continue
        out.append(ids)
    return out


# A text line is continued by blobs that lie wholly in its text band (see CAP_HEIGHT)
# and are at least this share of its median glyph height: letters of a small font
# ("nm" of 4 px x-height beside "50" of 5 px is under the glyph height limit) and
# pieces of glyphs that a particle or a faint stroke cut off the chain.
BAND_GLYPH_SHARE = 0.55


def _join_band(stats, ids, pool):
    """A line's blob ids with the blobs of ``pool`` that continue it in its text band, left to right.

    A blob joins when it lies wholly between CAP_HEIGHT median glyph heights
    above the line's baseline and DESCENDER below it, is at least
    BAND_GLYPH_SHARE of the median height tall, and is within WORD_GAP glyph
    heights of the line (repeatedly, so "nm" after "50" joins letter by letter).
    """
    med = float(np.median([stats[i][3] for i in ids]))
    base = float(np.median([stats[i][1] + stats[i][3] for i in ids]))
    top, bottom = base - CAP_HEIGHT * med - 1, base + DESCENDER * med + 1
    pool = np.asarray(pool, dtype=int)
    ph, py = stats[pool, 3], stats[pool, 1]
    # in the pool's order (a large image's window holds thousands of blobs: one array test, not a loop)
    cand = pool[(ph >= BAND_GLYPH_SHARE * med) & (py >= top) & (py + ph <= bottom)
                & ~np.isin(pool, np.asarray(ids, dtype=int))].tolist()
    ids = list(ids)
    grown = True
    while grown and cand:
        grown = False
        lx0 = min(stats[i][0] for i in ids)
        lx1 = max(stats[i][0] + stats[i][2] for i in ids)
        for i in list(cand):
            x, _, bw, _, _ = stats[i]
            if max(x - lx1, lx0 - (x + bw)) <= WORD_GAP * med:
                ids.append(i)
                cand.remove(i)
                grown = True
    return sorted(ids, key=lambda i: stats[i][0])


def _label_lines(grey, bar, banner=None):
    """Label candidates of a bar: text lines beside, above or below it, geometry checked.

    Every returned line has ``reason`` "" when its geometry fits a scale label
    and otherwise says why not (the reader never reads rejected lines):

    * ``"short bar"``: the bar is not much longer than the glyphs are tall
      (a piece of the label text, a dash, a glyph stroke);
    * ``"bar in text"``: the bar lies inside the text line (a stroke of a glyph);
    * ``"wide label"``: the line is far wider than the bar (a data-table row);
    * ``"far"``: the line is not next to the bar.
    """
    h_img = grey.shape[0]
    wy0, wy1, wx0, wx1 = _label_window(bar, grey.shape)
    if banner is not None and banner[0] <= bar.y0 and bar.y1 <= banner[1]:
        wy0, wy1 = max(wy0, banner[0]), min(wy1, banner[1])  # the label shares the data bar
    crop = grey[wy0:wy1, wx0:wx1]
    bar_local = (bar.y0 - wy0, bar.y1 - wy0, bar.x0 - wx0, bar.x1 - wx0)
    L = bar.x1 - bar.x0
    out = []
    for mode in ("bar", "strict", "loose", "inverse"):
        if mode in ("loose", "inverse") and any(not ln.reason and ln.mode in ("bar", "strict") for ln in out):
            break  # text of the bar's shade was found: no need for the fallbacks
        ink = _ink(crop, bar, mode)
        stats, cc, glyphs, dots = _glyph_blobs(ink, bar_local, h_img)
        pool = glyphs + [i for i in dots if stats[i][3] < MIN_GLYPH_PX]  # no particles
        dots_arr = np.asarray(dots, dtype=int)
        for ids in _clip_tall_outliers(stats, cc, _chain(stats, glyphs)):
            ids = _join_band(stats, ids, pool)
            xs = [stats[i][0] for i in ids]
            ys = [stats[i][1] for i in ids]
            x1s = [stats[i][0] + stats[i][2] for i in ids]
            y1s = [stats[i][1] + stats[i][3] for i in ids]
            ly0, ly1, lx0, lx1 = min(ys), max(y1s), min(xs), max(x1s)
            height = float(max(stats[i][3] for i in ids))
            # decimal points and other small pieces inside the line's box belong to it
            dx, dy, dw, dh = (stats[dots_arr, k] for k in range(4))
            members = list(ids) + dots_arr[(dh <= 0.45 * height) & (lx0 <= dx) & (dx + dw <= lx1)
                                           & (ly0 <= dy) & (dy + dh <= ly1 + 1)].tolist()
            if len(ids) < 2 and stats[ids[0]][2] < 1.5 * height:
                continue  # one narrow blob: no label ("1µm" is three, merged glyphs are wide)
            by0, by1, bx0, bx1 = bar_local
            gap_above = by0 - ly1      # > 0: line above the bar
            gap_below = ly0 - by1      # > 0: line below
            gap_x = max(lx0 - bx1, bx0 - lx1, 0)
            overlap_x = min(lx1, bx1) - max(lx0, bx0)
            if gap_above >= -1 and gap_above <= 2.5 * height and gap_x <= 2.0 * height:
                where = "above"
            elif gap_below >= -1 and gap_below <= 2.5 * height and gap_x <= 2.0 * height:
                where = "below"
            elif min(ly1, by1 + height) - max(ly0, by0 - height) > 0 and 0 < gap_x <= 6 * height:
                where = "beside"
            elif overlap_x > 0 and gap_above < 0 and gap_below < 0:
                where = "inside"
            else:
                continue  # not near this bar: another bar's label, or clutter
            reason = ""
            if where == "inside":
                reason = "bar in text"
            elif L < BAR_MIN_GLYPHS * height:
                reason = "short bar"
            elif lx1 - lx0 > LABEL_MAX_BARS * max(L, 3 * height):
                reason = "wide label"
            pad = int(round(0.25 * height)) + 1
            y0, y1 = max(0, ly0 - pad), min(crop.shape[0], ly1 + pad)
            x0, x1 = max(0, lx0 - pad), min(crop.shape[1], lx1 + pad)
            # the line's blobs and every other piece wholly inside its box that is at least PIECE_SHARE
            # of its height long or within 2 px of a blob (a serif or a stroke of a glyph broken off by
            # the threshold, not a noise speck), but nothing that reaches out of it
            sx, sy, sw, sh = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
            inside = np.flatnonzero((sx >= x0) & (sy >= y0) & (sx + sw <= x1) & (sy + sh <= y1))
            sub = cc[y0:y1, x0:x1]
            near = cv2.dilate(np.isin(sub, members).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            touching = np.unique(sub[near])
            inside = inside[(inside > 0) & ((np.maximum(sw[inside], sh[inside]) >= PIECE_SHARE * height)
                                            | np.isin(inside, touching))]
            keep = np.isin(cc[y0:y1, x0:x1], np.union1d(members, inside))
            keep = cv2.dilate(keep.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if any(o.box == (wy0 + y0, wy0 + y1, wx0 + x0, wx0 + x1) for o in out):
                continue  # the same line found in another mode
            in_banner = banner is not None and banner[0] <= wy0 + y0 and wy0 + y1 <= banner[1]
            out.append(_Line(bar, mode, (wy0 + y0, wy0 + y1, wx0 + x0, wx0 + x1), height, len(members), where,
                             ink[y0:y1, x0:x1] * keep, crop[y0:y1, x0:x1], reason, in_banner))
    return out


# ------------------------------------------------------------------ two reads

def _prep_first(line):
    """Read 1: the soft ink map, black on white, upscaled (cubic) to 40 px glyphs."""
    img = (255 * (1 - line.ink)).astype(np.uint8)
    f = float(np.clip(40.0 / max(line.height, 1), 1.5, 8))
    return cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)


def _prep_second(line):
    """Read 2: the same ink map upscaled (linear) to 30 px glyphs, read with the character whitelist.

    Tried on the tune split and 60 synthetic images against read 1 (soft ink, 40 px, no
    whitelist: 127 right, 5 wrong parses): an Otsu-binarised crop read 76-83 labels right
    (binarised small glyphs lose strokes), this one 126 right, 6 wrong, and agrees with
    read 1 on 124; whitelist and scale differ, so the two fail on different labels.
    Tried again for v4 (tune split and 120 synthetic images, v4 label lines): Lanczos to
    40 px read the same (39/42, 98/110 hits); Lanczos 40 px with ``--psm 6`` 38/42 and
    97/110; Lanczos 30 px with ``--psm 7`` 39/42 and 96/110. None beat this one.
    """
    img = (255 * (1 - line.ink)).astype(np.uint8)
    f = float(np.clip(30.0 / max(line.height, 1), 1.2, 8))
    return cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_LANCZOS4)


def _stack(images, gap=40):
    """Images stacked top to bottom on white with ``gap`` px between: (stack, row spans)."""
    width = max(im.shape[1] for im in images) + 2 * gap
    spans, y = [], gap
    canvas_h = sum(im.shape[0] for im in images) + gap * (len(images) + 1)
    canvas = np.full((canvas_h, width), 255, np.uint8)
    for im in images:
        canvas[y:y + im.shape[0], gap:gap + im.shape[1]] = im
        spans.append((y, y + im.shape[0]))
        y += im.shape[0] + gap
    return canvas, spans


def _ocr_rows(images, config):
    """One Tesseract call on all images stacked: per image, (text, mean word confidence 0..1)."""
    import pytesseract

    canvas, spans = _stack(images)
    data = pytesseract.image_to_data(canvas, config=config, output_type=pytesseract.Output.DICT)
    words = [[] for _ in images]
    for i, word in enumerate(data["text"]):
        if not word.strip():
            continue
        cy = data["top"][i] + data["height"][i] / 2
        for r, (a, b) in enumerate(spans):
            if a - 20 <= cy < b + 20:
                words[r].append((data["left"][i], word.strip(), float(data["conf"][i])))
                break
    out = []
    for ws in words:
        ws.sort()
        conf = [c for _, _, c in ws if c >= 0]
        out.append((" ".join(w for _, w, _ in ws), float(np.mean(conf)) / 100 if conf else 0.0))
    return out


# Read 1 binarises with Leptonica's adaptive Otsu (Tesseract 5's thresholding_method 1)
# instead of the global Otsu: on soft, bold lines the global threshold came out so high
# that the glyphs merged and no text was found at all (a clean "500 nm" read as "").
# Chosen on the tune split and 120 synthetic images: tune 38/42 either way, synthetic
# 96 -> 98 of 110 hits and 2 -> 1 wrong; Sauvola (2) gave 96 and 2; the same for read 2
# as well gave no more (98, 1), so read 2 keeps the global Otsu and stays independent.
READ_CONFIGS = ("--psm 11 -c thresholding_method=1", f"--psm 11 -c tessedit_char_whitelist={WHITELIST}")
# Tesseract 4 has no thresholding_method: read 1 uses the global Otsu there.
READ_CONFIGS_TESSERACT4 = ("--psm 11", READ_CONFIGS[1])


@functools.lru_cache(maxsize=1)
def _read_configs():
    """READ_CONFIGS for the installed Tesseract (its version is asked once)."""
    import pytesseract

    try:
        major = int(str(pytesseract.get_tesseract_version()).split(".")[0])
    except Exception:  # noqa: BLE001 - an odd version string: assume a current Tesseract
        major = 5
    return READ_CONFIGS if major >= 5 else READ_CONFIGS_TESSERACT4


# ------------------------------------------------------------------ confidence

_ZERO_LOOKALIKES = str.maketrans({"8": "0", "6": "0", "9": "0"})


def _slashed_zero(parsed):
    """A read with an unusual value whose later 8s, 6s and 9s were slashed zeros, corrected; else None.

    Pixel fonts of JEOL and Hitachi data bars slash the zero ("1ØØ nm"), which
    Tesseract reads as 8, 6 or 9 ("188 nm", "168 nm"). Only digits after the
    first of a whole number are changed, and only when the read value is unusual (no mantissa of
    CANONICAL_MANTISSAS or USUAL_MANTISSAS) and the corrected one is usual.
    :func:`_features` applies it only to a line inside the instrument data bar
    (where those fonts are; a "188 nm" drawn on the micrograph stays unusual and
    is rejected) and only when both reads correct to the same value.
    """
    if parsed is None or canonical_value(parsed[0]) > 0:
        return None
    digits = f"{parsed[0]:g}"
    if not digits.isdigit() or len(digits) < 2:  # whole numbers of two digits or more ("1.8 µm" is an HFW)
        return None
    fixed = digits[0] + digits[1:].translate(_ZERO_LOOKALIKES)
    value = float(fixed)
    return (value, parsed[1]) if value > 0 and canonical_value(value) == 1.0 else None


_TOKEN_UNIT_RE = re.compile(r"(\S+?)\s?(?:n\s?(?:m|rn|n)|[µμuUpyjqw]{1,2}\s?(?:m|rn))(?![A-Za-z])")


def _token_before_unit(text):
    """The characters right before the first unit of an OCR text ("20U" in "20U nm"), or None.

    Units as :func:`label_matches` reads them (micro as u, p, y ...). Punctuation is left
    out ("200:" is "200": OCR puts it for specks, read 2's whitelist drops it) and digit
    look-alikes are digits ("S" is 5).
    """
    m = _TOKEN_UNIT_RE.search(text.replace("\n", " "))
    return re.sub(r"[^\w.,]", "", m.group(1)).translate(_DIGIT_LOOKALIKES) if m else None


def _garbled_unit_read(text):
    """(value, unit) from a number and a unit's first letter whose rest OCR garbled ("100 n="), or None.

    Not after a data-table key (see :func:`_after_table_key`). Used only to confirm the
    other read's value, never as a value of its own.
    """
    t = text.replace("μ", "µ").replace("\n", " ")
    g = _GARBLED_UNIT_RE.search(t)
    if g is None or _after_table_key(t[:g.start()]):
        return None
    value = _number(g.group(1))
    return None if value is None else (value, "nm" if g.group(2) == "n" else "µm")


def _decimal_point(line):
    """How many glyphs stand before a decimal point that the reads may have dropped, or None.

    Small fonts ("2.00um", "10.0um" in Hitachi data bars) shrink the point to a
    faint speck that Tesseract skips ("2 00um", "200um"): the value would read
    100x too large. The point is looked for in the line's grey crop: exactly one blob
    (ink of the bar's shade from 0.3) no taller or wider than 0.35 glyph heights, apart from the
    glyphs (ink from 0.5, at least half the line's height), resting on their
    baseline and between two of them. A noise speck between the tight digits of
    "200" is no point: a real point takes its own room, so the gap between the
    glyphs on either side must reach 0.3 glyph heights, and the point's width
    plus twice the line's tightest other gap between glyphs (the font's spacing
    on both sides of the point).
    """
    h = line.height
    n, cc, stats, _ = cv2.connectedComponentsWithStats((line.ink >= 0.5).astype(np.uint8), connectivity=8)
    glyphs = sorted((tuple(int(v) for v in stats[i][:4]) for i in range(1, n) if stats[i][3] >= 0.5 * h),
                    key=lambda b: b[0])
    if len(glyphs) < 2:
        return None
    base = float(np.median([y + bh for _, y, _, bh in glyphs]))
    if line.mode == "inverse":
        return None
    # the point in the line's grey crop: the ink map keeps no piece this small
    faint = cv2.connectedComponentsWithStats((_ink(line.grey, line.bar, "bar") >= 0.3).astype(np.uint8),
                                             connectivity=8)
    dots = []
    for i in range(1, faint[0]):
        x, y, w, bh, area = (int(v) for v in faint[2][i])
        if (area >= 2 and bh <= 0.35 * h and w <= 0.35 * h and y + bh >= base - 0.25 * h
                and glyphs[0][0] + glyphs[0][2] <= x and x + w <= glyphs[-1][0]
                and not (cc[faint[1] == i] > 0).any()):  # no part of a glyph
            dots.append((x, w))
    if len(dots) != 1:
        return None
    dx, dw = dots[0]
    k = sum(g[0] + g[2] / 2 < dx for g in glyphs)
    gaps = [g[0] - (f[0] + f[2]) for f, g in zip(glyphs, glyphs[1:])]
    gap, others = gaps[k - 1], gaps[:k - 1] + gaps[k:]
    tight = max(1, min(others)) if others else 1
    return k if gap >= 0.3 * h and gap >= dw + 2 * tight else None


def _with_decimal_point(text, k):
    """``text`` with the label's number given a decimal point after its ``k``-th digit, when it has none.

    Spaces between digits are closed first ("2 00um" -> "2.00um"); a number that
    has a point already, or no more than ``k`` digits, is left as it is.
    """
    t = re.sub(r"(?<=" + _NUM + r") (?=" + _NUM + r")", "", text)
    m = _LABEL_RE.search(t)
    if m is None or re.search(r"[.,]", m.group(1)) or len(m.group(1)) <= k:
        return text
    return t[:m.start(1)] + m.group(1)[:k] + "." + m.group(1)[k:] + t[m.end(1):]


def _features(line, read1, read2):
    """Features of one label candidate and its two reads (see CONFIDENCE_WEIGHTS)."""
    (t1, c1), (t2, c2) = read1, read2
    point = _decimal_point(line)
    if point is not None:
        t1, t2 = _with_decimal_point(t1, point), _with_decimal_point(t2, point)
    m1, m2 = label_matches(t1), label_matches(t2)
    p1 = next(((v, u) for v, u, tab in m1 if not tab), None)
    p2 = next(((v, u) for v, u, tab in m2 if not tab), None)
    table_key = any(tab for _, _, tab in m1 + m2)
    z1, z2 = _slashed_zero(p1), _slashed_zero(p2)
    if line.in_banner and z1 is not None and z1 == z2:  # both reads took a slashed zero for 8, 6 or 9
        p1, p2 = z1, z2
    value = p1 or p2
    # read 1 spelled the unit beyond parsing ("100 n=") where read 2 read "100nm": read 1's
    # number and the unit's first letter still confirm read 2, as a second preprocessing
    garbled = _garbled_unit_read(t1) if p1 is None and p2 is not None and not m1 else None
    confirmed = garbled is not None and garbled == p2
    agree = (p1 is not None and p1 == p2) or confirmed
    # read 2's whitelist drops what it cannot spell: a glyph a particle has marred ("20U nm" in
    # read 1) vanishes, and "20nm" would pass for 200 nm. Read 1's token before the same unit
    # must then be read 2's number.
    before = _token_before_unit(t1)
    dropped = p1 is None and p2 is not None and before is not None and before != _token_before_unit(t2)
    # other table tokens in the line (read without a whitelist): kV, mm, x50,000, dates
    stripped = _LABEL_RE.sub(" ", t1.replace("μ", "µ"))
    if confirmed:
        stripped = _GARBLED_UNIT_RE.sub(" ", stripped, count=1)
    table_tokens = len(_TABLE_TOKEN_RE.findall(stripped))
    L = line.bar.x1 - line.bar.x0
    f = {
        "agree": float(agree),
        "disagree": float((p1 is not None and p2 is not None and p1 != p2) or dropped),
        "canonical": canonical_value(value[0]) if value else 0.0,
        "ocr_conf": (c1 + c2) / 2,
        "bar_score": line.bar.score,
        "log_bar_glyphs": float(np.log(max(L, 1) / max(line.height, 1))),
        "table": float(table_key or table_tokens > 0),
        "extra_text": float(len(re.sub(r"[\s.,]", "", stripped)) > 2),
        # glyph blobs found vs characters read ("100 nm" is 5 blobs, "10 µm" 4)
        "blob_mismatch": (min(3, abs(line.n_blobs - (len(f"{value[0]:g}") + 2))) / 3) if value else 1.0,
    }
    return f, value, (p1, p2)


# Logistic map from the features of _features to the probability that a read is right:
# confidence = 1 / (1 + exp(-(bias + sum(weight * feature)))). Fitted (L2-regularised
# logistic regression, lambda 1, real rows weighted 3) on the 217 label candidates with
# a parsed value of the tune split (61, 3 x weight) and 120 synthetic images (156) of
# bench/bench_scalebar.py --synthetic 120; 189 of them right. Calibration on those rows:
# predicted 0-0.2: 0 % right (n 17); 0.2-0.5: 33 % (3); 0.5-0.8: 70 % (10); 0.8-0.9:
# 100 % (4); 0.9-0.95: 93 % (86); 0.95-0.99: 100 % (97).
CONFIDENCE_WEIGHTS = {
    "bias": -2.978, "agree": 0.783, "disagree": -0.933, "canonical": 3.23, "ocr_conf": 1.776,
    "bar_score": 1.177, "log_bar_glyphs": -0.018, "table": -0.645, "extra_text": -0.778,
    "blob_mismatch": -0.364,
}


def _confidence(f):
    z = CONFIDENCE_WEIGHTS["bias"] + sum(CONFIDENCE_WEIGHTS.get(k, 0.0) * v for k, v in f.items())
    return float(1 / (1 + np.exp(-z)))


# --------------------------------------------------------------------------- entry

def _far_half(grey, b, line, right_of_bar, gap):
    """The other half of a bar interrupted by its label, measured in the bar's rows, or None.

    Found when the bar's candidate search missed it (a dim end tick, a particle
    nearby): a run of the bar's shade in the bar's rows that starts within the
    label's gap (plus two glyph heights) beyond the label's far side, at least
    three glyph heights long, with the rows just above and below it not of the
    bar's shade (a line, not the edge of a band).
    """
    h, w = grey.shape
    ly0, ly1, lx0, lx1 = line.box
    reach = int(gap + 2 * line.height + 4)
    mid = (b.shade + b.surround) / 2
    span = 2 * (b.x1 - b.x0) + reach
    a, z = (lx1, min(w, lx1 + span)) if right_of_bar else (max(0, lx0 - span), lx0)
    prof = np.median(grey[b.y0:b.y1, a:z], axis=0)
    on = (prof > mid) if b.bright else (prof < mid)
    if not right_of_bar:
        on = on[::-1]  # counted outwards from the label
    start = next((k for k in range(min(reach, len(on))) if on[k]), None)
    if start is None:
        return None
    stop = next((k for k in range(start, len(on)) if not on[k]), len(on))
    x0, x1 = (a + start, a + stop) if right_of_bar else (z - stop, z - start)
    if x1 - x0 < 3 * line.height or x0 <= 0 or x1 >= w:
        return None
    sides = [grey[max(0, b.y0 - 4):max(0, b.y0 - 1), x0:x1], grey[min(h, b.y1 + 1):min(h, b.y1 + 4), x0:x1]]
    if any(side.size and float(((side > mid) if b.bright else (side < mid)).mean()) > 0.5 for side in sides):
        return None
    length, x0, x1 = _subpixel_length(grey, b.y0, b.y1, x0, x1, b.shade, b.surround)
    return _Bar(b.y0, b.y1, x0, x1, length, b.bright, b.shade, b.surround, b.score)


def _join_halves(line, bars, grey):
    """A label inside its bar (``|--- 200 nm ---|``, FEI and some JEOL data bars): both halves are one bar.

    When the line sits beside its bar, level with it, and another bar of the same
    rows, thickness and shade starts just beyond the line's other side (a bar
    candidate, or else a run measured there by :func:`_far_half`), the line's bar
    becomes the two halves joined (length from the outer ends, sub-pixel parts of
    both kept). One half alone would be read as the whole bar: half the scale.
    """
    b = line.bar
    ly0, ly1, lx0, lx1 = line.box
    if line.where != "beside" or not (ly0 - 2 <= (b.y0 + b.y1) / 2 <= ly1 + 2):
        return line
    right_of_bar = lx0 >= b.x1 - 2
    gap = (lx0 - b.x1) if right_of_bar else (b.x0 - lx1)
    far = _far_half(grey, b, line, right_of_bar, gap)
    for o in bars + ([far] if far is not None else []):
        if o is b or o.bright != b.bright or abs(o.y0 - b.y0) > 2 or abs((o.y1 - o.y0) - (b.y1 - b.y0)) > 1:
            continue
        far_gap = (o.x0 - lx1) if right_of_bar else (lx0 - o.x1)
        if -2 <= far_gap <= gap + 2 * line.height + 4:
            left, right = (b, o) if right_of_bar else (o, b)
            length = (right.x1 - left.x0) + (left.length - (left.x1 - left.x0)) + (right.length - (right.x1 - right.x0))
            joined = _Bar(min(b.y0, o.y0), max(b.y1, o.y1), left.x0, right.x1, float(length), b.bright,
                          (b.shade + o.shade) / 2, (b.surround + o.surround) / 2, (b.score + o.score) / 2)
            return dataclasses.replace(line, bar=joined)
    return line


def read_candidates(grey, bars, banner=None, stats=None):
    """Locate label lines near the best bars and read them all in at most two Tesseract calls.

    Returns
    -------
    list of dict
        One per geometry-accepted label line: ``line``, ``reads`` (two (text,
        conf)), ``features``, ``value`` ((value, unit) or None), ``confidence``.
        Lines rejected by geometry are counted in ``stats["geometry"]`` when
        ``stats`` is a dict.
    """
    lines = []
    for bar in bars[:MAX_OCR_CANDIDATES]:
        for ln in _label_lines(grey, bar, banner):
            if ln.reason:
                if stats is not None:
                    stats.setdefault("geometry", []).append(ln.reason)
                continue
            if any(o.box == ln.box for o in lines):
                continue
            lines.append(ln)
    lines = [_join_halves(ln, bars, grey) for ln in lines[:MAX_LABEL_LINES]]
    if not lines:
        return []
    # Two calls, one per preprocessing, every line a row of the stacked image. One call for
    # both (rows 1..n and n+1..2n, no whitelist) measured no faster on 60 synthetic and 129
    # real images (0.335 against 0.324 s/image: the stacked image's size, not the call,
    # dominates), and loses the whitelist's independent second read.
    configs = _read_configs()
    first = _ocr_rows([_prep_first(ln) for ln in lines], configs[0])
    # Read 2 only for the rows in which read 1 saw some text: on the tune split and 120
    # synthetic images no hit came from a row read 1 saw as blank, and the bench's time
    # per image fell back to that of the v2 reader (which read every row twice).
    again = [k for k, (text, _) in enumerate(first) if re.sub(r"[\W_]", "", text)]
    second = [("", 0.0)] * len(lines)
    if again:
        for k, r in zip(again, _ocr_rows([_prep_second(lines[k]) for k in again], configs[1])):
            second[k] = r
    reads = [first, second]
    if stats is not None:
        stats["tesseract_calls"] = stats.get("tesseract_calls", 0) + 1 + bool(again)
    out = []
    for k, ln in enumerate(lines):
        r1, r2 = reads[0][k], reads[1][k]
        f, value, parsed = _features(ln, r1, r2)
        out.append({"line": ln, "reads": (r1, r2), "parsed": parsed, "features": f, "value": value,
                    "confidence": _confidence(f) if value else 0.0})
    return out


#: ``detect_scale(banner=...)`` default: find the data bar here.
FIND_BANNER = object()


def detect_scale(image, ocr=True, stats=None, banner=FIND_BANNER):
    """Find the scale bar of a micrograph and read its label.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3) or (H, W), uint8
        The micrograph as loaded, data bar included (the scale bar often lives
        in it).
    ocr : bool
        Read the label with Tesseract (when installed). False measures the bar
        only.
    stats : dict, optional
        When given, filled with diagnostics: ``tesseract_calls`` and the label
        candidates (``candidates``) with their reads and features.
    banner : tuple (y0, y1, x0, x1) or None, optional
        The data bar, when the caller has found it already (:func:`saemi.banner.find_banner`
        of the same image): it is not searched for again.

    Returns
    -------
    Scale or None
        None when nothing that looks like a scale bar is found. A value is
        returned only when the read's calibrated confidence reaches
        ``ACCEPT_CONFIDENCE``; otherwise (or without Tesseract) a clearly
        shaped bar is still returned, with ``value``, ``unit`` and
        ``nm_per_pixel`` None, ``status`` "unread" or "rejected" and what was
        read in ``text``.

    Notes
    -----
    Bar search takes a few milliseconds for a 1024x768 image. Label lines are
    located without OCR (glyph-like blobs in a row next to a bar); all of an
    image's lines are then read in at most two Tesseract calls (two
    preprocessings, each line a row of one stacked image; the second only for
    the lines in which the first saw text), and none when no line is found.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((300, 400, 3), 120, np.uint8)
    >>> img[270:276, 300:380] = 255
    >>> s = detect_scale(img, ocr=False)
    >>> round(s.bar_length_px), s.bar_box, s.value, s.status
    (80, (270, 276, 300, 380), None, 'unread')
    """
    grey = _grey(image)
    bars = find_bars(grey)
    if not bars:
        return None
    if ocr and tesseract_available():
        cands = read_candidates(grey, bars, find_banner(grey) if banner is FIND_BANNER else banner, stats)
        if stats is not None:
            stats["candidates"] = cands
        read = [c for c in cands if c["value"]]
        if read:
            best = max(read, key=lambda c: c["confidence"])
            ln, (value, unit) = best["line"], best["value"]
            bar, conf = ln.bar, best["confidence"]
            text = best["reads"][0][0] or best["reads"][1][0]
            # two reads that parse to different values never pass, whatever the confidence: one of
            # them is wrong ("5.00nm" against "500nm": a speck by the baseline taken for a point)
            if (conf >= ACCEPT_CONFIDENCE and best["features"]["canonical"] > 0 and not bar.buried_end
                    and not best["features"]["disagree"]):
                return Scale(bar.length, value, unit, value * UNITS_NM[unit] / bar.length, bar.box, ln.box,
                             conf, text, "read", "")
            if bar.score >= UNLABELLED_MIN_SCORE:
                f = best["features"]
                if f["canonical"] == 0:
                    why = "unusual value (mantissa not 1, 1.5, 2, 2.5, 3, 4 or 5)"
                elif bar.buried_end and conf >= ACCEPT_CONFIDENCE:
                    why = "an end of the bar lies in a particle of its shade: its length is not seen"
                elif f["disagree"] and conf >= ACCEPT_CONFIDENCE:
                    why = "the two reads disagree"
                else:
                    why = ("data table" if f["table"] else "the two reads disagree" if f["disagree"]
                           else "low confidence") + f" ({conf:.2f} < {ACCEPT_CONFIDENCE})"
                return Scale(bar.length, bar_box=bar.box, label_box=ln.box, confidence=conf,
                             text=text, status="rejected", reason=why)
    best = bars[0]
    if best.score < UNLABELLED_MIN_SCORE:
        return None
    return Scale(best.length, bar_box=best.box, confidence=float(0.5 * best.score), status="unread",
                 reason="no label read" if ocr else "OCR off")
