"""Pictures of a result: particle outlines or coloured labels over the micrograph."""

import io
import math

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from .errors import SaemiError


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
    out = image.astype(np.float32)
    if mode == "filled":
        colours = label_colours(int(labels.max()))[labels].astype(np.float32)
        sel = labels > 0
    else:
        sel = inner_boundaries(labels, connectivity=1)
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


#: The PNG text chunk that marks SAEMI's own outputs, so that a run never reads them as inputs.
OUTPUT_MARK_KEY, OUTPUT_MARK = "Software", "SAEMI"


def output_mark(kind):
    """The ``software`` text of an output PNG of some ``kind`` ("labels", "overlay")."""
    from . import __version__

    return f"{OUTPUT_MARK} {__version__} ({kind})"


def png_bytes(array, compress_level=6, software=None):
    """Encode an array as PNG: uint8 grey/RGB/RGBA, or int labels as 16-bit grey.

    Labels above 65535 cannot be stored in a 16-bit PNG and raise ValueError.
    ``compress_level`` 0-9 trades size for time (3 for pictures made per click).
    ``software`` (see :func:`output_mark`) is written as the PNG's Software text.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        if a.max(initial=0) > 65535:
            raise SaemiError("more than 65535 particles do not fit a 16-bit label PNG", code="too_large")
        a = a.astype(np.uint16)
    info = None
    if software:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text(OUTPUT_MARK_KEY, software)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=compress_level, pnginfo=info)
    return buf.getvalue()


# --- the page's particle layer: drawn over the micrograph by the browser -----------------------

OUTLINE_RGBA = (255, 110, 0, 255)
REMOVED_RGBA = (20, 20, 20, 170)
REMOVED_OUTLINE_RGBA = (0, 200, 255, 255)


def inner_boundaries(labels, connectivity=1):
    """``skimage.segmentation.find_boundaries(labels, connectivity, mode="inner")``, faster.

    Labels that fit 16 bits go through OpenCV's 3x3 max and min filters (a
    cross for ``connectivity`` 1, a square for 2; the image edge ignored, as
    skimage's reflected edge is): the same pixels. Others go to skimage.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not labels.size or labels.min() < 0 or labels.max() > 65535:
        return find_boundaries(labels, connectivity=connectivity, mode="inner")
    small = labels.astype(np.uint16)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS if connectivity == 1 else cv2.MORPH_RECT, (3, 3))
    return (cv2.dilate(small, kernel) != cv2.erode(small, kernel)) & (small > 0)


def outlines(labels, width=1):
    """Pixels of each particle that touch another label or the background (inner outlines).

    ``width`` 2 thickens them by a pixel inside the particles (for large images
    shown subsampled).
    """
    edge = inner_boundaries(labels, connectivity=2)
    if width > 1:
        edge = ndi.binary_dilation(edge, np.ones((3, 3), bool), iterations=width - 1) & (np.asarray(labels) > 0)
    return edge


#: Longest side of what a browser is sent to show: the preview and the particle layer.
DISPLAY_MAX_SIDE = 2048


def display_stride(shape, max_side=DISPLAY_MAX_SIDE):
    """Every how many pixels a browser is shown of an image of ``shape`` ``(H, W, ...)``.

    >>> display_stride((3000, 4000)), display_stride((768, 1024))
    (2, 1)
    """
    return max(1, math.ceil(max(shape[:2]) / max_side))


def particle_layer(labels, removed=(), mode="outline", stride=1):
    """A transparent RGBA layer with the particles drawn, to lay over the micrograph.

    Kept particles get orange outlines (``outline``) or a colour each
    (``filled``); excluded ones are darkened with a cyan outline, so the user
    sees what was clicked away and can click it back.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    removed : iterable of int
        Excluded labels.
    mode : {'outline', 'filled'}
    stride : int
        Draw every ``stride``-th pixel, as the preview shows the micrograph
        (:func:`display_stride`): a 12-megapixel layer is a quarter of the
        work and of the bytes, and no browser would show more.

    Returns
    -------
    ndarray, shape (ceil(H / stride), ceil(W / stride), 4), uint8
    """
    lab = np.asarray(labels)[::stride, ::stride]
    h, w = lab.shape
    out = np.zeros((h, w, 4), np.uint8)
    edge = outlines(lab, 2 if max(h, w) > 900 else 1)
    removed = np.asarray(sorted(int(v) for v in removed), dtype=np.int64)
    is_removed = np.isin(lab, removed) if removed.size else np.zeros(lab.shape, bool)
    kept = (lab > 0) & ~is_removed
    if mode == "filled":
        colours = label_colours(int(lab.max(initial=0)))
        out[kept, :3] = colours[lab[kept]]
        out[kept, 3] = 150
        out[kept & edge] = (255, 255, 255, 230)
    else:
        out[kept & edge] = OUTLINE_RGBA
    out[is_removed] = REMOVED_RGBA
    out[is_removed & edge] = REMOVED_OUTLINE_RGBA
    return out


def hover_grid(labels, max_cells=200_000):
    """A subsampled label grid for hover and click look-ups in the browser.

    Returns
    -------
    dict
        ``z`` (uint16 or int32 array), ``x0``, ``dx``, ``y0``, ``dy`` in image
        pixel coordinates: cell (i, j) is centred on pixel (y0 + i dy, x0 + j dx).
    """
    lab = np.asarray(labels)
    h, w = lab.shape
    s = max(1, math.ceil(math.sqrt(h * w / max_cells)))
    off = s // 2
    z = lab[off::s, off::s]
    z = z.astype(np.uint16) if z.max(initial=0) <= 65535 else z.astype(np.int32)
    return {"z": z, "x0": (s - 1) / 2, "dx": s, "y0": (s - 1) / 2, "dy": s}


def preview_jpeg(image, max_side=DISPLAY_MAX_SIDE, quality=90):
    """The micrograph as a JPEG for a browser, subsampled when larger than ``max_side``.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3) or (H, W), uint8
        As loaded (16-bit and TIFF images already stretched to 8 bits by
        :func:`saemi.io.read_micrograph`, which browsers cannot decode).

    Returns
    -------
    jpeg : bytes
    stride : int
        Every ``stride``-th pixel is shown; the page lays the picture over the
        same pixel coordinates.
    """
    stride = display_stride(image.shape, max_side)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[::stride, ::stride])).save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), stride
