"""Loading micrographs: any common image file to an (H, W, 3) uint8 array.

Every failure raises :class:`saemi.errors.SaemiError` with a message that names
the problem, never a decoder's stack trace.
"""

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import SaemiError

MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 50_000_000


def max_pixels_default():
    """The pixel-count limit: ``$SAEMI_MAX_PIXELS`` or 50 megapixels."""
    try:
        return int(os.environ.get("SAEMI_MAX_PIXELS", DEFAULT_MAX_PIXELS))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def to_uint8(array):
    """Scale any numeric image to uint8 by its own range (uint8 passes through).

    16-bit and float images are stretched from their minimum to their maximum,
    so a 12-bit detector image stored in 16 bits is not left nearly black, and
    values are never truncated. A constant image maps to zeros.
    """
    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        raise SaemiError("image holds no finite pixel values", code="not_an_image")
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_rgb(array):
    """Grey (H, W), grey+alpha, RGB or RGBA (H, W, C) to uint8 RGB (H, W, 3).

    The alpha channel is dropped: micrographs carry no real transparency.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise SaemiError(f"unsupported image layout with shape {a.shape}", code="not_an_image")
    a = a[..., :1] if a.shape[2] == 2 else a[..., :3]
    a = to_uint8(a)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def check_size(height, width, max_pixels=None):
    """Raise :class:`SaemiError` if an image is too small or too large."""
    max_pixels = max_pixels or max_pixels_default()
    if height < MIN_SIDE or width < MIN_SIDE:
        raise SaemiError(f"image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed",
                         code="too_small")
    if height * width > max_pixels:
        raise SaemiError(f"image is {width}x{height} pixels ({height * width / 1e6:.0f} megapixels); "
                         f"the limit is {max_pixels / 1e6:.0f} megapixels", code="too_large")


def _read_tiff(data, max_pixels):
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            shape = page.shape
            h, w = (shape[0], shape[1]) if len(shape) >= 2 else (1, shape[0])
            if page.samplesperpixel > 1 and page.planarconfig == 2 and len(shape) == 3:  # planar: (C, H, W)
                h, w = shape[1], shape[2]
            check_size(h, w, max_pixels)
            a = page.asarray()
    except SaemiError:
        raise
    except Exception as exc:
        raise SaemiError(f"TIFF file could not be decoded (truncated or corrupt?): {exc}", code="not_an_image") from exc
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (3, 4):
        a = np.moveaxis(a, 0, 2)
    return a


def load_image(source, max_pixels=None):
    """Decode an image to an RGB uint8 array at its original resolution.

    Parameters
    ----------
    source : bytes, str, Path or ndarray
        Encoded file contents, a file path, or an already decoded array.
        PNG, JPEG, TIFF (8/16-bit, multi-page: the first page), BMP, GIF;
        grey, grey+alpha, RGB, RGBA and palette images.
    max_pixels : int, optional
        Reject images with more pixels than this (decompression bombs).
        Default ``$SAEMI_MAX_PIXELS`` or 50 megapixels.

    Returns
    -------
    ndarray, shape (H, W, 3), dtype uint8

    Raises
    ------
    SaemiError
        With code ``not_an_image``, ``too_small``, ``too_large`` or ``empty``.

    Examples
    --------
    >>> import numpy as np
    >>> load_image(np.zeros((40, 50), np.uint16)).shape
    (40, 50, 3)
    """
    if isinstance(source, np.ndarray):
        check_size(source.shape[0], source.shape[1] if source.ndim > 1 else 1, max_pixels)
        return to_rgb(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise SaemiError(f"no such file: {path}", code="not_found")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise SaemiError(f"cannot read an image from a {type(source).__name__}", code="not_an_image")
    if len(data) == 0:
        raise SaemiError("the file is empty (0 bytes)", code="empty")
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return to_rgb(_read_tiff(data, max_pixels))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_size(img.height, img.width, max_pixels)
            img.seek(0)
            img.load()
    except SaemiError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise SaemiError("not an image file (PNG, JPEG, TIFF or BMP expected)", code="not_an_image") from exc
        limit = (max_pixels or max_pixels_default()) / 1e6
        raise SaemiError(f"image is too large to decode safely (over {Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                         f"megapixels); the limit is {limit:.0f} megapixels", code="too_large") from exc
    except Exception as exc:  # truncated streams and broken chunks surface as many types
        raise SaemiError(f"image file is truncated or corrupt: {exc}", code="not_an_image") from exc
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB" if img.mode != "1" else "L")
    return to_rgb(np.asarray(img))


def check_content(image):
    """Raise :class:`SaemiError` if an image holds nothing to analyse (one flat value).

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), uint8
    """
    if int(image.max()) == int(image.min()):
        shade = "black" if image.max() == 0 else ("white" if image.max() == 255 else f"the single value {int(image.max())}")
        raise SaemiError(f"image is uniformly {shade}; there is nothing to analyse", code="blank_image")
