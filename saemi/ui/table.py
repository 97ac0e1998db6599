"""Particle table (sortable) and CSV downloads of the table and the summary."""

import dash_ag_grid as dag
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from . import particles
from .calibration import calibration_csv_columns


def layout():
    return html.Section(className="panel table-panel", **{"aria-labelledby": "table-heading"}, children=[
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
        Input("nm-per-pixel", "value"),
    )
    def on_table(analysis, removed, nm):
        table = particles.kept_table(analysis, removed, nm)
        return particles.grid_rows(table), particles.grid_columns(nm), not analysis, not analysis

    @app.callback(
        Output("download-particles", "data"),
        Input("download-particles-button", "n_clicks"),
        State("analysis-store", "data"),
        State("removed-store", "data"),
        State("nm-per-pixel", "value"),
        State("image-store", "data"),
        prevent_initial_call=True,
    )
    def on_download_particles(n, analysis, removed, nm, image):
        if not n or not analysis:
            raise PreventUpdate
        table = particles.kept_table(analysis, removed, nm)
        return {"content": particles.particles_csv(table, calibration_csv_columns(nm, image)),
                "filename": particles.download_name(analysis["filename"], "particles"), "type": "text/csv"}

    @app.callback(
        Output("download-summary", "data"),
        Input("download-summary-button", "n_clicks"),
        State("analysis-store", "data"),
        State("removed-store", "data"),
        State("nm-per-pixel", "value"),
        State("image-store", "data"),
        prevent_initial_call=True,
    )
    def on_download_summary(n, analysis, removed, nm, image):
        if not n or not analysis:
            raise PreventUpdate
        table = particles.kept_table(analysis, removed, nm)
        return {"content": particles.summary_csv(table, analysis, nm, calibration_csv_columns(nm, image)),
                "filename": particles.download_name(analysis["filename"], "summary"), "type": "text/csv"}
