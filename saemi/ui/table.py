"""Particle table (sortable) and CSV downloads of the table and the summary."""

import dash_ag_grid as dag
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from . import particles
from .calibration import calibration_csv_columns, is_confirmed


def layout():
    return html.Section(className="panel table-panel", id="table-panel", **{"aria-labelledby": "table-heading"}, children=[
        html.Div(className="panel-head", children=[
            html.H2("Particle table", id="table-heading"),
            html.Div(className="downloads", children=[
                html.Button("Download particles (CSV)", id="download-particles-button", type="button",
                            className="button", disabled=True),
                html.Button("Download summary (CSV)", id="download-summary-button", type="button",
                            className="button secondary", disabled=True),
            ]),
        ]),
        dag.AgGrid(id="particle-grid", rowData=[], columnDefs=particles.grid_columns(None),
                   defaultColDef={"sortable": True, "resizable": True, "minWidth": 80, "wrapHeaderText": True,
                                  "autoHeaderHeight": True},
                   columnSize="responsiveSizeToFit", className="ag-theme-alpine particle-grid",
                   dashGridOptions={"animateRows": False, "rowHeight": 30, "headerHeight": 34}),
        dcc.Download(id="download-particles"),
        dcc.Download(id="download-summary"),
    ])


def register(app):
    @app.callback(
        Output("particle-grid", "rowData"),
        Output("particle-grid", "columnDefs"),
        Output("download-particles-button", "disabled"),
        Output("download-summary-button", "disabled"),
        Input("analysis-store", "data"),
        Input("removed-store", "data"),
        Input("nm-store", "data"),
        Input("size-unit", "value"),
        Input("filtered-store", "data"),
    )
    def on_table(analysis, removed, nm, unit, filtered):
        table = particles.kept_table(analysis, particles.left_out(removed, filtered, analysis), nm, unit)
        return (particles.grid_rows(table), particles.grid_columns(nm, particles.table_unit(table, nm)),
                not analysis, not analysis)

    def download(kind, analysis, removed, nm, unit, image, confirmed):
        """One of the two CSV downloads: the kept particles, or their summary, with the calibration used."""
        table = particles.kept_table(analysis, removed, nm, unit)
        cal = calibration_csv_columns(nm, image, is_confirmed(image, confirmed))
        content = particles.particles_csv(table, cal) if kind == "particles" else \
            particles.summary_csv(table, analysis, nm, cal)
        return {"content": content, "filename": particles.download_name(analysis["filename"], kind), "type": "text/csv"}

    for kind in ("particles", "summary"):
        @app.callback(
            Output(f"download-{kind}", "data"),
            Input(f"download-{kind}-button", "n_clicks"),
            State("analysis-store", "data"),
            State("removed-store", "data"),
            State("nm-store", "data"),
            State("size-unit", "value"),
            State("image-store", "data"),
            State("confirm-store", "data"),
            State("filtered-store", "data"),
            prevent_initial_call=True,
        )
        def on_download(n, analysis, removed, nm, unit, image, confirmed, filtered, kind=kind):
            if not n or not analysis:
                raise PreventUpdate
            return download(kind, analysis, particles.left_out(removed, filtered, analysis), nm, unit, image,
                            confirmed)
