"""Calibration on the page: the line saying what sizes rest on, and measuring a scale bar by drawing.

The calibration line (``#calibration-record``) always says where the nm per
pixel in force comes from: "7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)",
"from the scale bar (...)", or "set by you"; warnings (file and scale bar
disagree, unusable metadata) are listed under it
(:func:`saemi.ui.logic.page_calibration`).

The user picks "Draw line" (the button here or the image toolbar), drags along
the scale bar, and types the length it stands for; the page fills the
nm-per-pixel field with value / line length, and every size switches to nm
as when the number is typed. The arithmetic is in :mod:`saemi.ui.logic`
(:func:`~saemi.ui.logic.drawn_line`, :func:`~saemi.ui.logic.manual_calibration`).
"""

from dash import Input, Output, Patch, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from . import logic

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
                 **{"aria-live": "polite"}, children=logic.page_calibration(None, None)["text"]),
        html.Ul(id="calibration-warnings", className="warning", hidden=True),
        html.Div(id="calib-message", className="hint", role="status",
                 children="Draw a line along the scale bar, type the length it stands for, and the nm per pixel "
                          "is filled in."),
    ])


def register(app):
    @app.callback(
        Output("calibration-record", "children"),
        Output("calibration-warnings", "children"),
        Output("calibration-warnings", "hidden"),
        Input("nm-per-pixel", "value"),
        Input("image-store", "data"),
    )
    def on_record(nm, image):
        c = logic.page_calibration(nm, image)
        return c["text"], [html.Li(w) for w in c["warnings"]], not c["warnings"]

    @app.callback(
        Output("calib-line-store", "data"),
        Input("image-graph", "relayoutData"),
        Input("image-store", "data"),
        State("calib-line-store", "data"),
        prevent_initial_call=True,
    )
    def on_line(relayout, image, previous):
        from dash import ctx

        if ctx.triggered_id == "image-store":  # a new image: its figure has no line yet
            if previous is None:
                raise PreventUpdate
            return None
        line = logic.drawn_line(relayout, previous)
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
        prevent_initial_call=True,
    )
    def on_measure(line, value, unit):
        result = logic.manual_calibration(line, value, unit)
        nm = result["nm_per_pixel"]
        return (nm if nm else no_update), result["length_text"], result["message"]

    app.clientside_callback(
        RENEW_INPUT_JS,
        Output("nm-per-pixel", "n_submit"),
        Output("nm-per-pixel", "n_blur"),
        Input("nm-per-pixel", "value"),
        State("nm-per-pixel", "n_submit"),
        State("nm-per-pixel", "n_blur"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("image-graph", "figure", allow_duplicate=True),
        Input("draw-line-button", "n_clicks"),
        State("image-store", "data"),
        prevent_initial_call=True,
    )
    def on_draw_mode(n_clicks, image):
        if not n_clicks or not image:
            raise PreventUpdate
        patch = Patch()
        patch["layout"]["dragmode"] = "drawline"
        return patch
