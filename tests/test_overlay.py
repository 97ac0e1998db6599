"""The particle layer a browser is sent: subsampled like the preview on large images."""

import base64
import io

import numpy as np
import pytest
from dash import Patch
from PIL import Image

from saemi.overlay import OUTLINE_RGBA, display_stride, particle_layer, png_bytes, preview_jpeg


def square_labels(shape=(3000, 4100)):
    lab = np.zeros(shape, np.int32)
    lab[1000:1300, 2000:2400] = 1
    lab[100:160, 100:200] = 2
    return lab


def test_a_large_layer_is_drawn_at_the_previews_stride_over_the_same_pixels():
    lab = square_labels()
    stride = display_stride(lab.shape)
    assert stride == 3 == preview_jpeg(np.zeros((*lab.shape, 3), np.uint8))[1]
    layer = particle_layer(lab, stride=stride)
    assert layer.shape == (1000, 1367, 4)
    drawn = np.argwhere(layer[..., 3] > 0)
    # outline pixels of square 1 lie on its border, in image pixels once multiplied by the stride
    rows, cols = drawn[:, 0] * stride, drawn[:, 1] * stride
    on_square1 = (rows >= 1000) & (rows < 1300) & (cols >= 2000) & (cols < 2400)
    on_square2 = (rows >= 100) & (rows < 160) & (cols >= 100) & (cols < 200)
    assert (on_square1 | on_square2).all()
    assert on_square1.sum() > 0 and on_square2.sum() > 0
    assert (layer[1000 // 3 + 20, 2000 // 3 + 20, 3] == 0)  # inside: not drawn in outline mode
    assert tuple(layer[1000 // 3 + 1, 2000 // 3 + 50]) == tuple(OUTLINE_RGBA)


def test_small_images_keep_every_pixel():
    lab = square_labels((700, 900))
    assert display_stride(lab.shape) == 1
    assert particle_layer(lab).shape == (700, 900, 4)


def test_the_service_sends_the_stride_and_the_page_lays_the_layer_over_image_pixels(tmp_path):
    from saemi.baseline import OtsuSegmenter
    from saemi.cache import DiskStore
    from saemi.service import AnalysisService
    from saemi.ui import figures

    lab = square_labels((2300, 2600))
    img = np.where(lab > 0, 220, 40).astype(np.uint8)
    svc = AnalysisService(OtsuSegmenter, store=DiskStore(tmp_path, 2**28, 3600))
    seg = svc.segment(png_bytes(img), "squares.png")
    layer = svc.particle_layer(seg["image_id"], {"watershed": False, "min_size": 0, "min_relative_size": 0})
    assert layer["stride"] == 2 and (layer["width"], layer["height"]) == (2600, 2300) and layer["count"] == 2
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(layer["layer_png"]))))
    assert rgba.shape == (1150, 1300, 4)
    ops = {tuple(op["location"]): op["params"]["value"]
           for op in figures.layer_patch(Patch(), layer).to_plotly_json()["operations"] if op["operation"] == "Assign"}
    assert ops[("data", 1, "dx")] == ops[("data", 1, "dy")] == 2
    assert ops[("data", 1, "x0")] == ops[("data", 1, "y0")] == 0.5


def random_labels(seed, count=30):
    """Small label images: random labels, or connected components; the last one beyond 16 bits (skimage's path)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    for trial in range(count):
        shape = tuple(int(v) for v in rng.integers(1, 40, 2))
        lab = rng.integers(0, 5, shape) if trial % 2 else ndi.label(rng.random(shape) < 0.5)[0]
        yield lab * 30_000 if trial == count - 1 else lab


@pytest.mark.parametrize("connectivity", [1, 2])
def test_inner_boundaries_are_skimage_s(connectivity):
    from skimage.segmentation import find_boundaries

    from saemi.overlay import inner_boundaries

    for lab in random_labels(1):
        np.testing.assert_array_equal(inner_boundaries(lab, connectivity),
                                      find_boundaries(lab, connectivity=connectivity, mode="inner"))


@pytest.mark.parametrize("width", [1, 2])
def test_outlines_are_skimage_s_inner_boundaries(width):
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    from saemi.overlay import outlines

    for lab in random_labels(0):
        want = find_boundaries(lab, connectivity=2, mode="inner")
        if width > 1:
            want = ndi.binary_dilation(want, np.ones((3, 3), bool), iterations=width - 1) & (lab > 0)
        np.testing.assert_array_equal(outlines(lab, width), want)
