"""Calibration on the page (saemi.ui.calibration): the record line, the detected scale bar, the drawn line."""

import pytest
from saemi.ui import calibration, numbers
from uihelpers import *  # noqa: F401,F403  (fixtures and fakes shared by the page tests)


@pytest.mark.parametrize("value,expected", [(None, None), ("", None), (0, None), (-1, None), ("abc", None),
                                            (float("nan"), None), ("2.5", 2.5), (0.8, 0.8)])
def test_parse_nm_per_pixel(value, expected):
    assert calibration.parse_nm_per_pixel(value) == expected


def test_detected_scale_and_next_calibration():
    info = {"scale": {"bar_length_px": 80.0, "value": 200.0, "unit": "nm", "nm_per_pixel": 2.5,
                      "bar_box": [480, 484, 10, 90], "label_box": None, "confidence": 0.9, "text": "200 nm"}}
    d = calibration.detected_scale(info)
    assert d["nm_per_pixel"] == 2.5 and "200 nm = 80 px" in d["text"] and d["bar_box"] == [480, 484, 10, 90]
    assert calibration.detected_scale({"scale": {"bar_length_px": 80.0, "nm_per_pixel": None}}) is None
    assert calibration.detected_scale({"scale": None}) is None and calibration.detected_scale({}) is None
    assert calibration.next_calibration(None, 2.5) == 2.5  # a read scale bar fills the field
    assert calibration.next_calibration(7.0, 2.5) == 2.5  # and wins for a new image
    assert calibration.next_calibration(2.5, None) is None  # the last image's value is not this one's
    assert calibration.next_calibration(3.0, None) is None  # nor is what the user typed for it (issue 18)
    assert calibration.next_calibration(3.0, None, for_all=True) == 3.0  # unless it is for all images
    assert calibration.next_calibration(3.0, 2.5, for_all=True) == 3.0
    assert calibration.next_calibration(None, None, for_all=True) is None


def test_calibration_field_units_and_rounding():
    assert calibration.to_nm_per_pixel("1.5", "nm/px") == 1.5
    assert calibration.to_nm_per_pixel(0.0015, "µm/px") == 1.5
    assert calibration.to_nm_per_pixel(400, "px/µm") == 2.5
    assert calibration.to_nm_per_pixel(0, "px/µm") is None and calibration.to_nm_per_pixel("", "nm/px") is None
    for unit in calibration.CALIBRATION_UNITS:  # what the field shows reads back as the same calibration
        assert calibration.same_calibration(calibration.to_nm_per_pixel(calibration.field_value(1.46220001, unit),
                                                                          unit), 1.46220001)
    assert calibration.field_value(1.46220001) == 1.462 and calibration.field_value(7.344, "µm/px") == 0.007344
    assert not calibration.same_calibration(1.462, 1.47)


def test_a_scale_bar_read_automatically_is_unconfirmed_until_the_user_confirms():
    info = {"scale": {"bar_length_px": 150.0, "value": 200.0, "unit": "nm", "nm_per_pixel": 4 / 3,
                      "confidence": 0.62, "text": "200 nm"},
            "calibration": {"nm_per_pixel": 4 / 3, "source": "scale_bar", "details": "scale bar 200 nm = 150.0 px",
                            "text": "1.333 nm/px from the scale bar (scale bar 200 nm = 150.0 px)", "warnings": []}}
    ask = calibration.read_scale_bar_text(info)
    assert ask.startswith("Scale bar read automatically: 200 nm over 150 px (confidence 0.62)")
    shown = calibration.field_value(4 / 3)  # the field holds 1.333: still the scale bar's value
    c = calibration.page_calibration(shown, info)
    assert c["unconfirmed"] and c["source"] == "scale_bar" and "read automatically" in c["text"]
    assert "not confirmed" in calibration.calibration_csv_columns(shown, info)["calibration_details"]
    ok = calibration.page_calibration(shown, info, confirmed=True)
    assert not ok["unconfirmed"] and "confirmed by you" in ok["text"]
    assert "confirmed by the user" in calibration.calibration_csv_columns(shown, info, True)["calibration_details"]
    assert not calibration.page_calibration(2.0, info)["unconfirmed"]  # a value the user set needs no check
    info["calibration"]["source"] = "file"
    assert calibration.read_scale_bar_text(info) is None
    assert numbers.display_unit("nm^2") == "nm²" and numbers.display_unit("px") == "px"


def test_drawn_line_from_a_new_shape_list():
    line = calibration.drawn_line({"shapes": [BOX, drawn(10.2, 50, 110.2, 50)]})
    assert line == {"index": 1, "x0": 10.2, "y0": 50.0, "x1": 110.2, "y1": 50.0}
    # a second line: the last one drawn counts, the boxes never do
    two = calibration.drawn_line({"shapes": [BOX, drawn(10, 50, 110, 50), drawn(0, 0, 30, 40)]}, line)
    assert two["index"] == 2 and calibration.line_length(two) == 50
    assert calibration.drawn_line({"shapes": [BOX]}, two) is None  # the line was erased
    assert calibration.drawn_line({"shapes": []}, two) is None


def test_drawn_line_follows_edits_of_an_existing_line():
    line = calibration.drawn_line({"shapes": [BOX, drawn(10, 50, 110, 50)]})
    moved = calibration.drawn_line({"shapes[1].x0": 20, "shapes[1].y0": 60, "shapes[1].x1": 120, "shapes[1].y1": 60},
                             line)
    assert moved == {"index": 1, "x0": 20.0, "y0": 60.0, "x1": 120.0, "y1": 60.0}
    one_end = calibration.drawn_line({"shapes[1].x1": 220, "shapes[1].y1": 60}, moved)  # an end handle dragged
    assert one_end == {"index": 1, "x0": 20.0, "y0": 60.0, "x1": 220.0, "y1": 60.0}
    # an older line moved as a whole takes over; one end of an unknown line cannot be placed
    other = calibration.drawn_line({f"shapes[2].{k}": v for k, v in zip(("x0", "y0", "x1", "y1"), (0, 0, 3, 4))},
                             one_end)
    assert other["index"] == 2 and calibration.line_length(other) == 5
    assert calibration.drawn_line({"shapes[3].x0": 5}, other) is other
    assert calibration.drawn_line({"shapes[2].x0": "junk"}, other) is other


@pytest.mark.parametrize("relayout", [None, {}, {"xaxis.range[0]": 3, "xaxis.range[1]": 80},
                                      {"dragmode": "drawline"}, {"autosize": True}, "junk",
                                      {"shapes[1].path": "M0,0L1,1"}])
def test_drawn_line_ignores_other_events(relayout):
    prev = {"index": 1, "x0": 0.0, "y0": 0.0, "x1": 10.0, "y1": 0.0}
    assert calibration.drawn_line(relayout, prev) is prev
    assert calibration.drawn_line(relayout, None) is None


def test_drawn_line_skips_shapes_that_are_not_lines_in_pixels():
    paper = {**drawn(0.1, 0.1, 0.9, 0.1), "xref": "paper"}
    broken = drawn(0, 0, None, 5)
    assert calibration.drawn_line({"shapes": [BOX, paper, broken]}) is None
    assert calibration.drawn_line({"shapes": [drawn(0, 0, 6, 8), paper]})["index"] == 0


def test_line_length_and_units():
    assert calibration.line_length({"x0": 1, "y0": 2, "x1": 4, "y1": 6}) == 5.0
    assert calibration.line_length(None) is None and calibration.line_length({"x0": 1}) is None
    assert calibration.length_in_nm(200, "nm") == 200.0
    assert calibration.length_in_nm("1.5", "µm") == 1500.0
    assert calibration.length_in_nm("2,5", "μm") == 2500.0  # Greek mu, decimal comma
    assert calibration.length_in_nm(" 3 ", "um") == 3000.0
    for bad in (None, "", "abc", 0, -1, "-2", float("nan"), float("inf"), True):
        assert calibration.length_in_nm(bad, "nm") is None, bad
    assert calibration.length_in_nm(5, "furlong") is None
    assert calibration.length_in_nm(5, None) == 5.0  # no unit chosen: nm


def test_manual_calibration_values_and_messages():
    line = {"index": 1, "x0": 10, "y0": 50, "x1": 170, "y1": 170}  # 200 px
    r = calibration.manual_calibration(line, "500", "nm")
    assert r["length_px"] == 200.0 and r["nm_per_pixel"] == 2.5
    assert r["length_text"] == "Line: 200 px" and "2.5" in r["message"] and "nm per pixel" in r["message"]
    assert calibration.manual_calibration(line, 1, "µm")["nm_per_pixel"] == 5.0
    assert calibration.manual_calibration({"x0": 0, "y0": 0, "x1": 3, "y1": 0}, 1, "nm")["nm_per_pixel"] == 0.333333
    none = calibration.manual_calibration(None, 500, "nm")
    assert none["nm_per_pixel"] is None and none["length_text"] == "No line drawn"
    assert "Draw a line along the scale bar" in none["message"]
    for bad in ("abc", "0", -5):
        r = calibration.manual_calibration(line, bad, "nm")
        assert r["nm_per_pixel"] is None and r["message"] == "The bar's length must be a positive number.", bad
        assert r["length_text"] == "Line: 200 px"  # the line is still measured
    assert "Type the length" in calibration.manual_calibration(line, None, "nm")["message"]
    assert "Type the length" in calibration.manual_calibration(line, " ", "nm")["message"]
    dot = calibration.manual_calibration({"x0": 5, "y0": 5, "x1": 5.2, "y1": 5}, 100, "nm")
    assert dot["nm_per_pixel"] is None and "shorter than a pixel" in dot["message"]
