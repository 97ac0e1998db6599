"""From per-pixel probabilities (or a plain mask) to labelled particles."""

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from .errors import SaemiError


@dataclass(frozen=True)
class SplitSettings:
    """How probabilities become particles.

    Attributes
    ----------
    watershed : bool
        Split touching particles with a marker-based watershed (True) or keep
        plain connected components (False).
    threshold : float
        Probability cut in (0, 1) for "particle" (and for the interior markers).
    min_distance : int
        Minimum distance in pixels between two watershed markers; larger values
        split less.
    min_size : int
        Particles smaller than this many pixels are dropped.
    exclude_edge : bool
        Drop particles that touch the image border.
    """

    watershed: bool = True
    threshold: float = 0.5
    min_distance: int = 15
    min_size: int = 20
    exclude_edge: bool = False

    def validated(self):
        """Return self, or raise :class:`SaemiError` naming the bad value."""
        if not 0.0 < float(self.threshold) < 1.0:
            raise SaemiError(f"threshold must be between 0 and 1, got {self.threshold}", code="bad_parameter")
        if int(self.min_distance) < 1:
            raise SaemiError(f"min_distance must be at least 1 pixel, got {self.min_distance}", code="bad_parameter")
        if int(self.min_size) < 0:
            raise SaemiError(f"min_size must be 0 or more pixels, got {self.min_size}", code="bad_parameter")
        return self


def foreground_and_interior(prob, threshold=0.5):
    """Split a probability stack into a particle mask and a marker mask.

    Parameters
    ----------
    prob : ndarray, shape (C, H, W) or (H, W), float
        Class probabilities with background first (C = 2 or 3), or a single
        particle-probability map, or a boolean mask.
    threshold : float

    Returns
    -------
    foreground, interior : ndarray of bool, shape (H, W)
        ``interior`` is the confident-interior mask for a three-class model
        (background / interior / boundary), else the foreground itself.
    """
    prob = np.asarray(prob)
    if prob.ndim == 2:
        fg = prob > threshold if prob.dtype != bool else prob
        return fg, fg
    fg = (1.0 - prob[0]) > threshold
    if prob.shape[0] >= 3:
        # light smoothing: single noisy pixels must not make or break a marker
        interior = (ndi.gaussian_filter(prob[1], 1.0) > threshold) & fg
        return fg, interior
    return fg, fg


def split_touching(prob, settings=SplitSettings()):
    """Label particles, splitting touching ones by watershed.

    Markers are the maxima of the distance transform of the interior mask
    that stand at least ``min_distance / 4`` pixels above the saddle to their
    neighbours (h-maxima), with maxima closer than ``min_distance`` merged;
    every interior region gets at least one. The watershed floods the negated
    distance transform inside the particle mask. With ``watershed=False`` the
    result is the connected components of the particle mask.

    Parameters
    ----------
    prob : ndarray, shape (C, H, W) or (H, W)
        See :func:`foreground_and_interior`.
    settings : SplitSettings

    Returns
    -------
    labels : ndarray, shape (H, W), dtype int32
        0 for background, 1..N for particles, numbered consecutively.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:60, :100]
    >>> mask = ((yy - 30) ** 2 + (xx - 30) ** 2 < 400) | ((yy - 30) ** 2 + (xx - 66) ** 2 < 400)
    >>> int(split_touching(mask, SplitSettings(watershed=False)).max())
    1
    >>> int(split_touching(mask, SplitSettings(min_distance=10)).max())
    2
    """
    s = settings.validated()
    fg, interior = foreground_and_interior(prob, s.threshold)
    if not s.watershed:
        labels, _ = ndi.label(fg)
    else:
        labels = _watershed(fg, interior, int(s.min_distance))
    return _filter(labels, int(s.min_size), s.exclude_edge)


def distance_map(mask):
    """Exact Euclidean distance of each mask pixel to the nearest background pixel.

    OpenCV's precise mode: the same values as ``scipy.ndimage.distance_transform_edt``
    (float32, within 1e-5 pixel) at a fraction of the time.
    """
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _watershed(fg, interior, min_distance):
    # Holes inside an interior (texture, a dark core) would give spurious maxima.
    interior = ndi.binary_fill_holes(interior)
    regions, n = ndi.label(interior)
    if n == 0:
        return ndi.label(fg)[0]
    dist = distance_map(interior)
    # A marker is a maximum of the distance map standing at least min_distance / 4
    # above the saddle to any other maximum (an h-maximum), so a ragged outline
    # does not split a particle; maxima closer than min_distance merge into one.
    # h-maxima on quarter-pixel integers: 6x faster than on floats, same maxima.
    quarter = np.round(dist * 4).astype(np.uint16)
    peaks = h_maxima(quarter, max(2, round(min_distance))).astype(bool)
    if min_distance > 1:
        r = min_distance // 2
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        peaks = cv2.dilate(peaks.astype(np.uint8), disk).astype(bool) & interior
    markers, n_markers = ndi.label(peaks)
    # Regions too small or thin to hold an h-maximum still get a marker of their own.
    missing = np.setdiff1d(np.arange(1, n + 1), np.unique(regions[markers > 0]))
    if missing.size:
        extra = np.isin(regions, missing)
        markers[extra] = regions[extra] + n_markers
    labels = watershed(-dist, markers, mask=fg)
    # Foreground pieces with no marker at all (boundary-only blobs) keep their own label.
    orphans, k = ndi.label(fg & (labels == 0))
    if k:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return labels


def _filter(labels, min_size, exclude_edge):
    labels = labels.astype(np.int32, copy=False)
    n = int(labels.max())
    if n == 0:
        return labels
    keep = np.ones(n + 1, bool)
    keep[0] = False
    if min_size > 0:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep &= sizes >= min_size
    if exclude_edge:
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        keep[edge] = False
    return _renumber(labels, keep)


def _renumber(labels, keep):
    """Keep the labels where ``keep[label]`` is True, numbered 1..N in order."""
    new_ids = np.zeros(len(keep), np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
    return new_ids[labels]


def remove_labels(labels, removed, renumber=True):
    """Drop the given particle labels.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    removed : iterable of int
        Labels to drop; unknown labels are ignored.
    renumber : bool
        Renumber the remaining particles 1..N (True), or keep their labels so
        that ids stay stable while a user excludes particles one by one (False).

    Returns
    -------
    ndarray of int32, shape (H, W)
    """
    n = int(labels.max(initial=0))
    removed = [int(r) for r in (removed if removed is not None else []) if 0 < int(r) <= n]
    if not removed:
        return labels.astype(np.int32, copy=False)
    keep = np.ones(n + 1, bool)
    keep[0] = False
    keep[removed] = False
    if renumber:
        return _renumber(labels, keep)
    return np.where(keep[labels], labels, 0).astype(np.int32)
