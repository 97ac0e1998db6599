"""Synthetic micrographs with known particles, for tests."""

import numpy as np


def disc_labels(shape, discs):
    """Instance labels of discs [(cy, cx, r), ...], later discs drawn over earlier ones."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx, r) in enumerate(discs, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return labels


def micrograph(labels, bright_particles=True, noise=8.0, seed=0):
    """An RGB uint8 image of the labelled particles on a flat background, with noise."""
    rng = np.random.default_rng(seed)
    fg, bg = (200.0, 60.0) if bright_particles else (50.0, 190.0)
    img = np.where(labels > 0, fg, bg) + rng.normal(0, noise, labels.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def add_banner(image, height=40, where="bottom", bright=True, seed=0):
    """Draw an instrument data bar with text-like marks and a scale line; returns (image, box)."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    h, w = out.shape[:2]
    base, ink = (255, 0) if bright else (0, 255)
    y0, y1 = (h - height, h) if where == "bottom" else (0, height)
    out[y0:y1] = base
    # "text": small blocks of ink, and a scale line
    for x in range(10, w // 2, 14):
        ty = y0 + rng.integers(4, max(5, height - 14))
        out[ty:ty + 9, x:x + 7] = ink
        out[ty + 2:ty + 7, x + 2:x + 5] = base
    out[y0 + height // 2:y0 + height // 2 + 3, w - 150:w - 30] = ink
    return out, (y0, y1, 0, w)


def png_bytes(array):
    """An array encoded as a PNG file (bytes)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def grid_of_discs_png(h, w, r=14, step=40, seed=0):
    """PNG bytes of an (h, w) micrograph of discs of radius r on a square grid."""
    discs = [(y, x, r) for y in range(step // 2, h, step) for x in range(step // 2, w, step)]
    return png_bytes(micrograph(disc_labels((h, w), discs), seed=seed))
