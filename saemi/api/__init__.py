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
            # e.g. cuda asked for on a CPU box: a server problem, not the client's
            raise SaemiError(exc.message, code="no_model") from exc

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
    except Exception as exc:  # keep serving /health and /ready; they report the problem
        state.load_error = getattr(exc, "message", None) or str(exc)
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


def register_api(app, config=None):
    """Add the SAEMI backend to an existing Flask app.

    Sets ``app.extensions["saemi"]`` (the :class:`saemi.service.AnalysisService`)
    and ``app.extensions["saemi_api"]`` (:class:`ApiState`), registers the
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
    service = AnalysisService(_segmenter_factory(weights, cfg["SAEMI_DEVICE"]),
                              cache_size=cfg["SAEMI_CACHE_SIZE"], max_pixels=cfg["SAEMI_MAX_PIXELS"])
    if weights:
        from pathlib import Path

        p = Path(weights)
        service.card = read_card(p if p.is_dir() else p.parent)
    state = ApiState(allowed_origins(cfg["SAEMI_ALLOWED_ORIGINS"]))
    app.extensions["saemi"] = service
    app.extensions["saemi_api"] = state

    register_error_handlers(app)
    app.register_blueprint(bp, url_prefix=API_PREFIX)
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

