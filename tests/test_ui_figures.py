"""The page's figures (saemi.ui.figures) and the server-drawn particle layer they show (saemi.overlay)."""

import base64
import io
import numpy as np
import pytest
from PIL import Image
from saemi.overlay import png_bytes
from saemi import overlay
from saemi.ui import figures, particles
from uihelpers import *  # noqa: F401,F403  (fixtures and fakes shared by the page tests)


def test_drawn_shapes_are_in_original_image_pixels():
    """The picture shown for a large image is subsampled, but the axes stay in full-size pixels."""
    a = np.zeros((500, 2100), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    disp = display_of(buf.getvalue(), max_side=1024)
    fig = figures.base_figure(disp)
    img = fig.data[0]
    shown_w = Image.open(io.BytesIO(base64.b64decode(disp["source"].split(",", 1)[1]))).size[0]
    # displayed pixel i covers original pixels [i*stride, (i+1)*stride): the axes span the original width
    assert img.dx == disp["stride"] == 3 and img.x0 == 1.0
    left, right = img.x0 - img.dx / 2, img.x0 + (shown_w - 0.5) * img.dx
    assert (left, right) == (-0.5, 2099.5) and list(fig.layout.xaxis.range) == [-0.5, 2099.5]
    assert fig.layout.yaxis.scaleanchor == "x"  # square pixels: a diagonal line measures true length
    assert fig.layout.newshape.line.color == figures.LINE_COLOUR
    from saemi.ui.image_view import GRAPH_CONFIG
    assert "drawline" in GRAPH_CONFIG["modeBarButtonsToAdd"]


def test_histogram_bins_and_lines(analysis):
    t = particles.kept_table(analysis)
    fig = figures.histogram_figure(t, "equivalent_diameter", 5)
    assert fig.data[0].xbins.size == 5
    assert len(fig.data[0].x) == 4
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 2  # mean and median
    s = particles.summary_of(t)
    assert sorted(l.x0 for l in lines) == pytest.approx(sorted([s["mean"], s["median"]]))
    assert "Equivalent diameter (px)" in fig.layout.xaxis.title.text
    assert fig.layout.meta["count"] == 4
    assert figures.histogram_figure(t, key="img:{}").layout.meta["key"] == "img:{}"


def test_histogram_mean_and_median_labels_point_apart(analysis):
    t = particles.kept_table(analysis)
    s = particles.summary_of(t)
    for mean, median in ((10.0, 8.0), (8.0, 10.0)):
        fig = figures.histogram_figure(t, summary={**s, "mean": mean, "median": median})
        pos = {a.text.split()[0]: a.x for a in fig.layout.annotations}
        anchors = {a.text.split()[0]: a.xanchor for a in fig.layout.annotations}
        right_one = "mean" if mean > median else "median"
        assert anchors[right_one] == "left", anchors  # text to the right of the right-hand line
        assert pos["mean"] == mean and pos["median"] == median


def test_histogram_auto_bins_units_and_silly_widths(analysis):
    t = particles.kept_table(analysis, nm_per_pixel=3)
    fig = figures.histogram_figure(t, "area", None, 3)
    assert fig.data[0].xbins.size is None
    assert "nm²" in fig.layout.xaxis.title.text
    assert figures.histogram_figure(t, "area", 1e-9, 3).data[0].xbins.size is None  # would be billions of bins
    assert figures.histogram_figure(t, "area", "abc", 3).data[0].xbins.size is None


def test_histogram_empty():
    fig = figures.histogram_figure(particles.kept_table(None))
    assert not [s for s in fig.layout.shapes if s.type == "line"]
    assert fig.layout.annotations[0].text == "no particles"


def test_labels_round_trip_through_the_cache_record():
    from saemi.cache import decode_labels, encode_labels

    lab = disc_labels()
    assert np.array_equal(decode_labels(encode_labels(lab)), lab)
    big = lab * 300  # labels above 255 survive
    assert np.array_equal(decode_labels(encode_labels(big)), big)
    huge = lab * 40000  # and above 65535
    assert np.array_equal(decode_labels(encode_labels(huge)), huge)


def test_boundaries_are_inner_outlines():
    lab = np.zeros((9, 9), np.int32)
    lab[2:7, 2:7] = 1
    edge = overlay.outlines(lab)
    assert edge[2, 2] and edge[6, 4] and not edge[4, 4] and not edge[1, 1]
    assert edge.sum() == 16


def test_overlay_rgba_outline_filled_and_removed():
    lab = disc_labels()
    out = overlay.particle_layer(lab, [], "outline")
    assert out.shape == lab.shape + (4,)
    assert (out[lab == 0, 3] == 0).all()  # background stays transparent
    assert tuple(out[30, 28]) == overlay.OUTLINE_RGBA  # left edge of disc 1
    assert out[30, 40, 3] == 0  # its centre is not drawn
    filled = overlay.particle_layer(lab, [], "filled")
    assert (filled[lab > 0, 3] > 0).all()
    rem = overlay.particle_layer(lab, [1], "outline")
    assert tuple(rem[30, 40]) == overlay.REMOVED_RGBA
    assert tuple(rem[30, 28]) == overlay.REMOVED_OUTLINE_RGBA
    assert tuple(rem[80, 45]) == overlay.OUTLINE_RGBA  # disc 2 is kept


def test_hover_grid_maps_cells_to_pixels():
    lab = np.arange(600 * 800, dtype=np.int64).reshape(600, 800) % 60000
    g = overlay.hover_grid(lab, max_cells=50_000)
    z, s = g["z"], g["dx"]
    assert z.size <= 50_000 and s == g["dy"] >= 2
    i, j = 7, 11
    y, x = g["y0"] + i * s, g["x0"] + j * s  # centre of the block the cell stands for
    assert abs(y - (i * s + (s - 1) / 2)) < 1e-9
    assert z[i, j] == lab[i * s + s // 2, j * s + s // 2]
    small = overlay.hover_grid(disc_labels())
    assert small["dx"] == 1 and small["z"].dtype == np.uint16


def test_display_image_and_base_figure():
    disp = display_of(micrograph_png())
    assert disp["width"] == 160 and disp["height"] == 120 and disp["stride"] == 1
    assert disp["source"].startswith("data:image/jpeg;base64,")
    fig = figures.base_figure(disp, {"x0": 0, "y0": 100, "x1": 160, "y1": 120}, opacity=0.4)
    assert [t.type for t in fig.data] == ["image", "image", "heatmap"]
    assert fig.data[1].opacity == 0.4
    assert fig.layout.shapes[0].y0 == 99.5 and fig.layout.shapes[0].x1 == 159.5
    assert list(fig.layout.yaxis.range) == [119.5, -0.5]  # image rows go down
    fig = figures.base_figure(disp, None, scale_box=[100, 104, 10, 90])
    assert fig.layout.shapes[0].name == "scale bar" and fig.layout.shapes[0].x1 == 90.5


def test_display_image_of_a_large_16bit_image_is_subsampled():
    a = (np.arange(2100 * 500, dtype=np.uint16).reshape(500, 2100) * 7)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="TIFF")
    disp = display_of(buf.getvalue(), max_side=1024)
    assert disp["stride"] == 3 and disp["width"] == 2100
    raw = base64.b64decode(disp["source"].split(",", 1)[1])
    assert Image.open(io.BytesIO(raw)).size == (700, 167)


def test_graph_style():
    assert figures.graph_style(630, 512)["aspectRatio"] == "630 / 512"
    assert "height" in figures.graph_style() and "aspectRatio" not in figures.graph_style()


def test_the_server_drawn_layer_patches_the_image_view(tmp_path):
    """The service draws the layer from its cached labels; the page patches it in, grid included."""
    from dash import Patch

    from saemi.baseline import OtsuSegmenter
    from saemi.cache import DiskStore
    from saemi.service import AnalysisService

    svc = AnalysisService(OtsuSegmenter, store=DiskStore(tmp_path, 2**26, 3600))
    img = np.full(disc_labels().shape, 40, np.uint8)
    img[disc_labels() > 0] = 220
    seg = svc.segment(png_bytes(img), "discs.png")
    settings = {"watershed": False, "min_size": 0}
    layer = svc.particle_layer(seg["image_id"], {**settings, "removed_labels": [2]}, "filled")
    assert layer["count"] == 4 and (layer["width"], layer["height"]) == (160, 120)
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(layer["layer_png"]))))
    assert rgba.shape == (120, 160, 4) and (rgba[disc_labels() == 0, 3] == 0).all()
    patch = figures.layer_patch(Patch(), layer).to_plotly_json()
    grid = figures.grid_array(layer["grid"])
    assert grid.shape == (120, 160) and set(np.unique(grid)) == {0, 1, 2, 3, 4}
    assert any(op["location"] == ["data", 2, "z"] for op in patch["operations"])
    no_grid = svc.particle_layer(seg["image_id"], settings, "outline", grid=False)
    assert "grid" not in no_grid
    ops = figures.layer_patch(Patch(), no_grid).to_plotly_json()["operations"]
    assert not any(op["location"][:2] == ["data", 2] for op in ops)  # a click re-sends only the picture
