"""Pictures of a result: particle outlines or coloured labels over the micrograph."""

import io

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries


def label_colours(n, seed=0):
    """``n + 1`` random bright RGB colours (uint8, shape (n + 1, 3)); row 0 is black."""
    rng = np.random.default_rng(seed)
    return np.vstack([[0, 0, 0], rng.integers(60, 256, (n, 3))]).astype(np.uint8)


def draw_overlay(image, labels, mode="outline", alpha=0.5, banner_box=None, colour=(255, 60, 0)):
    """Draw particles over a micrograph.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), uint8
    labels : ndarray of int, shape (H, W)
    mode : {'outline', 'filled'}
        Outlines in one colour, or each particle filled with its own colour.
    alpha : float
        Opacity of the drawing in [0, 1].
    banner_box : tuple (y0, y1, x0, x1), optional
        Drawn as a cyan rectangle: the removed data bar.

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
    """
    out = image.astype(np.float32).copy()
    if mode == "filled":
        colours = label_colours(int(labels.max()))[labels].astype(np.float32)
        sel = labels > 0
    else:
        sel = find_boundaries(labels, mode="inner")
        colours = np.broadcast_to(np.array(colour, np.float32), out.shape)
    out[sel] = (1 - alpha) * out[sel] + alpha * colours[sel]
    if banner_box is not None:
        y0, y1, x0, x1 = banner_box
        cyan = np.array([0, 220, 255], np.float32)
        out[y0:min(y0 + 2, y1), x0:x1] = cyan
        out[max(y1 - 2, y0):y1, x0:x1] = cyan
        out[y0:y1, x0:min(x0 + 2, x1)] = cyan
        out[y0:y1, max(x1 - 2, x0):x1] = cyan
    return np.clip(out, 0, 255).astype(np.uint8)


def png_bytes(array):
    """Encode an array as PNG: uint8 grey/RGB, or int labels as 16-bit grey.

    Labels above 65535 cannot be stored in a 16-bit PNG and raise ValueError.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        if a.max(initial=0) > 65535:
            raise ValueError("more than 65535 labels do not fit a 16-bit PNG")
        a = a.astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
