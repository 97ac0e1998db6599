"""One JSON error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

:class:`saemi.errors.SaemiError` codes map to HTTP statuses in
:data:`STATUS_OF_CODE`. Flask's own errors (unknown route, wrong method, body
over ``MAX_CONTENT_LENGTH``, malformed JSON) get the same shape, so a client
never has to parse an HTML error page. Anything unexpected is logged with its
traceback and answered with a generic 500; its details stay in the log.
"""

from flask import jsonify
from werkzeug.exceptions import HTTPException

from ..errors import SaemiError

#: SaemiError.code -> HTTP status. An empty upload is a malformed request (400):
#: there is no media whose type could be wrong, so 415 would mislead.
STATUS_OF_CODE = {
    "bad_request": 400,
    "empty": 400,
    "not_found": 404,
    "too_large": 413,
    "not_an_image": 415,
    "unsupported_media_type": 415,
    "too_small": 422,
    "blank_image": 422,
    "bad_parameter": 422,
    "bad_input": 422,
    "unauthorized": 401,
    "no_model": 503,
    "not_ready": 503,
    "timeout": 503,
    "busy": 503,
}

#: Codes for Flask/werkzeug HTTP errors, by status.
CODE_OF_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                  415: "unsupported_media_type", 429: "too_many_requests", 503: "unavailable"}


def error_response(code, message, status=None, headers=None):
    """A JSON error response; ``status`` defaults to the one of ``code``."""
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status or STATUS_OF_CODE.get(code, 400)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _saemi_error(exc):
    return error_response(exc.code, exc.message)


def _http_error(exc):
    status = exc.code or 500
    code = CODE_OF_STATUS.get(status, "http_error" if status < 500 else "server_error")
    if status == 413:
        message = "request body is too large for this server (see SAEMI_MAX_UPLOAD_MB)"
    elif status == 400 and "JSON" in (exc.description or ""):
        message = "request body is not valid JSON"
    else:
        message = exc.description or exc.name
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    return error_response(code, message, status, headers)


def _unexpected(exc):
    from flask import current_app, request

    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response("internal_error", "internal server error; the details are in the server log", 500)


def register_error_handlers(app):
    """Install the JSON error handlers on ``app`` (app-wide: routing 404s never reach a blueprint)."""
    app.register_error_handler(SaemiError, _saemi_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
