"""Correcting the particles on the image view: exclude, erase, merge, add and split, with undo and redo.

The edits live on the server beside the image's cached segmentation (see
:mod:`saemi.edits` and :meth:`saemi.service.AnalysisService.edit`); the page
only sends what the user did (a clicked particle's label, a drawn outline or
line) and re-reads the analysis. This module also owns the image view's drag
mode, which the tools and the scale-bar measuring line share: whoever draws,
one callback decides what the next drag does.
"""

import logging

from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from . import controls, particles, upload
from ..errors import SaemiError

log = logging.getLogger(__name__)

#: The tools: value -> (label, key, what a click or drag does, the drag mode).
TOOLS = {
    "exclude": ("Exclude", "X", "click a particle to leave it out of the statistics (click again to restore)", "pan"),
    "erase": ("Erase", "E", "click a particle to delete it", "pan"),
    "merge": ("Merge", "M", "click two or more particles, then Merge selected (Enter)", "pan"),
    "add": ("Add", "A", "drag around a particle the model missed to outline it", "drawclosedpath"),
    "split": ("Split", "S", "drag a line across a particle to cut it in two", "drawline"),
}

SHORTCUTS = ("Keys: X exclude · E erase · M merge · A add · S split · Enter merge the selection · "
             "Ctrl+Z undo · Ctrl+Y or Ctrl+Shift+Z redo. On a touch screen, drag to pan and use the toolbar's "
             "+/− to zoom.")


def layout():
    return html.Div(className="edit-tools", children=[
        html.Div(className="edit-row", role="toolbar", **{"aria-label": "Correct the particles"}, children=[
            html.Span("Tool:", id="edit-tool-label", style={"fontWeight": 600}),
            dcc.RadioItems(id="edit-tool", value="exclude", inline=True, className="radio tool-radio",
                           options=[{"label": f" {name} ({key})", "value": value, "title": what}
                                    for value, (name, key, what, _) in TOOLS.items()]),
            html.Button("Merge selected", id="edit-merge", type="button", className="button", n_clicks=0,
                        disabled=True, title="Join the selected particles into one (Enter)"),
            html.Button("Undo", id="edit-undo", type="button", className="button secondary", n_clicks=0,
                        disabled=True, title="Take back the last edit (Ctrl+Z)"),
            html.Button("Redo", id="edit-redo", type="button", className="button secondary", n_clicks=0,
                        disabled=True, title="Apply the edit undone again (Ctrl+Y)"),
        ]),
        html.Div(className="edit-row", children=[
            html.Span(id="edit-hint", className="hint", children=TOOLS["exclude"][2]),
            html.Span(id="edit-status", className="status", role="status", **{"aria-live": "polite"}),
        ]),
        html.Div(id="edit-message", className="error", role="alert", **{"aria-live": "assertive"}),
        html.P(SHORTCUTS, className="hint shortcuts"),
        html.Div(className="downloads", children=[
            html.Button("Download labels (16-bit PNG)", id="download-labels-button", type="button",
                        className="button secondary", n_clicks=0, disabled=True,
                        title="The corrected label image: 0 background, one number per particle (as the "
                              "command line's _labels.png); excluded particles are zeroed"),
            html.Button("Download training pair (zip)", id="download-pair-button", type="button",
                        className="button secondary", n_clicks=0, disabled=True,
                        title="images/<name>.png and segmaps/<name>.png: unzip several into one folder for "
                              "saemi train --extra FOLDER"),
        ]),
        dcc.Download(id="download-labels"),
        dcc.Download(id="download-pair"),
        dcc.Store(id="merge-store"),       # the particles selected for merging: {"key", "labels"}
        # who the next drawn shape is for: the scale-bar measurement ("calibrate") or the tool
        dcc.Store(id="draw-mode-store", data={"purpose": "tool"}),
    ])


# --- pure helpers (tested without a browser) ------------------------------------------------

def dragmode_patch(mode):
    """A Patch of the image view that switches its drag mode ("pan", "drawline", "drawclosedpath")."""
    from dash import Patch

    patch = Patch()
    patch["layout"]["dragmode"] = mode
    return patch


def drawn_shape(relayout, tool):
    """The edit a shape just drawn on the image view asks for, or None.

    Parameters
    ----------
    relayout : dict
        ``relayoutData``: a new shape comes as the whole list under ``shapes``.
    tool : str
        ``add`` reads a closed path, ``split`` a line.

    Examples
    --------
    >>> drawn_shape({"shapes": [{"type": "path", "path": "M1,1L9,1L9,9Z"}]}, "add")
    {'op': 'add', 'polygon': [[1.0, 1.0], [9.0, 1.0], [9.0, 9.0]]}
    >>> drawn_shape({"shapes": [{"type": "line", "x0": 1, "y0": 2, "x1": 30, "y1": 2}]}, "split")
    {'op': 'split', 'line': [[1.0, 2.0], [30.0, 2.0]]}
    >>> drawn_shape({"xaxis.range[0]": 3}, "add") is None
    True
    """
    from ..edits import polygon_from_path

    shapes = (relayout or {}).get("shapes") if isinstance(relayout, dict) else None
    if not isinstance(shapes, list) or not shapes or not isinstance(shapes[-1], dict):
        return None
    shape = shapes[-1]
    try:
        if tool == "add" and shape.get("type") == "path":
            return {"op": "add", "polygon": polygon_from_path(shape.get("path", ""))}
        if tool == "split" and shape.get("type") == "line":
            return {"op": "split", "line": [[float(shape["x0"]), float(shape["y0"])],
                                            [float(shape["x1"]), float(shape["y1"])]]}
    except (KeyError, TypeError, ValueError):
        return None
    return None


def selected_labels(selected, key):
    """The particles selected for merging in labelling ``key`` (a selection of another one is void)."""
    return list((selected or {}).get("labels", [])) if (selected or {}).get("key") == key else []


def toggle_selected(selected, key, label):
    """Add or remove a particle from the merge selection of labelling ``key``."""
    labels = selected_labels(selected, key)
    if label in labels:
        labels.remove(label)
    elif label:
        labels.append(int(label))
    return {"key": key, "labels": labels}


def edits_text(edits):
    """The status line of an analysis's edits ("3 edits; 1 does not apply to these settings: ...")."""
    edits = edits or {}
    n = int(edits.get("count") or 0)
    if not n:
        return ""
    text = f"{n} edit{'s' if n != 1 else ''}"
    dropped = edits.get("dropped") or []
    if dropped:
        first = dropped[0]
        text += (f"; {len(dropped)} {'does' if len(dropped) == 1 else 'do'} not apply with these settings "
                 f"(edit {first['index'] + 1}, {first['op']}: {first['reason']})")
    return text


def without_changed(removed, key, changed):
    """The exclusions minus the particles an edit changed (their numbers may now mean other particles)."""
    labels = particles.removed_labels(removed, key)
    gone = set(changed or [])
    if not gone & set(labels):
        return no_update
    return {"key": key, "labels": [v for v in labels if v not in gone]}


# --- callbacks -------------------------------------------------------------------------------

def register(app, client):
    def apply(action, image, removed, control_values):
        """Run an edit (``action(settings)`` calls the client), then the analysis that shows it."""
        settings = controls.settings_from_controls(*control_values)
        try:
            answer = action(settings)
        except SaemiError as exc:
            return (no_update,) * 4 + (upload.sentence_tail(exc.message),)
        analysis, ref, error, status, _ = controls.analyse(client, image, control_values)
        key = ref["key"] if isinstance(ref, dict) else None
        return analysis, ref, status, without_changed(removed, key, answer.get("changed_labels")), error

    edit_outputs = (Output("analysis-store", "data", allow_duplicate=True),
                    Output("analysis-ref-store", "data", allow_duplicate=True),
                    Output("analysis-status", "children", allow_duplicate=True),
                    Output("removed-store", "data", allow_duplicate=True),
                    Output("edit-message", "children"))
    edit_states = (State("image-store", "data"), State("removed-store", "data"),
                   *(State(cid, "value") for cid in controls.CONTROL_IDS))

    @app.callback(
        Output("image-graph", "figure", allow_duplicate=True),
        Output("draw-mode-store", "data"),
        Output("edit-hint", "children"),
        Input("edit-tool", "value"),
        Input("draw-line-button", "n_clicks"),
        Input("calib-edit", "n_clicks"),
        Input("calib-line-store", "data"),
        State("draw-mode-store", "data"),
        State("image-store", "data"),
        prevent_initial_call=True,
    )
    def on_mode(tool, _draw, _calib_edit, _line, mode, image):
        """The one owner of the drag mode: the tool's, or a line along the scale bar until it is drawn."""
        from dash import ctx

        tool = tool if tool in TOOLS else "exclude"
        if ctx.triggered_id in ("draw-line-button", "calib-edit"):
            if not image:
                raise PreventUpdate
            return dragmode_patch("drawline"), {"purpose": "calibrate"}, \
                "drag along the scale bar; the tool comes back once the line is drawn"
        if ctx.triggered_id == "calib-line-store" and (mode or {}).get("purpose") != "calibrate":
            raise PreventUpdate  # a calibration line moved, or a new image: the tool stays
        return dragmode_patch(TOOLS[tool][3]), {"purpose": "tool"}, TOOLS[tool][2]

    @app.callback(
        *edit_outputs,
        Output("merge-store", "data"),
        Output("image-graph", "clickData", allow_duplicate=True),
        Input("image-graph", "clickData"),
        State("edit-tool", "value"),
        State("analysis-ref-store", "data"),
        State("merge-store", "data"),
        *edit_states,
        prevent_initial_call=True,
    )
    def on_click(click, tool, ref, selected, image, removed, *control_values):
        """Erase the clicked particle, or select it for merging (excluding is image_view's)."""
        label = particles.clicked_label(click)
        if tool not in ("erase", "merge") or not ref or not image or not label:
            raise PreventUpdate
        if tool == "merge":
            return (no_update,) * 5 + (toggle_selected(selected, ref["key"], label), None)
        out = apply(lambda s: client.edit(image["image_id"], {"op": "erase", "labels": [label]}, s),
                    image, removed, control_values)
        return (*out, no_update, None)

    @app.callback(
        *edit_outputs,
        Output("merge-store", "data", allow_duplicate=True),
        Input("edit-merge", "n_clicks"),
        State("merge-store", "data"),
        State("analysis-ref-store", "data"),
        *edit_states,
        prevent_initial_call=True,
    )
    def on_merge(n, selected, ref, image, removed, *control_values):
        if not n or not ref or not image:
            raise PreventUpdate
        labels = selected_labels(selected, ref["key"])
        if len(labels) < 2:
            return (no_update,) * 4 + ("Select two or more particles to merge (click them with Merge on).",
                                       no_update)
        out = apply(lambda s: client.edit(image["image_id"], {"op": "merge", "labels": labels}, s),
                    image, removed, control_values)
        return (*out, {"key": ref["key"], "labels": []})

    @app.callback(
        *edit_outputs,
        Output("image-graph", "figure", allow_duplicate=True),
        Input("image-graph", "relayoutData"),
        State("edit-tool", "value"),
        State("draw-mode-store", "data"),
        *edit_states,
        prevent_initial_call=True,
    )
    def on_shape(relayout, tool, mode, image, removed, *control_values):
        """A particle outlined (Add) or a line drawn (Split): send it, and take the drawn shape away."""
        if (mode or {}).get("purpose") != "tool" or tool not in ("add", "split") or not image:
            raise PreventUpdate
        edit = drawn_shape(relayout, tool)
        if edit is None:
            raise PreventUpdate
        from dash import Patch

        patch = Patch()
        patch["layout"]["shapes"] = relayout["shapes"][:-1]
        out = apply(lambda s: client.edit(image["image_id"], edit, s), image, removed, control_values)
        return (*out, patch)

    for verb in ("undo", "redo"):
        @app.callback(*edit_outputs, Input(f"edit-{verb}", "n_clicks"), *edit_states, prevent_initial_call=True)
        def on_history(n, image, removed, *control_values, verb=verb):
            if not n or not image:
                raise PreventUpdate
            call = getattr(client, verb)
            return apply(lambda s: call(image["image_id"], s), image, removed, control_values)

    @app.callback(
        Output("edit-status", "children"),
        Output("edit-undo", "disabled"),
        Output("edit-redo", "disabled"),
        Output("edit-merge", "disabled"),
        Output("download-labels-button", "disabled"),
        Output("download-pair-button", "disabled"),
        Input("analysis-store", "data"),
        Input("merge-store", "data"),
        Input("edit-tool", "value"),
    )
    def on_state(analysis, selected, tool):
        if not analysis:
            return "", True, True, True, True, True
        edits = analysis.get("edits") or {}
        text = edits_text(edits)
        chosen = selected_labels(selected, analysis.get("key"))
        if tool == "merge":
            pick = f"Selected for merging: {', '.join(map(str, chosen))}" if chosen else "No particle selected"
            text = f"{pick}. {text}" if text else pick + "."
        return (text, not edits.get("can_undo"), not edits.get("can_redo"), tool != "merge" or len(chosen) < 2,
                False, False)

    @app.callback(
        Output("merge-store", "data", allow_duplicate=True),
        Input("edit-tool", "value"),
        prevent_initial_call=True,
    )
    def on_tool(_tool):
        return None  # a new tool starts with nothing selected

    def download(kind, analysis, removed):
        settings = {**(analysis or {}).get("settings", {}),
                    "removed_labels": particles.removed_labels(removed, analysis.get("key"))}
        try:
            if kind == "labels":
                data, name = client.labels_png(analysis["image_id"], settings)
            else:
                data, name = client.training_pair(analysis["image_id"], settings)
        except SaemiError as exc:
            return no_update, f"Could not prepare the download: {upload.sentence_tail(exc.message)}"
        return dcc.send_bytes(data, name), ""

    for kind, button in (("labels", "download-labels-button"), ("pair", "download-pair-button")):
        @app.callback(
            Output(f"download-{kind}", "data"),
            Output("edit-message", "children", allow_duplicate=True),
            Input(button, "n_clicks"),
            State("analysis-store", "data"),
            State("removed-store", "data"),
            prevent_initial_call=True,
        )
        def on_download(n, analysis, removed, kind=kind):
            if not n or not analysis:
                raise PreventUpdate
            return download(kind, analysis, removed)
