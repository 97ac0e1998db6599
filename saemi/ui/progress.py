"""What a long upload or analysis is doing, shown while it runs.

A 12-megapixel micrograph takes tens of seconds on a CPU. While a callback
that segments or analyses runs, its ``running`` entry (:data:`RUNNING`)
shows the progress line and starts a poll; each tick asks the server for the
stage kept under this browser tab's token (:meth:`saemi.service.AnalysisService.stage_log`,
in the store every worker shares, so any worker can answer): "Reading the
scale bar", "Segmenting: tile 3 of 12", "Splitting touching particles".
When the callback ends, the line is hidden and the poll stops.

With a remote backend (``$SAEMI_BACKEND_URL``) the token goes with the
request (``progress``) and each tick asks the backend (``GET /progress/<token>``);
a backend without that route leaves the line at "Working…".
"""

import re

from dash import Input, Output, State, dcc, html

#: Milliseconds between two polls while work runs.
POLL_MS = 400

#: The stage names of the analysis (``saemi.budget.Deadline.check``) in the words the page shows.
STAGE_TEXT = {
    "reading the scale bar": "Reading the scale bar",
    "removing the data bar": "Removing the data bar",
    "the network": "Segmenting",
    "the network (waiting for other analyses to finish)": "Waiting for other analyses to finish",
    "splitting touching particles": "Splitting touching particles",
    "measuring the particles": "Measuring the particles",
}
_TILE = re.compile(r"^network tile (\d+) of (\d+)$")

#: For a callback's ``running=``: the progress line shows and the poll runs while it works.
RUNNING = [(Output("progress-box", "hidden"), False, True), (Output("progress-poll", "disabled"), False, True)]

# A token per tab, made in the browser at load: it names this tab's stage record on the server.
TOKEN_JS = """function(_) {
    var r = (window.crypto && window.crypto.getRandomValues) ? window.crypto.getRandomValues(new Uint32Array(4))
                                                             : [Date.now(), Math.random() * 4294967296, 0, 0];
    return "tab-" + Array.prototype.map.call(r, function (v) { return (v >>> 0).toString(16); }).join("");
}"""


def stage_text(stage):
    """The page's words for a stage name: ``"network tile 3 of 12"`` -> ``"Segmenting: tile 3 of 12"``.

    >>> stage_text("network tile 3 of 12"), stage_text("reading the scale bar")
    ('Segmenting: tile 3 of 12', 'Reading the scale bar')
    """
    m = _TILE.match(stage or "")
    if m:
        return f"Segmenting: tile {m.group(1)} of {m.group(2)}"
    text = STAGE_TEXT.get(stage)
    if text:
        return text
    text = str(stage or "Working").strip()
    return text[:1].upper() + text[1:]


def progress_line(record):
    """The progress line for a stage record (``client.progress``); None: the work has not reported yet."""
    if not record or record.get("done"):
        return None
    return f"{stage_text(record['stage'])}… ({record['elapsed_s']:.0f} s)"


def layout():
    """The progress line (hidden until work runs), its poll, and the tab's token."""
    return html.Div(children=[
        dcc.Store(id="progress-token"),
        dcc.Interval(id="progress-poll", interval=POLL_MS, disabled=True),
        html.Div(id="progress-box", className="progress-box", hidden=True, children=[
            html.Span(className="spinner", **{"aria-hidden": "true"}),
            html.Span("Working…", id="progress-stage", role="status", **{"aria-live": "polite"}),
        ]),
    ])


def register(app, client):
    app.clientside_callback(TOKEN_JS, Output("progress-token", "data"), Input("progress-token", "id"))

    @app.callback(
        Output("progress-stage", "children"),
        Input("progress-poll", "n_intervals"),
        State("progress-token", "data"),
        prevent_initial_call=True,
    )
    def on_poll(ticks, token):
        # no record yet, or the last run's "done": this run has not reported a stage yet
        return (progress_line(client.progress(token)) if token else None) or "Working…"
