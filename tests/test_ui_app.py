"""Tests of the page without a browser: uploads, the controls and the settings they mean, the Dash callbacks through Dash's HTTP endpoint, and the torch-free import."""

import base64
import json
import os
import subprocess
import sys
import pytest
from saemi.settings import names as setting_names, slider_range
from saemi.ui import calibration, controls, upload
from saemi.ui.client import ClientError
from uihelpers import *  # noqa: F401,F403  (fixtures and fakes shared by the page tests)
from uihelpers import _upload_inputs  # noqa: F401


def test_decode_upload_round_trip():
    data = b"\x89PNG\r\n\x1a\nrest"
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert upload.decode_upload(url, "a.png") == data


@pytest.mark.parametrize("contents", [None, "", "data:image/png;base64,", "data:image/png;base64,@@@not base64"])
def test_decode_upload_rejects_bad_contents(contents):
    with pytest.raises(ClientError):
        upload.decode_upload(contents, "a.png")


def test_settings_from_controls_reads_checklists_and_clamps():
    s = panel(["on"], "90", 0.3, None, [])  # fraction sliders in %
    assert s == {"watershed": True, "min_distance_fraction": 0.9, "threshold": 0.3, "min_size_fraction": 0.0,
                 "exclude_edge": False, "merge_threshold": 0.0, "min_relative_size": 0.0}
    # the absolute pixel settings have no control (the API and the CLI take them by name)
    assert set(s) == set(setting_names("split")) - {"min_distance", "min_size"}
    s = panel([], 0, 2.0, -5, ["on"])
    assert s["watershed"] is False and s["exclude_edge"] is True
    assert s["min_distance_fraction"] == 0.01 and s["threshold"] == 0.99 and s["min_size_fraction"] == 0


@pytest.mark.parametrize("merge,percent,expected", [
    (0.35, 7, (0.35, 0.07)),  # the slider shows a percentage; the backend gets a fraction
    ("0.2", "12.5", (0.2, 0.125)),
    (None, None, (0.0, 0.0)), ("", "", (0.0, 0.0)), ("off", "junk", (0.0, 0.0)),  # unreadable: off
    (-0.5, -3, (0.0, 0.0)), (1.5, 250, (0.99, 0.99)),  # clamped into [0, 1), the backend's range
    (float("nan"), float("inf"), (0.0, 0.0)),
])
def test_settings_from_controls_merge_and_relative_size(merge, percent, expected):
    s = panel(["on"], 60, 0.5, 1, [], merge, percent)
    assert (s["merge_threshold"], s["min_relative_size"]) == expected


def test_new_splitting_settings_are_accepted_by_the_core():
    from saemi.pipeline import Settings

    s = panel(["on"], 60, 0.5, 1, [], 1.5, 250)  # the most the controls can send
    core = Settings.from_dict(s)
    assert core.merge_threshold == 0.99 and core.min_relative_size == 0.99


@pytest.mark.parametrize("msg,tail", [("Not an image file", "not an image file"),
                                      ("TIFF file could not be decoded", "TIFF file could not be decoded"),
                                      ("", "the image could not be analysed"), ("image is 10x10", "image is 10x10")])
def test_sentence_tail(msg, tail):
    assert upload.sentence_tail(msg) == tail


def test_slider_max_includes_the_default():
    assert slider_range("min_distance_fraction", 0.6)[1] == 150  # in %: the floor
    assert slider_range("min_distance_fraction", 1.2)[1] == 240
    assert slider_range("min_distance_fraction", None)[1] == 150


def test_analysis_key_changes_only_with_splitting_settings():
    k = controls.analysis_key("img", SETTINGS)
    assert controls.analysis_key("img", {**SETTINGS, "nm_per_pixel": 2.0}) == k
    assert controls.analysis_key("img", {**SETTINGS, "min_distance_fraction": 0.8}) != k
    assert controls.analysis_key("img", {**SETTINGS, "diameter": 30.0}) != k  # another working scale
    assert controls.analysis_key("img", {**SETTINGS, "merge_threshold": 0.3}) != k  # both renumber the particles
    assert controls.analysis_key("img", {**SETTINGS, "min_relative_size": 0.05}) != k
    assert controls.analysis_key("other", SETTINGS) != k


def test_reduce_analysis_keeps_pixel_columns_and_labels_apart():
    res = fake_result()
    res["particles"] = [{**p, "area_nm2": 1.0, "equivalent_diameter_nm": 2.0} for p in res["particles"]]
    a, ref = controls.reduce_analysis(res, SETTINGS)
    assert a["key"] == ref["key"] == controls.analysis_key("abc123", SETTINGS)
    assert "labels_png" not in a and "labels_png" not in ref  # the labels stay on the server
    assert ref == {"key": a["key"], "image_id": "abc123", "settings": SETTINGS, "edits": 0}
    assert all(not k.endswith("_nm") and k != "area_nm2" for p in a["particles"] for k in p)
    assert a["count_api"] == 4 and len(a["particles"]) == 4


def test_layout_has_labelled_controls_and_defaults(dash_app):
    html = dash_app.server.test_client().get("/").get_data(as_text=True)
    assert "<title>SAEMI" in html and "favicon.ico" in html
    from plotly.io.json import to_json_plotly

    layout = to_json_plotly(dash_app.layout)
    for cid in ("upload", "demo-button", "upload-error", "watershed", "min-distance-fraction", "threshold",
                "min-size-fraction", "diameter",
                "merge-threshold", "min-relative-size", "exclude-edge", "nm-per-pixel", "draw-line-button",
                "bar-value", "bar-unit", "calib-line-length", "calib-message", "calib-line-store", "overlay-mode",
                "opacity", "image-graph", "metric", "bin-width", "histogram-graph", "summary-count",
                "particle-grid", "download-particles", "download-summary"):
        assert f'"{cid}"' in layout, cid
    for label in ("min-distance-fraction", "threshold", "min-size-fraction", "merge-threshold", "min-relative-size",
                  "diameter", "nm-per-pixel",
                  "bar-value", "opacity", "metric", "bin-width"):
        assert f'"{label}-label"' in layout
    assert "j.jiec.2019.05.007" in layout
    assert dash_app.layout["min-distance-fraction"].value == 5.0  # the model card's defaults, in %
    assert dash_app.layout["diameter"].value is None  # empty: estimated per image
    assert dash_app.layout["merge-threshold"].value == 0.35
    assert dash_app.layout["min-relative-size"].value == 7.0  # shown as a percentage
    assert dash_app.layout["bar-unit"].value == "nm"


def test_layout_without_new_defaults_starts_them_off():
    from saemi.ui import create_dash_app

    class OldBackend(FakeClient):  # a backend that predates the two settings
        def default_settings(self):
            return {"watershed": True, "min_distance_fraction": 0.05, "threshold": 0.5, "min_size_fraction": 0.002,
                    "exclude_edge": False}

    app = create_dash_app(client=OldBackend())
    assert app.layout["merge-threshold"].value == 0.0 and app.layout["min-relative-size"].value == 0.0
    from saemi.ui.client import FALLBACK_DEFAULTS, SETTINGS_KEYS

    assert FALLBACK_DEFAULTS["merge_threshold"] == 0.0 and FALLBACK_DEFAULTS["min_relative_size"] == 0.0
    assert set(setting_names("split")) <= set(SETTINGS_KEYS) and set(setting_names("split")) <= set(FALLBACK_DEFAULTS)


UPLOAD_OUT = ("..image-store.data...image-graph.figure...upload-error.children...upload-status.children..."
              "upload.contents...nm-per-pixel.value...image-graph.style...sample-store.data...queue-store.data..."
              "sample-skipped.children...sample-skipped.hidden...sample-progress.hidden..")


def test_upload_callback_success_and_error(dash_app):
    out = UPLOAD_OUT
    url = "data:image/png;base64," + base64.b64encode(micrograph_png()).decode()
    status, body = call(dash_app, out, *_upload_inputs(url, "x.png"))
    assert status == 200
    resp = body["response"]
    assert resp["image-store"]["data"]["image_id"] == "abc123"
    assert resp["image-graph"]["figure"]["data"][0]["type"] == "image"
    assert resp["upload-error"]["children"] == ""
    assert resp["image-graph"]["style"]["aspectRatio"] == "160 / 120"
    # one image is a sample of one, named after it, with the controls' settings
    one = resp["sample-store"]["data"]
    assert one["name"] == "x" and [im["image_id"] for im in one["images"]] == ["abc123"]
    assert one["settings"]["min_distance_fraction"] == 0.7
    # the upload takes several files: one file arrives as a list of one
    status, body = call(dash_app, out, *_upload_inputs([url], ["x.png"]))
    assert status == 200 and body["response"]["image-store"]["data"]["image_id"] == "abc123"
    bad = "data:image/png;base64," + base64.b64encode(b"text, not an image").decode()
    status, body = call(dash_app, out, *_upload_inputs(bad, "notes.png"))
    assert status == 200
    resp = body["response"]
    assert "notes.png" in resp["upload-error"]["children"] and "not an image" in resp["upload-error"]["children"]
    assert "image-store" not in resp  # the previous image stays


def test_upload_callback_survives_a_bug_in_the_client():
    from saemi.ui import create_dash_app

    class Broken(FakeClient):
        def segment(self, data, filename="image", image_id=None, preview=False, progress=None):
            raise RuntimeError("a bug")

    app = create_dash_app(client=Broken())
    out = UPLOAD_OUT
    url = "data:image/png;base64," + base64.b64encode(micrograph_png()).decode()
    status, body = call(app, out, *_upload_inputs(url, "x.png"))
    assert status == 200 and "unexpected error (RuntimeError)" in body["response"]["upload-error"]["children"]


def test_analyze_callback_then_histogram(dash_app):
    out = ("..analysis-store.data...analysis-ref-store.data...analysis-error.children...analysis-status.children..."
           "expired-store.data..")
    inputs = [{"id": "image-store", "property": "data", "value": {"image_id": "abc123"}},
              *({"id": cid, "property": "value", "value": v} for cid, v in sorted(
                  {"watershed": ["on"], "min-distance-fraction": 60, "threshold": 0.5, "min-size-fraction": 1,
                   "exclude-edge": [], "merge-threshold": 0.4, "min-relative-size": 12.5}.items(),
                  key=lambda kv: controls.CONTROL_IDS.index(kv[0]))),
              {"id": "diameter", "property": "value", "value": None}]
    token = [{"id": "progress-token", "property": "data", "value": "tab-0123456789abcdef"}]
    status, body = call(dash_app, out, inputs, token)
    assert status == 200
    analysis = body["response"]["analysis-store"]["data"]
    assert len(analysis["particles"]) == 4 and body["response"]["analysis-status"]["children"].startswith("4 ")
    assert body["response"]["analysis-ref-store"]["data"] == {"key": analysis["key"], "image_id": "abc123",
                                                              "settings": analysis["settings"], "edits": 0}
    assert analysis["settings"]["merge_threshold"] == 0.4 and analysis["settings"]["min_relative_size"] == 0.125
    sent = dash_app.saemi_client.svc.calls[-1][2]  # what the backend was asked for
    assert sent["merge_threshold"] == 0.4 and sent["min_relative_size"] == 0.125
    inputs[0]["value"] = {"image_id": "expired"}
    status, body = call(dash_app, out, inputs, token)
    # a 404 from the cache: no error shown, the page is told to upload the image again
    assert body["response"]["expired-store"]["data"]["image_id"] == "expired"
    assert "uploading it again" in body["response"]["analysis-status"]["children"]
    assert body["response"]["analysis-error"]["children"] == ""

    out = ("..histogram-graph.figure...summary.children...bin-width-label.children...unit-store.data..."
           "count-text-store.data..")
    removed = {"key": analysis["key"], "labels": [1]}
    status, body = call(dash_app, out, [
        {"id": "analysis-store", "property": "data", "value": analysis},
        {"id": "removed-store", "property": "data", "value": removed},
        {"id": "metric", "property": "value", "value": "feret_max"},
        {"id": "bin-width", "property": "value", "value": 4},
        {"id": "nm-store", "property": "data", "value": 2},
        {"id": "size-unit", "property": "value", "value": "auto"},
        {"id": "calib-note-store", "property": "data", "value": None},
        {"id": "filtered-store", "property": "data", "value": None}])
    assert status == 200
    fig = body["response"]["histogram-graph"]["figure"]
    assert fig["layout"]["meta"]["count"] == 3
    assert '"summary-count"' in json.dumps(body["response"]["summary"]["children"])
    assert body["response"]["bin-width-label"]["children"] == "Bin width (nm)"
    assert body["response"]["unit-store"]["data"] == "nm"
    # the header's count is the summary's: one count everywhere
    assert body["response"]["count-text-store"]["data"] == "3 particles counted (4 found, 1 excluded)"
    # 2000x the pixel size: particles of ~50 µm are shown in µm, and an unconfirmed scale bar is said
    status, body = call(dash_app, out, [
        {"id": "analysis-store", "property": "data", "value": analysis},
        {"id": "removed-store", "property": "data", "value": removed},
        {"id": "metric", "property": "value", "value": "equivalent_diameter"},
        {"id": "bin-width", "property": "value", "value": None},
        {"id": "nm-store", "property": "data", "value": 2000},
        {"id": "size-unit", "property": "value", "value": "auto"},
        {"id": "calib-note-store", "property": "data", "value": "sizes from the scale bar read automatically"},
        # the sample's filters leave particle 2 out: the image's statistics follow them
        {"id": "filtered-store", "property": "data", "value": {"abc123": [2]}}])
    resp = body["response"]
    assert resp["unit-store"]["data"] == "um" and resp["bin-width-label"]["children"] == "Bin width (µm)"
    assert "(µm)" in resp["histogram-graph"]["figure"]["layout"]["xaxis"]["title"]["text"]
    assert "read automatically" in resp["histogram-graph"]["figure"]["layout"]["xaxis"]["title"]["text"]
    assert "read automatically" in json.dumps(resp["summary"]["children"])
    assert resp["histogram-graph"]["figure"]["layout"]["meta"]["count"] == 2
    assert resp["count-text-store"]["data"] == "2 particles counted (4 found, 1 excluded, 1 filtered out)"


def test_calibration_line_store_follows_the_drawing(dash_app):
    out = next(k for k in dash_app.callback_map if "calib-line-store.data" in k)
    shapes = {"shapes": [BOX, drawn(10, 50, 110, 50)]}
    measuring = [{"id": "draw-mode-store", "property": "data", "value": {"purpose": "calibrate"}}]

    def inputs(relayout, image=None):
        return [{"id": "image-graph", "property": "relayoutData", "value": relayout},
                {"id": "image-store", "property": "data", "value": image or {"image_id": "abc123"}}]

    status, body = call(dash_app, out, inputs(shapes), [{"id": "calib-line-store", "property": "data",
                                                         "value": None}, *measuring])
    line = body["response"]["calib-line-store"]["data"]
    assert status == 200 and calibration.line_length(line) == 100
    state = [{"id": "calib-line-store", "property": "data", "value": line}]
    tool = [{"id": "draw-mode-store", "property": "data", "value": {"purpose": "tool"}}]
    status, body = call(dash_app, out, inputs({"shapes[1].x1": 210, "shapes[1].y1": 50}), state + tool)
    assert calibration.line_length(body["response"]["calib-line-store"]["data"]) == 200  # an end moved later
    status, _ = call(dash_app, out, inputs({"xaxis.range[0]": 5}), state + tool)
    assert status == 204  # a zoom leaves the line alone
    status, _ = call(dash_app, out, inputs({"shapes": [BOX, drawn(10, 50, 110, 90)]}), state + tool)
    assert status == 204  # a line the Split tool drew is not the measuring line
    status, body = call(dash_app, out, inputs(shapes, {"image_id": "new"}), state + measuring,
                        triggered="image-store.data")
    assert body["response"]["calib-line-store"]["data"] is None  # a new image starts without a line


@pytest.mark.parametrize("tool, after", [("exclude", "pan"), ("split", "drawline"), ("add", "drawclosedpath")])
def test_one_callback_owns_the_drag_mode(dash_app, tool, after):
    """Draw line measures, then the tool's drag mode comes back (a click excludes again with Exclude: issue 18)."""
    out = output_of(dash_app, "draw-line-button")

    def mode(triggered, purpose, image=True):
        inputs = [{"id": "edit-tool", "property": "value", "value": tool},
                  {"id": "draw-line-button", "property": "n_clicks", "value": 1},
                  {"id": "calib-edit", "property": "n_clicks", "value": 0},
                  {"id": "calib-line-store", "property": "data", "value": {"index": 1}}]
        state = [{"id": "draw-mode-store", "property": "data", "value": {"purpose": purpose}},
                 {"id": "image-store", "property": "data", "value": {"image_id": "abc123"} if image else None}]
        return call(dash_app, out, inputs, state, triggered=triggered)

    status, _ = mode("draw-line-button.n_clicks", "tool", image=False)
    assert status == 204  # nothing to draw on yet
    status, body = mode("draw-line-button.n_clicks", "tool")
    assert body["response"]["draw-mode-store"]["data"] == {"purpose": "calibrate"}
    assert '"drawline"' in json.dumps(body["response"]["image-graph"]["figure"])
    status, body = mode("calib-line-store.data", "calibrate")  # the line is drawn
    assert body["response"]["draw-mode-store"]["data"] == {"purpose": "tool"}
    assert f'"{after}"' in json.dumps(body["response"]["image-graph"]["figure"])
    status, _ = mode("calib-line-store.data", "tool")  # an end of the line moved: the tool's mode stays
    assert status == 204
    status, body = mode("edit-tool.value", "tool")
    assert f'"{after}"' in json.dumps(body["response"]["image-graph"]["figure"])


def test_calibration_fills_nm_per_pixel(dash_app):
    out = output_of(dash_app, "bar-value")
    line = {"index": 1, "x0": 10, "y0": 50, "x1": 170, "y1": 170}

    def measure(line, value, unit="nm"):
        status, body = call(dash_app, out, [{"id": "calib-line-store", "property": "data", "value": line},
                                            {"id": "bar-value", "property": "value", "value": value},
                                            {"id": "bar-unit", "property": "value", "value": unit}],
                            [{"id": "calib-unit", "property": "value", "value": "nm/px"}])
        assert status == 200
        return body["response"]

    resp = measure(line, "0.5", "µm")
    assert resp["nm-per-pixel"]["value"] == 2.5 and resp["calib-line-length"]["children"] == "Line: 200 px"
    resp = measure(line, "-3")
    assert "nm-per-pixel" not in resp and "positive number" in resp["calib-message"]["children"]
    resp = measure(None, "500")
    assert "nm-per-pixel" not in resp and "Draw a line" in resp["calib-message"]["children"]
    assert resp["calib-line-length"]["children"] == "No line drawn"


def test_max_upload_mb():
    from types import SimpleNamespace

    from saemi.ui import max_upload_mb

    assert max_upload_mb(SimpleNamespace(config={"SAEMI_MAX_UPLOAD_MB": 12.5}), {}) == 12.5
    assert max_upload_mb(None, {"SAEMI_MAX_UPLOAD_MB": "8"}) == 8.0
    assert max_upload_mb(None, {"SAEMI_MAX_UPLOAD_MB": "junk"}) == 50.0
    assert max_upload_mb(None, {}) == 50.0


@pytest.mark.slow
def test_ui_and_remote_app_do_not_import_torch():
    code = ("import sys, saemi.ui, app; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert type(app.app.saemi_client).__name__ == 'RemoteClient'; "
            "assert 'saemi' not in app.server.extensions; print('ok')")
    env = {**os.environ, "SAEMI_BACKEND_URL": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
