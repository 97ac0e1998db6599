"""Histogram of particle sizes with mean and median lines, and the summary figures."""

from dash import Input, Output, dcc, html

from . import figures, particles
from .numbers import display_unit


HISTOGRAM_CONFIG = {"displaylogo": False, "responsive": True,
                    "toImageButtonOptions": {"format": "png", "filename": "saemi_histogram", "scale": 2}}


def layout():
    return html.Section(className="panel histogram-panel", id="histogram-panel", **{"aria-labelledby": "histogram-heading"},
                        children=[
        html.Div(className="panel-head", children=[html.H2("Size distribution", id="histogram-heading")]),
        html.Div(className="histogram-controls", children=[
            html.Div(className="field inline", children=[
                html.Label("Metric", htmlFor="metric", id="metric-label"),
                dcc.Dropdown(id="metric", options=[{"label": v, "value": k} for k, v in particles.METRIC_LABELS.items()],
                             value="equivalent_diameter", clearable=False, searchable=False, className="dropdown"),
            ]),
            html.Div(className="field inline", children=[
                html.Label("Units", htmlFor="size-unit", id="size-unit-label"),
                dcc.Dropdown(id="size-unit", options=[{"label": v, "value": k} for k, v in particles.UNIT_CHOICES.items()],
                             value="auto", clearable=False, searchable=False, className="dropdown unit-dropdown"),
            ]),
            html.Div(className="field inline", children=[
                html.Label("Bin width", htmlFor="bin-width", id="bin-width-label"),
                dcc.Input(id="bin-width", type="number", min=0, step="any", debounce=True, placeholder="auto",
                          className="number-input"),
            ]),
        ]),
        html.Div(className="histogram-body", children=[
            dcc.Graph(id="histogram-graph", config=HISTOGRAM_CONFIG,
                      className="histogram-graph",
                      style={"height": "clamp(260px, calc(100vh - 400px), 520px)"}, figure=figures.histogram_figure(particles.kept_table(None))),
            html.Div(id="summary", className="summary", **{"aria-live": "polite"},
                     children=summary_children(None)),
        ]),
    ])


def summary_children(summary, note=None):
    summary = summary or {"count": 0, "unit": "px"}
    items = []
    for name, value in particles.summary_rows(summary):
        vid = "summary-count" if name == "Particles" else None
        items.append(html.Div([html.Dt(name), html.Dd(value, id=vid) if vid else html.Dd(value)],
                              className="stat"))
    return [html.Dl(items, className="summary-list"),
            html.P(f"Note: {note}.", id="summary-note", className="warning") if note else None]


def register(app):
    @app.callback(
        Output("histogram-graph", "config"),
        Output("image-graph", "config"),
        Input("image-store", "data"),
        prevent_initial_call=True,
    )
    def on_names(image):
        """The toolbar's camera saves ``<image>_histogram.png`` and ``<image>_overlay.png``, not plot-image.png."""
        from ..service import safe_stem
        from .image_view import GRAPH_CONFIG

        stem = safe_stem((image or {}).get("filename") or "image")
        return ({**HISTOGRAM_CONFIG, "toImageButtonOptions": {"format": "png", "filename": f"{stem}_histogram",
                                                              "scale": 2}},
                {**GRAPH_CONFIG, "toImageButtonOptions": {"format": "png", "filename": f"{stem}_overlay"}})

    # One count everywhere: the header says what the summary counts. on_histogram works it out (it
    # has the particles already); copying it in the browser sends nothing more up per click.
    app.clientside_callback(
        "function(text) { return text || window.dash_clientside.no_update; }",
        Output("analysis-status", "children", allow_duplicate=True),
        Input("count-text-store", "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("histogram-graph", "figure"),
        Output("summary", "children"),
        Output("bin-width-label", "children"),
        Output("unit-store", "data"),
        Output("count-text-store", "data"),
        Input("analysis-store", "data"),
        Input("removed-store", "data"),
        Input("metric", "value"),
        Input("bin-width", "value"),
        Input("nm-store", "data"),
        Input("size-unit", "value"),
        Input("calib-note-store", "data"),
        Input("filtered-store", "data"),
    )
    def on_histogram(analysis, removed, metric, bin_width, nm, unit, note, filtered):
        table = particles.kept_table(analysis, particles.left_out(removed, filtered, analysis), nm, unit)
        summary = particles.summary_of(table, metric, nm)
        fig = figures.histogram_figure(table, metric, bin_width, nm, summary, (analysis or {}).get("key"), note)
        return (fig, summary_children(summary, note), f"Bin width ({display_unit(summary['unit'])})",
                particles.table_unit(table, nm), particles.count_text(analysis, removed, filtered) if analysis else None)
