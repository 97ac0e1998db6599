"""Finding and removing the instrument data bar of SEM images.

SEM images carry a bar of instrument data (scale bar, kV, magnification,
detector) along the bottom, sometimes the top: a band of full-width rows that is
almost entirely one flat extreme shade (white or black) with text of the other
shade on it. The network must not see it, and the image must keep its size, so
the band is filled by reflection padding: half of its height mirrored from the
rows below it, the rest from the rows above it (all from one side when it
touches the image edge).

The detector works on row profiles rather than the morphological recipe of the
original SAEMI (threshold at 250, line-shaped opening, Otsu): that recipe finds
only bright bars framed by lines, while the profile test finds bright and dark
bars, framed or not, at the bottom or the top, and leaves images without a bar
untouched.
"""

import numpy as np

# A row belongs to the bar when this share of its pixels is one flat extreme shade.
FLAT_SHARE = 0.6
# Shades counted as "flat extreme": at most DARK or at least BRIGHT.
DARK, BRIGHT = 8, 247
# The bar spans between these fractions of the image height.
MIN_HEIGHT_FRACTION, MAX_HEIGHT_FRACTION = 0.03, 0.4
MIN_HEIGHT_PX = 8


def _flat_rows(grey, dark):
    """Per-row share of pixels at the flat extreme (dark or bright)."""
    flat = grey <= DARK if dark else grey >= BRIGHT
    return flat.mean(axis=1)


def _band_from_edge(share, opposite, max_rows):
    """Rows from index 0 forming a bar: returns its height, or 0.

    A few thin lines that are not flat (the bar's frame, a row of tall text) are
    tolerated, as long as flat rows dominate the run.
    """
    n = len(share)
    end, gap = 0, 0
    for i in range(min(n, max_rows)):
        if share[i] >= FLAT_SHARE:
            end, gap = i + 1, 0
        else:
            gap += 1
            if gap > 3 and end > 0:
                break
            if gap > 6:  # the bar may sit a few frame rows away from the edge, no further
                break
    if end == 0:
        return 0
    # A bar has marks (text, a scale line) of the other shade; flat dark image
    # background without any marks is just background.
    return end if opposite[:end].mean() >= 0.002 else 0


def find_banner(image):
    """Locate the instrument data bar.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3) or (H, W), uint8

    Returns
    -------
    tuple of int (y0, y1, x0, x1) or None
        The bar occupies rows ``y0:y1`` and columns ``x0:x1`` (half-open,
        pixels); None when there is no bar.
    """
    grey = image if image.ndim == 2 else image.mean(axis=2)
    h, w = grey.shape
    min_rows = max(MIN_HEIGHT_PX, int(MIN_HEIGHT_FRACTION * h))
    max_rows = int(MAX_HEIGHT_FRACTION * h)
    best = None
    for dark in (False, True):
        share = _flat_rows(grey, dark)
        opposite = grey >= 128 if dark else grey < 128
        for from_bottom in (True, False):
            s, opp = (share[::-1], opposite[::-1]) if from_bottom else (share, opposite)
            height = _band_from_edge(s, opp, max_rows)
            if height < min_rows:
                continue
            if not _has_step(grey, height, from_bottom):
                continue
            box = (h - height, h, 0, w) if from_bottom else (0, height, 0, w)
            if best is None or height > best[1] - best[0]:
                best = box
    return best


def _has_step(grey, height, from_bottom):
    """The image just beyond the bar must differ from the bar's flat shade."""
    h = grey.shape[0]
    if height >= h - 2:
        return False
    inside = grey[h - height:] if from_bottom else grey[:height]
    beyond = grey[max(0, h - height - 8):h - height] if from_bottom else grey[height:height + 8]
    return abs(float(np.median(inside)) - float(np.median(beyond))) > 20 or beyond.std() > 2 * inside.std() + 5


def fill_by_reflection(image, box):
    """Replace rows ``box[0]:box[1]`` by mirrored rows from below and above.

    The lower half of the band mirrors the rows just below it, the upper half
    the rows just above it; when one side has no rows (the band touches the
    image edge) the other side fills it all.

    Parameters
    ----------
    image : ndarray, shape (H, W, ...)
    box : tuple (y0, y1, x0, x1)

    Returns
    -------
    ndarray
        A copy of ``image`` with the band's columns ``x0:x1`` replaced.
    """
    y0, y1, x0, x1 = box
    out = image.copy()
    height = y1 - y0
    above, below = image[:y0, x0:x1], image[y1:, x0:x1]
    if len(above) == 0 and len(below) == 0:
        return out
    n_below = 0 if len(below) == 0 else (height if len(above) == 0 else height // 2)
    n_above = height - n_below
    if n_above:
        out[y0:y0 + n_above, x0:x1] = _mirror(above[::-1], n_above)
    if n_below:
        out[y1 - n_below:y1, x0:x1] = _mirror(below, n_below)[::-1]
    return out


def _mirror(rows, n):
    """First ``n`` rows of ``rows`` reflected back and forth as often as needed.

    ``rows[0]`` is the row next to the band; the result's row 0 goes next to it.
    """
    reps = int(np.ceil(n / len(rows))) + 1
    seq = np.concatenate([rows if k % 2 == 0 else rows[::-1] for k in range(reps)])
    return seq[:n]


#: ``remove_banner(box=...)`` default: find the data bar here.
FIND = object()


def remove_banner(image, box=FIND):
    """Detect the data bar and fill it by reflection padding.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), uint8
    box : tuple (y0, y1, x0, x1) or None, optional
        The bar, when :func:`find_banner` has found it already (None: there is none).

    Returns
    -------
    cleaned : ndarray, shape (H, W, 3), uint8
        The image with the bar filled in; the input itself (not a copy) when
        there is no bar.
    box : tuple (y0, y1, x0, x1) or None

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = rng.integers(60, 180, (200, 300, 3)).astype(np.uint8)
    >>> img[170:] = 0
    >>> img[180:190, 20:120] = 255
    >>> cleaned, box = remove_banner(img)
    >>> box
    (170, 200, 0, 300)
    >>> bool((cleaned[:170] == img[:170]).all())
    True
    """
    box = find_banner(image) if box is FIND else box
    if box is None:
        return image, None
    return fill_by_reflection(image, box), box
