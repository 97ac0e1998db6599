"""Calibration on the page: the line saying what sizes rest on, and measuring a scale bar by drawing.

The calibration line (``#calibration-record``) always says where the nm per
pixel in force comes from: "7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)",
"from the scale bar (...)", or "set by you"; warnings (file and scale bar
disagree, unusable metadata) are listed under it
(:func:`page_calibration`).

The user picks "Draw line" (the button here or the image toolbar), drags along
the scale bar, and types the length it stands for; the page fills the
nm-per-pixel field with value / line length, and every size switches to nm
as when the number is typed (:func:`drawn_line`, :func:`manual_calibration`).
"""

import math
import re

from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from ..scalebar import UNITS_NM
from .numbers import format_number

def parse_nm_per_pixel(value):
    """A positive finite calibration, or None (empty, zero, negative or not a number)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def detected_scale(info):
    """The scale bar the backend read in an upload: dict with ``nm_per_pixel`` and a description, or None."""
    scale = (info or {}).get("scale")
    if not isinstance(scale, dict):
        return None
    nm = parse_nm_per_pixel(scale.get("nm_per_pixel"))
    if not nm:
        return None
    value, unit, length = scale.get("value"), scale.get("unit") or "", scale.get("bar_length_px")
    text = f"scale bar {format_number(value)} {unit}".rstrip()
    if length:
        text += f" = {format_number(float(length))} px"
    return {"nm_per_pixel": nm, "text": f"{text} ({format_number(nm)} nm/px)", "bar_box": scale.get("bar_box")}


def file_calibration(info):
    """The calibration record the backend sent for an upload (file's pixel size, else scale bar's), or None.

    Returns
    -------
    dict or None
        The record (see :class:`saemi.calibration.Calibration`) when it holds a
        usable ``nm_per_pixel``.
    """
    record = (info or {}).get("calibration")
    if not isinstance(record, dict) or not parse_nm_per_pixel(record.get("nm_per_pixel")):
        return None
    return record


#: How a calibration can be typed: the field's unit -> (nm per pixel of 1 unit, inverted).
CALIBRATION_UNITS = {"nm/px": (1.0, False), "µm/px": (1000.0, False), "px/µm": (1000.0, True)}
#: Significant digits the calibration field shows: a bar measured to 0.2 px of 100 px, or a file's value.
FIELD_DIGITS = 4


def to_nm_per_pixel(value, unit="nm/px"):
    """The calibration field's value in ``unit`` as nm per pixel (None unless positive and finite).

    Examples
    --------
    >>> to_nm_per_pixel(0.5, "µm/px"), to_nm_per_pixel(4, "px/µm"), to_nm_per_pixel("x")
    (500.0, 250.0, None)
    """
    v = parse_nm_per_pixel(value)
    if v is None:
        return None
    factor, inverted = CALIBRATION_UNITS.get(unit, CALIBRATION_UNITS["nm/px"])
    return factor / v if inverted else v * factor


def field_value(nm_per_pixel, unit="nm/px"):
    """nm per pixel written in the field's ``unit``, rounded to :data:`FIELD_DIGITS` significant digits.

    Examples
    --------
    >>> field_value(1.46220001), field_value(250.0, "px/µm"), field_value(None)
    (1.462, 4.0, None)
    """
    nm = parse_nm_per_pixel(nm_per_pixel)
    if nm is None:
        return None
    factor, inverted = CALIBRATION_UNITS.get(unit, CALIBRATION_UNITS["nm/px"])
    return float(f"{(factor / nm if inverted else nm / factor):.{FIELD_DIGITS}g}")


def same_calibration(a, b):
    """True when two nm-per-pixel values agree to the digits the field shows."""
    a, b = parse_nm_per_pixel(a), parse_nm_per_pixel(b)
    return a is not None and b is not None and abs(a - b) <= 10 ** (1 - FIELD_DIGITS) * max(a, b) / 2


def page_calibration(nm_value, image, confirmed=False):
    """What the sizes on the page rest on, for the calibration line under the image.

    Parameters
    ----------
    nm_value : number or str or None
        The calibration in force, nm per pixel.
    image : dict or None
        The image store; ``calibration`` is the record the backend sent on upload.
    confirmed : bool
        The user confirmed the scale bar read automatically.

    Returns
    -------
    dict
        ``nm_per_pixel`` (float or None), ``source`` ("file", "scale_bar",
        "user" or None), ``details`` (str), ``text`` (one line),
        ``warnings`` (list of str) and ``unconfirmed`` (True for a scale bar
        read automatically that the user has not confirmed: a wrong read is
        possible, and the page says so beside every size).

    Examples
    --------
    >>> img = {"calibration": {"nm_per_pixel": 7.344, "source": "file", "details": "Zeiss CZ_SEM, 50.00 kX",
    ...                        "text": "7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)", "warnings": []}}
    >>> page_calibration(7.344, img)["text"]
    'Calibration: 7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)'
    >>> page_calibration(8, img)["warnings"][0][:34]
    'The file says 7.344 nm/px (Zeiss C'
    """
    from ..calibration import AGREEMENT_TOLERANCE, format_nm

    record = (image or {}).get("calibration") or {}
    nm = parse_nm_per_pixel(nm_value)
    rec_nm = parse_nm_per_pixel(record.get("nm_per_pixel"))
    file_nm = parse_nm_per_pixel(record.get("file_nm_per_pixel")) or (
        rec_nm if record.get("source") == "file" else None)
    warnings = [w for w in record.get("warnings") or [] if isinstance(w, str)]
    if nm is None:
        return {"nm_per_pixel": None, "source": None, "details": "", "warnings": warnings, "unconfirmed": False,
                "text": "Calibration: none, sizes in pixels. Type the nm per pixel or measure the scale bar."}
    if rec_nm and same_calibration(nm, rec_nm):
        source, details = record.get("source"), record.get("details") or ""
        text = f"Calibration: {record.get('text') or format_nm(nm) + ' nm/px'}"
        unconfirmed = source == "scale_bar" and not confirmed
        if source == "scale_bar":
            details += " (confirmed by the user)" if confirmed else " (read automatically, not confirmed)"
            text = text.replace("from the scale bar", "from the scale bar, confirmed by you" if confirmed
                                else "from the scale bar read automatically")
        return {"nm_per_pixel": rec_nm, "source": source, "details": details, "warnings": warnings,
                "unconfirmed": unconfirmed, "text": text}
    warnings = [w for w in warnings if not w.startswith("The scale bar reads")]
    if file_nm and abs(nm - file_nm) / file_nm > AGREEMENT_TOLERANCE:
        warnings.append(f"The file says {format_nm(file_nm)} nm/px ({record.get('details') or 'its metadata'}); "
                        f"your {format_nm(nm)} nm/px differs by {100 * abs(nm - file_nm) / file_nm:.0f} % and is used")
    return {"nm_per_pixel": nm, "source": "user", "details": "set by you", "warnings": warnings,
            "unconfirmed": False,
            "text": f"Calibration: {format_nm(nm)} nm/px set by you (typed or measured on the scale bar)"}


def calibration_csv_columns(nm_value, image, confirmed=False):
    """The page's calibration as CSV columns: nm_per_pixel, calibration_source, calibration_details."""
    c = page_calibration(nm_value, image, confirmed)
    return {"nm_per_pixel": c["nm_per_pixel"], "calibration_source": c["source"] or "",
            "calibration_details": c["details"]}


def next_calibration(current, detected, for_all=False):
    """The calibration (nm per pixel) after a new upload.

    A calibration belongs to its image: the new image's own (the file's pixel
    size, else its scale bar) is used, or none. Only with "use for all images"
    ticked (``for_all``, as ImageJ's global Set Scale) does the current value
    carry over, and then it also wins over what the new image says.

    Returns
    -------
    float or None

    Examples
    --------
    >>> next_calibration(2.5, None), next_calibration(2.5, 7.3), next_calibration(2.5, 7.3, for_all=True)
    (None, 7.3, 2.5)
    """
    cur = parse_nm_per_pixel(current)
    if for_all and cur is not None:
        return cur
    return parse_nm_per_pixel(detected)


def is_confirmed(image, confirmed):
    """True when the user confirmed the scale bar read in this image (``confirmed``: the confirm store)."""
    return bool(image and confirmed and confirmed.get("image_id") == image.get("image_id"))


def read_scale_bar_text(info):
    """The line asking the user to check a scale bar read automatically ("read: 100 nm over 123.4 px ...").

    None when the upload's calibration does not rest on a scale bar read in the image.
    """
    record = (info or {}).get("calibration") or {}
    scale = (info or {}).get("scale") or {}
    if record.get("source") != "scale_bar" or not scale.get("nm_per_pixel"):
        return None
    conf = scale.get("confidence")
    return (f"Scale bar read automatically: {format_number(scale.get('value'))} {scale.get('unit') or ''} over "
            f"{format_number(float(scale.get('bar_length_px')))} px"
            + (f" (confidence {float(conf):.2f})" if conf is not None else "")
            + ". Is it right? Sizes are marked as unconfirmed until you confirm it.")


# --- manual calibration: a line drawn along the scale bar -----------------------------------

_UNIT_ALIASES = {"nm": "nm", "µm": "µm", "μm": "µm", "um": "µm", "micron": "µm", "microns": "µm"}


_SHAPE_KEY = re.compile(r"^shapes\[(\d+)\]\.(x0|y0|x1|y1)$")


_LINE_COORDS = ("x0", "y0", "x1", "y1")


def _finite(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _line_of(shape, index):
    """A shape of the image view as a line dict, or None when it is not a line in data coordinates."""
    if not isinstance(shape, dict) or shape.get("type") != "line":
        return None
    if str(shape.get("xref", "x")).startswith("paper") or str(shape.get("yref", "y")).startswith("paper"):
        return None
    coords = {k: _finite(shape.get(k)) for k in _LINE_COORDS}
    if any(v is None for v in coords.values()):
        return None
    return {"index": int(index), **coords}


def drawn_line(relayout, previous=None):
    """The calibration line after one ``relayoutData`` event of the image view.

    The image view's axes are in original-image pixels (pixel centres at
    integers, whatever the stride of the displayed picture; see
    :func:`base_figure`), so the shape coordinates Plotly reports are image
    pixel coordinates already.

    Parameters
    ----------
    relayout : dict or None
        ``dcc.Graph.relayoutData``. Drawing a new line (or erasing one) gives
        ``{"shapes": [...]}``, the whole shape list; dragging or editing an
        existing line gives ``{"shapes[i].x0": ..., "shapes[i].y1": ...}``
        with the coordinates that changed; zooming and panning give axis keys.
    previous : dict or None
        The line this function returned last time (``index``, ``x0``, ``y0``,
        ``x1``, ``y1``), to complete edits that move only one end.

    Returns
    -------
    dict or None
        The last line drawn or edited, as ``previous``; None when the shape
        list holds no line (all erased). Events that do not concern a line
        return ``previous`` unchanged.

    Examples
    --------
    >>> box = {"type": "rect", "x0": 0, "y0": 0, "x1": 5, "y1": 5}
    >>> line = drawn_line({"shapes": [box, {"type": "line", "x0": 1, "y0": 2, "x1": 31, "y1": 42}]})
    >>> line
    {'index': 1, 'x0': 1.0, 'y0': 2.0, 'x1': 31.0, 'y1': 42.0}
    >>> drawn_line({"shapes[1].x1": 61, "shapes[1].y1": 2}, line)
    {'index': 1, 'x0': 1.0, 'y0': 2.0, 'x1': 61.0, 'y1': 2.0}
    >>> drawn_line({"xaxis.range[0]": 3}, line) is line
    True
    """
    if not isinstance(relayout, dict):
        return previous
    if isinstance(relayout.get("shapes"), list):
        lines = [_line_of(shape, i) for i, shape in enumerate(relayout["shapes"])]
        lines = [ln for ln in lines if ln is not None]
        return lines[-1] if lines else None
    edits = {}
    for key, value in relayout.items():
        m = _SHAPE_KEY.match(str(key))
        if m:
            edits.setdefault(int(m.group(1)), {})[m.group(2)] = _finite(value)
    if not edits:
        return previous
    index = max(edits)  # one shape moves at a time; the last one if several did
    changed = edits[index]
    if any(v is None for v in changed.values()):
        return previous
    if previous is not None and previous.get("index") == index:
        return {**previous, **changed}
    if len(changed) == 4:  # an older line moved as a whole: it is now the one that counts
        return {"index": index, **{k: changed[k] for k in _LINE_COORDS}}
    return previous


def line_length(line):
    """Length in image pixels of a line dict (``x0``, ``y0``, ``x1``, ``y1``); None without a line.

    Examples
    --------
    >>> line_length({"x0": 0, "y0": 0, "x1": 30, "y1": 40})
    50.0
    """
    if not line:
        return None
    try:
        return float(math.hypot(float(line["x1"]) - float(line["x0"]), float(line["y1"]) - float(line["y0"])))
    except (KeyError, TypeError, ValueError):
        return None


def length_in_nm(value, unit="nm"):
    """A typed length converted to nm; None unless it is a positive finite number in a known unit.

    Parameters
    ----------
    value : number or str
        What the user typed (a decimal comma is accepted).
    unit : str
        ``"nm"`` or ``"µm"`` (also ``"um"`` and the Greek ``"μm"``).

    Examples
    --------
    >>> length_in_nm("0,5", "µm")
    500.0
    >>> length_in_nm(-3, "nm") is None
    True
    """
    if isinstance(value, str):
        value = value.strip().replace(",", ".")
    if isinstance(value, bool):
        return None
    v = _finite(value)
    factor = UNITS_NM.get(_UNIT_ALIASES.get(str(unit or "nm").strip(), ""))
    if v is None or v <= 0 or factor is None:
        return None
    return v * factor


def manual_calibration(line, value, unit="nm"):
    """nm per pixel from a line drawn along the scale bar and the bar's typed value.

    Parameters
    ----------
    line : dict or None
        From :func:`drawn_line`, in image pixels.
    value : number or str or None
        The length the scale bar stands for, as typed.
    unit : str
        Unit of ``value``: ``"nm"`` or ``"µm"``.

    Returns
    -------
    dict
        ``length_px`` (float or None), ``length_text`` (what to show beside the
        inputs), ``nm_per_pixel`` (float, rounded to 6 significant digits, or
        None) and ``message`` (the result, or what is missing).

    Examples
    --------
    >>> r = manual_calibration({"x0": 10, "y0": 5, "x1": 210, "y1": 5}, 500, "nm")
    >>> r["length_px"], r["nm_per_pixel"]
    (200.0, 2.5)
    >>> manual_calibration(None, 500)["message"]
    'Draw a line along the scale bar first: press Draw line, then drag on the image.'
    """
    length = line_length(line)
    out = {"length_px": length, "length_text": f"Line: {format_number(length)} px" if length else "No line drawn",
           "nm_per_pixel": None}
    nm = length_in_nm(value, unit)
    typed = value is not None and str(value).strip() != ""
    if length is None:
        out["message"] = "Draw a line along the scale bar first: press Draw line, then drag on the image."
    elif length < 1:
        out["message"] = "The line is shorter than a pixel; drag it along the whole scale bar."
    elif nm is None:
        out["message"] = ("The bar's length must be a positive number." if typed
                          else "Type the length the scale bar stands for.")
    else:
        per_px = float(f"{nm / length:.6g}")
        out["nm_per_pixel"] = per_px
        out["message"] = (f"{format_number(nm)} nm / {format_number(length)} px = {format_number(per_px)} nm per "
                          "pixel")
    return out


# --- layout and callbacks ---------------------------------------------------------------------

ROW = {"display": "flex", "alignItems": "center", "gap": "8px", "flexWrap": "wrap"}

# dcc.Input (Dash 4.4) commits Enter and blur through handlers memoised on n_submit / n_blur, which
# compare with the value the field had when they were made. After a callback fills the field (a scale
# bar read on upload, a measured line) emptying it would never reach the server; bumping the counters
# whenever the value changes renews those handlers.
RENEW_INPUT_JS = """
function(value, n_submit, n_blur) {
    return [(n_submit || 0) + 1, (n_blur || 0) + 1];
}
"""


def layout():
    """The measuring row under the image view (the nm-per-pixel field itself is in the controls panel)."""
    return html.Div(className="calibration", role="group", **{"aria-labelledby": "calibration-heading"},
                    style={"marginTop": "8px"}, children=[
        html.Div(style={**ROW, "columnGap": "16px"}, children=[
            html.Div(style=ROW, children=[
                html.Span("Measure the scale bar:", id="calibration-heading", style={"fontWeight": 600}),
                html.Button("Draw line", id="draw-line-button", type="button", className="button secondary",
                            n_clicks=0, title="Then drag on the image along the scale bar"),
                html.Span(id="calib-line-length", className="status", children="No line drawn",
                          **{"aria-live": "polite"}),
            ]),
            html.Div(style=ROW, children=[
                html.Label("Bar length", htmlFor="bar-value", id="bar-value-label"),
                dcc.Input(id="bar-value", type="text", inputMode="decimal", debounce=True, placeholder="e.g. 200",
                          className="number-input", style={"width": "90px"}),
                dcc.RadioItems(id="bar-unit", options=[{"label": " nm", "value": "nm"},
                                                       {"label": " µm", "value": "µm"}],
                               value="nm", inline=True, className="radio"),
            ]),
        ]),
        html.Div(id="calibration-record", className="calibration-record", role="status",
                 **{"aria-live": "polite"}, children=page_calibration(None, None)["text"]),
        # the row's flex layout sits inside, so that the outer div's hidden attribute hides it
        html.Div(id="calib-check", className="calib-check", hidden=True, children=html.Div(style=ROW, children=[
            html.Span(id="calib-check-text", role="status", **{"aria-live": "polite"}),
            html.Button("Confirm", id="calib-confirm", type="button", className="button", n_clicks=0,
                        title="The value and unit read are those of the scale bar"),
            html.Button("Edit", id="calib-edit", type="button", className="button secondary", n_clicks=0,
                        title="Draw along the scale bar and type its length"),
        ])),
        html.Ul(id="calibration-warnings", className="warning", hidden=True),
        html.Div(id="calib-message", className="hint", role="status",
                 children="Draw a line along the scale bar, type the length it stands for, and the nm per pixel "
                          "is filled in."),
    ])


# Plotly leaves a shape it has just drawn active, and its next click on the plot only deactivates
# that shape (plotly.js's clickFn returns early): the first click on a particle after drawing the
# calibration line would be lost. Deactivate it once it is drawn, so that click excludes a particle.
# A new image, whose figure replaces the old one, must not inherit an active shape either; and the
# figure patch that returns to panning lands after the drawing, so deactivate again once it has.
DEACTIVATE_SHAPE_JS = """
function(relayout, line, image, ref) {
    const trigger = (window.dash_clientside.callback_context.triggered[0] || {}).prop_id || "";
    if (trigger.startsWith("image-graph") && !(relayout && Array.isArray(relayout.shapes))) {
        return window.dash_clientside.no_update;
    }
    const deactivate = function () {
        const gd = document.querySelector('#image-graph .js-plotly-plot');
        if (gd && gd._fullLayout && gd._fullLayout._activeShapeIndex >= 0 && gd._fullLayout._deactivateShape) {
            gd._fullLayout._deactivateShape(gd);
        }
    };
    setTimeout(deactivate, 0);
    setTimeout(deactivate, 600);
    return window.dash_clientside.no_update;
}
"""


def register(app):
    # analysis-ref-store: an edit's outline or split line is taken off the figure when its analysis
    # arrives, and that redraw must not leave a removed shape active either
    app.clientside_callback(DEACTIVATE_SHAPE_JS, Output("shape-done-store", "data"),
                            Input("image-graph", "relayoutData"), Input("calib-line-store", "data"),
                            Input("image-store", "data"), Input("analysis-ref-store", "data"),
                            prevent_initial_call=True)

    @app.callback(
        Output("nm-store", "data"),
        Output("nm-per-pixel", "value", allow_duplicate=True),
        Input("nm-per-pixel", "value"),
        Input("calib-unit", "value"),
        State("nm-store", "data"),
        prevent_initial_call="initial_duplicate",
    )
    def on_field(value, unit, current):
        """The calibration in force (nm per pixel) from the field; a new unit rewrites the field, not the value."""
        from dash import ctx

        if ctx.triggered_id == "calib-unit":
            return no_update, field_value(current, unit)
        return to_nm_per_pixel(value, unit), no_update

    @app.callback(
        Output("calibration-record", "children"),
        Output("calibration-warnings", "children"),
        Output("calibration-warnings", "hidden"),
        Output("calib-check", "hidden"),
        Output("calib-check-text", "children"),
        Output("calib-note-store", "data"),
        Input("nm-store", "data"),
        Input("image-store", "data"),
        Input("confirm-store", "data"),
    )
    def on_record(nm, image, confirmed):
        c = page_calibration(nm, image, is_confirmed(image, confirmed))
        ask = read_scale_bar_text(image) if c["unconfirmed"] else None
        note = "sizes from the scale bar read automatically, not confirmed" if c["unconfirmed"] else None
        return c["text"], [html.Li(w) for w in c["warnings"]], not c["warnings"], ask is None, ask or "", note

    @app.callback(
        Output("confirm-store", "data"),
        Input("calib-confirm", "n_clicks"),
        State("image-store", "data"),
        prevent_initial_call=True,
    )
    def on_confirm(n, image):
        if not n or not image:
            raise PreventUpdate
        return {"image_id": image.get("image_id")}

    @app.callback(
        Output("bar-value", "value"),
        Output("bar-unit", "value"),
        Output("calib-message", "children", allow_duplicate=True),
        Input("calib-edit", "n_clicks"),
        State("image-store", "data"),
        prevent_initial_call=True,
    )
    def on_edit(n, image):
        """Edit a scale bar read automatically: draw along it (saemi.ui.editing sets the drag mode), with the
        value read filled in."""
        if not n or not image:
            raise PreventUpdate
        scale = image.get("scale") or {}
        unit = "µm" if scale.get("unit") == "µm" else "nm"
        return (format_number(scale["value"]) if scale.get("value") else no_update, unit,
                "Drag along the scale bar on the image and check the length it stands for; the calibration "
                "follows the line you draw.")

    @app.callback(
        Output("calib-line-store", "data"),
        Input("image-graph", "relayoutData"),
        Input("image-store", "data"),
        State("calib-line-store", "data"),
        State("draw-mode-store", "data"),
        prevent_initial_call=True,
    )
    def on_line(relayout, image, previous, mode):
        """The measuring line; a new line counts only while drawing it was asked for (the tools draw too).

        Once it is drawn, :mod:`saemi.ui.editing` gives the drag mode back to the tool.
        """
        from dash import ctx

        if ctx.triggered_id == "image-store":  # a new image: its figure has no line yet
            if previous is None:
                raise PreventUpdate
            return None
        if isinstance((relayout or {}).get("shapes"), list) and (mode or {}).get("purpose") != "calibrate":
            raise PreventUpdate  # an outline or a split line of the editing tools
        line = drawn_line(relayout, previous)
        if line == previous:
            raise PreventUpdate
        return line

    @app.callback(
        Output("nm-per-pixel", "value", allow_duplicate=True),
        Output("calib-line-length", "children"),
        Output("calib-message", "children"),
        Input("calib-line-store", "data"),
        Input("bar-value", "value"),
        Input("bar-unit", "value"),
        State("calib-unit", "value"),
        prevent_initial_call=True,
    )
    def on_measure(line, value, unit, field_unit):
        result = manual_calibration(line, value, unit)
        nm = result["nm_per_pixel"]
        return (field_value(nm, field_unit) if nm else no_update), result["length_text"], result["message"]

    app.clientside_callback(
        RENEW_INPUT_JS,
        Output("nm-per-pixel", "n_submit"),
        Output("nm-per-pixel", "n_blur"),
        Input("nm-per-pixel", "value"),
        State("nm-per-pixel", "n_submit"),
        State("nm-per-pixel", "n_blur"),
        prevent_initial_call=True,
    )
