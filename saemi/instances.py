"""From per-pixel probabilities (or a plain mask) to labelled particles."""

import threading
from collections import OrderedDict

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from .settings import SplitSettings


def foreground_and_interior(prob, threshold=0.5, smoothing=1.0):
    """Split a probability stack into a particle mask and a marker mask.

    Parameters
    ----------
    prob : ndarray, shape (C, H, W) or (H, W), float
        Class probabilities with background first (C = 2 or 3), or a single
        particle-probability map, or a boolean mask.
    threshold : float
    smoothing : float
        Gaussian sigma (px) of the interior probability before its threshold:
        one full-resolution pixel, so ``scale`` pixels at a working scale.

    Returns
    -------
    foreground, interior : ndarray of bool, shape (H, W)
        ``interior`` is the confident-interior mask for a three-class model
        (background / interior / boundary), else the foreground itself.
    """
    prob = np.asarray(prob)
    fg = foreground(prob, threshold)
    if prob.ndim == 3 and prob.shape[0] >= 3:
        # light smoothing: single noisy pixels must not make or break a marker
        interior = (ndi.gaussian_filter(prob[1], smoothing) > threshold) & fg
        return fg, interior
    return fg, fg


class StageMemo:
    """The outputs of :func:`split_touching`'s stages for one probability map, kept across settings.

    A slider moves one setting; the stages before the first one that setting
    changes give what they gave before. Each output is kept under the stage's
    name and every setting it depends on (nothing else: a memo belongs to one
    ``prob``, ``valid`` and ``scale``, e.g. one cached segmentation), the
    most recently used of them within ``max_bytes`` (one set of settings on a
    12-megapixel image holds about 75 MB: masks, distance transform and labels
    at its 2000x1500 px working scale, and the full-resolution mask). Stored
    arrays are made read-only, so that no caller can change what a later call
    is given.

    Examples
    --------
    >>> memo = StageMemo(max_bytes=100)
    >>> memo.get(("a", 1), lambda: np.zeros(2)).flags.writeable
    False
    >>> calls = []
    >>> _ = memo.get(("a", 1), lambda: calls.append(1)); calls
    []
    >>> _ = memo.get(("b", 1), lambda: np.zeros(11)); memo.keys()  # 16 + 88 bytes: the oldest dropped
    [('b', 1)]
    """

    def __init__(self, max_bytes=192 * 2 ** 20):
        self.max_bytes = int(max_bytes)
        self._entries = OrderedDict()   # key -> (value, bytes)
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._entries)

    @property
    def nbytes(self):
        return self._bytes

    def keys(self):
        with self._lock:
            return list(self._entries)

    def get(self, key, compute):
        """The value kept under ``key``, else ``compute()`` kept there."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        value = _read_only(compute())
        size = _nbytes(value)
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key)[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                self._bytes -= self._entries.popitem(last=False)[1][1]
        return value


def _read_only(value):
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, tuple):
        for v in value:
            _read_only(v)
    return value


def _nbytes(value):
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 64


def _memoised(memo, key, compute):
    return compute() if memo is None else memo.get(key, compute)


def foreground(prob, threshold=0.5):
    """The particle mask of :func:`foreground_and_interior` alone (no interior smoothing).

    Examples
    --------
    >>> foreground(np.array([[[0.9, 0.2]], [[0.05, 0.7]], [[0.05, 0.1]]]), 0.5).tolist()
    [[False, True]]
    """
    prob = np.asarray(prob)
    if prob.ndim == 2:
        return prob > threshold if prob.dtype != bool else prob
    return (1.0 - prob[0]) > threshold


def split_touching(prob, settings=SplitSettings(), valid=None, diameter=None, scale=1.0, memo=None):
    """Label particles, splitting touching ones by watershed.

    The pixel settings are those of :meth:`SplitSettings.pixel_settings` for
    the typical ``diameter`` at ``scale``: fractions of the diameter, or the
    absolute ``min_distance`` / ``min_size`` when they are set. Markers are the
    maxima of the distance transform of the interior mask that stand at least
    ``min_distance / 4`` pixels above the saddle to their neighbours
    (h-maxima), with maxima closer than ``min_distance`` merged;
    every interior region gets at least one. The watershed floods the negated
    distance transform inside the particle mask. With ``watershed=False`` the
    result is the connected components of the particle mask.

    Then, in order: pieces with no boundary between them are merged
    (``merge_threshold``), particles below ``min_size`` pixels and below
    ``min_relative_size`` of the typical particle area are dropped, and, with
    ``exclude_edge``, those touching the border.

    Parameters
    ----------
    prob : ndarray, shape (C, H, W) or (H, W)
        See :func:`foreground_and_interior`.
    settings : SplitSettings
    valid : ndarray of bool, shape (H, W), optional
        Where particles may be; everything else is background (e.g. the filled
        instrument data bar). Default: the whole image.
    diameter : float, optional
        Typical particle diameter in full-resolution pixels. Default: estimated
        from ``prob`` (:func:`saemi.size.estimate_diameter`) when a fraction is
        in force.
    scale : float
        Pixels of ``prob`` per full-resolution pixel (the network's working
        scale when ``prob`` is at it).
    memo : StageMemo, optional
        Stage outputs of earlier calls on the same ``prob``, ``valid`` and
        ``scale``: the stages a change of settings leaves alone are not run
        again (the labels are the same as without it).

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
    if diameter is None and (s.min_distance is None or s.min_size is None):
        from .size import estimate_diameter  # saemi.size splits with absolute settings: no recursion

        diameter = estimate_diameter(prob if np.ndim(prob) == 3 else _as_stack(prob), scale, valid)
        if not np.isfinite(diameter):
            return np.zeros(np.shape(prob)[-2:], np.int32)
    min_distance, min_size = s.pixel_settings(diameter, scale)
    stage1 = ("labels", s.threshold, s.watershed, int(min_distance) if s.watershed else None, scale)
    labels = _memoised(memo, stage1, lambda: label_particles(prob, s.threshold, s.watershed, min_distance, valid,
                                                             smoothing=scale, memo=memo))
    merge = s.merge_threshold if boundary_evidence_kind(prob) else 0.0
    labels = _memoised(memo, ("merged", *stage1, merge), lambda: merge_stage(
        labels, boundary_evidence(prob) if merge > 0 else None, merge))
    labels = filter_particles(labels, min_size, s.min_relative_size, s.exclude_edge)
    return labels if labels.flags.writeable else labels.copy()


def _as_stack(prob):
    """A mask or particle-probability map (H, W) as a (2, H, W) background/particle stack."""
    p = np.asarray(prob).astype(np.float32)
    return np.stack([1.0 - p, p])


# The three stages of split_touching. Tuning (saemi.evaluate.tune_postprocess) calls the
# same functions, caching each stage's output across the settings of the later ones.

def label_particles(prob, threshold, watershed, min_distance, valid=None, smoothing=1.0, memo=None):
    """Stage 1 of :func:`split_touching`: threshold, then watershed or connected components.

    ``memo`` (:class:`StageMemo`) keeps the thresholded masks and the distance
    transform, which a change of ``min_distance`` does not change.

    Returns
    -------
    ndarray of int, shape (H, W)
        Labels, not necessarily consecutive.
    """
    def masks():
        fg, interior = foreground_and_interior(prob, threshold, smoothing)
        if valid is not None:
            fg, interior = fg & valid, interior & valid
        return fg, interior

    fg, interior = _memoised(memo, ("masks", threshold, smoothing), masks)
    if not watershed:
        return ndi.label(fg)[0]
    distances = _memoised(memo, ("distance", threshold, smoothing), lambda: distance_stage(interior))
    return _watershed(fg, distances, int(min_distance))


def merge_stage(labels, edge, merge_threshold):
    """Stage 2 of :func:`split_touching`: :func:`merge_weak_borders` when it applies.

    ``edge`` is :func:`boundary_evidence` (None for a model without a boundary
    class, or when ``merge_threshold`` is 0: nothing is merged).
    """
    if merge_threshold > 0 and edge is not None:
        return merge_weak_borders(labels, edge, merge_threshold)
    return labels


def filter_particles(labels, min_size=0, min_relative_size=0.0, exclude_edge=False):
    """Stage 3 of :func:`split_touching`: size filters, then the image edge; labels renumbered 1..N.

    Particles under ``min_size`` pixels go first, then those under
    ``min_relative_size`` of the typical area of what is left
    (:func:`drop_fragments`), then, with ``exclude_edge``, those touching the
    border.
    """
    if min_relative_size <= 0:
        # both filters in one renumbering: dropping then renumbering twice, in order, keeps the same particles
        # under the same numbers
        return _filter(labels, int(min_size), exclude_edge)
    labels = remove_small(labels, int(min_size))
    labels = drop_fragments(labels, min_relative_size)
    return _filter(labels, 0, exclude_edge)


def boundary_evidence_kind(prob):
    """Whether :func:`boundary_evidence` of ``prob`` is not None (a three-class stack), without computing it."""
    return np.ndim(prob) == 3 and np.shape(prob)[0] >= 3


def boundary_evidence(prob):
    """1 - P(interior) of a three-class probability stack; None for anything else.

    Only the background / interior / boundary model says where one particle
    ends and the next begins; a particle probability or a mask does not.
    """
    prob = np.asarray(prob)
    if prob.ndim == 3 and prob.shape[0] >= 3:
        return 1.0 - prob[1]
    return None


def border_strength(labels, edge):
    """Mean of an edge map along the border of each pair of touching labels.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 is background; two labels touch where they are 4-neighbours.
    edge : ndarray of float, shape (H, W)
        High where a boundary is likely (e.g. 1 - interior probability).

    Returns
    -------
    pairs : ndarray of int, shape (K, 2)
        Touching label pairs, smaller label first.
    strength : ndarray of float, shape (K,)
        Mean of ``edge`` over the pixel pairs straddling each border.
    length : ndarray of int, shape (K,)
        Number of such pixel pairs.

    Examples
    --------
    >>> labels = np.array([[1, 1, 2, 2]])
    >>> pairs, strength, length = border_strength(labels, np.array([[0., .2, .6, 0.]]))
    >>> pairs.tolist(), strength.round(2).tolist(), length.tolist()
    ([[1, 2]], [0.4], [1])
    """
    labels = np.asarray(labels)
    edge = np.asarray(edge, dtype=np.float64)
    base = int(labels.max(initial=0)) + 1
    keys, values = [], []
    for a, b, ea, eb in ((labels[:, :-1], labels[:, 1:], edge[:, :-1], edge[:, 1:]),
                         (labels[:-1], labels[1:], edge[:-1], edge[1:])):
        m = (a != b) & (a > 0) & (b > 0)
        lo = np.minimum(a[m], b[m]).astype(np.int64)
        hi = np.maximum(a[m], b[m]).astype(np.int64)
        keys.append(lo * base + hi)
        values.append((ea[m] + eb[m]) / 2)
    keys, values = np.concatenate(keys), np.concatenate(values)
    if keys.size == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0, np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    length = np.bincount(inverse)
    return np.stack([unique // base, unique % base], 1), np.bincount(inverse, values) / length, length


def merge_weak_borders(labels, edge, threshold):
    """Merge touching pieces whose shared border is not a boundary.

    The distance-map watershed cuts large or textured particles into pieces
    along lines where the network saw no boundary; two pieces whose border has
    a mean ``edge`` below ``threshold`` become one particle (transitively).

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    edge : ndarray of float, shape (H, W)
        Boundary evidence in [0, 1]: for SAEMI's network, 1 - P(interior).
    threshold : float

    Returns
    -------
    ndarray of int32, shape (H, W)
        Merged labels, numbered 1..N.

    Examples
    --------
    >>> labels = np.array([[1, 1, 2, 2, 0, 3, 3]])
    >>> edge = np.array([[0., 0., .1, 0., 1., 0., 0.]])
    >>> merge_weak_borders(labels, edge, 0.5).tolist()
    [[1, 1, 1, 1, 0, 2, 2]]
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0)) + 1
    pairs, strength, _ = border_strength(labels, edge)
    weak = pairs[strength < threshold]
    graph = coo_matrix((np.ones(len(weak)), (weak[:, 0], weak[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # scipy numbers components in order of their smallest node, so the merged
    # particles keep the order of the pieces they came from
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=n))
    present = present[present > 0]
    _, inverse = np.unique(component[present], return_inverse=True)
    new_ids = np.zeros(n, np.int32)
    new_ids[present] = inverse + 1
    return new_ids[labels]


def typical_area(labels):
    """Area-weighted median particle area: the area of the particle that holds
    the median particle pixel.

    Unlike the plain median it is not pulled down by many small fragments, so
    it describes the particles that make up most of the imaged material.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)

    Returns
    -------
    int
        Pixels; 0 when there is no particle.

    Examples
    --------
    >>> labels = np.zeros((10, 10), int)
    >>> labels[:6, :6] = 1; labels[8, 8] = 2; labels[9, 0] = 3
    >>> typical_area(labels)
    36
    """
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = np.sort(areas[areas > 0])
    if areas.size == 0:
        return 0
    cumulative = np.cumsum(areas)
    return int(areas[np.searchsorted(cumulative, cumulative[-1] / 2)])


def drop_fragments(labels, fraction):
    """Drop particles smaller than ``fraction`` of :func:`typical_area`.

    Fragments of a large particle, specks of texture and the letters of a
    panel label are small compared with the particles an image is about. This
    also drops genuinely small particles in a very polydisperse sample: set the
    fraction to 0 there.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    fraction : float
        In [0, 1).

    Returns
    -------
    ndarray of int32, shape (H, W)
        The remaining particles, numbered 1..N.

    Examples
    --------
    >>> labels = np.zeros((10, 10), int)
    >>> labels[:6, :6] = 1; labels[8, 8] = 2
    >>> int(drop_fragments(labels, 0.1).max())
    1
    """
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())
    keep = areas >= fraction * typical_area(labels)
    keep[0] = False
    return _renumber(labels, keep & (areas > 0))


def distance_map(mask):
    """Exact Euclidean distance of each mask pixel to the nearest background pixel.

    OpenCV's precise mode: the same values as ``scipy.ndimage.distance_transform_edt``
    (float32, within 1e-5 pixel) at a fraction of the time.
    """
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def fill_holes(mask):
    """``scipy.ndimage.binary_fill_holes(mask)``: background not 4-connected to the image border filled.

    The same pixels, from one labelling of the background instead of scipy's
    propagation from the border (about 3x faster on a large mask).

    Examples
    --------
    >>> m = np.ones((5, 5), bool); m[2, 2] = False; m[0, 2] = False
    >>> int(fill_holes(m).sum())  # the centre filled, the notch on the border not
    24
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or min(mask.shape) == 0:
        return ndi.binary_fill_holes(mask)
    background, _ = ndi.label(~mask)  # 4-connected, as binary_fill_holes' default structure
    outside = np.zeros(int(background.max()) + 1, bool)
    outside[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = True
    outside[0] = False  # the mask itself
    return ~outside[background]


def distance_stage(interior):
    """What the watershed needs of the interior mask, whatever the marker distance.

    Returns
    -------
    interior : ndarray of bool
        Holes filled (texture or a dark core inside would give spurious maxima).
    regions : ndarray of int32
        Its connected components.
    n : int
        How many.
    dist : ndarray of float32
        :func:`distance_map` of the filled interior.
    quarter : ndarray of uint16
        ``dist`` in quarter pixels, rounded (what the h-maxima run on).
    """
    interior = fill_holes(interior)
    regions, n = ndi.label(interior)
    dist = distance_map(interior)
    # h-maxima on quarter-pixel integers: 6x faster than on floats, same maxima.
    quarter = np.round(dist * 4).astype(np.uint16)
    return interior, regions, n, dist, quarter


def _watershed(fg, distances, min_distance):
    interior, regions, n, dist, quarter = distances
    if n == 0:
        return ndi.label(fg)[0]
    # A marker is a maximum of the distance map standing at least min_distance / 4
    # above the saddle to any other maximum (an h-maximum), so a ragged outline
    # does not split a particle; maxima closer than min_distance merge into one.
    # An h above the highest value finds no maximum at all, like every larger h: cap it
    # there, so that a huge min_distance costs no more than a sensible one.
    h = min(max(2, round(min_distance)), int(quarter.max()) + 1)
    peaks = h_maxima_by_component(quarter, h)
    if min_distance > 1 and peaks.any():
        peaks = dilate_disk(peaks, min_distance // 2) & interior
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


def h_maxima_by_component(image, h):
    """:func:`skimage.morphology.h_maxima` of a non-negative integer image, one connected component at a time.

    The same pixels as ``h_maxima(image, h)`` (its 3x3 footprint), at a fraction
    of the cost on a large image (issue 17, measured on the 2000x1500 px working
    scale of a 12-megapixel micrograph: 3.3-4.1 s whole, 0.5-0.8 s per component
    with skimage's h_maxima, 0.09-0.11 s per component with the integer ranks of
    :func:`_h_maxima_of_crop`). Exact, because the
    reconstruction by dilation behind it cannot cross a zero pixel: each
    8-connected component of ``image > 0`` is reconstructed on its own bounding
    box (other components zeroed, one zero pixel of padding). Two kinds of
    component need no reconstruction at all:

    * one whose highest value is below ``h`` holds no h-maximum (every pixel's
      residue is its own value);
    * one whose every local maximum (a pixel no lower than its eight neighbours)
      is at the component's highest value ``m`` has only regional maxima at
      ``m``, each reached from every pixel by a path that never descends: the
      h-maxima are then exactly its pixels at ``m``.

    An image without a zero pixel goes to ``h_maxima`` whole (its shortcut for
    an ``h`` above the image's range is then not the components').

    Parameters
    ----------
    image : ndarray of unsigned int, shape (H, W)
    h : int
        At least 1.

    Returns
    -------
    ndarray of bool, shape (H, W)

    Examples
    --------
    >>> img = np.array([[0, 3, 1, 5, 0, 0, 2, 0]], np.uint16)
    >>> h_maxima_by_component(img, 2).astype(int).tolist()
    [[0, 1, 0, 1, 0, 0, 1, 0]]
    """
    image = np.asarray(image)
    h = int(h)
    if image.size == 0 or image.min() > 0:
        return h_maxima(image, h).astype(bool)
    out = np.zeros(image.shape, bool)
    square = np.ones((3, 3), bool)
    components, _ = ndi.label(image > 0, structure=square)
    if image.dtype in (np.uint8, np.uint16):
        neighbourhood_max = cv2.dilate(image, square.astype(np.uint8))
    else:
        neighbourhood_max = ndi.maximum_filter(image, footprint=square, mode="constant")
    local = image >= neighbourhood_max
    for k, box in enumerate(ndi.find_objects(components), 1):
        if box is None:
            continue
        inside = components[box] == k
        values = image[box]
        top = values[inside].max()
        if top < h:
            continue
        if values[inside & local[box]].min() == top:
            out[box] |= inside & (values == top)
            continue
        crop = np.pad(np.where(inside, values, 0), 1)
        out[box] |= _h_maxima_of_crop(crop, h)[1:-1, 1:-1] & inside
    return out


try:  # skimage's inner loop of its reconstruction (Cython, since 0.9): fed integer ranks by _h_maxima_of_crop
    from skimage.morphology._grayreconstruct import reconstruction_loop as _reconstruction_loop
except ImportError:  # pragma: no cover - another skimage: its public h_maxima, the same pixels
    _reconstruction_loop = None


def _h_maxima_of_crop(crop, h):
    """``h_maxima(crop, h)`` (as bool) of an unsigned-integer crop with a zero border.

    skimage's ``reconstruction`` ranks the seed and mask as float64 with two
    comparison sorts, the most of its time on an integer image. Here the same
    rank-order reconstruction loop gets dense ranks straight from the integer
    values and a radix (stable) sort: the reconstruction is unique, so the
    h-maxima are the same pixels (tests compare with skimage's h_maxima).
    """
    if _reconstruction_loop is None or crop.dtype not in (np.uint8, np.uint16) or crop.size >= 2 ** 30:
        return h_maxima(crop, h).astype(bool)
    top = int(crop.max())
    if h > top:  # h_maxima's own shortcut (the zero border is the minimum)
        return np.zeros(crop.shape, bool)
    rows, cols = crop.shape[0] + 2, crop.shape[1] + 2  # a zero ring for the loop's neighbour offsets
    stacked = np.zeros((2, rows, cols), crop.dtype)
    stacked[0, 1:-1, 1:-1] = np.where(crop >= h, crop - crop.dtype.type(h), 0)  # the seed: crop - h, clipped at 0
    stacked[1, 1:-1, 1:-1] = crop  # the mask
    flat = stacked.ravel()
    present = np.zeros(top + 1, bool)
    present[flat] = True
    dense = np.cumsum(present, dtype=np.int64) - 1  # value -> rank, 0 for the lowest
    ranks = dense[flat].astype(np.uint32)
    order = np.argsort(flat, kind="stable")[::-1].astype(np.int32)  # highest first
    after = np.full(flat.size, -1, np.int32)
    before = np.full(flat.size, -1, np.int32)
    before[order[1:]] = order[:-1]
    after[order[:-1]] = order[1:]
    neighbours = np.array([-cols - 1, -cols, -cols + 1, -1, 1, cols - 1, cols, cols + 1], np.int32)
    _reconstruction_loop(ranks, before, after, neighbours, int(order[0]), rows * cols)
    rec = np.flatnonzero(present)[ranks[:rows * cols].reshape(rows, cols)[1:-1, 1:-1]]
    return (crop.astype(np.int64) - rec) >= h


#: Up to this radius a disk dilation uses OpenCV's elliptical kernel (the shipped,
#: tuned behaviour); beyond it, whose cost grows with the radius squared (2.6 s for a
#: radius of 512 on 515x515 px, measured), a thresholded distance transform, whose cost
#: does not depend on the radius.
DISK_KERNEL_MAX_RADIUS = 32


def dilate_disk(mask, radius):
    """Dilate a boolean mask by a disk of ``radius`` pixels.

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
    radius : int

    Returns
    -------
    ndarray of bool, shape (H, W)

    Examples
    --------
    >>> m = np.zeros((5, 7), bool); m[2, 3] = True
    >>> int(dilate_disk(m, 1).sum()), int(dilate_disk(m, 100).sum())
    (5, 35)
    """
    mask = np.asarray(mask, bool)
    if radius <= DISK_KERNEL_MAX_RADIUS:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        return cv2.dilate(mask.astype(np.uint8), disk).astype(bool)
    if not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask) <= radius


def remove_small(labels, min_size):
    """Drop particles of fewer than ``min_size`` pixels; the rest numbered 1..N.

    Examples
    --------
    >>> int(remove_small(np.array([[1, 1, 0, 2]]), 2).max())
    1
    """
    return _filter(labels, int(min_size), False)


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
    if keep[1:].all():
        return labels.copy()  # what _renumber gives when every label 1..n stays: each its own number
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
