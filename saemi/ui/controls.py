"""Post-processing controls: splitting settings, calibration, overlay look."""

import logging
import math
import time

from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from . import logic, upload
from ..errors import SaemiError

log = logging.getLogger(__name__)


def _field(label, control_id, control, hint=None):
    return html.Div(className="field", children=[
        html.Label(label, htmlFor=control_id, id=f"{control_id}-label"),
        html.Div(control, role="group", **{"aria-labelledby": f"{control_id}-label"}),
        html.Div(hint, className="hint") if hint else None,
    ])


def layout(defaults):
    d = {**logic.settings_from_controls(True, 7, 0.5, 20, False),
         **{k: defaults[k] for k in logic.SPLIT_KEYS if k in defaults}}
    md_max = logic.slider_max(d["min_distance"], 40)
    ms_max = max(1000, int(math.ceil(logic.slider_max(d["min_size"], 1000) / 100)) * 100)
    clean = logic.settings_from_controls(True, 7, 0.5, 0, False, d["merge_threshold"],
                                         _percent(d["min_relative_size"]))
    merge, rel_percent = clean["merge_threshold"], _percent(clean["min_relative_size"])
    rs_max = int(math.ceil(logic.slider_max(rel_percent, 50) / 10)) * 10
    return html.Section(className="panel controls-panel", **{"aria-labelledby": "controls-heading"}, children=[
        html.H2("2. Particles", id="controls-heading"),
        dcc.Checklist(id="watershed", options=[{"label": " Split touching particles (watershed)", "value": "on"}],
                      value=["on"] if d["watershed"] else [], className="check"),
        _field("Minimum peak distance (px)", "min-distance",
               dcc.Slider(id="min-distance", min=1, max=md_max, step=1, value=int(d["min_distance"]),
                          marks={v: str(v) for v in (1, *range(10, md_max + 1, 10 if md_max <= 60 else 20))}),
               "Smaller splits more"),
        _field("Merge pieces across weak borders", "merge-threshold",
               dcc.Slider(id="merge-threshold", min=0, max=0.95, step=0.01, value=merge,
                          marks={0: "off", 0.5: "0.5", 0.9: "0.9"}),
               "Joins touching pieces whose shared border the network saw as boundary less than this; "
               "higher merges more, 0 is off"),
        _field("Probability threshold", "threshold",
               dcc.Slider(id="threshold", min=0.05, max=0.95, step=0.01, value=float(d["threshold"]),
                          marks={0.1: "0.1", 0.5: "0.5", 0.9: "0.9"})),
        _field("Minimum particle size (px²)", "min-size",
               dcc.Slider(id="min-size", min=0, max=ms_max, step=5, value=int(d["min_size"]),
                          marks={v: str(v) for v in (0, ms_max // 4, ms_max // 2, ms_max)})),
        _field("Drop fragments smaller than (% of the typical particle)", "min-relative-size",
               dcc.Slider(id="min-relative-size", min=0, max=rs_max, step=0.5, value=rel_percent,
                          marks={v: ("off" if v == 0 else str(v)) for v in range(0, rs_max + 1, rs_max // 5)}),
               "Typical particle: the area-weighted median; catches fragments, specks and panel letters. "
               "0 is off"),
        dcc.Checklist(id="exclude-edge", options=[{"label": " Exclude particles cut by the image edge",
                                                   "value": "on"}],
                      value=["on"] if d["exclude_edge"] else [], className="check"),
        _field("Calibration (nm per pixel)", "nm-per-pixel",
               dcc.Input(id="nm-per-pixel", type="number", min=0, step="any", debounce=True,
                         placeholder="sizes in px", className="number-input"),
               "Sizes switch to nm once set, or measure the scale bar under the image"),
        html.H2("Overlay", className="subheading"),
        dcc.RadioItems(id="overlay-mode", options=[{"label": " Outlines", "value": "outline"},
                                                  {"label": " Filled labels", "value": "filled"}],
                       value="outline", inline=True, className="radio"),
        _field("Overlay opacity", "opacity",
               dcc.Slider(id="opacity", min=0, max=1, step=0.05, value=0.9, marks={0: "0", 0.5: "0.5", 1: "1"},
                          allow_direct_input=False)),
        html.Div(id="analysis-error", className="error", role="alert", **{"aria-live": "assertive"}),
    ])


def _percent(fraction):
    """A fraction as a slider percentage (0.05 -> 5.0), 0 for anything unreadable."""
    try:
        v = float(fraction) * 100
    except (TypeError, ValueError):
        return 0.0
    return round(v, 4) if math.isfinite(v) and v > 0 else 0.0


CONTROL_IDS = ("watershed", "min-distance", "threshold", "min-size", "exclude-edge", "merge-threshold",
               "min-relative-size")


def analyse(client, image, controls):
    """Run one analysis for the page; returns (analysis, labels, error, status, expired).

    ``expired`` is set (and the rest left alone) when the server's cache has
    dropped the image: :func:`register`'s ``on_expired`` then uploads it again.
    """
    settings = logic.settings_from_controls(*controls)
    t0 = time.perf_counter()
    try:
        result = client.analyze(image["image_id"], settings)
        analysis, labels = logic.reduce_analysis(result, settings)
    except SaemiError as exc:
        if exc.code == "not_found":
            return no_update, no_update, "", "The server had dropped this image; uploading it again...", \
                {"image_id": image["image_id"], "at": time.time()}
        return no_update, no_update, f"Analysis failed: {exc.message}", "", no_update
    except Exception as exc:  # a bug must still leave a readable page
        log.exception("analysis of %s failed", image.get("image_id"))
        return no_update, no_update, f"Analysis failed: unexpected error ({type(exc).__name__}); see the " \
                                     "server log", "", no_update
    n = len(analysis["particles"])
    status = f"{n} particle{'s' if n != 1 else ''} found ({time.perf_counter() - t0:.2f} s)"
    return analysis, labels, "", status, no_update


def register(app, client, assets_folder):
    @app.callback(
        Output("analysis-store", "data"),
        Output("labels-store", "data"),
        Output("analysis-error", "children"),
        Output("analysis-status", "children"),
        Output("expired-store", "data"),
        Input("image-store", "data"),
        Input("watershed", "value"),
        Input("min-distance", "value"),
        Input("threshold", "value"),
        Input("min-size", "value"),
        Input("exclude-edge", "value"),
        Input("merge-threshold", "value"),
        Input("min-relative-size", "value"),
        prevent_initial_call=True,
    )
    def on_settings(image, *controls):
        if not image or not image.get("image_id"):
            raise PreventUpdate
        return analyse(client, image, controls)

    @app.callback(
        Output("analysis-store", "data", allow_duplicate=True),
        Output("labels-store", "data", allow_duplicate=True),
        Output("analysis-error", "children", allow_duplicate=True),
        Output("analysis-status", "children", allow_duplicate=True),
        Input("expired-store", "data"),
        State("upload-data-store", "data"),
        State("image-store", "data"),
        *(State(cid, "value") for cid in CONTROL_IDS),
        prevent_initial_call=True,
    )
    def on_expired(expired, held, image, *controls):
        """The server's cache dropped the image: upload it again under its id, then analyse.

        The browser holds the upload (``upload-data-store``, filled in the browser, so
        it never travels with a slider move); this is the only callback that sends it.
        One try: if the image is dropped again at once, the error is shown.
        """
        if not expired or not image or expired.get("image_id") != image.get("image_id"):
            raise PreventUpdate
        try:
            data = upload.held_bytes(held, image, assets_folder)
            if data is None:
                return no_update, no_update, "The server no longer holds this image; please upload it again.", ""
            client.segment(data, image.get("filename") or "image", image_id=image["image_id"])
        except SaemiError as exc:
            return no_update, no_update, f"Could not upload the image again: {logic.sentence_tail(exc.message)}", ""
        analysis, labels, error, status, again = analyse(client, image, controls)
        if again is not no_update:
            return no_update, no_update, "The server dropped this image again at once; please upload it again.", ""
        return analysis, labels, error, status
