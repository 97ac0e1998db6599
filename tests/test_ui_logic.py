"""The Dash front end without a browser: pure callback helpers, the clients, and callback wiring.

No model is loaded here: a fake client returns analyses of a synthetic label image.
"""

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saemi.errors import SaemiError
from saemi.measure import particle_table, summarize
from saemi.overlay import png_bytes
from saemi.service import records
from saemi.ui import logic
from saemi.ui.client import ClientError, InProcessClient, RemoteClient

REPO = Path(__file__).resolve().parents[1]


# --- a synthetic analysis -------------------------------------------------------------------

def disc_labels(h=120, w=160, discs=((30, 40, 12), (80, 60, 15), (60, 120, 10), (5, 150, 8))):
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.int32)
    for i, (cy, cx, r) in enumerate(discs, start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


def png_b64(array):
    return base64.b64encode(png_bytes(array)).decode()


def fake_result(labels=None, image_id="abc123", filename="sample image.tif"):
    labels = disc_labels() if labels is None else labels
    table = particle_table(labels)
    return {"image_id": image_id, "filename": filename, "width": labels.shape[1], "height": labels.shape[0],
            "banner_box": None, "cached": True, "timings": {},
            "summary": summarize(table), "particles": records(table), "labels_png": png_b64(labels),
            "overlay_png": png_b64(np.zeros(labels.shape + (3,), np.uint8))}


SETTINGS = {"watershed": True, "min_distance": 7, "threshold": 0.5, "min_size": 20, "exclude_edge": False,
            "merge_threshold": 0.0, "min_relative_size": 0.0}


@pytest.fixture
def analysis():
    a, _ = logic.reduce_analysis(fake_result(), SETTINGS)
    return a


def micrograph_png(h=120, w=160):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# --- uploads and settings -------------------------------------------------------------------

def test_decode_upload_round_trip():
    data = b"\x89PNG\r\n\x1a\nrest"
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert logic.decode_upload(url, "a.png") == data


@pytest.mark.parametrize("contents", [None, "", "data:image/png;base64,", "data:image/png;base64,@@@not base64"])
def test_decode_upload_rejects_bad_contents(contents):
    with pytest.raises(ClientError):
        logic.decode_upload(contents, "a.png")


def test_settings_from_controls_reads_checklists_and_clamps():
    s = logic.settings_from_controls(["on"], "9", 0.3, None, [])
    assert s == {"watershed": True, "min_distance": 9, "threshold": 0.3, "min_size": 0, "exclude_edge": False,
                 "merge_threshold": 0.0, "min_relative_size": 0.0}
    assert set(s) == set(logic.SPLIT_KEYS)
    s = logic.settings_from_controls([], 0, 2.0, -5, ["on"])
    assert s["watershed"] is False and s["exclude_edge"] is True
    assert s["min_distance"] == 1 and s["threshold"] == 0.99 and s["min_size"] == 0


@pytest.mark.parametrize("merge,percent,expected", [
    (0.35, 7, (0.35, 0.07)),  # the slider shows a percentage; the backend gets a fraction
    ("0.2", "12.5", (0.2, 0.125)),
    (None, None, (0.0, 0.0)), ("", "", (0.0, 0.0)), ("off", "junk", (0.0, 0.0)),  # unreadable: off
    (-0.5, -3, (0.0, 0.0)), (1.5, 250, (0.99, 0.99)),  # clamped into [0, 1), the backend's range
    (float("nan"), float("inf"), (0.0, 0.0)),
])
def test_settings_from_controls_merge_and_relative_size(merge, percent, expected):
    s = logic.settings_from_controls(["on"], 7, 0.5, 20, [], merge, percent)
    assert (s["merge_threshold"], s["min_relative_size"]) == expected


def test_new_splitting_settings_are_accepted_by_the_core():
    from saemi.pipeline import Settings

    s = logic.settings_from_controls(["on"], 7, 0.5, 20, [], 1.5, 250)  # the most the controls can send
    core = Settings.from_dict(s)
    assert core.merge_threshold == 0.99 and core.min_relative_size == 0.99


@pytest.mark.parametrize("msg,tail", [("Not an image file", "not an image file"),
                                      ("TIFF file could not be decoded", "TIFF file could not be decoded"),
                                      ("", "the image could not be analysed"), ("image is 10x10", "image is 10x10")])
def test_sentence_tail(msg, tail):
    assert logic.sentence_tail(msg) == tail


def test_slider_max_includes_the_default():
    assert logic.slider_max(7, 40) == 40
    assert logic.slider_max(35, 40) == 70
    assert logic.slider_max(None, 40) == 40


def test_analysis_key_changes_only_with_splitting_settings():
    k = logic.analysis_key("img", SETTINGS)
    assert logic.analysis_key("img", {**SETTINGS, "nm_per_pixel": 2.0}) == k
    assert logic.analysis_key("img", {**SETTINGS, "min_distance": 8}) != k
    assert logic.analysis_key("img", {**SETTINGS, "merge_threshold": 0.3}) != k  # both renumber the particles
    assert logic.analysis_key("img", {**SETTINGS, "min_relative_size": 0.05}) != k
    assert logic.analysis_key("other", SETTINGS) != k


@pytest.mark.parametrize("value,expected", [(None, None), ("", None), (0, None), (-1, None), ("abc", None),
                                            (float("nan"), None), ("2.5", 2.5), (0.8, 0.8)])
def test_parse_nm_per_pixel(value, expected):
    assert logic.parse_nm_per_pixel(value) == expected


def test_detected_scale_and_next_calibration():
    info = {"scale": {"bar_length_px": 80.0, "value": 200.0, "unit": "nm", "nm_per_pixel": 2.5,
                      "bar_box": [480, 484, 10, 90], "label_box": None, "confidence": 0.9, "text": "200 nm"}}
    d = logic.detected_scale(info)
    assert d["nm_per_pixel"] == 2.5 and "200 nm = 80 px" in d["text"] and d["bar_box"] == [480, 484, 10, 90]
    assert logic.detected_scale({"scale": {"bar_length_px": 80.0, "nm_per_pixel": None}}) is None
    assert logic.detected_scale({"scale": None}) is None and logic.detected_scale({}) is None
    assert logic.next_calibration(None, None, 2.5) == 2.5  # a read scale bar fills the field
    assert logic.next_calibration(7.0, None, 2.5) == 2.5  # and wins for a new image
    assert logic.next_calibration(2.5, 2.5, None) is None  # the last image's value is not this one's
    assert logic.next_calibration(3.0, 2.5, None) == "keep"  # the user's typing stays
    assert logic.next_calibration(None, None, None) == "keep"
    assert logic.display_unit("nm^2") == "nm²" and logic.display_unit("px") == "px"


# --- manual calibration -----------------------------------------------------------------------

BOX = {"type": "rect", "xref": "x", "yref": "y", "x0": 9.5, "y0": 99.5, "x1": 90.5, "y1": 104.5, "name": "scale bar"}


def drawn(x0, y0, x1, y1):
    """A shape as Plotly reports a line the user drew (drawline mode)."""
    return {"type": "line", "editable": True, "xref": "x", "yref": "y", "layer": "above", "opacity": 1,
            "line": {"color": logic.LINE_COLOUR, "width": 3, "dash": "solid"}, "x0": x0, "y0": y0, "x1": x1, "y1": y1}


def test_drawn_line_from_a_new_shape_list():
    line = logic.drawn_line({"shapes": [BOX, drawn(10.2, 50, 110.2, 50)]})
    assert line == {"index": 1, "x0": 10.2, "y0": 50.0, "x1": 110.2, "y1": 50.0}
    # a second line: the last one drawn counts, the boxes never do
    two = logic.drawn_line({"shapes": [BOX, drawn(10, 50, 110, 50), drawn(0, 0, 30, 40)]}, line)
    assert two["index"] == 2 and logic.line_length(two) == 50
    assert logic.drawn_line({"shapes": [BOX]}, two) is None  # the line was erased
    assert logic.drawn_line({"shapes": []}, two) is None


def test_drawn_line_follows_edits_of_an_existing_line():
    line = logic.drawn_line({"shapes": [BOX, drawn(10, 50, 110, 50)]})
    moved = logic.drawn_line({"shapes[1].x0": 20, "shapes[1].y0": 60, "shapes[1].x1": 120, "shapes[1].y1": 60},
                             line)
    assert moved == {"index": 1, "x0": 20.0, "y0": 60.0, "x1": 120.0, "y1": 60.0}
    one_end = logic.drawn_line({"shapes[1].x1": 220, "shapes[1].y1": 60}, moved)  # an end handle dragged
    assert one_end == {"index": 1, "x0": 20.0, "y0": 60.0, "x1": 220.0, "y1": 60.0}
    # an older line moved as a whole takes over; one end of an unknown line cannot be placed
    other = logic.drawn_line({f"shapes[2].{k}": v for k, v in zip(("x0", "y0", "x1", "y1"), (0, 0, 3, 4))},
                             one_end)
    assert other["index"] == 2 and logic.line_length(other) == 5
    assert logic.drawn_line({"shapes[3].x0": 5}, other) is other
    assert logic.drawn_line({"shapes[2].x0": "junk"}, other) is other


@pytest.mark.parametrize("relayout", [None, {}, {"xaxis.range[0]": 3, "xaxis.range[1]": 80},
                                      {"dragmode": "drawline"}, {"autosize": True}, "junk",
                                      {"shapes[1].path": "M0,0L1,1"}])
def test_drawn_line_ignores_other_events(relayout):
    prev = {"index": 1, "x0": 0.0, "y0": 0.0, "x1": 10.0, "y1": 0.0}
    assert logic.drawn_line(relayout, prev) is prev
    assert logic.drawn_line(relayout, None) is None


def test_drawn_line_skips_shapes_that_are_not_lines_in_pixels():
    paper = {**drawn(0.1, 0.1, 0.9, 0.1), "xref": "paper"}
    broken = drawn(0, 0, None, 5)
    assert logic.drawn_line({"shapes": [BOX, paper, broken]}) is None
    assert logic.drawn_line({"shapes": [drawn(0, 0, 6, 8), paper]})["index"] == 0


def test_line_length_and_units():
    assert logic.line_length({"x0": 1, "y0": 2, "x1": 4, "y1": 6}) == 5.0
    assert logic.line_length(None) is None and logic.line_length({"x0": 1}) is None
    assert logic.length_in_nm(200, "nm") == 200.0
    assert logic.length_in_nm("1.5", "µm") == 1500.0
    assert logic.length_in_nm("2,5", "μm") == 2500.0  # Greek mu, decimal comma
    assert logic.length_in_nm(" 3 ", "um") == 3000.0
    for bad in (None, "", "abc", 0, -1, "-2", float("nan"), float("inf"), True):
        assert logic.length_in_nm(bad, "nm") is None, bad
    assert logic.length_in_nm(5, "furlong") is None
    assert logic.length_in_nm(5, None) == 5.0  # no unit chosen: nm


def test_manual_calibration_values_and_messages():
    line = {"index": 1, "x0": 10, "y0": 50, "x1": 170, "y1": 170}  # 200 px
    r = logic.manual_calibration(line, "500", "nm")
    assert r["length_px"] == 200.0 and r["nm_per_pixel"] == 2.5
    assert r["length_text"] == "Line: 200 px" and "2.5" in r["message"] and "nm per pixel" in r["message"]
    assert logic.manual_calibration(line, 1, "µm")["nm_per_pixel"] == 5.0
    assert logic.manual_calibration({"x0": 0, "y0": 0, "x1": 3, "y1": 0}, 1, "nm")["nm_per_pixel"] == 0.333333
    none = logic.manual_calibration(None, 500, "nm")
    assert none["nm_per_pixel"] is None and none["length_text"] == "No line drawn"
    assert "Draw a line along the scale bar" in none["message"]
    for bad in ("abc", "0", -5):
        r = logic.manual_calibration(line, bad, "nm")
        assert r["nm_per_pixel"] is None and r["message"] == "The bar's length must be a positive number.", bad
        assert r["length_text"] == "Line: 200 px"  # the line is still measured
    assert "Type the length" in logic.manual_calibration(line, None, "nm")["message"]
    assert "Type the length" in logic.manual_calibration(line, " ", "nm")["message"]
    dot = logic.manual_calibration({"x0": 5, "y0": 5, "x1": 5.2, "y1": 5}, 100, "nm")
    assert dot["nm_per_pixel"] is None and "shorter than a pixel" in dot["message"]


def test_drawn_shapes_are_in_original_image_pixels():
    """The picture shown for a large image is subsampled, but the axes stay in full-size pixels."""
    a = np.zeros((500, 2100), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    disp = logic.display_image(buf.getvalue(), max_side=1024)
    fig = logic.base_figure(disp)
    img = fig.data[0]
    shown_w = Image.open(io.BytesIO(base64.b64decode(disp["source"].split(",", 1)[1]))).size[0]
    # displayed pixel i covers original pixels [i*stride, (i+1)*stride): the axes span the original width
    assert img.dx == disp["stride"] == 3 and img.x0 == 1.0
    left, right = img.x0 - img.dx / 2, img.x0 + (shown_w - 0.5) * img.dx
    assert (left, right) == (-0.5, 2099.5) and list(fig.layout.xaxis.range) == [-0.5, 2099.5]
    assert fig.layout.yaxis.scaleanchor == "x"  # square pixels: a diagonal line measures true length
    assert fig.layout.newshape.line.color == logic.LINE_COLOUR
    from saemi.ui.image_view import GRAPH_CONFIG
    assert "drawline" in GRAPH_CONFIG["modeBarButtonsToAdd"]


def test_reduce_analysis_keeps_pixel_columns_and_labels_apart():
    res = fake_result()
    res["particles"] = [{**p, "area_nm2": 1.0, "equivalent_diameter_nm": 2.0} for p in res["particles"]]
    a, lab = logic.reduce_analysis(res, SETTINGS)
    assert a["key"] == lab["key"] == logic.analysis_key("abc123", SETTINGS)
    assert "labels_png" not in a and lab["labels_png"] == res["labels_png"]
    assert all(not k.endswith("_nm") and k != "area_nm2" for p in a["particles"] for k in p)
    assert a["count_api"] == 4 and len(a["particles"]) == 4


# --- removed particles ----------------------------------------------------------------------

def test_toggle_removed_adds_and_restores():
    r = logic.toggle_removed(None, "k1", 3)
    assert r == {"key": "k1", "labels": [3]}
    r = logic.toggle_removed(r, "k1", 1)
    assert r["labels"] == [1, 3]
    r = logic.toggle_removed(r, "k1", 3)
    assert r["labels"] == [1]
    assert logic.toggle_removed(r, "k1", 0) == r  # background
    assert logic.toggle_removed(r, "k1", "x") == r


def test_new_labelling_clears_removed():
    r = {"key": "k1", "labels": [2]}
    assert logic.reconcile_removed(r, "k1") is r
    assert logic.reconcile_removed(r, "k2") == {"key": "k2", "labels": []}
    assert logic.toggle_removed(r, "k2", 5) == {"key": "k2", "labels": [5]}
    assert logic.removed_labels(r, "k2") == []
    assert logic.removed_labels(r, "k1") == [2]


@pytest.mark.parametrize("click,label", [(None, 0), ({"points": []}, 0), ({"points": [{"x": 1, "y": 2}]}, 0),
                                         ({"points": [{"z": 7, "x": 1}]}, 7), ({"points": [{"z": 0}]}, 0),
                                         ({"points": [{"z": 4.0}]}, 4)])
def test_clicked_label(click, label):
    assert logic.clicked_label(click) == label


# --- tables, summaries, CSV -----------------------------------------------------------------

def test_kept_table_drops_removed_and_matches_the_core_summary(analysis):
    full = logic.kept_table(analysis)
    assert list(full["label"]) == [1, 2, 3, 4]
    s = logic.summary_of(full)
    ref = summarize(particle_table(disc_labels()))
    assert s["count"] == ref["count"] == 4
    assert s["mean"] == pytest.approx(ref["mean"]) and s["d90"] == pytest.approx(ref["d90"])
    removed = {"key": analysis["key"], "labels": [2]}
    kept = logic.kept_table(analysis, removed)
    assert list(kept["label"]) == [1, 3, 4]
    assert logic.summary_of(kept)["count"] == 3
    # exclusions made under other settings do not apply
    assert len(logic.kept_table(analysis, {"key": "stale", "labels": [1, 2]})) == 4


def test_kept_table_in_nm(analysis):
    t = logic.kept_table(analysis, nm_per_pixel=2.0)
    assert np.allclose(t["equivalent_diameter_nm"], 2 * t["equivalent_diameter_px"])
    assert np.allclose(t["area_nm2"], 4 * t["area_px"])
    s = logic.summary_of(t, "area", 2.0)
    assert s["unit"] == "nm^2" and s["mean"] == pytest.approx(4 * logic.summary_of(t, "area")["mean"])
    assert logic.summary_of(t, "feret_max", None)["unit"] == "px"


def test_kept_table_empty():
    t = logic.kept_table(None)
    assert len(t) == 0 and "label" in t
    s = logic.summary_of(t)
    assert s["count"] == 0
    assert [r[1] for r in logic.summary_rows(s)] == ["0"] + ["-"] * 6


def test_summary_rows_format(analysis):
    rows = dict(logic.summary_rows(logic.summary_of(logic.kept_table(analysis))))
    assert rows["Particles"] == "4"
    assert rows["Mean"].endswith(" px") and rows["D90"].endswith(" px")


@pytest.mark.parametrize("v,text", [(None, "-"), (float("nan"), "-"), (3, "3"), (0.0, "0"), (1234.5678, "1,235"),
                                    (12.3456, "12.35"), (0.012345, "0.012")])
def test_format_number(v, text):
    assert logic.format_number(v) == text


def test_particles_csv_has_one_row_per_kept_particle(analysis):
    removed = {"key": analysis["key"], "labels": [1]}
    table = logic.kept_table(analysis, removed, 1.5)
    text = logic.particles_csv(table)
    back = pd.read_csv(io.StringIO(text))
    assert len(back) == 3 and list(back["label"]) == [2, 3, 4]
    assert "equivalent_diameter_nm" in back and "touches_edge" in back


def test_summary_csv_lists_every_metric_and_settings(analysis):
    removed = {"key": analysis["key"], "labels": [4]}
    table = logic.kept_table(analysis, removed)
    back = pd.read_csv(io.StringIO(logic.summary_csv(table, analysis)))
    assert set(back["metric"]) >= {"area", "equivalent_diameter", "feret_max"}
    assert (back["count"] == 3).all()
    assert back["filename"].iloc[0] == "sample image.tif"
    assert str(back["removed_labels"].iloc[0]) == "4"
    assert bool(back["watershed"].iloc[0]) is True
    assert {"merge_threshold", "min_relative_size"} <= set(back.columns)


def test_download_names_are_safe():
    assert logic.download_name("my sample.tif", "particles") == "my_sample_particles.csv"
    assert logic.download_name("../../etc/passwd", "summary") == "passwd_summary.csv"
    assert logic.download_name(None, "summary") == "image_summary.csv"


@pytest.mark.parametrize("v,r", [(17780123.456, 17780123), (4758.018, 4758), (55.946, 55.95), (0.70512, 0.705),
                                 (0.0, 0.0), (float("nan"), None), (-12.3456, -12.35)])
def test_round_for_reading(v, r):
    assert logic.round_for_reading(v) == r


def test_grid_columns_and_rows(analysis):
    cols = [c["field"] for c in logic.grid_columns(None)]
    assert cols[:3] == ["label", "area_px", "equivalent_diameter_px"]
    assert "area_nm2" in [c["field"] for c in logic.grid_columns(0.5)]
    rows = logic.grid_rows(logic.kept_table(analysis))
    assert len(rows) == 4 and rows[0]["touches_edge"] in ("yes", "no")
    assert json.dumps(rows)  # JSON-safe
    assert rows[3]["touches_edge"] == "yes"  # the disc at the top edge


# --- histogram --------------------------------------------------------------------------------

def test_histogram_bins_and_lines(analysis):
    t = logic.kept_table(analysis)
    fig = logic.histogram_figure(t, "equivalent_diameter", 5)
    assert fig.data[0].xbins.size == 5
    assert len(fig.data[0].x) == 4
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 2  # mean and median
    s = logic.summary_of(t)
    assert sorted(l.x0 for l in lines) == pytest.approx(sorted([s["mean"], s["median"]]))
    assert "Equivalent diameter (px)" in fig.layout.xaxis.title.text
    assert fig.layout.meta["count"] == 4
    assert logic.histogram_figure(t, key="img:{}").layout.meta["key"] == "img:{}"


def test_histogram_mean_and_median_labels_point_apart(analysis):
    t = logic.kept_table(analysis)
    s = logic.summary_of(t)
    for mean, median in ((10.0, 8.0), (8.0, 10.0)):
        fig = logic.histogram_figure(t, summary={**s, "mean": mean, "median": median})
        pos = {a.text.split()[0]: a.x for a in fig.layout.annotations}
        anchors = {a.text.split()[0]: a.xanchor for a in fig.layout.annotations}
        right_one = "mean" if mean > median else "median"
        assert anchors[right_one] == "left", anchors  # text to the right of the right-hand line
        assert pos["mean"] == mean and pos["median"] == median


def test_histogram_auto_bins_units_and_silly_widths(analysis):
    t = logic.kept_table(analysis, nm_per_pixel=3)
    fig = logic.histogram_figure(t, "area", None, 3)
    assert fig.data[0].xbins.size is None
    assert "nm²" in fig.layout.xaxis.title.text
    assert logic.histogram_figure(t, "area", 1e-9, 3).data[0].xbins.size is None  # would be billions of bins
    assert logic.histogram_figure(t, "area", "abc", 3).data[0].xbins.size is None


def test_histogram_empty():
    fig = logic.histogram_figure(logic.kept_table(None))
    assert not [s for s in fig.layout.shapes if s.type == "line"]
    assert fig.layout.annotations[0].text == "no particles"


# --- image view -------------------------------------------------------------------------------

def test_decode_labels_round_trip():
    lab = disc_labels()
    assert np.array_equal(logic.decode_labels(png_b64(lab)), lab)
    big = lab * 300  # labels above 255 survive the 16-bit PNG
    assert np.array_equal(logic.decode_labels(png_b64(big)), big)


def test_boundaries_are_inner_outlines():
    lab = np.zeros((9, 9), np.int32)
    lab[2:7, 2:7] = 1
    edge = logic.boundaries(lab)
    assert edge[2, 2] and edge[6, 4] and not edge[4, 4] and not edge[1, 1]
    assert edge.sum() == 16


def test_overlay_rgba_outline_filled_and_removed():
    lab = disc_labels()
    out = logic.overlay_rgba(lab, [], "outline")
    assert out.shape == lab.shape + (4,)
    assert (out[lab == 0, 3] == 0).all()  # background stays transparent
    assert tuple(out[30, 28]) == logic.OUTLINE_RGBA  # left edge of disc 1
    assert out[30, 40, 3] == 0  # its centre is not drawn
    filled = logic.overlay_rgba(lab, [], "filled")
    assert (filled[lab > 0, 3] > 0).all()
    rem = logic.overlay_rgba(lab, [1], "outline")
    assert tuple(rem[30, 40]) == logic.REMOVED_RGBA
    assert tuple(rem[30, 28]) == logic.REMOVED_OUTLINE_RGBA
    assert tuple(rem[80, 45]) == logic.OUTLINE_RGBA  # disc 2 is kept


def test_hover_grid_maps_cells_to_pixels():
    lab = np.arange(600 * 800, dtype=np.int64).reshape(600, 800) % 60000
    g = logic.hover_grid(lab, max_cells=50_000)
    z, s = g["z"], g["dx"]
    assert z.size <= 50_000 and s == g["dy"] >= 2
    i, j = 7, 11
    y, x = g["y0"] + i * s, g["x0"] + j * s  # centre of the block the cell stands for
    assert abs(y - (i * s + (s - 1) / 2)) < 1e-9
    assert z[i, j] == lab[i * s + s // 2, j * s + s // 2]
    small = logic.hover_grid(disc_labels())
    assert small["dx"] == 1 and small["z"].dtype == np.uint16


def test_display_image_and_base_figure():
    disp = logic.display_image(micrograph_png())
    assert disp["width"] == 160 and disp["height"] == 120 and disp["stride"] == 1
    assert disp["source"].startswith("data:image/jpeg;base64,")
    fig = logic.base_figure(disp, {"x0": 0, "y0": 100, "x1": 160, "y1": 120}, opacity=0.4)
    assert [t.type for t in fig.data] == ["image", "image", "heatmap"]
    assert fig.data[1].opacity == 0.4
    assert fig.layout.shapes[0].y0 == 99.5 and fig.layout.shapes[0].x1 == 159.5
    assert list(fig.layout.yaxis.range) == [119.5, -0.5]  # image rows go down
    fig = logic.base_figure(disp, None, scale_box=[100, 104, 10, 90])
    assert fig.layout.shapes[0].name == "scale bar" and fig.layout.shapes[0].x1 == 90.5


def test_display_image_of_a_large_16bit_image_is_subsampled():
    a = (np.arange(2100 * 500, dtype=np.uint16).reshape(500, 2100) * 7)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="TIFF")
    disp = logic.display_image(buf.getvalue(), max_side=1024)
    assert disp["stride"] == 3 and disp["width"] == 2100
    raw = base64.b64decode(disp["source"].split(",", 1)[1])
    assert Image.open(io.BytesIO(raw)).size == (700, 167)


def test_display_image_rejects_non_images():
    with pytest.raises(SaemiError):
        logic.display_image(b"this is text")


def test_graph_style():
    assert logic.graph_style(630, 512)["aspectRatio"] == "630 / 512"
    assert "height" in logic.graph_style() and "aspectRatio" not in logic.graph_style()


def test_overlay_update_is_json_ready():
    upd = logic.overlay_update(disc_labels(), [2], "filled")
    assert upd["source"].startswith("data:image/png;base64,")
    raw = base64.b64decode(upd["source"].split(",", 1)[1])
    assert Image.open(io.BytesIO(raw)).mode == "RGBA"


def test_tooltip_text(analysis):
    text = logic.tooltip_text(2, analysis["particles"], 2.0, removed=[2])
    assert text.startswith("Particle 2: eq. diameter") and " nm" in text and "excluded" in text
    assert logic.tooltip_text(99, analysis["particles"]) == ""


# --- clients --------------------------------------------------------------------------------

class FakeService:
    def __init__(self):
        self.calls = []

    def segment(self, data, filename):
        self.calls.append(("segment", filename))
        if data.startswith(b"text"):
            raise SaemiError("not an image file (PNG, JPEG, TIFF or BMP expected)", code="not_an_image")
        return {"image_id": "abc123", "filename": filename, "width": 160, "height": 120, "banner_box": None,
                "timings": {}, "cached": False}

    labels = None  # what labels_of returns: the analysed labels unless a test says otherwise

    def analyze(self, image_id=None, settings=None, overlay="outline", overlay_alpha=0.7, include_images=True):
        self.calls.append(("analyze", image_id, dict(settings), overlay, include_images))
        if image_id != "abc123":
            raise SaemiError("unknown image_id", code="not_found")
        if settings.get("min_distance") == 13:
            raise RuntimeError("boom")
        res = fake_result(image_id=image_id)
        if not include_images:
            del res["labels_png"], res["overlay_png"]
        return res

    def labels_of(self, image_id):
        return disc_labels() if self.labels is None else self.labels

    def default_settings(self):
        from saemi.pipeline import Settings
        return Settings.from_dict({"min_distance": 5})


def test_in_process_client_translates_errors():
    svc = FakeService()
    c = InProcessClient(svc)
    assert c.segment(b"\x89PNG", "a.png")["image_id"] == "abc123"
    with pytest.raises(ClientError) as e:
        c.segment(b"text file", "a.png")
    assert e.value.code == "not_an_image" and "not an image" in e.value.message
    with pytest.raises(ClientError) as e:
        c.analyze("nope", SETTINGS)
    assert e.value.code == "not_found"
    with pytest.raises(ClientError) as e:
        c.analyze("abc123", {**SETTINGS, "min_distance": 13})
    assert e.value.code == "internal" and "boom" in e.value.message
    c.analyze("abc123", {**SETTINGS, "junk": 1})
    assert "junk" not in svc.calls[-1][2]
    assert c.default_settings()["min_distance"] == 5


def test_in_process_client_skips_the_overlay_picture_but_checks_the_labels():
    svc = FakeService()
    c = InProcessClient(svc)
    res = c.analyze("abc123", SETTINGS)
    assert [call[-1] for call in svc.calls] == [False]  # one analysis, without pictures
    assert np.array_equal(logic.decode_labels(res["labels_png"]), disc_labels())
    svc.calls.clear()
    other = disc_labels()
    other[other == 2] = 0  # another thread re-analysed in between: labels and table disagree
    svc.labels = other
    res = c.analyze("abc123", SETTINGS)
    assert [call[-1] for call in svc.calls] == [False, True]  # so it asks again, pictures included
    assert np.array_equal(logic.decode_labels(res["labels_png"]), disc_labels())


def test_labels_match():
    from saemi.ui.client import _labels_match

    lab = disc_labels()
    rows = records(particle_table(lab))
    assert _labels_match(lab, rows)
    assert not _labels_match(lab, rows[:-1])
    assert not _labels_match(lab, [{**rows[0], "area_px": rows[0]["area_px"] + 1}] + rows[1:])
    assert _labels_match(np.zeros((4, 4), np.int32), [])


class FakeResponse:
    def __init__(self, status, body=None, text=None):
        self.status_code, self._body, self.text = status, body, text

    def json(self):
        if self._body is None:
            raise ValueError("no json")
        return self._body


class FakeSession:
    def __init__(self, response):
        self.response, self.requests = response, []

    def request(self, method, url, timeout=None, **kwargs):
        self.requests.append((method, url, timeout, kwargs))
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


def test_remote_client_posts_the_contract():
    s = FakeSession(FakeResponse(200, {"image_id": "x"}))
    c = RemoteClient("http://gpu:8000/api/v1/", timeout=7, session=s)
    c.segment(b"abc", "a.png")
    method, url, timeout, kw = s.requests[-1]
    assert (method, url, timeout) == ("POST", "http://gpu:8000/api/v1/segment", 7)
    assert kw["files"]["file"] == ("a.png", b"abc")
    c.analyze("x", {**SETTINGS, "removed_labels": [3], "junk": 1}, overlay="filled")
    body = s.requests[-1][3]["json"]
    assert body == {"image_id": "x", **SETTINGS, "removed_labels": [3], "overlay": "filled"}
    c.segment_json(b"abc", "a.png")
    assert s.requests[-1][3]["json"] == {"image": base64.b64encode(b"abc").decode(), "filename": "a.png"}


def test_remote_client_reads_the_new_defaults_from_the_backend_card():
    post = {"watershed": True, "threshold": 0.6, "min_distance": 30, "min_size": 80, "merge_threshold": 0.4,
            "min_relative_size": 0.1, "not_a_setting": 1}
    c = RemoteClient("http://gpu:8000", session=FakeSession(FakeResponse(200, {"card": {"postprocess": post}})))
    d = c.default_settings()
    assert d["merge_threshold"] == 0.4 and d["min_relative_size"] == 0.1 and "not_a_setting" not in d
    old = {k: v for k, v in post.items() if k not in ("merge_threshold", "min_relative_size")}
    c = RemoteClient("http://gpu:8000", session=FakeSession(FakeResponse(200, {"card": {"postprocess": old}})))
    d = c.default_settings()
    assert d["merge_threshold"] == 0.0 and d["min_relative_size"] == 0.0  # an older backend: both off


def test_remote_client_errors():
    import requests

    c = RemoteClient("http://gpu:8000", session=FakeSession(
        FakeResponse(422, {"error": {"code": "not_an_image", "message": "not an image file"}})))
    with pytest.raises(ClientError) as e:
        c.segment(b"x", "a.png")
    assert (e.value.code, e.value.message) == ("not_an_image", "not an image file")
    c = RemoteClient("http://gpu:8000", session=FakeSession(FakeResponse(502, None, "<html>bad gateway")))
    with pytest.raises(ClientError) as e:
        c.analyze("x")
    assert "HTTP 502" in e.value.message
    c = RemoteClient("http://gpu:8000", timeout=3, session=FakeSession(requests.exceptions.ReadTimeout()))
    with pytest.raises(ClientError) as e:
        c.analyze("x")
    assert e.value.code == "backend_timeout" and "3 s" in e.value.message


def test_remote_client_against_a_closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = RemoteClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ClientError) as e:
        c.segment(b"x", "a.png")
    assert e.value.code == "backend_unavailable" and "not reachable" in e.value.message
    assert c.default_settings()["min_distance"] >= 1  # falls back to the local model card


# --- the app without a browser --------------------------------------------------------------

class FakeClient:
    description = "fake backend"

    def __init__(self):
        self.svc = FakeService()
        self.inner = InProcessClient(self.svc)

    def segment(self, data, filename="image"):
        return self.inner.segment(data, filename)

    def analyze(self, image_id, settings=None, overlay="outline"):
        return self.inner.analyze(image_id, settings, overlay)

    def default_settings(self):
        return {"watershed": True, "min_distance": 5, "threshold": 0.5, "min_size": 20, "exclude_edge": False,
                "merge_threshold": 0.35, "min_relative_size": 0.07}


@pytest.fixture
def dash_app():
    from saemi.ui import create_dash_app

    return create_dash_app(client=FakeClient())


def call(app, output, inputs, state=(), triggered=None):
    """Run one callback through Dash's HTTP endpoint, as the browser does."""
    client = app.server.test_client()
    client.get("/")  # lets Dash finish its setup
    body = {"output": output, "outputs": None, "inputs": inputs, "state": list(state),
            "changedPropIds": [triggered or f"{inputs[0]['id']}.{inputs[0]['property']}"]}
    parts = [p.split("@")[0].rsplit(".", 1) for p in output.strip(".").split("...")] if output.startswith("..") \
        else [output.split("@")[0].rsplit(".", 1)]
    outs = [{"id": i, "property": p} for i, p in parts]
    body["outputs"] = outs if output.startswith("..") else outs[0]
    r = client.post("/_dash-update-component", json=body)
    return r.status_code, (r.get_json() if r.status_code == 200 else None)


def test_layout_has_labelled_controls_and_defaults(dash_app):
    html = dash_app.server.test_client().get("/").get_data(as_text=True)
    assert "<title>SAEMI" in html and "favicon.ico" in html
    from plotly.io.json import to_json_plotly

    layout = to_json_plotly(dash_app.layout)
    for cid in ("upload", "demo-button", "upload-error", "watershed", "min-distance", "threshold", "min-size",
                "merge-threshold", "min-relative-size", "exclude-edge", "nm-per-pixel", "draw-line-button",
                "bar-value", "bar-unit", "calib-line-length", "calib-message", "calib-line-store", "overlay-mode",
                "opacity", "image-graph", "metric", "bin-width", "histogram-graph", "summary-count",
                "particle-grid", "download-particles", "download-summary"):
        assert f'"{cid}"' in layout, cid
    for label in ("min-distance", "threshold", "min-size", "merge-threshold", "min-relative-size", "nm-per-pixel",
                  "bar-value", "opacity", "metric", "bin-width"):
        assert f'"{label}-label"' in layout
    assert "j.jiec.2019.05.007" in layout
    assert dash_app.layout["min-distance"].value == 5  # the model card's defaults
    assert dash_app.layout["merge-threshold"].value == 0.35
    assert dash_app.layout["min-relative-size"].value == 7.0  # shown as a percentage
    assert dash_app.layout["bar-unit"].value == "nm"


def test_layout_without_new_defaults_starts_them_off():
    from saemi.ui import create_dash_app

    class OldBackend(FakeClient):  # a backend that predates the two settings
        def default_settings(self):
            return {"watershed": True, "min_distance": 5, "threshold": 0.5, "min_size": 20, "exclude_edge": False}

    app = create_dash_app(client=OldBackend())
    assert app.layout["merge-threshold"].value == 0.0 and app.layout["min-relative-size"].value == 0.0
    from saemi.ui.client import FALLBACK_DEFAULTS, SETTINGS_KEYS

    assert FALLBACK_DEFAULTS["merge_threshold"] == 0.0 and FALLBACK_DEFAULTS["min_relative_size"] == 0.0
    assert set(logic.SPLIT_KEYS) <= set(SETTINGS_KEYS) and set(logic.SPLIT_KEYS) <= set(FALLBACK_DEFAULTS)


def _upload_inputs(contents, filename):
    return ([{"id": "upload", "property": "contents", "value": contents},
             {"id": "demo-button", "property": "n_clicks", "value": 0}],
            [{"id": "upload", "property": "filename", "value": filename},
             {"id": "nm-per-pixel", "property": "value", "value": None},
             {"id": "opacity", "property": "value", "value": 0.8},
             {"id": "image-store", "property": "data", "value": None}])


def test_upload_callback_success_and_error(dash_app):
    out = ("..image-store.data...image-graph.figure...upload-error.children...upload-status.children..."
           "upload.contents...nm-per-pixel.value...image-graph.style..")
    url = "data:image/png;base64," + base64.b64encode(micrograph_png()).decode()
    status, body = call(dash_app, out, *_upload_inputs(url, "x.png"))
    assert status == 200
    resp = body["response"]
    assert resp["image-store"]["data"]["image_id"] == "abc123"
    assert resp["image-graph"]["figure"]["data"][0]["type"] == "image"
    assert resp["upload-error"]["children"] == ""
    assert resp["image-graph"]["style"]["aspectRatio"] == "160 / 120"
    bad = "data:image/png;base64," + base64.b64encode(b"text, not an image").decode()
    status, body = call(dash_app, out, *_upload_inputs(bad, "notes.png"))
    assert status == 200
    resp = body["response"]
    assert "notes.png" in resp["upload-error"]["children"] and "not an image" in resp["upload-error"]["children"]
    assert "image-store" not in resp  # the previous image stays


def test_upload_callback_survives_a_bug_in_the_client():
    from saemi.ui import create_dash_app

    class Broken(FakeClient):
        def segment(self, data, filename="image"):
            raise RuntimeError("a bug")

    app = create_dash_app(client=Broken())
    out = ("..image-store.data...image-graph.figure...upload-error.children...upload-status.children..."
           "upload.contents...nm-per-pixel.value...image-graph.style..")
    url = "data:image/png;base64," + base64.b64encode(micrograph_png()).decode()
    status, body = call(app, out, *_upload_inputs(url, "x.png"))
    assert status == 200 and "unexpected error (RuntimeError)" in body["response"]["upload-error"]["children"]


def test_analyze_callback_then_histogram(dash_app):
    out = ("..analysis-store.data...labels-store.data...analysis-error.children...analysis-status.children..."
           "expired-store.data..")
    inputs = [{"id": "image-store", "property": "data", "value": {"image_id": "abc123"}},
              {"id": "watershed", "property": "value", "value": ["on"]},
              {"id": "min-distance", "property": "value", "value": 7},
              {"id": "threshold", "property": "value", "value": 0.5},
              {"id": "min-size", "property": "value", "value": 20},
              {"id": "exclude-edge", "property": "value", "value": []},
              {"id": "merge-threshold", "property": "value", "value": 0.4},
              {"id": "min-relative-size", "property": "value", "value": 12.5}]
    status, body = call(dash_app, out, inputs)
    assert status == 200
    analysis = body["response"]["analysis-store"]["data"]
    assert len(analysis["particles"]) == 4 and body["response"]["analysis-status"]["children"].startswith("4 ")
    assert analysis["settings"]["merge_threshold"] == 0.4 and analysis["settings"]["min_relative_size"] == 0.125
    sent = dash_app.saemi_client.svc.calls[-1][2]  # what the backend was asked for
    assert sent["merge_threshold"] == 0.4 and sent["min_relative_size"] == 0.125
    inputs[0]["value"] = {"image_id": "expired"}
    status, body = call(dash_app, out, inputs)
    # a 404 from the cache: no error shown, the page is told to upload the image again
    assert body["response"]["expired-store"]["data"]["image_id"] == "expired"
    assert "uploading it again" in body["response"]["analysis-status"]["children"]
    assert body["response"]["analysis-error"]["children"] == ""

    out = "..histogram-graph.figure...summary.children...bin-width-label.children.."
    removed = {"key": analysis["key"], "labels": [1]}
    status, body = call(dash_app, out, [
        {"id": "analysis-store", "property": "data", "value": analysis},
        {"id": "removed-store", "property": "data", "value": removed},
        {"id": "metric", "property": "value", "value": "feret_max"},
        {"id": "bin-width", "property": "value", "value": 4},
        {"id": "nm-per-pixel", "property": "value", "value": 2}])
    assert status == 200
    fig = body["response"]["histogram-graph"]["figure"]
    assert fig["layout"]["meta"]["count"] == 3
    assert '"summary-count"' in json.dumps(body["response"]["summary"]["children"])
    assert body["response"]["bin-width-label"]["children"] == "Bin width (nm)"


def output_of(app, input_id):
    """The callback-map key of the callback that ``input_id`` drives (duplicate outputs carry a hash)."""
    keys = [k for k, cb in app.callback_map.items() if any(i["id"] == input_id for i in cb["inputs"])]
    assert len(keys) == 1, keys
    return keys[0]


def test_calibration_line_store_follows_the_drawing(dash_app):
    out = "calib-line-store.data"
    shapes = {"shapes": [BOX, drawn(10, 50, 110, 50)]}

    def inputs(relayout, image=None):
        return [{"id": "image-graph", "property": "relayoutData", "value": relayout},
                {"id": "image-store", "property": "data", "value": image or {"image_id": "abc123"}}]

    status, body = call(dash_app, out, inputs(shapes), [{"id": "calib-line-store", "property": "data",
                                                         "value": None}])
    line = body["response"]["calib-line-store"]["data"]
    assert status == 200 and logic.line_length(line) == 100
    state = [{"id": "calib-line-store", "property": "data", "value": line}]
    status, body = call(dash_app, out, inputs({"shapes[1].x1": 210, "shapes[1].y1": 50}), state)
    assert logic.line_length(body["response"]["calib-line-store"]["data"]) == 200
    status, _ = call(dash_app, out, inputs({"xaxis.range[0]": 5}), state)
    assert status == 204  # a zoom leaves the line alone
    status, body = call(dash_app, out, inputs(shapes, {"image_id": "new"}), state, triggered="image-store.data")
    assert body["response"]["calib-line-store"]["data"] is None  # a new image starts without a line


def test_calibration_fills_nm_per_pixel(dash_app):
    out = output_of(dash_app, "bar-value")
    line = {"index": 1, "x0": 10, "y0": 50, "x1": 170, "y1": 170}

    def measure(line, value, unit="nm"):
        status, body = call(dash_app, out, [{"id": "calib-line-store", "property": "data", "value": line},
                                            {"id": "bar-value", "property": "value", "value": value},
                                            {"id": "bar-unit", "property": "value", "value": unit}])
        assert status == 200
        return body["response"]

    resp = measure(line, "0.5", "µm")
    assert resp["nm-per-pixel"]["value"] == 2.5 and resp["calib-line-length"]["children"] == "Line: 200 px"
    resp = measure(line, "-3")
    assert "nm-per-pixel" not in resp and "positive number" in resp["calib-message"]["children"]
    resp = measure(None, "500")
    assert "nm-per-pixel" not in resp and "Draw a line" in resp["calib-message"]["children"]
    assert resp["calib-line-length"]["children"] == "No line drawn"


def test_draw_line_button_switches_the_drag_mode(dash_app):
    out = output_of(dash_app, "draw-line-button")
    status, body = call(dash_app, out,
                        [{"id": "draw-line-button", "property": "n_clicks", "value": 1}],
                        [{"id": "image-store", "property": "data", "value": {"image_id": "abc123"}}])
    assert status == 200 and "drawline" in json.dumps(body["response"]["image-graph"]["figure"])
    status, _ = call(dash_app, out,
                     [{"id": "draw-line-button", "property": "n_clicks", "value": 1}],
                     [{"id": "image-store", "property": "data", "value": None}])
    assert status == 204  # nothing to draw on yet


def test_max_upload_mb():
    from types import SimpleNamespace

    from saemi.ui import max_upload_mb

    assert max_upload_mb(SimpleNamespace(config={"SAEMI_MAX_UPLOAD_MB": 12.5}), {}) == 12.5
    assert max_upload_mb(None, {"SAEMI_MAX_UPLOAD_MB": "8"}) == 8.0
    assert max_upload_mb(None, {"SAEMI_MAX_UPLOAD_MB": "junk"}) == 50.0
    assert max_upload_mb(None, {}) == 50.0


# --- the UI never imports torch -------------------------------------------------------------

@pytest.mark.slow
def test_ui_and_remote_app_do_not_import_torch():
    code = ("import sys, saemi.ui, app; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert type(app.app.saemi_client).__name__ == 'RemoteClient'; "
            "assert 'saemi' not in app.server.extensions; print('ok')")
    env = {**os.environ, "SAEMI_BACKEND_URL": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
