"""Image view: micrograph with particle outlines or labels, hover info, click to exclude."""

import plotly.graph_objects as go
from dash import Input, Output, Patch, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from . import calibration, editing, figures, particles, sample
from ..errors import SaemiError

# Hover: look the label up in the particle list in the browser (no request per mouse move).
HOVER_JS = """
function(hover, analysis, removed, nm, unit, tool) {
    const nu = window.dash_clientside.no_update;
    const hide = [false, nu, nu, nu];
    if (!hover || !hover.points || !hover.points.length || !analysis) { return hide; }
    const pt = hover.points[0];
    const label = Math.round(pt.z || 0);
    if (!label) { return hide; }
    const row = (analysis.particles || []).find(p => p.label === label);
    if (!row) { return hide; }
    const shown = (nm && nm > 0) ? (unit === "um" ? "\u00b5m" : "nm") : "px";
    const k = (nm && nm > 0) ? Number(nm) / (unit === "um" ? 1000 : 1) : 1;
    const fmt = v => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));
    let text = "Particle " + label + ": eq. diameter " + fmt(row.equivalent_diameter_px * k) + " " + shown
        + ", area " + fmt(row.area_px * k * k) + " " + shown + "\u00b2";
    const gone = removed && removed.key === analysis.key && (removed.labels || []).includes(label);
    // what a click does depends on the editing tool (saemi.ui.editing)
    const action = {erase: " (click to erase)", merge: " (click to select for merging)", add: "", split: ""};
    const origin = row.origin && row.origin !== "model" ? ", " + row.origin + " by hand" : "";
    text += origin + (tool in action ? action[tool]
                      : (gone ? " (excluded; click to restore)" : " (click to exclude)"));
    // the tooltip opens towards the middle of the image, so it never runs off the panel or the window
    const gd = document.querySelector("#image-graph .js-plotly-plot");
    const box = gd ? gd.getBoundingClientRect() : null;
    const x = pt.bbox ? (pt.bbox.x0 + pt.bbox.x1) / 2 : 0;
    const direction = box && x > box.width / 2 ? "left" : "right";  // bbox: pixels from the graph's corner
    return [true, pt.bbox, text, direction];
}
"""

GRAPH_CONFIG = {"scrollZoom": True, "displaylogo": False, "responsive": True,
                "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
                "modeBarButtonsToAdd": ["drawline", "eraseshape"],
                "toImageButtonOptions": {"format": "png", "filename": "saemi_overlay"}}


def layout():
    empty = go.Figure(layout={"xaxis": {"visible": False}, "yaxis": {"visible": False},
                                    "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "template": "none",
                                    "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
                                    "annotations": [{"text": "Upload a micrograph or try the demo",
                                                     "showarrow": False, "xref": "paper", "yref": "paper",
                                                     "x": 0.5, "y": 0.5, "font": {"size": 16, "color": "#667"}}]})
    return html.Section(className="panel image-panel", **{"aria-labelledby": "image-heading"}, children=[
        html.Div(className="panel-head", children=[
            html.H2("Particles found", id="image-heading"),
            html.Span(id="analysis-status", className="status", **{"aria-live": "polite"}),
        ]),
        sample.navigator(),
        dcc.Loading(id="image-loading", type="circle", delay_show=150, overlay_style={"visibility": "visible",
                                                                                      "opacity": 0.5},
                    children=html.Div(className="graph-wrap", children=[
                        dcc.Graph(id="image-graph", figure=empty, config=GRAPH_CONFIG, clear_on_unhover=True,
                                  className="image-graph",
                                  style=figures.graph_style()),
                        dcc.Tooltip(id="image-tooltip", direction="right", className="particle-tooltip"),
                    ])),
        editing.layout(),
        calibration.layout(),
        html.P("Hover a particle for its size. With the Exclude tool a click leaves it out of the statistics "
               "(click again to restore); the other tools correct the particles themselves, and every edit can be "
               "undone. Scroll to zoom, drag to pan, double-click to reset. A dotted cyan box marks the "
               "instrument data bar that was ignored, a green box the scale bar that was read. The scale-bar line "
               "can be dragged or its ends moved after a click on it; the toolbar's eraser removes it.",
               className="hint"),
    ])


def register(app, client):
    @app.callback(
        Output("image-graph", "figure", allow_duplicate=True),
        Output("analysis-error", "children", allow_duplicate=True),
        Input("analysis-ref-store", "data"),
        Input("removed-store", "data"),
        Input("overlay-mode", "value"),
        Input("filtered-store", "data"),
        prevent_initial_call=True,
    )
    def on_overlay(ref, removed, mode, filtered):
        """Have the server draw the particle layer; the hover grid only for a new labelling.

        Particles the user excluded and those the sample's filters leave out are drawn greyed.
        """
        from dash import ctx

        if not ref or not ref.get("image_id"):
            raise PreventUpdate
        greyed = sorted(set(particles.removed_labels(removed, ref["key"]))
                        | set((filtered or {}).get(ref["image_id"]) or []))
        settings = {**ref["settings"], "removed_labels": greyed}
        try:
            layer = client.particle_layer(ref["image_id"], settings, mode or "outline",
                                          grid="analysis-ref-store.data" in ctx.triggered_prop_ids)
        except SaemiError as exc:  # an expired image is uploaded again by the next analysis
            return no_update, f"Could not draw the particles: {exc.message}"
        patch = figures.layer_patch(Patch(), layer)
        patch["layout"]["meta"]["key"] = ref["key"]
        return patch, no_update

    @app.callback(
        Output("image-graph", "figure", allow_duplicate=True),
        Input("opacity", "value"),
        State("image-store", "data"),
        prevent_initial_call=True,
    )
    def on_opacity(opacity, image):
        if not image:
            raise PreventUpdate
        patch = Patch()
        patch["data"][1]["opacity"] = float(opacity if opacity is not None else 0.9)
        return patch

    @app.callback(
        Output("removed-store", "data"),
        Output("image-graph", "clickData"),
        Input("analysis-ref-store", "data"),
        Input("image-graph", "clickData"),
        State("removed-store", "data"),
        State("edit-tool", "value"),
        prevent_initial_call=True,
    )
    def on_click(ref, click, removed, tool):
        from dash import ctx

        if not ref:
            raise PreventUpdate
        key = ref["key"]
        if ctx.triggered_id == "image-graph":
            if click is None or tool not in (None, "exclude"):
                # None: a callback has just cleared the click. Clearing it again would start a
                # ping-pong whose late answer overwrites (and so loses) the user's next click.
                raise PreventUpdate  # other tools: saemi.ui.editing takes the click
            label = particles.clicked_label(click)
            if not label:
                return no_update, None
            return particles.toggle_removed(removed, key, label), None
        new = particles.reconcile_removed(removed, key)
        return (new if new is not removed else no_update), no_update

    app.clientside_callback(
        HOVER_JS,
        Output("image-tooltip", "show"),
        Output("image-tooltip", "bbox"),
        Output("image-tooltip", "children"),
        Output("image-tooltip", "direction"),
        Input("image-graph", "hoverData"),
        State("analysis-store", "data"),
        State("removed-store", "data"),
        State("nm-store", "data"),
        State("unit-store", "data"),
        State("edit-tool", "value"),
    )
