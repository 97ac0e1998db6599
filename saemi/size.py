"""The typical particle size of an image, and the scale the network works at for it.

Size-normalised inference (issue 20)
------------------------------------
The network sees particles best at one size. Each image is therefore resized so
that its typical particle spans a number of pixels at the network in the model
card's ``size_normalisation`` range (:func:`working_scale`), segmented **and split** there
(issue 17: the distance transform, h-maxima and watershed run on the network's
grid), and its labels are mapped back to full resolution with nearest-neighbour
(:func:`upsample_labels`); particles are measured at full resolution.

The typical diameter is the user's ``diameter`` setting when given, else
estimated (:func:`estimate_diameter`): the equivalent diameter of the
area-weighted median particle (:func:`saemi.instances.typical_area`) that the
shipped splitting finds at the card's ``input_scale`` — the network's first
pass, which is reused as the segmentation when the image's scale is already
close to the one it needs (within ``scale_tolerance``), so most images cost no
second pass. Particles too small for that pass (under ``small_at_network``
pixels there) are measured again at the working scale of that first estimate;
with none found at all, the network looks once more at ``search_scale`` (2x:
the scale that found the dense 6 px Au particles of issue 20).

The working scale keeps the card's ``input_scale`` while the typical particle
spans ``network_diameter`` = [16, 256] px there, and brings it to the nearer end
otherwise. A fixed target (every image rescaled so that its particle spans
T px) was measured first, on val: T = 32 gave AP 0.850, T = 48 0.862, against
0.933 for the shipped fixed scale (Dice 0.88-0.90 against 0.955): shrinking
large particles to a fixed size costs the network its outlines. With a lower
end of 24 px val AP was 0.906; 12 or 16 px, and an upper end of 256 px or
none, left every val image at 0.5 (AP 0.933; see docs/results/size).

Why this estimator (measured on split.json's 20 val images against the median
equivalent diameter of the true particles; test's 35 quoted beside it, never
used to choose; ``median |log error|`` and images within 15 %):

==================================================  ===============  ===============
estimator (from the network's class probabilities)  val              test
==================================================  ===============  ===============
the same, marker distance 0.3 x the foreground's   0.043, 15 of 20  (see docs/results)
  size (:data:`ESTIMATE_SPLIT`: the one shipped)
area-weighted median of split particles, at 0.5     0.047, 15 of 20  0.054, 28 of 35
  (v1's splitting, 60 px marker distance)
the same at 0.25 / 1.0                              0.071 / 0.058    0.066 / 0.041
the same at the scale that brings it nearest 64 px  0.043, 16 of 20  0.034, 29 of 35
  (a second pass; mean |log error| 0.160 against
  0.076 at 0.5 alone: it fails worse where it fails)
2 x max distance transform of each foreground blob  0.131, 11 of 20  0.171, 15 of 35
2 x h-maxima of the foreground distance transform   0.131, 11 of 20  0.122, 20 of 35
6 x mean foreground distance (a disc's r / 3)       0.083, 15 of 20  0.207, 12 of 35
==================================================  ===============  ===============

The split particles' typical area, not the foreground's distance transform,
survives fused agglomerates (a chain's distance transform is one particle's but
its blobs are many); the area weighting survives shattering (fragments hold
little of the material). No regression was fitted (a Cellpose-style size model
on pooled features would need the encoder's features exported from the engine),
so nothing here can go stale against the weights but the card's own numbers.

Only numpy, OpenCV and :mod:`saemi.instances`: no torch, no web code.
"""

import math

import cv2
import numpy as np

from .instances import split_touching, typical_area
from .settings import SplitSettings

#: The card's ``size_normalisation`` when it has none (the values measured on val; see docs/results).
DEFAULT_SIZE_NORMALISATION = {
    "network_diameter": [16.0, 256.0],
    "scale_tolerance": 1.25,
    "min_scale": 1 / 64,
    "max_scale": 4.0,
    # the network's work of the shipped half-scale pass on a 16-megapixel image: an image that
    # needs enlarging (small particles) costs at most that
    "max_network_pixels": 4_000_000,
    "small_at_network": 8.0,
    "search_scale": 2.0,
}

#: How the first pass splits to estimate the size: the v1 post-processing (merging at 0.6,
#: fragments under 10 % dropped) with the marker distance a fraction of the foreground's
#: own size (:func:`foreground_diameter`), so that the estimate needs no size to begin with;
#: 0.3 chosen on val (median |log error| 0.043; 0.5: 0.048, 0.7: 0.047, v1's fixed 60 px: 0.047).
ESTIMATE_SPLIT = SplitSettings(min_distance_fraction=0.3, min_size_fraction=0.002, merge_threshold=0.6,
                               threshold=0.5, min_relative_size=0.1)


def size_normalisation(card):
    """The card's ``size_normalisation`` over :data:`DEFAULT_SIZE_NORMALISATION`."""
    return {**DEFAULT_SIZE_NORMALISATION, **((card or {}).get("size_normalisation") or {})}


def typical_diameter(labels):
    """Equivalent diameter (px) of the area-weighted median particle; NaN without particles.

    Examples
    --------
    >>> labels = np.zeros((20, 20), int); labels[:10, :10] = 1; labels[15, 15] = 2
    >>> round(typical_diameter(labels), 2)
    11.28
    """
    area = typical_area(labels)
    return 2.0 * math.sqrt(area / math.pi) if area else float("nan")


def _weighted_median(values, weights):
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def foreground_diameter(foreground):
    """Twice the largest inscribed radius of the area-weighted median foreground blob (px).

    A first, rough size: a chain of touching particles is as wide as one of
    them, and fragments inside a particle do not shrink it. NaN without foreground.

    Examples
    --------
    >>> yy, xx = np.mgrid[:60, :100]
    >>> blob = ((yy - 30) ** 2 + (xx - 30) ** 2 < 400) | ((yy - 30) ** 2 + (xx - 66) ** 2 < 400)
    >>> round(foreground_diameter(blob))
    40
    """
    from scipy import ndimage as ndi

    from .instances import distance_map

    blobs, n = ndi.label(foreground)
    if n == 0:
        return float("nan")
    dist = distance_map(foreground)
    # each blob's largest distance on its bounding box: ndi.maximum's values, without its
    # pass over every pixel per call (0.7 s against 0.05 s on a 12-megapixel image's working scale)
    radius = np.array([dist[box][blobs[box] == k].max() for k, box in enumerate(ndi.find_objects(blobs), 1)],
                      float)
    return 2.0 * _weighted_median(radius, np.bincount(blobs.ravel())[1:].astype(float))


def estimate_diameter(prob, scale, valid=None):
    """Typical particle diameter, in full-resolution pixels, from class probabilities at ``scale``.

    Parameters
    ----------
    prob : ndarray, shape (C, h, w), float
        Class probabilities at the network's working scale (background first).
    scale : float
        Pixels of ``prob`` per full-resolution pixel.
    valid : ndarray of bool, shape (h, w), optional
        Where particles may be (the data bar excluded).

    Returns
    -------
    float
        NaN when no particle is found.
    """
    from .instances import foreground_and_interior

    foreground = foreground_and_interior(prob, ESTIMATE_SPLIT.threshold)[0]
    if valid is not None:
        foreground = foreground & valid
    first = foreground_diameter(foreground)
    if not np.isfinite(first):
        return float("nan")
    labels = split_touching(prob, ESTIMATE_SPLIT, valid, diameter=first)  # both in pixels of prob
    return typical_diameter(labels) / scale


def working_scale(diameter, shape, card):
    """The scale at which the typical particle spans the card's ``network_diameter`` range.

    The card's ``input_scale`` when the particle spans ``[low, high]`` pixels
    there, else the scale that brings it to the nearer end; clamped to
    ``[min_scale, max_scale]``, to at most ``max_network_pixels`` at the
    network, and to at least 32 px a side (as the network needs); then lowered
    within ``scale_tolerance`` where that saves network tiles
    (:func:`fewer_tiles_scale`).

    Parameters
    ----------
    diameter : float
        Typical particle diameter in full-resolution pixels.
    shape : tuple (H, W)
    card : dict

    Examples
    --------
    >>> card = {"input_scale": 0.5, "size_normalisation": {"network_diameter": [16, 96]}}
    >>> working_scale(100.0, (768, 1024), card), working_scale(400.0, (768, 1024), card)
    (0.5, 0.24)
    >>> round(working_scale(2.0, (256, 256), card), 2), round(working_scale(2.0, (768, 1024), card), 2)
    (3.75, 1.83)
    """
    cfg = size_normalisation(card)
    h, w = shape[:2]
    low, high = (float(v) for v in cfg["network_diameter"])
    base = float((card or {}).get("input_scale", 0.5))
    at_base = float(diameter) * base
    if low <= at_base <= high:
        return base
    s = (low if at_base < low else high) / float(diameter)
    s = min(s, float(cfg["max_scale"]), math.sqrt(float(cfg["max_network_pixels"]) / (h * w)))
    s = max(s, float(cfg["min_scale"]), 32.0 / min(h, w))
    return fewer_tiles_scale(s, (h, w), card, float(cfg["scale_tolerance"]))


def _tiles(side, tile, overlap):
    """Network tiles along one side of ``side`` pixels (see :func:`saemi.inference.predict_tiled`)."""
    return 1 if side <= tile else math.ceil((side - overlap) / (tile - overlap))


def fewer_tiles_scale(scale, shape, card, tolerance):
    """``scale``, lowered by at most ``tolerance`` where that saves a row or column of network tiles.

    A 514 px image wanted at 1.06x is 543 px at the network: four 512 px tiles
    for 12 % more pixels than one. At 0.996x it is one tile.

    Examples
    --------
    >>> round(fewer_tiles_scale(1.057, (514, 512), {"tile_size": 512, "tile_overlap": 64}, 1.25), 3)
    0.995
    >>> round(fewer_tiles_scale(2.0, (514, 512), {"tile_size": 512, "tile_overlap": 64}, 1.25), 3)  # 3 -> 2 tiles
    1.867
    """
    tile, overlap = int((card or {}).get("tile_size", 512)), int((card or {}).get("tile_overlap", 64))
    best = scale
    for side in shape[:2]:
        n = _tiles(round(side * scale), tile, overlap)
        if n > 1:
            fits = tile if n == 2 else (n - 1) * (tile - overlap) + overlap  # the longest side of n - 1 tiles
            lowered = (fits - 0.5) / side
            if lowered >= scale / tolerance:
                best = min(best, lowered)
    return best


def resize_image(image, scale):
    """``image`` resized by ``scale`` (area averaging down, bilinear up), at least 32 px a side.

    Returns
    -------
    small : ndarray, shape (h, w, 3), uint8
    scale : float
        The scale achieved (mean of both axes, after rounding to whole pixels).
    """
    h, w = image.shape[:2]
    sh, sw = max(32, round(h * scale)), max(32, round(w * scale))
    if (sh, sw) == (h, w):
        return image, 1.0
    interp = cv2.INTER_AREA if sh < h else cv2.INTER_LINEAR
    return cv2.resize(image, (sw, sh), interpolation=interp), (sh / h + sw / w) / 2


def upsample_labels(labels, shape):
    """Labels at the working scale mapped to ``shape`` (H, W) by nearest neighbour (pixel centres).

    Examples
    --------
    >>> upsample_labels(np.array([[1, 2]], np.int32), (2, 4)).tolist()
    [[1, 1, 2, 2], [1, 1, 2, 2]]
    """
    labels = np.asarray(labels).astype(np.int32, copy=False)
    h, w = int(shape[0]), int(shape[1])
    if labels.shape == (h, w):
        return labels
    yi = np.minimum(((np.arange(h) + 0.5) * labels.shape[0] / h).astype(np.int64), labels.shape[0] - 1)
    xi = np.minimum(((np.arange(w) + 0.5) * labels.shape[1] / w).astype(np.int64), labels.shape[1] - 1)
    return labels[yi[:, None], xi[None, :]]


def fit_to_mask(labels, mask, reach):
    """Labels mapped back from the working scale, fitted to the full-resolution particle mask.

    The split lines come from the working scale; the outlines from ``mask``
    (the full-resolution threshold of the bilinearly resized probabilities),
    so a particle's area is not quantised to the working scale's pixels
    (issue 17: the diameter error must not grow). Mask pixels without a label
    take a neighbouring label within ``reach`` pixels (a grey dilation, so the
    larger label wins a tie); labelled pixels off the mask are dropped; mask
    pixels farther than ``reach`` from every label stay background (what the
    working scale was too coarse to hold a particle of).

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        :func:`upsample_labels` of the working-scale labels.
    mask : ndarray of bool, shape (H, W)
    reach : int
        Pixels; about one working-scale pixel (``ceil(1 / scale)``).

    Returns
    -------
    ndarray of int32, shape (H, W)
        The same label numbers (a label can vanish only if none of it is on the mask).

    Examples
    --------
    >>> labels = np.array([[1, 1, 2, 2, 0, 0]], np.int32)
    >>> fit_to_mask(labels, np.array([[0, 1, 1, 1, 1, 0]], bool), 1).tolist()
    [[0, 1, 2, 2, 2, 0]]
    """
    out = np.where(mask, labels, 0).astype(np.int32, copy=False)
    h, w = out.shape
    # the 3x3 grey dilation (scipy's, edges reflected) at the missing pixels only: the outline
    # band, a few % of a 12-megapixel image (0.1 s against 0.4 s for the whole, measured). A pixel
    # missing after a round was missing before it, so later rounds look at those pixels alone.
    ys, xs = np.nonzero(mask & (out == 0))
    for _ in range(max(1, int(reach))):
        if ys.size == 0:
            break
        grown = np.zeros(ys.size, np.int32)
        for dy in (-1, 0, 1):
            rows = np.clip(ys + dy, 0, h - 1)
            for dx in (-1, 0, 1):
                np.maximum(grown, out[rows, np.clip(xs + dx, 0, w - 1)], out=grown)
        out[ys, xs] = grown
        still = grown == 0
        ys, xs = ys[still], xs[still]
    return out


def scaled_box(box, scale, shape):
    """A (y0, y1, x0, x1) box of the full image in pixels of an image of ``shape`` at ``scale``."""
    y0, y1, x0, x1 = box
    h, w = shape
    return (min(h, int(math.floor(y0 * scale))), min(h, int(math.ceil(y1 * scale))),
            min(w, int(math.floor(x0 * scale))), min(w, int(math.ceil(x1 * scale))))
