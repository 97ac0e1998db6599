"""What every inference engine shares, without torch: standardising, tiling, the class-weight correction.

:class:`saemi.model.Segmenter` (torch: CUDA, training, and the CPU where nothing
faster is installed) and :class:`saemi.engine.EngineSegmenter` (the exported
network under OpenVINO or ONNX Runtime) differ only in their ``_forward``, which
maps a float32 batch (N, 3, h, w), h and w multiples of 32, to class
probabilities; the rest of the path — resize to the network's scale,
standardise, cut into overlapping tiles, blend, resize back — is
:class:`PredictMixin` here, so the engines give the same answer up to the
network's own arithmetic.
"""

import numpy as np

import cv2

from . import budget
from .card import DEFAULT_CARD
from .errors import SaemiError
from .probability import resize_probability


def standardize(image):
    """Per-image standardisation of an (H, W, 3) uint8 image to float32 (3, H, W)."""
    x = image.astype(np.float32)
    std = float(x.std())
    x = (x - float(x.mean())) / (std if std > 1e-6 else 1.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def log_class_weights(card, n_classes):
    """Log of the card's training class weights, shape (1, n_classes, 1, 1), float32 (numpy).

    ``loss_class_weights`` is used when it has one positive weight per class,
    else no correction (zeros); see :func:`saemi.model.class_weight_correction`.

    Examples
    --------
    >>> [round(float(v), 4) for v in log_class_weights({"loss_class_weights": [1, 1, 2]}, 3).ravel()]
    [0.0, 0.0, 0.6931]
    """
    weights = card.get("loss_class_weights")
    if weights is None:
        return np.zeros((1, n_classes, 1, 1), np.float32)
    try:
        w = np.array([float(v) for v in weights], dtype=np.float32)
    except (TypeError, ValueError):
        raise SaemiError(f"model card: loss_class_weights must be a list of numbers, got {weights!r}",
                         code="no_model")
    if len(w) != n_classes:
        return np.zeros((1, n_classes, 1, 1), np.float32)
    if not bool((np.isfinite(w) & (w > 0)).all()):
        raise SaemiError(f"model card: loss_class_weights must be positive, got {weights!r}", code="no_model")
    return np.log(w).reshape(1, n_classes, 1, 1)


def corrected_softmax(logits, log_weights):
    """``softmax(logits - log w)`` over axis 1, float32 (the prior correction of :mod:`saemi.model`)."""
    z = logits.astype(np.float32, copy=False) - log_weights
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _pad_to(x, mult):
    """Reflect-pad a (C, H, W) array so H and W are multiples of ``mult``."""
    _, h, w = x.shape
    ph, pw = (-h) % mult, (-w) % mult
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "edge"
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode=mode)
    return x


def _ramp(n, overlap):
    """1-D blending weights: linear ramps of ``overlap`` pixels at both ends."""
    r = np.ones(n, np.float32)
    k = min(overlap, n // 2)
    if k > 0:
        edge = (np.arange(k, dtype=np.float32) + 1) / (k + 1)
        r[:k], r[-k:] = edge, edge[::-1]
    return r


def _starts(n, tile, step):
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(s))


def predict_tiled(forward, x, n_classes, tile=512, overlap=64, deadline=None):
    """Run ``forward`` over overlapping tiles of ``x`` and blend the results.

    Parameters
    ----------
    forward : callable
        Maps float32 (N, 3, h, w) with h, w multiples of 32 to probabilities
        (N, n_classes, h, w).
    x : ndarray, shape (3, H, W), float32
    n_classes : int
    tile, overlap : int
        Tile side and overlap in pixels (of ``x``).
    deadline : saemi.budget.Deadline, optional
        Checked before each tile.

    Returns
    -------
    ndarray, shape (n_classes, H, W), float32
    """
    _, h, w = x.shape
    if h <= tile and w <= tile:
        xp = _pad_to(x, 32)
        return forward(xp[None])[0][:, :h, :w]
    xp = _pad_to(x, 32)
    H, W = xp.shape[1:]
    th, tw = min(tile, H), min(tile, W)
    out = np.zeros((n_classes, H, W), np.float32)
    weight = np.zeros((H, W), np.float32)
    win = np.outer(_ramp(th, overlap), _ramp(tw, overlap))
    starts = [(y0, x0) for y0 in _starts(H, th, th - overlap) for x0 in _starts(W, tw, tw - overlap)]
    for i, (y0, x0) in enumerate(starts):
        budget.check(deadline, f"network tile {i + 1} of {len(starts)}")
        p = forward(np.ascontiguousarray(xp[None, :, y0:y0 + th, x0:x0 + tw]))[0]
        out[:, y0:y0 + th, x0:x0 + tw] += p * win
        weight[y0:y0 + th, x0:x0 + tw] += win
    out /= np.maximum(weight, 1e-6)
    return out[:, :h, :w]


class PredictMixin:
    """``predict``, ``predict_at_network_scale`` and ``predict_resized`` over a ``_forward``.

    The class using it has ``card`` (a model card over the defaults), ``classes``
    and ``_forward(batch) -> probabilities``.
    """

    def predict_at_network_scale(self, image, deadline=None):
        """Class probabilities at the scale the network works at (``input_scale`` of the card).

        Parameters
        ----------
        image : ndarray, shape (H, W, 3), dtype uint8
        deadline : saemi.budget.Deadline, optional
            Checked before each tile; past it, :class:`SaemiError` (code ``timeout``).

        Returns
        -------
        ndarray, shape (C, h, w), dtype float32
            ``h, w`` = ``H, W`` times the card's ``input_scale`` (at least 32).
        """
        h, w = image.shape[:2]
        scale = float(self.card.get("input_scale", 1.0))
        sh, sw = max(32, round(h * scale)), max(32, round(w * scale))
        small = image if (sh, sw) == (h, w) else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        return self.predict_resized(small, deadline)

    def predict_resized(self, small, deadline=None):
        """Class probabilities of an image already at the network's working scale.

        The network's half of :meth:`predict_at_network_scale` (standardise, tile,
        blend); training validates through it, so its scores are those of the
        shipped inference path.

        Parameters
        ----------
        small : ndarray, shape (h, w, 3), dtype uint8
        deadline : saemi.budget.Deadline, optional

        Returns
        -------
        ndarray, shape (C, h, w), dtype float32
        """
        prob = predict_tiled(self._forward, standardize(small), len(self.classes),
                             int(self.card.get("tile_size", 512)), int(self.card.get("tile_overlap", 64)),
                             deadline)
        return prob.astype(np.float32, copy=False)

    def predict(self, image, deadline=None):
        """Per-pixel class probabilities at the image's own resolution.

        Parameters
        ----------
        image : ndarray, shape (H, W, 3), dtype uint8
        deadline : saemi.budget.Deadline, optional

        Returns
        -------
        ndarray, shape (C, H, W), dtype float32
            Probabilities of the card's classes; they sum to 1 over axis 0.
        """
        return resize_probability(self.predict_at_network_scale(image, deadline), image.shape[:2])


def card_over_defaults(card):
    """The card with the defaults under it (what a segmenter keeps as ``card``)."""
    return {**DEFAULT_CARD, **(card or {})}
