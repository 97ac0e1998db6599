"""Manual corrections of a labelling: add, erase, split and merge particles.

An *edit* is a small JSON-ready dict in image pixel coordinates (``x`` the
column, ``y`` the row, pixel centres at integers, as the page's image view and
the label image use):

``{"op": "add", "polygon": [[x, y], ...]}``
    A new particle: the pixels inside the closed outline (at least 3
    vertices). It takes over the pixels of particles it covers; those keep
    the rest and are marked ``edited`` (or vanish when fully covered).
``{"op": "erase", "points": [[x, y], ...]}``
    Remove the particle under each point.
``{"op": "split", "line": [[x, y], ...]}``
    Cut every particle the polyline crosses into the pieces on either side.
    A piece smaller than :data:`MIN_PIECE_FRACTION` of the particle (or than
    :data:`MIN_PIECE_PX`) is not a particle: it joins its neighbour.
``{"op": "merge", "points": [[x, y], ...]}``
    Join the particles under the points (two or more different ones) into one.

Edits are stored as geometry, not label numbers, so that they can be replayed
on the labels of other splitting settings (:func:`apply_edits`): a drawn
particle always survives, a merge survives while two of its points still fall
on different particles, and so on. An edit that no longer does anything is
*dropped* and reported, never silently lost. Label numbers given by a client
(the page's clicks, an API script's label list) are turned into points first,
with :func:`label_points`.

Labels: the model's particles keep their numbers; a new particle (added, or a
split's smaller pieces) takes the next free number; a merge keeps the smallest
number of its pieces, a split the original number for its largest piece. Each
particle has an *origin* (:data:`ORIGINS`): ``model`` unless an edit made or
changed it.

Nothing here imports a web framework or torch.
"""

import math

import cv2
import numpy as np
from scipy import ndimage as ndi

from .errors import SaemiError

#: What made a particle, as the particle table's ``origin`` column says.
ORIGINS = ("model", "added", "split", "merged", "edited")

#: The edit operations and the geometry each one carries.
OPS = {"add": "polygon", "erase": "points", "split": "line", "merge": "points"}

#: Vertices an outline or line may have, and points an erase or merge may list.
MAX_VERTICES = 20000

#: Edits one image may hold (and undone edits kept for redo).
MAX_EDITS = 2000

#: A split's piece under this fraction of the particle's area, or under MIN_PIECE_PX pixels,
#: is a sliver the line clipped off, not a particle: it joins the piece beside it.
MIN_PIECE_FRACTION = 0.02
MIN_PIECE_PX = 4


def _coords(value, name, minimum):
    """``value`` as an (n, 2) float array of finite [x, y] pairs, with at least ``minimum`` rows."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SaemiError(f"{name} must be a list of [x, y] pixel coordinates", code="bad_parameter") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise SaemiError(f"{name} must be a list of [x, y] pixel coordinates (finite numbers)",
                         code="bad_parameter")
    if len(arr) < minimum:
        raise SaemiError(f"{name} needs at least {minimum} points, got {len(arr)}", code="bad_parameter")
    if len(arr) > MAX_VERTICES:
        raise SaemiError(f"{name} has {len(arr)} points; at most {MAX_VERTICES} are accepted", code="bad_parameter")
    return arr


def check_edit(edit, shape):
    """Validate one edit for an image of ``shape``; returns it in stored form.

    Parameters
    ----------
    edit : dict
        ``op`` and its geometry (see the module docstring). For ``erase`` and
        ``merge``, ``labels`` may stand in for ``points``: resolve them with
        :func:`label_points` first.
    shape : tuple of int
        (H, W) of the label image.

    Returns
    -------
    dict
        ``op`` and its geometry as lists of [x, y] floats (rounded to 0.01 px).

    Raises
    ------
    SaemiError
        ``bad_parameter`` naming what is wrong.
    """
    if not isinstance(edit, dict):
        raise SaemiError("an edit must be a JSON object with an 'op'", code="bad_parameter")
    op = edit.get("op")
    if op not in OPS:
        raise SaemiError(f"an edit's op must be one of {', '.join(OPS)}, got {str(op)[:40]!r}",
                         code="bad_parameter")
    key = OPS[op]
    unknown = sorted(set(edit) - {"op", key})
    if unknown:
        raise SaemiError(f"a {op} edit takes 'op' and '{key}' only, not {', '.join(map(str, unknown))[:80]}",
                         code="bad_parameter")
    if key not in edit:
        raise SaemiError(f"a {op} edit needs '{key}'", code="bad_parameter")
    minimum = {"polygon": 3, "line": 2, "points": 1}[key]
    arr = _coords(edit[key], key, minimum)
    h, w = shape[:2]
    inside = (arr[:, 0] >= -0.5) & (arr[:, 0] <= w - 0.5) & (arr[:, 1] >= -0.5) & (arr[:, 1] <= h - 0.5)
    if key == "points" and not inside.all():
        x, y = arr[~inside][0]
        raise SaemiError(f"the point ({x:g}, {y:g}) is outside the {w}x{h} image", code="bad_parameter")
    if not inside.any():
        raise SaemiError(f"the {key} lies entirely outside the {w}x{h} image", code="bad_parameter")
    return {"op": op, key: np.round(arr, 2).tolist()}


def _at(labels, point):
    """The label under an [x, y] point (0 on background)."""
    h, w = labels.shape
    x = min(max(int(round(point[0])), 0), w - 1)
    y = min(max(int(round(point[1])), 0), h - 1)
    return int(labels[y, x])


def label_points(labels, label_ids):
    """One interior point per particle, for edits given as label numbers.

    The point is the particle's pixel farthest from its outline, so that it
    falls inside the same particle however the outline is drawn.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    label_ids : iterable of int

    Returns
    -------
    list of [x, y]

    Raises
    ------
    SaemiError
        ``bad_parameter`` for a label that is not a particle of ``labels``.
    """
    objects = ndi.find_objects(labels)
    points = []
    for lab in label_ids:
        try:
            lab = int(lab)
        except (TypeError, ValueError):
            raise SaemiError(f"particle labels must be integers, got {str(lab)[:20]!r}", code="bad_parameter") \
                from None
        sl = objects[lab - 1] if 0 < lab <= len(objects) else None
        if sl is None:
            raise SaemiError(f"there is no particle {lab} in this analysis", code="bad_parameter")
        mask = np.pad(labels[sl] == lab, 1)
        dist = ndi.distance_transform_edt(mask)
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        points.append([float(x - 1 + sl[1].start), float(y - 1 + sl[0].start)])
    return points


def _polygon_mask(shape, polygon):
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(polygon)).astype(np.int32)], 1)
    return mask.astype(bool)


def _add(labels, origins, edit, next_label):
    mask = _polygon_mask(labels.shape, edit["polygon"])
    if not mask.any():
        return "the outline encloses no pixel"
    covered = np.unique(labels[mask])
    labels[mask] = next_label
    present = set(np.unique(labels[np.isin(labels, covered)]).tolist()) if covered.any() else set()
    for lab in covered.tolist():
        if lab and lab in present:
            origins[lab] = "edited"
        else:
            origins.pop(lab, None)
    origins[next_label] = "added"
    return None


def _erase(labels, origins, edit):
    targets = {_at(labels, p) for p in edit["points"]} - {0}
    if not targets:
        return "no particle under the point" + ("s" if len(edit["points"]) > 1 else "")
    labels[np.isin(labels, list(targets))] = 0
    for lab in targets:
        origins.pop(lab, None)
    return None


def _merge(labels, origins, edit):
    targets = sorted({_at(labels, p) for p in edit["points"]} - {0})
    if len(targets) < 2:
        return f"a merge needs two or more different particles; the points fall on {len(targets) or 'no'} " \
               f"particle{'s' if len(targets) != 1 else ''}"
    keep = targets[0]
    labels[np.isin(labels, targets[1:])] = keep
    for lab in targets[1:]:
        origins.pop(lab, None)
    origins[keep] = "merged"
    return None


def _line_mask(shape, line):
    mask = np.zeros(shape, np.uint8)
    # a 4-connected raster: no two pixels of a particle touch diagonally across it
    cv2.polylines(mask, [np.round(np.asarray(line)).astype(np.int32)], False, 1, thickness=1,
                  lineType=cv2.LINE_4)
    return mask.astype(bool)


def _split_one(region, cut, lab):
    """The pieces of particle ``lab`` in ``region`` (a crop) cut along ``cut``; None if it stays whole."""
    mask = region == lab
    pieces, n = ndi.label(mask & ~cut)  # 4-connected
    if n < 2:
        return None
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
    big = np.flatnonzero(sizes >= max(MIN_PIECE_PX, MIN_PIECE_FRACTION * mask.sum())) + 1
    if len(big) < 2:
        return None
    # the cut pixels and the slivers join the nearest real piece
    kept = np.isin(pieces, big)
    _, (iy, ix) = ndi.distance_transform_edt(~kept, return_indices=True)
    nearest = pieces[iy, ix]
    return np.where(mask, nearest, 0), big, sizes


def _split(labels, origins, edit, next_label):
    cut = _line_mask(labels.shape, edit["line"])
    crossed = sorted(set(np.unique(labels[cut]).tolist()) - {0})
    objects = ndi.find_objects(labels)
    made = False
    for lab in crossed:
        sl = objects[lab - 1]
        region = labels[sl]
        result = _split_one(region, cut[sl], lab)
        if result is None:
            continue
        pieces, big, sizes = result
        largest = big[np.argmax(sizes[big - 1])]
        for piece in big:
            new = lab if piece == largest else next_label
            if new != lab:
                next_label += 1
            region[pieces == piece] = new
            origins[new] = "split"
        made = True
    if not made:
        return "the line cuts no particle into two pieces (draw it right across the particle)", next_label
    return None, next_label


def apply_edit(labels, origins, edit, next_label):
    """Apply one stored edit in place.

    Parameters
    ----------
    labels : ndarray of int32, shape (H, W)
        Changed in place.
    origins : dict
        Label -> origin for the particles an edit made or changed; changed in place.
    edit : dict
        As :func:`check_edit` returns it.
    next_label : int
        The first unused label number.

    Returns
    -------
    (reason, next_label) : (str or None, int)
        ``reason`` says why the edit did nothing (None when it applied).
    """
    op = edit["op"]
    if op == "add":
        reason = _add(labels, origins, edit, next_label)
        return reason, next_label + (reason is None)
    if op == "split":
        return _split(labels, origins, edit, next_label)
    if op == "erase":
        return _erase(labels, origins, edit), next_label
    return _merge(labels, origins, edit), next_label


def apply_edits(labels, edits, start=None):
    """Replay edits on a labelling.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        The labels the edits apply to (not changed).
    edits : list of dict
        Stored edits (:func:`check_edit`), oldest first.
    start : Corrected, optional
        The result of replaying a prefix of ``edits`` on the same labels: only
        the rest is applied (an edit added to a long list costs one edit).

    Returns
    -------
    Corrected
    """
    if start is not None and start.count <= len(edits):
        out = Corrected(start.labels.copy(), dict(start.origins), list(start.dropped), start.next_label,
                        start.count)
    else:
        base = np.asarray(labels, dtype=np.int32)
        out = Corrected(base.copy(), {}, [], int(base.max(initial=0)) + 1, 0)
    for i in range(out.count, len(edits)):
        reason, out.next_label = apply_edit(out.labels, out.origins, edits[i], out.next_label)
        if reason is not None:
            out.dropped.append({"index": i, "op": edits[i]["op"], "reason": reason})
    out.count = len(edits)
    return out


class Corrected:
    """A labelling after edits.

    Attributes
    ----------
    labels : ndarray of int32, shape (H, W)
    origins : dict
        Label -> origin (:data:`ORIGINS`) of the particles edits made or
        changed; every other particle's origin is ``model``.
    dropped : list of dict
        ``index``, ``op`` and ``reason`` of each edit that did nothing here.
    next_label : int
        The first label number no particle has used.
    count : int
        How many edits were replayed.
    """

    __slots__ = ("labels", "origins", "dropped", "next_label", "count")

    def __init__(self, labels, origins, dropped, next_label, count):
        self.labels, self.origins, self.dropped = labels, origins, dropped
        self.next_label, self.count = next_label, count

    def origin_of(self, label_ids):
        """The origin of each label in ``label_ids`` (a list of str)."""
        return [self.origins.get(int(lab), "model") for lab in label_ids]


def changed_labels(before, after):
    """Labels whose pixels differ between two labellings (made, removed or reshaped), sorted.

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 2]]); b = np.array([[1, 3, 0, 2]])
    >>> changed_labels(a, b)
    [1, 3]
    """
    diff = before != after
    return sorted((set(np.unique(before[diff]).tolist()) | set(np.unique(after[diff]).tolist())) - {0})


def polygon_from_path(path):
    """The vertices of an SVG path of straight segments (Plotly's drawn closed path, ``M x,y L x,y ... Z``).

    Examples
    --------
    >>> polygon_from_path("M1.5,2L10,2L10,12Z")
    [[1.5, 2.0], [10.0, 2.0], [10.0, 12.0]]
    """
    import re

    numbers = [float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", str(path))]
    pts = [[numbers[i], numbers[i + 1]] for i in range(0, len(numbers) - 1, 2)]
    return [p for p in pts if all(math.isfinite(v) for v in p)]
