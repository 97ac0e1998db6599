"""The prediction backend: a Flask app factory and the ``/api/v1`` blueprint.

Run it alone (the GPU-server command)::

    gunicorn -c gunicorn.conf.py "saemi.api:create_app()"

or mount it in another Flask server (the Dash front end does)::

    server = saemi.api.create_app()
    service = server.extensions["saemi"]        # the AnalysisService, for in-process calls

Nothing is created at import time: each call of :func:`create_app` builds its
own app and :class:`saemi.service.AnalysisService`, and (unless
``SAEMI_LOAD`` says otherwise) loads the model before returning, so a
gunicorn worker takes requests only once its model is in memory. Settings:
:mod:`saemi.api.config`.
"""

import logging
import threading

from flask import Flask

from ..errors import SaemiError
from .config import SETTINGS, allowed_origins, load_config
from .errors import error_response, register_error_handlers
from .openapi import openapi_document
from .security import install_security

API_PREFIX = "/api/v1"

__all__ = ["create_app", "register_api", "API_PREFIX", "SETTINGS", "openapi_document", "error_response"]

log = logging.getLogger("saemi.api")


class ApiState:
    """Per-app bookkeeping beside the service (``app.extensions["saemi_api"]``).

    Attributes
    ----------
    load_error : str or None
        Why loading the model failed, for /health and /ready.
    allowed_origins : set of str
    loader : threading.Thread or None
        The background loader (``SAEMI_LOAD=background``).
    """

    def __init__(self, origins):
        self.load_error = None
        self.allowed_origins = origins
        self.loader = None


def _segmenter_factory(weights, device):
    """A factory for the service that reports every load failure as ``no_model`` (503).

    The weights and device come from the app's config, not from globals, so
    two apps in one process may differ; ``default_segmenter`` still caches
    one network per (weights, device) per process.
    """
    def factory():
        from ..pipeline import default_segmenter

        try:
            return default_segmenter(weights, device)
        except SaemiError as exc:
            # e.g. cuda asked for on a CPU box: a server problem, not the client's. The
            # reason (it may hold a filesystem path) goes to the log, not to the client.
            log.error("model could not be loaded: %s", exc.message)
            raise SaemiError("the model could not be loaded; the reason is in the server log",
                             code="no_model") from exc

    return factory


def _release_free_memory():
    """Hand freed heap pages back to the OS (glibc only; a no-op elsewhere).

    Loading builds the network and a state dict side by side; glibc keeps the
    freed copy mapped, about 150 MB per worker (measured), unless asked.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _load(service, state):
    try:
        seg = service.load()
        _release_free_memory()
        log.info("model loaded on %s from %s", seg.device, getattr(seg, "weights_path", "?"))
    except SaemiError as exc:  # the factory has logged the reason; /health and /ready report it
        state.load_error = exc.message
    except Exception as exc:  # keep serving /health and /ready; they report the problem
        state.load_error = str(exc)
        log.error("model could not be loaded: %s", state.load_error)


def _use_gunicorn_logging(app):
    # Under gunicorn, app and saemi logs go where gunicorn's error log goes.
    gl = logging.getLogger("gunicorn.error")
    if gl.handlers:
        for name in ("saemi", app.logger.name):
            lg = logging.getLogger(name)
            lg.handlers = gl.handlers
            lg.setLevel(gl.level)
            lg.propagate = False


def _api_paths_answer_json(app):
    """Unknown ``/api/v1`` paths and wrong methods get JSON 404/405, whatever else is mounted.

    The Dash page registers a catch-all ``GET /<path>`` that would answer
    ``GET /api/v1/analyze`` or ``/api/v1/nonexist`` with the HTML page and 200.
    Before any view runs, a request under the prefix that did not reach the
    blueprint is matched against the blueprint's rules alone.
    """
    from flask import request
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import Map, Rule

    def api_map():
        rules = [Rule(r.rule, endpoint=r.endpoint, methods=r.methods) for r in app.url_map.iter_rules()
                 if r.endpoint.startswith("saemi_api.")]
        return Map(rules, strict_slashes=False)

    cache = {}

    @app.before_request
    def _json_for_api_paths():
        path = request.path
        if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")) or request.blueprint == "saemi_api":
            return None
        if "map" not in cache:
            cache["map"] = api_map()
        try:
            cache["map"].bind("localhost").match(path, method=request.method)
        except HTTPException as exc:
            return _http_error_response(exc)
        return None


def _http_error_response(exc):
    from .errors import _http_error

    if exc.code in (301, 302, 307, 308):  # a redirect to the slash form: treat as unknown
        return error_response("not_found", "no such API path", 404)
    return _http_error(exc)


def register_api(app, config=None):
    """Add the SAEMI backend to an existing Flask app.

    Sets ``app.extensions["saemi"]`` (the :class:`saemi.service.AnalysisService`),
    ``app.extensions["saemi_api"]`` (:class:`ApiState`) and
    ``app.extensions["saemi_jobs"]`` (the :class:`saemi.jobs.JobBoard` of background analyses), registers the
    blueprint at :data:`API_PREFIX`, the JSON error handlers and the upload
    limit, and loads the model per ``SAEMI_LOAD``.

    Parameters
    ----------
    app : flask.Flask
    config : dict, optional
        Overrides of the ``SAEMI_*`` settings (see :mod:`saemi.api.config`).

    Returns
    -------
    flask.Flask
        ``app``.
    """
    from ..card import read_card
    from ..jobs import JobBoard
    from ..service import AnalysisService
    from .routes import bp

    cfg = load_config(config)
    app.config.update(cfg)
    app.config["SAEMI_API_PREFIX"] = API_PREFIX
    max_bytes = int(cfg["SAEMI_MAX_UPLOAD_MB"] * 1024 * 1024)
    # The body may carry the file base64-encoded in JSON (4/3 larger) plus form
    # fields; the decoded file is checked against the exact limit in the routes.
    app.config["MAX_CONTENT_LENGTH"] = max(app.config.get("MAX_CONTENT_LENGTH") or 0,
                                           max_bytes * 4 // 3 + 1024 * 1024)
    # Flask's default (500 kB) would reject a Dash callback or form field that
    # carries a base64 image; the body limit above still applies.
    app.config["MAX_FORM_MEMORY_SIZE"] = app.config["MAX_CONTENT_LENGTH"]

    weights = cfg["SAEMI_WEIGHTS"]
    from ..cache import open_store

    store = open_store(cfg["SAEMI_REDIS_URL"] or None, cfg["SAEMI_CACHE_DIR"] or None, cfg["SAEMI_CACHE_BYTES"],
                       cfg["SAEMI_CACHE_TTL"])
    service = AnalysisService(_segmenter_factory(weights, cfg["SAEMI_DEVICE"]), store=store,
                              max_pixels=cfg["SAEMI_MAX_PIXELS"], max_upload_bytes=max_bytes)
    if weights:
        from pathlib import Path

        p = Path(weights)
        service.card = read_card(p if p.is_dir() else p.parent)
    state = ApiState(allowed_origins(cfg["SAEMI_ALLOWED_ORIGINS"]))
    app.extensions["saemi"] = service
    app.extensions["saemi_api"] = state
    app.extensions["saemi_jobs"] = JobBoard(store, timeout=cfg["SAEMI_TIMEOUT"])

    register_error_handlers(app)
    install_security(app, cfg["SAEMI_BASIC_AUTH"], cfg["SAEMI_API_TOKEN"], API_PREFIX)
    app.register_blueprint(bp, url_prefix=API_PREFIX)
    _api_paths_answer_json(app)
    _use_gunicorn_logging(app)

    mode = cfg["SAEMI_LOAD"]
    if mode == "eager":
        _load(service, state)
    elif mode == "background":
        state.loader = threading.Thread(target=_load, args=(service, state), name="saemi-model-loader",
                                        daemon=True)
        state.loader.start()
    return app


def create_app(config=None):
    """Build the backend Flask app (the gunicorn entry point ``saemi.api:create_app()``).

    Parameters
    ----------
    config : dict, optional
        Overrides of the ``SAEMI_*`` settings; anything else in it is copied
        into ``app.config`` as well (e.g. ``TESTING``).

    Returns
    -------
    flask.Flask
        With ``app.extensions["saemi"]`` holding the analysis service.

    Examples
    --------
    >>> app = create_app({"SAEMI_LOAD": "lazy"})
    >>> app.test_client().get("/api/v1/health").json["status"]
    'ok'
    """
    app = Flask("saemi")
    extra = {k: v for k, v in (config or {}).items() if k not in SETTINGS}
    app.config.update(extra)
    register_api(app, config)
    return app

