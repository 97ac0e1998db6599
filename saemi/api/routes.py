"""The ``/api/v1`` blueprint: thin HTTP glue over :class:`saemi.service.AnalysisService`.

Handlers only parse requests and shape responses; every decision about images
and settings is the service's, so the in-process UI client and this API behave
the same. Errors are raised as :class:`saemi.errors.SaemiError` and turned into
JSON by :mod:`saemi.api.errors`.
"""

import base64
import binascii
import json
import re

from flask import Blueprint, Response, current_app, jsonify, request

from ..errors import SaemiError
from ..jobs import run_reporting
from ..settings import names as setting_names
from ..service import OVERLAY_MODES, safe_stem, upload_label
from .errors import error_response
from .openapi import openapi_document

bp = Blueprint("saemi_api", __name__)

SEGMENT_SETTINGS = setting_names("segment")
#: Request keys that are not settings; any other key must be a setting name.
REQUEST_KEYS = frozenset({"image", "filename", "image_id", "settings", "overlay", "overlay_alpha",
                          "include_images", "progress"})
_DATA_URL = re.compile(r"^data:[^,]{0,200};base64,", re.IGNORECASE)


def _service():
    return current_app.extensions["saemi"]


def _state():
    return current_app.extensions["saemi_api"]


# --- request parsing -------------------------------------------------------------------

def _body_bytes():
    """The raw request body; 413 past ``MAX_CONTENT_LENGTH`` even without a Content-Length.

    For a chunked body werkzeug stops reading at the limit without a word, so
    an oversized body would look truncated (400 or 415); one more byte read past
    the limit raises the 413 it should be.
    """
    raw = request.get_data(cache=True)
    if request.content_length is None and current_app.config.get("MAX_CONTENT_LENGTH") \
            and len(raw) >= current_app.config["MAX_CONTENT_LENGTH"]:
        request.stream.read(1)  # raises RequestEntityTooLarge when there is more
    return raw


def _json_body():
    """The JSON object of the request (400 if malformed or not an object)."""
    _body_bytes()
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # json nests one Python frame per level: 100,000 "[" exhaust the stack
        raise SaemiError("request body is not valid JSON (nested too deeply)", code="bad_request") from None
    if body is None:
        # get_json(silent=True) hides why: tell empty bodies and bad JSON apart
        raw = request.get_data(cache=True)
        if not raw.strip():
            raise SaemiError("request body is empty; send JSON or a multipart upload", code="bad_request")
        raise SaemiError("request body is not valid JSON", code="bad_request")
    if not isinstance(body, dict):
        raise SaemiError("request body must be a JSON object", code="bad_request")
    return body


def _decode_base64(text):
    if not isinstance(text, str):
        raise SaemiError("'image' must be a base64 string", code="bad_request")
    text = _DATA_URL.sub("", text.strip(), count=1)  # accept data URLs as Dash's upload makes them
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaemiError("'image' is not valid base64", code="bad_request") from None


def _read_request():
    """Parse any supported request body into ``(image_bytes or None, filename, fields dict)``.

    Supported: multipart/form-data (``file`` plus form fields; a ``settings``
    field may hold a JSON object), JSON (``image`` base64 plus fields), and a
    raw image body (``image/*`` or ``application/octet-stream``; fields from
    the query string).
    """
    ctype = (request.mimetype or "").lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields_ = {k: v for k, v in request.form.items()}
        upload = request.files.get("file")
        if len(request.files) and upload is None:
            raise SaemiError("upload the image in the multipart field 'file'", code="bad_request")
        data = upload.read() if upload is not None else None
        # the client's file name is only ever a label (a CSV name), never a path
        filename = fields_.pop("filename", None) or (upload.filename if upload is not None else None)
        if "settings" in fields_:
            try:
                fields_["settings"] = json.loads(fields_["settings"]) if fields_["settings"].strip() else {}
            except ValueError:
                raise SaemiError("form field 'settings' is not valid JSON", code="bad_request") from None
        return data, upload_label(filename), fields_
    if ctype == "application/json" or ctype.endswith("+json"):
        body = _json_body()
        data = _decode_base64(body["image"]) if body.get("image") is not None else None
        filename = body.get("filename")
        if filename is not None and not isinstance(filename, str):
            raise SaemiError("'filename' must be a string", code="bad_request")
        return data, upload_label(filename), {k: v for k, v in body.items() if k not in ("image", "filename")}
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        fields_ = dict(request.args.items())
        return _body_bytes(), upload_label(fields_.pop("filename", None)), fields_
    if not ctype and not request.content_length:
        raise SaemiError("no image: send multipart field 'file', JSON {\"image\": base64} or a raw image body",
                         code="bad_request")
    raise SaemiError(f"unsupported content type {ctype or '(none)'!r}; send multipart/form-data, "
                     "application/json or an image body", code="unsupported_media_type")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool(value, name):
    """A JSON boolean, or a form / query-string word (true/false, 1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise SaemiError(f"{name!r} must be true or false, got {value!r}", code="bad_parameter")


def _deadline(progress=None):
    """The request's deadline; with a ``progress`` token its stages are kept for ``GET /progress/<token>``."""
    from ..budget import Deadline

    stages = None
    if progress is not None:
        stages = _service().stage_log(progress) if isinstance(progress, str) else None
        if stages is None:
            raise SaemiError("'progress' must be a token of 8 to 100 letters, digits, '-' or '_'",
                             code="bad_parameter")
    return Deadline(current_app.config["SAEMI_TIMEOUT"], on_stage=stages)


def _settings_from(fields_):
    """The settings dict of a request: a nested ``settings`` object plus top-level setting keys.

    Validated here (unknown names and bad values are a 422 before any work),
    and passed on as given: the service tells given settings from defaults.
    """
    nested = fields_.get("settings", {})
    if nested is None:
        nested = {}
    if not isinstance(nested, dict):
        raise SaemiError("'settings' must be a JSON object", code="bad_request")
    top = {k: v for k, v in fields_.items() if k not in REQUEST_KEYS}
    clash = sorted(set(top) & set(nested))
    if clash:
        raise SaemiError(f"setting(s) given twice (top level and in 'settings'): {', '.join(clash)}",
                         code="bad_request")
    values = {**nested, **top}
    _service().parse_settings(values)
    return values


def _image_id(value):
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SaemiError("'image_id' must be a non-empty string", code="bad_request")
    return value


# --- endpoints ---------------------------------------------------------------------------

@bp.get("/health")
def health():
    """Liveness: the process answers. Always 200 while the worker runs."""
    service, state = _service(), _state()
    h = service.health()
    # no version and no path here: this answers anyone (the details are in the server log)
    return jsonify({"status": "ok", "model_loaded": h["model_loaded"],
                    "device": h["device"], "engine": h["engine"], "cached_images": h["cached_images"],
                    "load_error": _public_load_error(state)})


def _public_load_error(state):
    return None if not state.load_error else "the model could not be loaded; the reason is in the server log"


@bp.get("/ready")
def ready():
    """Readiness: 200 once the model is in memory, 503 before (or if loading failed)."""
    service, state = _service(), _state()
    if not service.loaded:
        if state.load_error:
            return error_response("no_model", _public_load_error(state), 503)
        return error_response("not_ready", "model is still loading", 503, {"Retry-After": "5"})
    return jsonify({"ready": True, "device": service.health()["device"]})


@bp.get("/model")
def model():
    """The model card of the weights in use."""
    return jsonify(_service().card)


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(request.script_root + current_app.config["SAEMI_API_PREFIX"]))


@bp.post("/segment")
def segment():
    data, filename, fields_ = _read_request()
    if data is None:
        raise SaemiError("no image: send multipart field 'file' or JSON {\"image\": base64}", code="bad_request")
    extra = sorted(set(fields_) - {"image_id", "preview", "progress", *SEGMENT_SETTINGS})
    if extra:
        raise SaemiError(f"unknown field(s) for /segment: {', '.join(extra)} (/segment takes image_id, preview, "
                         f"progress and {', '.join(SEGMENT_SETTINGS)})", code="bad_parameter")
    settings = {k: fields_[k] for k in SEGMENT_SETTINGS if k in fields_}
    image_id = _image_id(fields_.get("image_id"))
    preview = _bool(fields_.get("preview", False), "preview")
    # the upload's size and name are checked by the service, for the page's uploads too
    return jsonify(run_reporting(_service().segment, _deadline(fields_.get("progress")), data,
                                 filename or "image", settings, image_id=image_id, preview=preview))


def _analysis_request(include_images_default):
    """The keyword arguments of :meth:`AnalysisService.analyze` that a request asks for, and its progress token.

    The request's shape and settings are checked here (422 before any work).
    """
    data, filename, fields_ = _read_request()
    progress = fields_.pop("progress", None)
    image_id = _image_id(fields_.get("image_id"))
    if (data is None) == (image_id is None):
        raise SaemiError("give either an image ('file' or 'image') or an 'image_id', not both"
                         if data is not None else "no image: send an image or the 'image_id' of a segmented one",
                         code="bad_request")
    overlay = fields_.get("overlay", "outline")
    if overlay not in OVERLAY_MODES:
        raise SaemiError(f"'overlay' must be one of {', '.join(OVERLAY_MODES)}", code="bad_parameter")
    alpha = fields_.get("overlay_alpha", 0.7)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        alpha = float("nan")
    if isinstance(fields_.get("overlay_alpha"), bool) or not 0.0 <= alpha <= 1.0:
        raise SaemiError("'overlay_alpha' must be a number from 0 to 1", code="bad_parameter")
    include_images = _bool(fields_.get("include_images", include_images_default), "include_images")
    settings = _settings_from(fields_)
    return dict(image_id=image_id, data=data, filename=filename or ("image" if data else None),
                settings=settings, overlay=overlay, overlay_alpha=alpha, include_images=include_images), progress


@bp.post("/analyze")
def analyze():
    request_args, progress = _analysis_request(True)
    return jsonify(run_reporting(_service().analyze, _deadline(progress), **request_args))


@bp.get("/progress/<token>")
def progress(token):
    """The stage of the work a ``progress`` token was given with, from any worker (404 before it reports)."""
    record = _service().progress(token)
    if record is None:
        raise SaemiError("no work has reported under this progress token (yet)", code="not_found")
    return jsonify(record)


@bp.post("/jobs")
def submit_job():
    """Queue an analysis (the body of ``/analyze``) and answer at once with its job (202).

    The job runs in this worker; ``GET /jobs/<job_id>`` from any worker reports
    its stage and, once done, the ``/analyze`` response (without images unless
    ``include_images`` is true: they are one ``/analyze`` by ``image_id`` away).
    """
    request_args, progress = _analysis_request(False)
    if progress is not None:
        raise SaemiError("a job reports its stages at GET /jobs/<job_id>: /jobs takes no 'progress' token",
                         code="bad_parameter")
    service = _service()
    # what can be refused now is refused now (the service checks again when the job runs)
    if request_args["data"] is not None:
        service.check_upload(request_args["data"])
    else:
        service.check_image_id(request_args["image_id"])
    status = current_app.extensions["saemi_jobs"].submit(
        lambda deadline: service.analyze(**request_args, deadline=deadline),
        label=request_args["filename"] or request_args["image_id"])
    status["status_url"] = f"{request.script_root}{current_app.config['SAEMI_API_PREFIX']}/jobs/{status['job_id']}"
    resp = jsonify(status)
    resp.status_code = 202
    resp.headers["Location"] = status["status_url"]
    return resp


@bp.get("/jobs/<job_id>")
def job_status(job_id):
    return jsonify(current_app.extensions["saemi_jobs"].get(job_id))


@bp.post("/layer")
def layer():
    """The particle layer and hover grid of an analysis, drawn from the labels the server keeps."""
    data, _, fields_ = _read_request()
    if data is not None:
        raise SaemiError("/layer takes the image_id of an analysed image, not an image", code="bad_request")
    image_id = _image_id(fields_.get("image_id"))
    if image_id is None:
        raise SaemiError("no image_id: /layer draws an image segmented before", code="bad_request")
    mode = fields_.get("overlay", "outline")
    grid = _bool(fields_.get("grid", True), "grid")
    settings = _settings_from({k: v for k, v in fields_.items() if k != "grid"})
    return jsonify(_service().particle_layer(image_id, settings, mode, grid))


@bp.get("/analyses/<image_id>/particles.csv")
def particles_csv(image_id):
    text, name = _service().particles_csv(image_id)
    # `name` comes from saemi.service.safe_stem: only [A-Za-z0-9._-], safe in a quoted header
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# --- samples (see saemi.sample) ------------------------------------------------------------

@bp.get("/analyses/<image_id>/preview")
def preview(image_id):
    """The image of an upload as a browser shows it (a JPEG), without running the network again."""
    return jsonify(_service().preview(_image_id(image_id)))


@bp.post("/sample")
def sample():
    """The combined distribution of several analysed images (JSON), or its particle or summary CSV."""
    from ..sample import SAMPLE_FORMATS, public, sample_csv

    body = _json_body()
    extra = sorted(set(body) - {"images", "metric", "weighting", "filters", "unit", "format", "name"})
    if extra:
        raise SaemiError(f"unknown field(s) for /sample: {', '.join(extra)}", code="bad_parameter")
    fmt = body.get("format", "json")
    if fmt not in SAMPLE_FORMATS:
        raise SaemiError(f"'format' must be one of {', '.join(SAMPLE_FORMATS)}", code="bad_parameter")
    stats = _service().sample(body.get("images"), body.get("metric", "equivalent_diameter"),
                              body.get("weighting", "number"), body.get("filters"), body.get("unit", "auto"))
    if fmt == "json":
        return jsonify(public(stats))
    name = safe_stem(body.get("name") or "sample")
    return Response(sample_csv(stats, fmt, body.get("name") or "sample"), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}_{fmt.replace(".csv", "")}.csv"'})


# --- manual corrections ---------------------------------------------------------------------

#: Keys of an edits request that are not settings (see saemi.edits).
EDIT_KEYS = frozenset({"edits", "op", "polygon", "points", "line", "labels", "settings"})


def _given_settings(fields_, own_keys):
    """The settings a request names, or None when it names none (the last analysis's then apply)."""
    rest = {k: v for k, v in fields_.items() if k not in own_keys}
    if not rest and fields_.get("settings") is None:
        return None
    return _settings_from({k: v for k, v in fields_.items() if k not in own_keys or k == "settings"})


def _optional_json_body():
    raw = _body_bytes()
    return _json_body() if raw.strip() else {}


@bp.get("/analyses/<image_id>/edits")
def list_edits(image_id):
    return jsonify(_service().list_edits(image_id))


@bp.post("/analyses/<image_id>/edits")
def add_edits(image_id):
    """Add one edit (the body is the edit) or several (``{"edits": [...]}``) to an image's labelling."""
    body = _json_body()
    if "edits" in body and "op" in body:
        raise SaemiError("send one edit ({\"op\": ...}) or a list ({\"edits\": [...]}), not both",
                         code="bad_request")
    if "edits" in body:
        edits = body["edits"]
    elif "op" in body:
        edits = {k: body[k] for k in ("op", "polygon", "points", "line", "labels") if k in body}
    else:
        raise SaemiError("no edit: send {\"op\": ..., ...} or {\"edits\": [...]}", code="bad_request")
    out = _service().edit(image_id, edits, _given_settings(body, EDIT_KEYS))
    return jsonify(out), 201


@bp.post("/analyses/<image_id>/edits/undo")
def undo_edit(image_id):
    return jsonify(_service().undo(image_id, _given_settings(_optional_json_body(), {"settings"})))


@bp.post("/analyses/<image_id>/edits/redo")
def redo_edit(image_id):
    return jsonify(_service().redo(image_id, _given_settings(_optional_json_body(), {"settings"})))


@bp.delete("/analyses/<image_id>/edits")
def clear_edits(image_id):
    return jsonify(_service().clear_edits(image_id, _given_settings(_optional_json_body(), {"settings"})))


def _query_settings():
    """Settings given in the query string (as text), or None for the last analysis's."""
    args = {k: v for k, v in request.args.items() if k != "every_particle"}
    return _settings_from(args) if args else None


@bp.get("/analyses/<image_id>/labels.png")
def labels_png(image_id):
    every = _bool(request.args.get("every_particle", "false"), "every_particle")
    data, name = _service().labels_png(image_id, _query_settings(), every_particle=every)
    return Response(data, mimetype="image/png", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/analyses/<image_id>/training-pair.zip")
def training_pair(image_id):
    data, name = _service().training_pair(image_id, _query_settings())
    return Response(data, mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.after_request
def _cors(resp):
    """Minimal CORS for browser clients on other origins (``SAEMI_ALLOWED_ORIGINS``)."""
    origin = request.headers.get("Origin")
    allowed = _state().allowed_origins
    if origin and allowed and ("*" in allowed or origin.rstrip("/") in allowed):
        resp.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        resp.headers["Access-Control-Expose-Headers"] = "Content-Disposition"
        if "*" not in allowed:
            resp.headers.add("Vary", "Origin")
        if request.method == "OPTIONS":
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = "Content-Type"
            resp.headers["Access-Control-Max-Age"] = "600"
    return resp
