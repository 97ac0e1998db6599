"""Reading the scale bar of a micrograph: bar length in pixels, label, nm per pixel.

A scale bar is a long, thin, uniform horizontal bar or line (sometimes with end
ticks), white on a dark surround or black on a light one, usually in the bottom
data bar or in a corner, with a label such as "200 nm" or "2 µm" above, below
or beside it. A plain bar is measured end to end; a bracket bar (``|—|``, a line
with a vertical tick at each end) is measured between the centres of its ticks,
which is what the ticks mark.

The search has two stages:

1. **Bar candidates** (pure numpy/OpenCV, a few milliseconds): the grey image is
   thresholded at both extremes; a horizontal opening keeps only long horizontal
   runs; every connected piece is cut down to its block of full-length rows and
   kept when it is a thin, crisp, uniform rectangle that stands out from the
   rows above and below it. Its length is measured with sub-pixel precision
   from the partial coverage of its end pixels.
2. **Label** (Tesseract, only on small crops): the neighbourhood of each
   candidate, best first, is turned into dark "ink" on white, upscaled and read
   with a digits-and-units character whitelist; the first candidate with a
   label that parses as ``<number> <nm|µm>`` wins.

Without the Tesseract binary the bar is still measured: :func:`detect_scale`
then logs one warning and returns the bar with ``value``, ``unit`` and
``nm_per_pixel`` set to None, so that a user can type the value.
"""

import functools
import logging
import re
import shutil
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
MIN_ASPECT = 3.5            # length / thickness
MIN_CONTRAST = 50           # grey levels between the bar and its surround
# Shades seeding the candidate masks; contrast is checked afterwards.
BRIGHT_SEED, DARK_SEED = 190, 65
LOCAL_SEED = 45             # ... or this much brighter/darker than the local mean
# Shape score a bar needs to be reported without a readable label.
UNLABELLED_MIN_SCORE = 0.75
# At most this many candidates are read by OCR, best first ...
MAX_OCR_CANDIDATES = 5
# ... with at most this many Tesseract calls per image (about 0.1-0.3 s each). A
# count, not a time limit, so that an image always gives the same answer whatever
# the load. On the 12 labelled real fixtures every read label was read by the first
# call; on 55 EMPS validation images, labels found after the 6th call were misreads
# ("29" for "2 µm") and unreadable labels cost up to 30 calls (18 s) without a limit.
MAX_OCR_CALLS = 6
# The ways a label is read, in order: ink mode (see _ink) and Tesseract options. The best
# candidate is tried every way before the next candidate (reading the runner-up bar's
# neighbourhood first gave misreads on EMPS images).
OCR_ATTEMPTS = (("bar", "whitelist"), ("bar", "line"), ("strict", "whitelist"),
                ("strict", "line"), ("inverse", "whitelist"), ("inverse", "line"))


_LABEL_RE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(nm|[uµpy]{1,2}\s?m|[uµp]{1,2}n\b)")


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
        0..1: the bar's shape score times the OCR confidence (halved when no
        label was read).
    text : str
        The raw OCR text of the label ("" when none was read).
    """

    bar_length_px: float
    value: float = None
    unit: str = None
    nm_per_pixel: float = None
    bar_box: tuple = None
    label_box: tuple = None
    confidence: float = 0.0
    text: str = ""

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
    bracket: bool = False  # measured between end-tick centres

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
    bars.sort(key=lambda b: -b.score)
    return bars


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
    ticks = _tick_centres(grey, y0, y1, x0, x1, shade, surround)
    if ticks is not None:  # a bracket |—|: the ticks mark the length
        length_sub = ticks[1] - ticks[0]
    # Score: uniformity, contrast, isolation, aspect, and where bars usually are.
    aspect = min(1.0, length / (8.0 * thick))
    position = 1.0 if (y0 > 0.6 * h or y1 < 0.25 * h) else 0.8
    size = min(1.0, length / (0.1 * w))
    score = (0.25 * uniform + 0.2 * min(1.0, contrast / 150) + 0.2 * (1 - spill)
             + 0.15 * aspect + 0.2 * size) * position * (0.85 + 0.15 * fill)
    return _Bar(int(y0), int(y1), int(x0), int(x1), length_sub, bright, shade, surround, float(score),
                ticks is not None)


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


def _tick_centres(grey, y0, y1, x0, x1, shade, surround):
    """Sub-pixel x of the centres of the end ticks of a bracket bar ``|—|``, or None when it has none.

    A tick is a narrow vertical stroke of the bar's shade at an end of the bar,
    joined to it (ink in the row next to the bar) and standing out above or
    below it by at least 3 px and the bar's thickness, with the bar's middle
    clear in those rows. Both ends need one. Each centre is the coverage-weighted
    mean column (pixel ``c`` spans ``[c, c + 1)``) over the rows the tick spans.
    """
    h, w = grey.shape
    thick = y1 - y0
    reach = max(3, thick)          # how far a tick must stand out
    max_width = max(6, 2 * thick)  # wider is no tick (a block, a letter)
    span = max(reach + 2, 3 * thick + 4)
    centres = []
    for end in ("left", "right"):
        best = None
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
            centre = float((prof * xs).sum() / prof.sum())
            best = centre if best is None else (best + centre) / 2
        if best is None:
            return None
        centres.append(best)
    if not centres[1] - centres[0] > 0.5 * (x1 - x0):
        return None
    return centres[0], centres[1]


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


def parse_label(text):
    """Value and unit of a scale-bar label.

    Parameters
    ----------
    text : str
        OCR output, e.g. ``"200 nm"``, ``"0.5 μm"``, ``"1um"``, ``"2,5 µm"``.

    Returns
    -------
    (value, unit) : (float, {"nm", "µm"}) or None
        None when no ``<number> <unit>`` is found.

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
    >>> parse_label("42") is None
    True
    """
    t = text.replace("μ", "µ").replace("\n", " ")
    m = _LABEL_RE.search(t)
    if m is None:
        return None
    number = m.group(1).replace(",", ".")
    if "." not in number and len(number) > 1 and number[0] == "0":
        number = number[0] + "." + number[1:]
    value = float(number)
    if not value > 0:
        return None
    unit = "nm" if m.group(2) == "nm" else "µm"
    return value, unit


def _label_window(bar, shape):
    """Box around a bar where its label may be: (y0, y1, x0, x1)."""
    h, w = shape
    L, t = bar.x1 - bar.x0, bar.y1 - bar.y0
    s = float(np.clip(max(4 * t, 0.3 * L), 18, 0.15 * h))  # rough label height scale
    y0 = int(max(0, bar.y0 - 2.2 * s))
    y1 = int(min(h, bar.y1 + 2.2 * s))
    x0 = int(max(0, bar.x0 - max(0.6 * L, 4 * s)))
    x1 = int(min(w, bar.x1 + max(0.6 * L, 5 * s)))
    return y0, y1, x0, x1


def _ink(crop, bar, mode):
    """Ink map in 0..1 of a crop (0.5 = the text/background threshold).

    Parameters
    ----------
    crop : ndarray (h, w) float32, grey levels
    bar : _Bar
    mode : {"bar", "strict", "inverse"}
        ``"bar"``: text of the bar's shade, threshold halfway between bar and
        surround. ``"strict"``: the same, threshold three quarters of the way
        to the bar's shade (text over bright particles or a busy surround).
        ``"inverse"``: text of the opposite shade (a white bar with dark grey
        text, white text in a black box next to a black bar), from the crop's
        median towards its darkest (or brightest) pixels.
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
    return np.clip(ink, 0, 1)


def _ocr_image(ink, bar_local, h_img, opening=False):
    """Clean an ink map for OCR: black text on white, cropped to the text, upscaled.

    The bar's own pixels are erased (a label's descender may touch it); blobs
    too big for text, specks, blobs cut by the crop edge and the bar's end
    ticks are dropped. Glyphs are upscaled to about 40 px height.

    Returns
    -------
    img : ndarray (h, w) uint8 or None
        None when no text-like blob is left.
    where : tuple (factor, y0, x0)
        Upscaling factor and the kept region's top-left corner in the crop;
        ``img`` has a 20 px white border.
    """
    ink = ink.copy()
    by0, by1, bx0, bx1 = bar_local
    ink[max(0, by0 - 1):by1 + 1, max(0, bx0 - 1):bx1 + 1] = 0
    mask = (ink > 0.5).astype(np.uint8)
    if opening:  # break thin bright rims of particles that touch the glyphs
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    n, cc, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(n, bool)
    max_h = max(45, 0.1 * h_img)
    ch, cw = mask.shape
    heights, blobs = [], []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if bh > max_h or bh < 2 or area < 4 or (bh < 4 and not 0.5 <= bw / bh <= 2):
            continue
        if x == 0 or y == 0 or x + bw == cw or y + bh == ch:
            continue
        touches_bar = y <= by1 + 1 and y + bh >= by0 - 1
        near_end = min(abs(x + bw / 2 - bx0), abs(x + bw / 2 - bx1)) <= 4
        if touches_bar and near_end and bw <= 6:  # an end tick
            continue
        if bh >= 5 and _solid_blob(cc[y:y + bh, x:x + bw] == i):
            blobs.append(i)  # a particle, or a decimal point: decided below
            continue
        keep[i] = True
        if bh >= 4:
            heights.append(bh)
    if not heights:
        return None, None
    # A decimal point is a solid dot well below the glyph height; particles are bigger.
    glyph_h = float(np.median(heights))
    for i in blobs:
        if stats[i][3] <= 0.45 * glyph_h:
            keep[i] = True
    kept = keep[cc]
    kept = cv2.dilate(kept.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    img = (255 * (1 - ink * kept)).astype(np.uint8)
    ys, xs = np.nonzero(kept)
    ty0, ty1, tx0, tx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    img = img[ty0:ty1, tx0:tx1]
    factor = float(np.clip(40.0 / max(np.median(heights), 1), 2, 6))
    factor = min(factor, 2000.0 / max(img.shape))
    img = cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    img = cv2.copyMakeBorder(img, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=255)
    return img, (factor, ty0, tx0)


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


def _label_crop(grey, bar, banner=None):
    """The grey crop where a bar's label may be, its origin, and the bar in crop coordinates."""
    wy0, wy1, wx0, wx1 = _label_window(bar, grey.shape)
    if banner is not None and banner[0] <= bar.y0 and bar.y1 <= banner[1]:
        wy0, wy1 = max(wy0, banner[0]), min(wy1, banner[1])  # the label shares the data bar
    bar_local = (bar.y0 - wy0, bar.y1 - wy0, bar.x0 - wx0, bar.x1 - wx0)
    return grey[wy0:wy1, wx0:wx1], (wy0, wx0), bar_local


def _read_label(grey, bar, mode, options, banner=None):
    """One OCR attempt on a bar's neighbourhood: (value, unit, text, label_box, conf) or None.

    Returns False when the ink map holds nothing text-like (no Tesseract call made).
    """
    import pytesseract

    crop, (wy0, wx0), bar_local = _label_crop(grey, bar, banner)
    img, where = _ocr_image(_ink(crop, bar, mode), bar_local, grey.shape[0], opening=mode == "strict")
    if img is None:
        return False
    factor, ty0, tx0 = where
    # The whitelist sometimes makes Tesseract drop a digit; the single-line mode
    # without it is the fallback.
    config = f"--psm 11 -c tessedit_char_whitelist={WHITELIST}" if options == "whitelist" else "--psm 7"
    data = pytesseract.image_to_data(img, config=config, output_type=pytesseract.Output.DICT)
    return _best_match(data, factor, wy0 + ty0, wx0 + tx0, bar)


def _best_match(data, factor, oy, ox, bar):
    """The parsed label nearest to the bar among Tesseract's lines."""
    lines = {}
    for i, word in enumerate(data["text"]):
        if not word.strip():
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(i)
    # psm 11 often splits "200 nm" into two one-word lines: also try neighbours joined.
    words = sorted((i for idx in lines.values() for i in idx), key=lambda i: (data["top"][i], data["left"][i]))
    groups = [lines[k] for k in lines] + _adjacent_pairs(data, words)
    best = None
    for idx in groups:
        idx = sorted(idx, key=lambda i: data["left"][i])
        text = " ".join(data["text"][i] for i in idx)
        parsed = parse_label(text)
        if parsed is None:
            continue
        # Label box in image pixels (border 20 px and upscaling undone).
        lx0 = min(data["left"][i] for i in idx)
        lx1 = max(data["left"][i] + data["width"][i] for i in idx)
        ly0 = min(data["top"][i] for i in idx)
        ly1 = max(data["top"][i] + data["height"][i] for i in idx)
        box = (int(oy + (ly0 - 20) / factor), int(np.ceil(oy + (ly1 - 20) / factor)),
               int(ox + (lx0 - 20) / factor), int(np.ceil(ox + (lx1 - 20) / factor)))
        conf = [float(data["conf"][i]) for i in idx if float(data["conf"][i]) >= 0]
        conf = float(np.mean(conf)) / 100 if conf else 0.5
        dy = max(0, box[0] - bar.y1, bar.y0 - box[1])
        dx = max(0, box[2] - bar.x1, bar.x0 - box[3])
        dist = float(np.hypot(dx, dy))
        if best is None or dist < best[-1]:
            best = (parsed[0], parsed[1], text, box, conf, dist)
    return None if best is None else best[:5]


def _adjacent_pairs(data, words):
    """Pairs of words on one text row, the second starting soon after the first."""
    pairs = []
    for a in words:
        for b in words:
            if a == b:
                continue
            ha, hb = data["height"][a], data["height"][b]
            same_row = abs((data["top"][a] + ha / 2) - (data["top"][b] + hb / 2)) < 0.5 * max(ha, hb)
            gap = data["left"][b] - (data["left"][a] + data["width"][a])
            if same_row and -2 <= gap < 1.5 * max(ha, hb):
                pairs.append([a, b])
    return pairs


# --------------------------------------------------------------------------- entry

def detect_scale(image, ocr=True):
    """Find the scale bar of a micrograph and read its label.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3) or (H, W), uint8
        The micrograph as loaded, data bar included (the scale bar often lives
        in it).
    ocr : bool
        Read the label with Tesseract (when installed). False measures the bar
        only.

    Returns
    -------
    Scale or None
        None when nothing that looks like a scale bar is found. Without a
        readable label (or without Tesseract) a clearly shaped bar is still
        returned, with ``value``, ``unit`` and ``nm_per_pixel`` None.

    Notes
    -----
    Bar search takes a few milliseconds for a 1024x768 image; each OCR call,
    on a small crop around one candidate, takes about 0.1-0.3 s; at most
    ``MAX_OCR_CANDIDATES`` candidates are read, best first, each in the ways of
    ``OCR_ATTEMPTS``, with at most ``MAX_OCR_CALLS`` calls in all.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((300, 400, 3), 120, np.uint8)
    >>> img[270:276, 300:380] = 255
    >>> s = detect_scale(img, ocr=False)
    >>> round(s.bar_length_px), s.bar_box, s.value
    (80, (270, 276, 300, 380), None)
    """
    grey = _grey(image)
    bars = find_bars(grey)
    if not bars:
        return None
    if ocr and tesseract_available():
        banner = find_banner(grey)
        calls = 0
        for bar in bars[:MAX_OCR_CANDIDATES]:
            for mode, options in OCR_ATTEMPTS:
                if calls >= MAX_OCR_CALLS:
                    break
                read = _read_label(grey, bar, mode, options, banner)
                if read is False:
                    continue
                calls += 1
                if read is None:
                    continue
                value, unit, text, box, conf = read
                nm = value * UNITS_NM[unit] / bar.length
                return Scale(bar.length, value, unit, nm, bar.box, box,
                             float(np.clip(bar.score * (0.5 + 0.5 * conf), 0, 1)), text)
    best = bars[0]
    if best.score < UNLABELLED_MIN_SCORE:
        return None
    return Scale(best.length, bar_box=best.box, confidence=float(0.5 * best.score))
