"""Upload panel: drag-and-drop / picker, "Try the demo", loading state, readable errors."""

import base64
import binascii
import logging
import time
from pathlib import Path

from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from . import calibration, controls, figures, progress, sample
from ..errors import SaemiError
from .client import ClientError

log = logging.getLogger(__name__)

#: Accepted upload types (checked again by the backend, which decodes the bytes).
#: The EM formats (.dm3, .dm4, .emd, .mrc) have no registered MIME type: browsers match them by suffix.
ACCEPT = (".png,.jpg,.jpeg,.tif,.tiff,.bmp,.gif,.dm3,.dm4,.emd,.mrc,"
          "image/png,image/jpeg,image/tiff,image/bmp,image/gif")
DEMO_NAME = "demo.png"
DEMO_FILENAME = "emps_demo.png"  # the name the demo is analysed under


def decode_upload(contents, filename=None):
    """The bytes of a ``dcc.Upload`` data URL (``data:<type>;base64,<data>``).

    Raises
    ------
    ClientError
        For a missing, malformed or empty upload.
    """
    if not contents or not isinstance(contents, str):
        raise ClientError("no file was received; try the upload again", code="bad_request")
    if isinstance(filename, list) or isinstance(contents, list):
        raise ClientError("upload one image at a time", code="bad_request")
    _, _, payload = contents.partition(",")
    if not payload:
        raise ClientError(f"{filename or 'the file'} is empty (0 bytes)", code="empty")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("the upload was garbled in transfer; try again", code="bad_request") from None
    if not data:
        raise ClientError(f"{filename or 'the file'} is empty (0 bytes)", code="empty")
    return data


def sentence_tail(message):
    """A message to follow a colon: 'Not an image' -> 'not an image', 'TIFF file ...' unchanged."""
    text = str(message or "").strip() or "the image could not be analysed"
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def layout(max_upload_mb=50.0):
    return html.Section(className="panel upload-panel", **{"aria-labelledby": "upload-heading"}, children=[
        html.H2("1. Image", id="upload-heading"),
        dcc.Upload(
            id="upload", accept=ACCEPT + ",.zip,application/zip", multiple=True, className="upload-box",
            className_active="upload-box active",
            children=html.Div([
                html.Span("Drag and drop micrographs here (one, several, or a zip), or "),
                html.Button("choose files", className="link-button", type="button", id="upload-button",
                            **{"aria-label": "Choose image files or a zip to upload"}),
                html.Div(f"PNG, JPEG, TIFF (8/16/32-bit, float), DM3/DM4, EMD or MRC, grey or colour, "
                         f"up to {max_upload_mb:g} MB; the pixel size the file carries is used",
                         className="hint"),
            ])),
        html.Div(className="upload-actions", children=[
            html.Button("Try the demo", id="demo-button", n_clicks=0, type="button", className="button",
                        title="Analyse a bundled EMPS sample image"),
            html.Span(id="upload-status", className="status", **{"aria-live": "polite"}),
        ]),
        progress.layout(),
        html.Div(id="upload-error", className="error", role="alert", **{"aria-live": "assertive"}),
        sample.scope_layout(),
        # read by assets/saemi-upload.js: files over the limit are refused in the browser
        html.Div(id="upload-limit", hidden=True, **{"data-max-bytes": str(int(max_upload_mb * 1024 * 1024))}),
    ])


def read_demo(assets_folder):
    return (Path(assets_folder) / DEMO_NAME).read_bytes()


def handle_upload(client, data, filename, opacity=0.9, progress_token=None):
    """Segment one upload; returns (image_store, base_figure, status_text). Raises ClientError.

    ``progress_token``: the tab's token, under which the server keeps the stage (:mod:`saemi.ui.progress`).
    """
    t0 = time.perf_counter()
    info = client.segment(data, filename, preview=True, progress=progress_token)  # decoded once, on the server
    display = figures.preview_display(info["preview"], info["width"], info["height"])
    image = {k: info.get(k) for k in ("image_id", "filename", "width", "height", "banner_box", "calibration", "scale")}
    scale = calibration.detected_scale(info)
    record = calibration.file_calibration(info)  # the file's pixel size, else the scale bar's
    image["nm_per_pixel"] = record["nm_per_pixel"] if record else (scale["nm_per_pixel"] if scale else None)
    fig = figures.base_figure(display, info.get("banner_box"), opacity, scale["bar_box"] if scale else None)
    status = f"{filename}: {info['width']} x {info['height']} px, segmented in {time.perf_counter() - t0:.1f} s"
    if record:
        status += f"; {record.get('text')}"
    elif scale:
        status += f"; {scale['text']}"
    return image, fig, status


#: The outputs a one-image upload leaves to the sample queue: none, and its notes hidden.
NO_QUEUE = (no_update, "", True, True)


def register(app, client, assets_folder, staging):
    @app.callback(
        Output("image-store", "data"),
        Output("image-graph", "figure"),
        Output("upload-error", "children"),
        Output("upload-status", "children"),
        Output("upload", "contents"),
        Output("nm-per-pixel", "value"),
        Output("image-graph", "style"),
        Output("sample-store", "data"),
        Output("queue-store", "data"),
        Output("sample-skipped", "children"),
        Output("sample-skipped", "hidden"),
        Output("sample-progress", "hidden"),
        Input("upload", "contents"),
        Input("demo-button", "n_clicks"),
        State("upload", "filename"),
        State("nm-store", "data"),
        State("opacity", "value"),
        State("calib-all", "value"),
        State("calib-unit", "value"),
        State("progress-token", "data"),
        prevent_initial_call=True,
        *(State(cid, "value") for cid in controls.CONTROL_IDS),
        running=[(Output("demo-button", "disabled"), True, False),
                 (Output("upload", "disabled"), True, False), *sample.RUNNING_STALE, *progress.RUNNING],
    )
    def on_upload(contents, demo_clicks, filename, nm_current, opacity, for_all, field_unit, token,
                  *control_values):
        """One image (a file or the demo): analysed at once, and a sample of one. Several files or a zip
        go to :func:`saemi.ui.sample.register`'s queue."""
        from dash import ctx

        if isinstance(contents, list):  # the upload takes several files: one image is a list of one
            names = filename if isinstance(filename, list) else [filename]
            if len(contents) != 1 or sample.is_zip(names[0]):
                queued = sample.start_queue(contents, names, controls.settings_from_controls(*control_values),
                                            staging)
                queue, new, error, *notes = queued
                return (no_update, no_update, error, no_update, None, no_update, no_update, new, queue, *notes)
            contents, filename = contents[0], names[0]

        if ctx.triggered_id == "demo-button":
            if not demo_clicks:
                raise PreventUpdate
            filename = DEMO_FILENAME
            try:
                data = read_demo(assets_folder)
            except OSError:
                return (no_update, no_update, "The demo image is missing from this installation.", "", None,
                        no_update, no_update, no_update, *NO_QUEUE)
        else:
            if contents is None:
                raise PreventUpdate
            try:
                data = decode_upload(contents, filename)
            except ClientError as exc:
                return (no_update, no_update, _message(filename, exc), "", None, no_update, no_update, no_update,
                        *NO_QUEUE)
        try:
            image, fig, status = handle_upload(client, data, filename or "image", opacity, token)
        except SaemiError as exc:
            return (no_update, no_update, _message(filename, exc), "", None, no_update, no_update, no_update,
                    *NO_QUEUE)
        except Exception as exc:  # a bug must still leave a readable page
            log.exception("upload of %s failed", filename)
            return (no_update, no_update, _message(filename, f"unexpected error ({type(exc).__name__}); see the "
                                                             "server log"), "", None, no_update, no_update, no_update,
                    *NO_QUEUE)
        # a calibration belongs to its image, unless "use for all images" is ticked
        nm = calibration.next_calibration(nm_current, image.get("nm_per_pixel"), bool(for_all))
        entry = {**{k: image.get(k) for k in sample.ENTRY_KEYS}, "nm": nm, "settings": None, "removed": None}
        one = sample.new_sample(sample.sample_name([image["filename"]]),
                                controls.settings_from_controls(*control_values), [entry])
        return (image, fig, "", status, None, calibration.field_value(nm, field_unit),
                figures.graph_style(image["width"], image["height"]), one, *NO_QUEUE)


def register_reupload(app):
    """Keep the upload in the browser (``upload-data-store``) for when the server drops it.

    The copy is made in the browser, so it never travels with a slider move;
    ``controls.on_expired`` sends it back only after a 404 ``not_found``.
    """
    # Triggered by the file's name and date, not by ``contents``: on_upload outputs ``contents``
    # (it clears it), and Dash holds back a callback whose input a pending callback will write,
    # until after the clearing. These two are set with ``contents`` and nobody else writes them.
    app.clientside_callback(
        """function(filename, lastModified, contents) {
            if (Array.isArray(contents)) {  // one image of one upload: kept; a sample's files are parked on the server
                if (contents.length !== 1) { return window.dash_clientside.no_update; }
                contents = contents[0];
                filename = Array.isArray(filename) ? filename[0] : filename;
            }
            if (!contents) { return window.dash_clientside.no_update; }
            return {contents: contents, filename: filename};
        }""",
        Output("upload-data-store", "data"),
        Input("upload", "filename"),
        Input("upload", "last_modified"),
        State("upload", "contents"),
        prevent_initial_call=True,
    )



def held_bytes(held, image, assets_folder):
    """The bytes of the current image as the browser holds them (None when it holds none)."""
    if image.get("filename") == DEMO_FILENAME:
        return read_demo(assets_folder)
    if held and held.get("contents") and held.get("filename") == image.get("filename"):
        return decode_upload(held["contents"], held.get("filename"))
    return None


def _message(filename, exc):
    return f"Could not analyse {filename or 'the file'}: {sentence_tail(getattr(exc, 'message', exc))}"
