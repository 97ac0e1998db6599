"""Post-processing controls: splitting settings, calibration, overlay look."""

import logging
import math
import time

from dash import Input, Output, dcc, html, no_update
from dash.exceptions import PreventUpdate

from . import logic
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


def register(app, client):
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
    def on_settings(image, watershed, min_distance, threshold, min_size, exclude_edge, merge, relative):
        if not image or not image.get("image_id"):
            raise PreventUpdate
        settings = logic.settings_from_controls(watershed, min_distance, threshold, min_size, exclude_edge, merge,
                                                relative)
        t0 = time.perf_counter()
        try:
            result = client.analyze(image["image_id"], settings)
            analysis, labels = logic.reduce_analysis(result, settings)
        except SaemiError as exc:
            if exc.code == "not_found" and not image.get("restored"):
                # dropped from the server's cache: upload.on_expired sends the image again
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
