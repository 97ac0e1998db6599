"""Post-processing controls: splitting settings, calibration, overlay look."""

import logging
import time

from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

import json

from . import progress, upload
from .calibration import CALIBRATION_UNITS
from ..errors import SaemiError
from ..settings import defaults as setting_defaults, field_of, from_controls, names as setting_names, slider_range, \
    to_control

log = logging.getLogger(__name__)


def _field(label, control_id, control, hint=None):
    return html.Div(className="field", children=[
        html.Label(label, htmlFor=control_id, id=f"{control_id}-label"),
        html.Div(control, role="group", **{"aria-labelledby": f"{control_id}-label"}),
        html.Div(hint, className="hint") if hint else None,
    ])


#: The splitting settings that have a control, in the page's order (the schema's).
CONTROLLED = tuple(n for n in setting_names("split") if "ui" in field_of(n).metadata)


def control_id(name):
    """The Dash id of a setting's control: ``min_distance`` -> ``min-distance``."""
    return name.replace("_", "-")


def _control(name, value):
    """A setting's control, built from its schema: a checkbox for a boolean, else a slider."""
    f = field_of(name)
    ui, label, cid = f.metadata["ui"], f.metadata["label"], control_id(name)
    if isinstance(f.default, bool):
        return dcc.Checklist(id=cid, options=[{"label": " " + label, "value": "on"}], value=to_control(name, value),
                             className="check")
    lo, hi, step = slider_range(name, value)
    shown = to_control(name, value)
    if "marks" in ui:
        marks = ui["marks"]
    elif isinstance(step, int) and not ui.get("percent"):
        every = 10 if hi <= 60 else 20 if hi <= 200 else hi // 4
        marks = {v: str(v) for v in (lo, *range(max(every, lo - lo % every + every), hi + 1, every))} \
            if hi <= 200 else {v: str(v) for v in (lo, hi // 4, hi // 2, hi)}
    else:
        marks = {v: ("off" if v == 0 else str(v)) for v in range(int(lo), int(hi) + 1, max(1, int(hi) // 5))}
    slider = dcc.Slider(id=cid, min=lo, max=hi, step=step, value=shown, marks=marks)
    hint = f.metadata["help"] if ui.get("hint", True) else None
    return _field(label, cid, slider, hint)


def layout(defaults):
    """The control panel, its splitting controls generated from :mod:`saemi.settings`.

    ``defaults``: the model's settings (the backend's card); missing keys take
    the schema's built-in defaults.
    """
    values = {**setting_defaults("split"), **{k: v for k, v in (defaults or {}).items() if k in CONTROLLED}}
    # a backend's value outside the slider's range is clamped there, as a slider move would be
    values = {**values, **from_controls({k: to_control(k, values[k]) for k in CONTROLLED})}
    return html.Section(className="panel controls-panel", **{"aria-labelledby": "controls-heading"}, children=[
        html.H2("2. Particles", id="controls-heading"),
        *(_control(name, values[name]) for name in CONTROLLED),
        _field(field_of("diameter").metadata["label"], "diameter",
               dcc.Input(id="diameter", type="number", min=1, step="any", debounce=True, value=None,
                         placeholder="automatic",
                         className="number-input"),
               "Empty: estimated per image; the network sees the image rescaled to it"),
        _field("Calibration", "nm-per-pixel", html.Div(className="calibration-field", children=[
            dcc.Input(id="nm-per-pixel", type="number", min=0, step="any", debounce=True,
                      placeholder="sizes in px", className="number-input"),
            dcc.Dropdown(id="calib-unit", options=list(CALIBRATION_UNITS), value="nm/px", clearable=False,
                         searchable=False, className="dropdown unit-dropdown"),
        ]), "Sizes switch to nm or µm once set; or measure the scale bar under the image"),
        dcc.Checklist(id="calib-all", options=[{"label": " Use this calibration for all images", "value": "on"}],
                      value=[], className="check"),
        html.H2("Overlay", className="subheading"),
        dcc.RadioItems(id="overlay-mode", options=[{"label": " Outlines", "value": "outline"},
                                                  {"label": " Filled labels", "value": "filled"}],
                       value="outline", inline=True, className="radio"),
        _field("Overlay opacity", "opacity",
               dcc.Slider(id="opacity", min=0, max=1, step=0.05, value=0.9, marks={0: "0", 0.5: "0.5", 1: "1"},
                          allow_direct_input=False)),
        html.Div(id="analysis-error", className="error", role="alert", **{"aria-live": "assertive"}),
    ])


CONTROL_IDS = tuple(control_id(n) for n in CONTROLLED)


def settings_from_controls(*values):
    """The splitting settings the controls mean (values in :data:`CONTROLLED` order); see
    :func:`saemi.settings.from_controls`."""
    return from_controls(dict(zip(CONTROLLED, values)))


def analysis_key(image_id, settings):
    """Identifies one labelling: the same key means the same label numbers."""
    split = {k: settings.get(k) for k in (*setting_names("split"), "diameter")}
    return f"{image_id}:{json.dumps(split, sort_keys=True)}"


def reduce_analysis(result, settings):
    """The part of an ``analyze`` answer the page keeps in its stores.

    Returns
    -------
    (analysis, ref) : tuple of dict
        ``analysis`` for the histogram, table and hover text; ``ref`` (``key``,
        ``image_id``, ``settings``) is all the image view sends to have the
        particle layer drawn: the labels stay on the server.
    """
    key = analysis_key(result["image_id"], settings)
    particles = [{k: v for k, v in row.items() if not k.endswith("_nm") and k != "area_nm2"}
                 for row in result.get("particles", [])]
    analysis = {"key": key, "image_id": result["image_id"], "filename": result.get("filename", "image"),
                "width": result.get("width"), "height": result.get("height"), "settings": dict(settings),
                "particles": particles, "count_api": (result.get("summary") or {}).get("count"),
                "timings": result.get("timings", {}), "edits": result.get("edits") or {},
                "diameter": result.get("diameter"), "diameter_source": result.get("diameter_source")}
    # the edit count in the ref: a new edit (same key, new labels) redraws the layer and its hover grid
    return analysis, {"key": key, "image_id": result["image_id"], "settings": dict(settings),
                      "edits": (result.get("edits") or {}).get("count", 0)}


def diameter_setting(value):
    """The ``diameter`` the page's field means: a number of px, or None (empty or unreadable: estimated)."""
    try:
        d = float(value)
    except (TypeError, ValueError):
        return None
    return d if d >= 1 and d == d and d != float("inf") else None


def diameter_hint(analysis):
    """The diameter field's placeholder: the value the last analysis used and where it came from."""
    d = (analysis or {}).get("diameter")
    if d is None:
        return "automatic"
    return f"automatic (estimated {d:.0f})" if analysis.get("diameter_source") == "estimated" else "automatic"


def analyse(client, image, controls, diameter=None, progress_token=None):
    """Run one analysis for the page; returns (analysis, ref, error, status, expired).

    ``expired`` is set (and the rest left alone) when the server's cache has
    dropped the image: :func:`register`'s ``on_expired`` then uploads it again.
    ``diameter``: the typical-diameter field's value (empty: estimated).
    """
    settings = {**settings_from_controls(*controls), "diameter": diameter_setting(diameter)}
    t0 = time.perf_counter()
    try:
        result = client.analyze(image["image_id"], settings, progress=progress_token)
        analysis, ref = reduce_analysis(result, settings)
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
    return analysis, ref, "", status, no_update


def register(app, client, assets_folder):
    @app.callback(
        Output("analysis-store", "data"),
        Output("analysis-ref-store", "data"),
        Output("analysis-error", "children"),
        Output("analysis-status", "children"),
        Output("expired-store", "data"),
        Input("image-store", "data"),
        *(Input(cid, "value") for cid in CONTROL_IDS),
        Input("diameter", "value"),
        State("progress-token", "data"),
        prevent_initial_call=True,
        running=progress.RUNNING,
    )
    def on_settings(image, *controls_and_token):
        if not image or not image.get("image_id"):
            raise PreventUpdate
        *controls, diameter, token = controls_and_token
        return analyse(client, image, controls, diameter, token)

    @app.callback(Output("diameter", "placeholder"), Input("analysis-store", "data"))
    def on_diameter_used(analysis):
        return diameter_hint(analysis)

    @app.callback(
        Output("analysis-store", "data", allow_duplicate=True),
        Output("analysis-ref-store", "data", allow_duplicate=True),
        Output("analysis-error", "children", allow_duplicate=True),
        Output("analysis-status", "children", allow_duplicate=True),
        Input("expired-store", "data"),
        State("upload-data-store", "data"),
        State("image-store", "data"),
        *(State(cid, "value") for cid in CONTROL_IDS),
        State("diameter", "value"),
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
            return no_update, no_update, f"Could not upload the image again: {upload.sentence_tail(exc.message)}", ""
        analysis, ref, error, status, again = analyse(client, image, controls[:-1], controls[-1])
        if again is not no_update:
            return no_update, no_update, "The server dropped this image again at once; please upload it again.", ""
        return analysis, ref, error, status
