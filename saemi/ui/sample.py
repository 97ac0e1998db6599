"""Samples on the page: several images (files or a zip) analysed one by one, stepped through, and pooled.

What the browser holds (``sample-store``, kept in local storage so a reload
loses nothing) is small: per image its ``image_id``, name, size, calibration
record, the calibration in force (``nm``), its own splitting settings (or
None: the sample's), and its exclusions (``removed``: ``{key, labels}`` as
:mod:`saemi.ui.particles` keeps them). Images, labels and particle tables
stay on the server; the combined distribution comes back as what the
sample panel draws (:meth:`saemi.service.AnalysisService.sample`).

Uploading several files or a zip: the files are checked and parked on the
server (:class:`Staging`, a bounded disk store shared by the workers), and
the browser then asks for them to be analysed one at a time, showing
"Analysing 3 of 5"; the first image is shown as soon as it is ready. A single
image file takes the one-request path of :mod:`saemi.ui.upload` and makes a
sample of one.

Decisions where the issue is silent: a new upload starts a new sample (as a
new folder does for the CLI); "Settings apply to all images" makes every
image use the controls' settings (their own ones dropped), "this image only"
gives the shown image its own; a session file refers to images by their
server id, so it restores on a server that still holds them (24 h by
default) and names the images it cannot find.
"""

import json
import logging
import math
import os
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, Patch, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from . import calibration, controls, figures, particles, progress, upload
from .client import ClientError
from .numbers import display_unit, format_number
from ..errors import SaemiError
from ..sample import SESSION_FORMAT, SESSION_VERSION, check_session, describe_skipped, is_zip, unique_name, unpack_zip
from ..settings import names as setting_names, to_control

log = logging.getLogger(__name__)

WEIGHTING_LABELS = {"number": "Number", "volume": "Volume (d³)"}
FIT_LABELS = {"lognormal": "Log-normal fit", "normal": "Normal fit", "cumulative": "Cumulative curve"}
STALE_PANELS = ("histogram-panel", "table-panel", "sample-panel")


# --- parking the uploads of a sample on the server -------------------------------------------

class Staging:
    """Uploaded files waiting to be analysed, in a disk store every worker of this host shares.

    Bounded (``max_bytes``, oldest dropped first) and short-lived (``ttl``
    seconds): a file is taken out when its turn comes.
    """

    def __init__(self, root=None, max_bytes=1024 * 2**20, ttl=3600):
        from ..cache import DiskStore

        root = Path(root or os.environ.get("SAEMI_STAGING_DIR") or Path(tempfile.gettempdir()) / "saemi-staging")
        self.store = DiskStore(root, max_bytes, ttl)

    def put(self, data, filename):
        token = secrets.token_urlsafe(18)
        name = filename.encode("utf-8", "replace")[:400]
        self.store.put(token, len(name).to_bytes(2, "big") + name + bytes(data))
        return token

    def take(self, token):
        """(bytes, filename) of a parked file, removed from the store; None once it is gone."""
        from ..cache import check_key

        blob = self.store.get(check_key(token))
        if blob is None:
            return None
        self.store.delete(token)
        n = int.from_bytes(blob[:2], "big")
        return blob[2 + n:], blob[2:2 + n].decode("utf-8", "replace")


#: What the sample keeps of an image besides its state (the rest comes back with its preview).
ENTRY_KEYS = ("image_id", "filename", "width", "height", "nm_per_pixel")


def image_entry(info):
    """What the sample keeps of one image: its id, name, size and own calibration (``nm_per_pixel``: the
    file's, else its scale bar's), plus its state: ``nm`` (calibration in force), ``settings`` (its own,
    or None) and ``removed``. Kept small: it travels with every request about the sample."""
    scale = calibration.detected_scale(info)
    record = calibration.file_calibration(info)
    nm = record["nm_per_pixel"] if record else (scale["nm_per_pixel"] if scale else None)
    return {**{k: info.get(k) for k in ENTRY_KEYS[:4]}, "nm_per_pixel": nm, "nm": nm, "settings": None,
            "removed": None}


def new_sample(name, settings, images=()):
    return {"name": name, "settings": dict(settings), "images": list(images), "current": 0}


def sample_name(filenames):
    """A sample's name: the zip's stem, the one file's stem, else ``sample_of_<n>``."""
    from ..service import safe_stem

    names = [n for n in filenames if n]
    if len(names) == 1:
        return safe_stem(names[0])
    return f"sample_of_{len(names)}"


def image_settings(sample, i):
    """The splitting settings image ``i`` is analysed with: its own, else the sample's."""
    im = sample["images"][i]
    return dict(im.get("settings") or sample.get("settings") or {})


def request_images(sample):
    """The ``images`` of a :meth:`~saemi.ui.client.AnalysisClient.sample` request: each image's settings,
    exclusions (only while they belong to that labelling) and calibration."""
    out = []
    for i, im in enumerate(sample.get("images") or []):
        s = image_settings(sample, i)
        key = controls.analysis_key(im["image_id"], s)
        out.append({"image_id": im["image_id"],
                    "settings": {**s, "removed_labels": particles.removed_labels(im.get("removed"), key)},
                    "nm_per_pixel": calibration.parse_nm_per_pixel(im.get("nm"))})
    return out


def filters_of(size_lo, size_hi, circ_lo, circ_hi, ar_lo, ar_hi):
    """The filter fields as the ``filters`` of a sample request (empty fields: open ends)."""
    def num(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None

    out = {}
    for key, lo, hi in (("size", size_lo, size_hi), ("circularity", circ_lo, circ_hi), ("aspect_ratio", ar_lo, ar_hi)):
        lo, hi = num(lo), num(hi)
        if lo is not None or hi is not None:
            out[key] = [lo, hi]
    return out


# --- the sample panel's figure and text -------------------------------------------------------

def bin_edges(values, log=False, bins=None):
    """Histogram bin edges: log-spaced on a log axis; the Freedman-Diaconis rule (at most 60 bins) by default."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & ((v > 0) if log else True)]
    if v.size == 0:
        return np.array([0.0, 1.0])
    data = np.log10(v) if log else v
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1) * (0.1 if log else 1), hi + 0.5 * (abs(hi) or 1) * (0.1 if log else 1)
    if not bins:
        q75, q25 = np.percentile(data, [75, 25])
        width = 2 * (q75 - q25) / max(v.size, 1) ** (1 / 3)
        bins = int(np.clip(math.ceil((hi - lo) / width) if width > 0 else 10, 5, 60))
    edges = np.linspace(lo, hi, int(bins) + 1)
    if not log:
        return edges
    edges = 10 ** edges
    # 10 ** log10(v) may land a hair inside v: the end edges are the data's own ends, so no particle drops out
    edges[0], edges[-1] = min(edges[0], v.min()), max(edges[-1], v.max())
    return edges


def sample_figure(stats, metric="equivalent_diameter", log=False, show=(), name="sample"):
    """The combined histogram: bars (count, or % of volume), fitted curves, a cumulative curve on the right."""
    values = np.asarray(stats.get("values") or [], float)
    weights = np.asarray(stats.get("weights") or [], float)
    volume = (stats.get("summary") or {}).get("weighting") == "volume"
    edges = bin_edges(values, log)
    counts, _ = np.histogram(values, edges, weights=weights * 100 if volume else None)
    centres = np.sqrt(edges[:-1] * edges[1:]) if log else (edges[:-1] + edges[1:]) / 2
    unit = display_unit(stats.get("unit") or "px")
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centres, y=counts, width=np.diff(edges), name="particles", marker_color="#4c78a8",
                         marker_line={"color": "white", "width": 1},
                         hovertemplate="%{x:.4g} " + unit + "<br>%{y:.4g}" + (" %" if volume else " particles")
                                       + "<extra></extra>"))
    n = values.size
    for kind, colour in (("lognormal", "#d62728"), ("normal", "#9467bd")):
        fit = stats.get(kind) or {}
        if kind in show and fit.get("x") and not volume:
            x = np.asarray(fit["x"], float)
            pdf = np.asarray(fit["pdf"], float)
            # expected particles per bar: the density times the bar's width at x (in ln x on a log axis)
            width = np.log(edges[1] / edges[0]) * x if log else edges[1] - edges[0]
            label = (f"log-normal: median {format_number(fit['median'])} {unit}, GSD {fit['gsd']:.3f}"
                     if kind == "lognormal" else f"normal: mean {format_number(fit['mean'])} {unit}, "
                                                 f"SD {format_number(fit['std'])} {unit}")
            fig.add_trace(go.Scatter(x=x, y=n * pdf * width, mode="lines", name=label,
                                     line={"color": colour, "width": 2.5}, hoverinfo="skip"))
    if "cumulative" in show and n:
        cum = stats.get("cumulative") or {}
        fig.add_trace(go.Scatter(x=cum.get("x"), y=np.asarray(cum.get("f") or [], float) * 100, yaxis="y2",
                                 mode="lines", line={"color": "#2ca02c", "width": 2, "shape": "hv"},
                                 name="cumulative (%)", hovertemplate="%{x:.4g} " + unit + ": %{y:.1f} %<extra></extra>"))
    summary = stats.get("summary") or {}
    fig.update_layout(
        template="plotly_white", margin={"l": 55, "r": 55, "t": 30, "b": 45}, bargap=0,
        xaxis={"title": f"{figures.METRIC_LABELS.get(metric, metric)} ({unit})", "type": "log" if log else "linear"},
        yaxis={"title": "Volume (%)" if volume else "Count", "rangemode": "tozero"},
        yaxis2={"title": "Cumulative (%)", "overlaying": "y", "side": "right", "range": [0, 102], "dtick": 20,
                "showgrid": False, "visible": "cumulative" in show},
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "font": {"size": 11}},
        showlegend=True, uirevision=f"{metric}:{log}",
        meta={"count": summary.get("count", 0), "name": name})
    if not n:
        fig.add_annotation(text="no particles", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def fit_text(stats):
    """The fits' parameters and goodness of fit, as the sample panel lists them."""
    unit = display_unit(stats.get("unit") or "px")
    ln, no = stats.get("lognormal") or {}, stats.get("normal") or {}
    items = []
    if ln.get("median") is not None:
        items.append(html.Li([html.B("Log-normal: "), f"median {format_number(ln['median'])} {unit}, geometric SD ",
                              html.Span(f"{ln['gsd']:.3f}", id="fit-gsd"), f"; KS distance {ln['ks']:.3f} "
                              f"(p = {ln['p_value']:.2g})"], id="fit-lognormal"))
    if no.get("mean") is not None:
        items.append(html.Li([html.B("Normal: "), f"mean {format_number(no['mean'])} {unit}, SD "
                              f"{format_number(no['std'])} {unit}; KS distance {no['ks']:.3f} "
                              f"(p = {no['p_value']:.2g})"], id="fit-normal"))
    if not items:
        return html.P("Fits need at least 3 particles.", className="hint")
    note = "Fits are of the number distribution; KS: the largest gap between the data's and the fit's " \
           "cumulative curves (p is approximate: the fit was made on the same data)."
    return [html.Ul(items, className="fit-list"), html.P(note, className="hint")]


def per_image_table(stats, current_id=None):
    """One row per image: particles found, counted, filtered out, and the statistics of those counted."""
    unit = display_unit(stats.get("unit") or "px")
    head = html.Tr([html.Th(h) for h in ("#", "Image", "Found", "Counted", "Filtered out", f"Mean ({unit})",
                                         f"Median ({unit})", f"D10 ({unit})", f"D90 ({unit})")])
    rows = []
    for i, r in enumerate(stats.get("per_image") or []):
        rows.append(html.Tr([html.Td(str(i + 1)), html.Td(r["image"]), html.Td(str(r["found"])),
                             html.Td(str(r["counted"])), html.Td(str(r["filtered"])),
                             *(html.Td(format_number(r.get(k))) for k in ("mean", "median", "d10", "d90"))],
                            className="current" if r.get("image_id") == current_id else None))
    return html.Table([html.Thead(head), html.Tbody(rows)], className="per-image-table", id="per-image-table")


def layout():
    def rng(label, key, unit_id=None, step="any"):
        return html.Div(className="field inline filter", children=[
            html.Label(label, id=f"filter-{key}-label", htmlFor=f"filter-{key}-min"),
            dcc.Input(id=f"filter-{key}-min", type="number", step=step, debounce=True, placeholder="min",
                      className="number-input", persistence=True, persistence_type="local"),
            html.Span("to"),
            dcc.Input(id=f"filter-{key}-max", type="number", step=step, debounce=True, placeholder="max",
                      className="number-input", persistence=True, persistence_type="local"),
            html.Span(id=unit_id, className="hint") if unit_id else None,
        ])

    return html.Section(className="panel sample-panel", id="sample-panel", **{"aria-labelledby": "sample-heading"},
                        children=[
        html.Div(className="panel-head", children=[
            html.H2("Sample: every image together", id="sample-heading"),
            html.Div(className="downloads", children=[
                html.Button("Particles (CSV)", id="sample-particles-button", className="button", type="button",
                            title="Every particle counted in the sample, with an image column"),
                html.Button("Summary (CSV)", id="sample-summary-button", className="button secondary", type="button",
                            title="One row per image, then the pooled sample row"),
                html.Button("Histogram PNG", id="export-histogram-png", className="button secondary", type="button"),
                html.Button("Histogram SVG", id="export-histogram-svg", className="button secondary", type="button"),
                html.Button("Overlay PNG", id="export-overlay-png", className="button secondary", type="button"),
                html.Button("Overlay SVG", id="export-overlay-svg", className="button secondary", type="button"),
            ]),
        ]),
        html.Div(className="sample-controls", children=[
            html.Div(className="field inline", children=[
                html.Label("Metric", htmlFor="sample-metric"),
                dcc.Dropdown(id="sample-metric", options=[{"label": v, "value": k}
                                                          for k, v in particles.METRIC_LABELS.items()],
                             value="equivalent_diameter", clearable=False, searchable=False, className="dropdown",
                             persistence=True, persistence_type="local")]),
            html.Div(className="field inline", children=[
                html.Label("Weighting", htmlFor="sample-weighting"),
                dcc.RadioItems(id="sample-weighting", options=[{"label": " " + v, "value": k}
                                                               for k, v in WEIGHTING_LABELS.items()],
                               value="number", inline=True, className="radio", persistence=True,
                               persistence_type="local")]),
            html.Div(className="field inline", children=[
                html.Label("Size axis", htmlFor="sample-axis"),
                dcc.RadioItems(id="sample-axis", options=[{"label": " Linear", "value": "linear"},
                                                          {"label": " Log", "value": "log"}],
                               value="linear", inline=True, className="radio", persistence=True,
                               persistence_type="local")]),
            dcc.Checklist(id="sample-show", options=[{"label": " " + v, "value": k} for k, v in FIT_LABELS.items()],
                          value=["lognormal"], inline=True, className="check", persistence=True,
                          persistence_type="local"),
        ]),
        html.Div(className="sample-filters", children=[
            html.Span("Filters (ImageJ-style, inclusive):", className="filters-title"),
            rng("Size", "size", "filter-size-unit"), rng("Circularity", "circularity", step=0.01),
            rng("Aspect ratio", "aspect-ratio", step=0.1),
        ]),
        html.Div(id="sample-error", className="error", role="alert", **{"aria-live": "assertive"}),
        html.Div(className="sample-body", children=[
            dcc.Graph(id="sample-graph", className="sample-graph", style={"height": "360px"},
                      config={"displaylogo": False, "responsive": True,
                              "toImageButtonOptions": {"format": "svg", "filename": "sample_histogram"}},
                      figure=sample_figure({})),
            html.Div(className="sample-side", children=[
                html.Div(id="sample-summary", className="summary", **{"aria-live": "polite"}),
                html.Div(id="sample-fits", className="fits"),
            ]),
        ]),
        html.Div(id="sample-table-wrap", className="per-image-wrap"),
        html.Div(className="session-row", children=[
            html.Button("Save session", id="session-save", className="button secondary", type="button",
                        title="A JSON file with every image's settings, calibration, exclusions, and the filters"),
            dcc.Upload(id="session-upload", accept=".json,application/json", multiple=False,
                       children=html.Button("Restore session...", className="button secondary", type="button",
                                            id="session-restore-button")),
            html.Span(id="session-status", className="status", **{"aria-live": "polite"}),
        ]),
        dcc.Download(id="sample-download"),
        dcc.Download(id="session-download"),
    ])


def navigator():
    """Above the image: which image of the sample is shown, and stepping through them."""
    return html.Div(className="sample-nav", id="sample-nav", hidden=True, children=[
        html.Button("\u25c0 Previous", id="sample-prev", className="button secondary", type="button", n_clicks=0,
                    **{"aria-label": "Previous image of the sample"}),
        dcc.Dropdown(id="sample-select", options=[], value=None, clearable=False, searchable=False,
                     className="dropdown sample-select"),
        html.Button("Next \u25b6", id="sample-next", className="button secondary", type="button", n_clicks=0,
                    **{"aria-label": "Next image of the sample"}),
        html.Span(id="sample-position", className="status"),
    ])


def scope_layout():
    """In the upload panel: the progress of a sample's analysis and where settings apply."""
    return html.Div(className="sample-upload", children=[
        html.Div(id="sample-progress", className="sample-progress", hidden=True, children=[
            html.Progress(id="sample-progress-bar", max=1, value=0),
            html.Span(id="sample-progress-text", className="status", **{"aria-live": "polite"}),
        ]),
        html.Div(id="sample-skipped", className="warning", hidden=True),
        html.Div(id="resume-box", className="resume", hidden=True, children=[
            html.Span(id="resume-text"),
            html.Button("Show it", id="resume-button", className="link-button", type="button", n_clicks=0)]),
        html.Div(className="field inline scope", children=[
            html.Label("Settings apply to", htmlFor="settings-scope"),
            dcc.RadioItems(id="settings-scope", options=[{"label": " all images", "value": "all"},
                                                         {"label": " this image only", "value": "image"}],
                           value="all", inline=True, className="radio"),
        ]),
    ])


def stores():
    return [dcc.Store(id="sample-store", storage_type="local"),
            dcc.Store(id="sample-current"),        # the image to show: its index (set to step)
            dcc.Store(id="queue-store"),           # files parked on the server, waiting to be analysed
            dcc.Store(id="step-request"),          # {queue, index}: analyse that file now
            dcc.Store(id="step-result"),           # what the last step did
            dcc.Store(id="filtered-store"),        # image_id -> labels the filters leave out (drawn greyed)
            dcc.Store(id="sample-stats-store"),    # the counts the page shows (no sizes)
            dcc.Store(id="count-text-store")]      # the shown image's count, for its header


#: Dash's ``running`` argument of the upload callbacks: result panels greyed, with a spinner, meanwhile.
RUNNING_STALE = [(Output(p, "className"), f"panel {p} stale", f"panel {p}") for p in STALE_PANELS]


# Drives the queue from the browser: each step's image is added to the sample here, in the order of the
# files, and the next file is asked for (set_props is outside the callback graph, so this loop is not a
# circular dependency); the progress text follows.
STEP_JS = """
function(result, queue, sample) {
    const nu = window.dash_clientside.no_update;
    if (!queue || !queue.items) { return [nu, nu, nu, nu, nu, nu]; }
    const n = queue.items.length;
    const trig = (window.dash_clientside.callback_context.triggered[0] || {}).prop_id || "";
    const mine = trig.startsWith("step-result") && result && result.queue === queue.id;
    const done = mine ? result.index + 1 : 0;
    let newSample = nu, current = nu;
    if (mine && result.entry && sample) {
        newSample = Object.assign({}, sample, {images: (sample.images || []).concat([result.entry])});
        if (!(sample.images || []).length) { current = 0; }  // the first image ready is shown at once
    }
    if (done < n) {
        window.dash_clientside.set_props("step-request", {data: {queue: queue.id, index: done}});
        return ["Analysing " + (done + 1) + " of " + n + ": " + queue.items[done].filename, done, n, false,
                newSample, current];
    }
    const ok = (newSample !== nu ? newSample : sample || {}).images || [];
    return [ok.length + " of " + n + " images analysed", n, n, false, newSample, current];
}
"""

EXPORT_JS = """
function(n1, n2, n3, n4, image, sample) {
    const trig = (window.dash_clientside.callback_context.triggered[0] || {}).prop_id || "";
    if (!trig || !window.Plotly) { return window.dash_clientside.no_update; }
    const fmt = trig.indexOf("svg") >= 0 ? "svg" : "png";
    const stem = s => String(s || "image").replace(/\\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]+/g, "_") || "image";
    let gd, opts;
    if (trig.indexOf("histogram") >= 0) {
        gd = document.querySelector("#sample-graph .js-plotly-plot");
        const name = stem((sample && sample.name) || "sample");
        // a figure for a paper: 1600 x 1000 px (PNG at twice that), or vector SVG
        opts = {format: fmt, width: 1600, height: 1000, scale: fmt === "png" ? 2 : 1, filename: name + "_histogram"};
    } else {
        gd = document.querySelector("#image-graph .js-plotly-plot");
        if (!image) { return window.dash_clientside.no_update; }
        // the overlay at the image's own pixel size
        opts = {format: fmt, width: image.width, height: image.height, scale: 1, filename: stem(image.filename) + "_overlay"};
    }
    if (gd) { window.Plotly.downloadImage(gd, opts); }
    return fmt + ":" + opts.filename;
}
"""


def start_queue(contents, filenames, settings, staging):
    """Several files or a zip (what :func:`saemi.ui.upload.register`'s upload hands on): check them, park
    the images on the server, and start the queue.

    Returns
    -------
    tuple
        The outputs ``queue-store``, ``sample-store``, ``upload-error``, ``sample-skipped`` (text,
        hidden) and ``sample-progress`` hidden: a new empty sample the queue fills, and what was
        skipped, named.
    """
    filenames = filenames if isinstance(filenames, list) else [filenames] * len(contents)
    items, skipped, seen = [], [], {}
    for data_url, filename in zip(contents, filenames):
        try:
            data = upload.decode_upload(data_url, filename)
        except ClientError as exc:
            skipped.append((filename, exc.message))
            continue
        if is_zip(filename, data):
            try:
                members, skip = unpack_zip(data)
            except SaemiError as exc:
                skipped.append((filename, upload.sentence_tail(exc.message)))
                continue
            skipped += [(f"{filename}: {n}", why) for n, why in skip]
        else:
            members = [(filename, data)]
        for name, blob in members:
            name = unique_name(name, seen)
            items.append({"token": staging.put(blob, name), "filename": name})
    note = f"Skipped {len(skipped)}: {describe_skipped(skipped)}" if skipped else ""
    if not items:
        return no_update, no_update, f"Nothing to analyse: {describe_skipped(skipped)}", "", True, True
    zips = [f for f in filenames if is_zip(f)]
    name = sample_name(zips if len(zips) == 1 and len(filenames) == 1 else filenames)
    return ({"id": secrets.token_urlsafe(8), "items": items}, new_sample(name, settings), "", note, not note,
            False)


def register(app, client, staging):

    app.clientside_callback(
        STEP_JS,
        Output("sample-progress-text", "children"),
        Output("sample-progress-bar", "value"),
        Output("sample-progress-bar", "max"),
        Output("sample-progress", "hidden", allow_duplicate=True),
        Output("sample-store", "data", allow_duplicate=True),
        Output("sample-current", "data", allow_duplicate=True),
        Input("step-result", "data"),
        Input("queue-store", "data"),
        State("sample-store", "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("step-result", "data"),
        Output("sample-skipped", "children", allow_duplicate=True),
        Output("sample-skipped", "hidden", allow_duplicate=True),
        Input("step-request", "data"),
        State("queue-store", "data"),
        State("sample-skipped", "children"),
        State("progress-token", "data"),
        prevent_initial_call=True,
        running=RUNNING_STALE + progress.RUNNING,
    )
    def on_step(request, queue, skipped_text, token):
        """Analyse (segment) one parked file of the queue; the browser adds it to the sample (STEP_JS)."""
        if not request or not queue or request.get("queue") != queue.get("id"):
            raise PreventUpdate
        i = int(request.get("index", 0))
        if not 0 <= i < len(queue["items"]):
            raise PreventUpdate
        item = queue["items"][i]
        parked = staging.take(item["token"])
        result = {"queue": queue["id"], "index": i}
        try:
            if parked is None:
                raise ClientError("the upload expired on the server before its turn; upload it again")
            info = client.segment(parked[0], item["filename"], progress=token)
        except SaemiError as exc:
            text = (skipped_text + "; " if skipped_text else "Skipped: ") + \
                f"{item['filename']} ({upload.sentence_tail(exc.message)})"
            return {**result, "failed": True}, text, False
        return {**result, "entry": image_entry(info)}, no_update, no_update

    @app.callback(
        Output("image-store", "data", allow_duplicate=True),
        Output("image-graph", "figure", allow_duplicate=True),
        Output("image-graph", "style", allow_duplicate=True),
        Output("nm-per-pixel", "value", allow_duplicate=True),
        Output("removed-store", "data", allow_duplicate=True),
        Output("settings-scope", "value"),
        Output("sample-store", "data", allow_duplicate=True),
        Output("upload-status", "children", allow_duplicate=True),
        Output("upload-error", "children", allow_duplicate=True),
        *(Output(cid, "value", allow_duplicate=True) for cid in controls.CONTROL_IDS),
        Input("sample-current", "data"),
        State("sample-store", "data"),
        State("opacity", "value"),
        State("nm-store", "data"),
        State("calib-all", "value"),
        State("calib-unit", "value"),
        prevent_initial_call=True,
    )
    def on_show(index, sample, opacity, nm_current, for_all, field_unit):
        """Show image ``index`` of the sample with its own calibration, exclusions and settings."""
        if index is None or not sample or not 0 <= int(index) < len(sample.get("images") or []):
            raise PreventUpdate
        i = int(index)
        im = sample["images"][i]
        nothing = (no_update,) * (7 + len(controls.CONTROL_IDS))
        try:
            info = client.preview(im["image_id"])
        except SaemiError as exc:
            if exc.code == "not_found":
                return (*nothing[:7], "", f"{im['filename']} is no longer on the server (images are kept for a "
                                          "day); upload it again", *nothing[7:])
            return (*nothing[:7], "", f"Could not show {im['filename']}: {upload.sentence_tail(exc.message)}",
                    *nothing[7:])
        display = figures.preview_display(info["preview"], info["width"], info["height"])
        scale = calibration.detected_scale(info)
        fig = figures.base_figure(display, info.get("banner_box"), opacity, scale["bar_box"] if scale else None)
        image = {**{k: info.get(k) for k in ("image_id", "filename", "width", "height", "banner_box",
                                             "calibration", "scale")}, "nm_per_pixel": im.get("nm_per_pixel")}
        nm = calibration.next_calibration(nm_current, im.get("nm"), bool(for_all)) if for_all else \
            calibration.parse_nm_per_pixel(im.get("nm"))
        settings = image_settings(sample, i)
        removed = im.get("removed") or particles.empty_removed(controls.analysis_key(im["image_id"], settings))
        patch = Patch()
        patch["current"] = i
        status = f"Image {i + 1} of {len(sample['images'])}: {im['filename']}, {im['width']} x {im['height']} px"
        values = [to_control(n, settings[n]) if n in settings else no_update for n in controls.CONTROLLED]
        return (image, fig, figures.graph_style(image["width"], image["height"]),
                calibration.field_value(nm, field_unit), removed, "image" if im.get("settings") else "all", patch,
                status, "", *values)

    app.clientside_callback(
        GALLERY_JS,
        Output("sample-select", "options"),
        Output("sample-select", "value"),
        Output("sample-nav", "hidden"),
        Output("sample-position", "children"),
        Output("sample-prev", "disabled"),
        Output("sample-next", "disabled"),
        Input("sample-store", "data"),
        Input("sample-stats-store", "data"),
    )

    @app.callback(
        Output("sample-current", "data", allow_duplicate=True),
        Input("sample-prev", "n_clicks"),
        Input("sample-next", "n_clicks"),
        Input("sample-select", "value"),
        State("sample-store", "data"),
        prevent_initial_call=True,
    )
    def on_nav(_prev, _next, chosen, sample):
        from dash import ctx

        images = (sample or {}).get("images") or []
        if not images:
            raise PreventUpdate
        cur = int(sample.get("current") or 0)
        if ctx.triggered_id == "sample-prev":
            new = cur - 1
        elif ctx.triggered_id == "sample-next":
            new = cur + 1
        else:
            new = chosen
        if new is None or not 0 <= int(new) < len(images) or int(new) == cur:
            raise PreventUpdate
        return int(new)

    @app.callback(
        Output("sample-store", "data", allow_duplicate=True),
        Input("analysis-ref-store", "data"),
        Input("removed-store", "data"),
        Input("nm-store", "data"),
        State("sample-store", "data"),
        State("settings-scope", "value"),
        State("calib-all", "value"),
        prevent_initial_call=True,
    )
    def on_remember(analysis, removed, nm, sample, scope, for_all):
        """Keep the shown image's settings, exclusions and calibration in the sample.

        ``analysis`` is the small ``analysis-ref-store`` (key, image_id, settings): a click sends
        no particle list up.
        """
        from dash import ctx

        images = (sample or {}).get("images") or []
        cur = int((sample or {}).get("current") or 0)
        if not images or cur >= len(images) or not analysis or analysis.get("image_id") != images[cur]["image_id"]:
            raise PreventUpdate
        im = images[cur]
        patch = Patch()
        changed = False
        split = {k: v for k, v in (analysis.get("settings") or {}).items() if k in setting_names("split")}
        if ctx.triggered_id == "analysis-ref-store" and split != image_settings(sample, cur):
            changed = True
            if scope == "image":
                patch["images"][cur]["settings"] = split
            else:  # every image takes these settings
                patch["settings"] = split
                for j, other in enumerate(images):
                    if other.get("settings"):
                        patch["images"][j]["settings"] = None
        if removed and removed.get("key") == analysis.get("key") and removed != im.get("removed"):
            patch["images"][cur]["removed"] = removed
            changed = True
        nm = calibration.parse_nm_per_pixel(nm)
        if ctx.triggered_id == "nm-store":
            for j, other in enumerate(images):
                if (j == cur or for_all) and not calibration.same_calibration(other.get("nm"), nm) and \
                        (nm is not None or other.get("nm") is not None):
                    patch["images"][j]["nm"] = nm
                    changed = True
        if not changed:
            raise PreventUpdate
        return patch

    @app.callback(
        Output("sample-graph", "figure"),
        Output("sample-summary", "children"),
        Output("sample-fits", "children"),
        Output("sample-table-wrap", "children"),
        Output("filtered-store", "data"),
        Output("sample-stats-store", "data"),
        Output("sample-error", "children"),
        Output("filter-size-unit", "children"),
        Output("sample-graph", "config"),
        Input("sample-store", "data"),
        Input("sample-metric", "value"),
        Input("sample-weighting", "value"),
        Input("sample-axis", "value"),
        Input("sample-show", "value"),
        *(Input(f"filter-{k}-{end}", "value") for k in ("size", "circularity", "aspect-ratio") for end in ("min", "max")),
        State("filtered-store", "data"),
        prevent_initial_call=True,
    )
    def on_sample_stats(sample, metric, weighting, axis, show, *ranges_and_filtered):
        *ranges, filtered_before = ranges_and_filtered
        images = (sample or {}).get("images") or []
        if not images:
            raise PreventUpdate
        options = {"metric": metric, "weighting": weighting, "filters": filters_of(*ranges)}
        try:
            stats = client.sample(request_images(sample), options)
        except SaemiError as exc:
            return (no_update,) * 6 + (f"The sample's statistics failed: {exc.message}", no_update, no_update)
        name = sample.get("name") or "sample"
        fig = sample_figure(stats, metric, axis == "log", show or (), name)
        summary = {**stats["summary"]}
        summary_block = sample_summary(summary, stats)
        current = images[int(sample.get("current") or 0)]["image_id"]
        counts = {r["image_id"]: r["counted"] for r in stats["per_image"]}
        config = {"displaylogo": False, "responsive": True,
                  "toImageButtonOptions": {"format": "svg", "filename": f"{name}_histogram"}}
        # the overlay is redrawn only when what the filters leave out has changed
        filtered = stats["filtered"] if stats["filtered"] != filtered_before else no_update
        return (fig, summary_block, fit_text(stats), per_image_table(stats, current), filtered, counts, "",
                display_unit(stats.get("length_unit") or "px"), config)

    for kind in ("particles", "summary"):
        @app.callback(
            Output("sample-download", "data", allow_duplicate=True),
            Input(f"sample-{kind}-button", "n_clicks"),
            State("sample-store", "data"),
            State("sample-metric", "value"),
            State("sample-weighting", "value"),
            *(State(f"filter-{k}-{end}", "value") for k in ("size", "circularity", "aspect-ratio")
              for end in ("min", "max")),
            prevent_initial_call=True,
        )
        def on_sample_csv(n, sample, metric, weighting, *ranges, kind=kind):
            if not n or not (sample or {}).get("images"):
                raise PreventUpdate
            name = sample.get("name") or "sample"
            options = {"metric": metric, "weighting": weighting, "filters": filters_of(*ranges), "name": name}
            text = client.sample(request_images(sample), options, f"{kind}.csv")
            from ..service import safe_stem
            return {"content": text, "filename": f"{safe_stem(name)}_{kind}.csv", "type": "text/csv"}

    app.clientside_callback(
        EXPORT_JS,
        Output("session-status", "title"),
        Input("export-histogram-png", "n_clicks"),
        Input("export-histogram-svg", "n_clicks"),
        Input("export-overlay-png", "n_clicks"),
        Input("export-overlay-svg", "n_clicks"),
        State("image-store", "data"),
        State("sample-store", "data"),
        prevent_initial_call=True,
    )

    session_inputs = ("sample-metric", "sample-weighting", "sample-axis", "sample-show",
                      *(f"filter-{k}-{end}" for k in ("size", "circularity", "aspect-ratio") for end in ("min", "max")))

    @app.callback(
        Output("session-download", "data"),
        Input("session-save", "n_clicks"),
        State("sample-store", "data"),
        *(State(i, "value") for i in session_inputs),
        prevent_initial_call=True,
    )
    def on_session_save(n, sample, *values):
        if not n or not (sample or {}).get("images"):
            raise PreventUpdate
        from ..service import safe_stem

        doc = session_document(sample, dict(zip(session_inputs, values)))
        return {"content": json.dumps(doc, indent=1), "filename": f"{safe_stem(sample.get('name'))}_session.json",
                "type": "application/json"}

    @app.callback(
        Output("sample-store", "data", allow_duplicate=True),
        Output("sample-current", "data", allow_duplicate=True),
        Output("session-status", "children"),
        *(Output(i, "value", allow_duplicate=True) for i in session_inputs),
        Output("session-upload", "contents"),
        Input("session-upload", "contents"),
        State("session-upload", "filename"),
        prevent_initial_call=True,
    )
    def on_session_restore(contents, filename):
        if not contents:
            raise PreventUpdate
        nothing = (no_update,) * len(session_inputs)
        try:
            doc = check_session(upload.decode_upload(contents, filename))
        except SaemiError as exc:
            return (no_update, no_update, f"Could not restore {filename or 'the session'}: "
                                          f"{upload.sentence_tail(exc.message)}", *nothing, None)
        sample = {"name": doc["sample"].get("name") or "sample", "settings": doc["sample"].get("settings") or {},
                  "images": [{**im, "nm": im.get("nm_per_pixel_in_force"),
                              "removed": {"key": controls.analysis_key(im["image_id"], im.get("settings") or
                                                              doc["sample"].get("settings") or {}),
                                          "labels": [int(v) for v in im.get("removed") or []]}}
                             for im in doc["images"]], "current": doc["current"]}
        view = doc["sample"].get("view") or {}
        values = [view.get(i, no_update) for i in session_inputs]
        n = len(sample["images"])
        return (sample, doc["current"], f"Restored {filename or 'the session'}: {n} image{'s' if n != 1 else ''}",
                *values, None)

    app.clientside_callback(
        RESUME_JS,
        Output("sample-current", "data", allow_duplicate=True),
        Output("resume-box", "hidden"),
        Output("resume-text", "children"),
        Input("sample-store", "modified_timestamp"),
        Input("resume-button", "n_clicks"),
        Input("image-store", "data"),
        State("sample-store", "data"),
        prevent_initial_call="initial_duplicate",
    )


# The list above the image: every image with the particles it counts (in the browser: nothing is sent).
GALLERY_JS = """
function(sample, counts) {
    const images = (sample && sample.images) || [];
    if (!images.length) { return [[], null, true, "", true, true]; }
    counts = counts || {};
    const cur = Math.min(Math.max(sample.current || 0, 0), images.length - 1);
    const options = images.map((im, i) => ({value: i, label: (i + 1) + ". " + im.filename
        + (im.image_id in counts ? " (" + counts[im.image_id] + " particles)" : "")}));
    return [options, cur, images.length < 2, "Image " + (cur + 1) + " of " + images.length, cur <= 0,
            cur >= images.length - 1];
}
"""


# After a reload the sample is still in the browser: its current image is shown again at once. A visit
# that is not a reload (a new tab, a typed address) offers it instead ("Show it"), so that it never
# races with a new upload; the offer goes once an image is shown.
RESUME_JS = """
function(ts, clicks, image, sample) {
    const nu = window.dash_clientside.no_update;
    const trig = (window.dash_clientside.callback_context.triggered[0] || {}).prop_id || "";
    const images = (sample && sample.images) || [];
    if (image) { return [nu, true, nu]; }
    if (!images.length) { return [nu, nu, nu]; }
    const cur = Math.min(Math.max(sample.current || 0, 0), images.length - 1);
    if (trig.startsWith("resume-button")) { return [cur, true, nu]; }
    if (window.__saemiResumeAsked) { return [nu, nu, nu]; }
    window.__saemiResumeAsked = true;
    const nav = (performance.getEntriesByType("navigation")[0] || {}).type;
    if (nav === "reload") { return [cur, true, nu]; }
    const n = images.length;
    return [nu, false, "Your last sample (" + n + " image" + (n === 1 ? "" : "s") + ", " + (sample.name || "sample")
            + ") is kept in this browser."];
}
"""


def sample_summary(summary, stats):
    unit = display_unit(summary.get("unit") or "px")
    items = [("Particles", format_number(summary.get("count")), "sample-count"),
             ("Images", str(len(stats.get("per_image") or [])), "sample-images")]
    for label, key in (("Mean", "mean"), ("Median", "median"), ("Std. deviation", "std"), ("D10", "d10"),
                       ("D50", "d50"), ("D90", "d90")):
        items.append((label, f"{format_number(summary.get(key))} {unit}" if summary.get("count") else "-", None))
    dl = html.Dl([html.Div([html.Dt(a), html.Dd(b, id=i) if i else html.Dd(b)], className="stat")
                  for a, b, i in items], className="summary-list")
    notes = [stats.get("note")] if stats.get("note") else []
    if summary.get("weighting") == "volume":
        notes.append("D10/D50/D90 are volume-weighted; mean, median and SD count particles")
    return [dl, *(html.P(f"Note: {n}.", className="warning") for n in notes)]


def session_document(sample, view):
    """The session file: every image's id, name, settings, calibration and exclusions; the sample's
    settings, name and view (metric, weighting, axis, curves shown, filters)."""
    images = []
    for i, im in enumerate(sample.get("images") or []):
        s = image_settings(sample, i)
        images.append({"image_id": im["image_id"], "filename": im["filename"],
                       **{k: im.get(k) for k in ENTRY_KEYS[2:]},
                       "nm_per_pixel_in_force": im.get("nm"), "settings": im.get("settings"),
                       "removed": particles.removed_labels(im.get("removed"), controls.analysis_key(im["image_id"], s))})
    filters = filters_of(*(view.get(f"filter-{k}-{end}") for k in ("size", "circularity", "aspect-ratio")
                           for end in ("min", "max")))
    return {"format": SESSION_FORMAT, "version": SESSION_VERSION, "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime()),
            "current": int(sample.get("current") or 0),
            "sample": {"name": sample.get("name"), "settings": sample.get("settings") or {}, "filters": filters,
                       "view": view},
            "images": images}
