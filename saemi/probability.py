"""Probability stacks: between the network's scale and the image's, and compact storage.

The network works at ``input_scale`` of the image (half, for the shipped model);
its class probabilities are resized to the image's resolution for splitting and
measuring. The cache of re-analysable segmentations keeps them at the
network's scale as uint8 (0.75 byte per image pixel for three classes at half
scale, against 12 bytes as float32 at full scale) and rebuilds the full stack
with the same resize.
"""

import cv2
import numpy as np


def resize_probability(prob, shape):
    """Resize a (C, h, w) probability stack to (C, H, W), bilinear per class.

    Parameters
    ----------
    prob : ndarray, shape (C, h, w), float
    shape : tuple of int
        (H, W) of the result.

    Returns
    -------
    ndarray, shape (C, H, W), dtype float32

    Examples
    --------
    >>> resize_probability(np.ones((3, 4, 4), np.float32), (8, 6)).shape
    (3, 8, 6)
    """
    prob = np.asarray(prob, dtype=np.float32)
    h, w = int(shape[0]), int(shape[1])
    if prob.shape[1:] == (h, w):
        return prob
    # each class resized straight into the stack: no second 12-bytes-a-pixel copy on a large image
    out = np.empty((prob.shape[0], h, w), np.float32)
    for c, p in enumerate(prob):
        cv2.resize(np.ascontiguousarray(p), (w, h), dst=out[c], interpolation=cv2.INTER_LINEAR)
    return out


def quantize(prob):
    """Probabilities in [0, 1] as uint8 (steps of 1/255).

    Examples
    --------
    >>> quantize(np.array([0.0, 0.5, 1.0])).tolist()
    [0, 128, 255]
    """
    return np.round(np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def dequantize(q):
    """The inverse of :func:`quantize`, as float32 (within 1/510 of the original)."""
    return np.asarray(q, dtype=np.float32) * np.float32(1.0 / 255.0)
