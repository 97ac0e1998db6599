"""The Dash front end: layout and callbacks, grouped by feature.

``create_dash_app(server, client)`` builds the app on a Flask server and an
:class:`~saemi.ui.client.AnalysisClient`; ``build_app()`` picks both from the
environment the way ``app.py`` (``gunicorn app:server``) does:

* default: the backend blueprint (``saemi.api``) in the same process, called
  in-process by the UI;
* ``SAEMI_BACKEND_URL`` set: a bare Flask server, no model loaded here, and
  HTTP to that backend (``SAEMI_BACKEND_TIMEOUT`` seconds, default 120; with
  ``SAEMI_BACKEND_TOKEN`` set, sent as a bearer token to a backend that has
  ``SAEMI_API_TOKEN``).

Nothing in this package imports torch.
"""

import os
from pathlib import Path

from .client import AnalysisClient, ClientError, InProcessClient, RemoteClient

ASSETS = Path(__file__).resolve().parent / "assets"
TITLE = "SAEMI - particle size analysis"

__all__ = ["create_dash_app", "build_app", "client_from_env", "AnalysisClient", "ClientError",
           "InProcessClient", "RemoteClient"]


def client_from_env(server=None, environ=None):
    """The client the environment asks for: remote with ``SAEMI_BACKEND_URL``, else in-process."""
    environ = os.environ if environ is None else environ
    url = (environ.get("SAEMI_BACKEND_URL") or "").strip()
    if url:
        return RemoteClient(url, timeout=float(environ.get("SAEMI_BACKEND_TIMEOUT") or 120),
                            token=(environ.get("SAEMI_BACKEND_TOKEN") or "").strip() or None)
    service = None
    if server is not None:
        service = getattr(server, "extensions", {}).get("saemi")
    if service is None:
        from ..service import AnalysisService
        service = AnalysisService()
    return InProcessClient(service)


def build_app(environ=None):
    """Server and Dash app as deployed: see the module docstring."""
    environ = os.environ if environ is None else environ
    if (environ.get("SAEMI_BACKEND_URL") or "").strip():
        import flask

        server = flask.Flask("saemi")
    else:
        from ..api import create_app

        server = create_app()
    return create_dash_app(server, client_from_env(server, environ))


def max_upload_mb(server=None, environ=None):
    """The largest upload the page accepts: the backend's ``SAEMI_MAX_UPLOAD_MB`` (default 50)."""
    environ = os.environ if environ is None else environ
    value = getattr(server, "config", {}).get("SAEMI_MAX_UPLOAD_MB") or environ.get("SAEMI_MAX_UPLOAD_MB")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 50.0
    return value if value > 0 else 50.0


def create_dash_app(server=None, client=None, assets_folder=None):
    """Build the Dash app.

    Parameters
    ----------
    server : flask.Flask, optional
        Default: a new bare Flask app.
    client : AnalysisClient, optional
        Default: :func:`client_from_env` for ``server``.
    assets_folder : path, optional
        CSS, favicon and the demo image; default the package's ``saemi/ui/assets/``.

    Returns
    -------
    dash.Dash
        ``app.server`` is the Flask object to serve.
    """
    import flask

    from . import calibration, controls, editing, histogram, image_view, layout, progress, sample, table, upload

    if server is None:
        server = flask.Flask("saemi")
    if client is None:
        client = client_from_env(server)
    assets_folder = str(Path(assets_folder or ASSETS))
    app = _dash_class()(__name__, server=server, assets_folder=assets_folder, title=TITLE, update_title=None,
               meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"},
                          {"name": "description", "content": "Particle size distributions from electron "
                                                             "micrographs"}])
    app.saemi_client = client
    app.layout = layout.page(client.default_settings(), client.description, max_upload_mb(server))
    staging = sample.Staging()  # a sample's uploads wait here for their turn
    upload.register(app, client, assets_folder, staging)
    upload.register_reupload(app)
    controls.register(app, client, assets_folder)
    calibration.register(app)
    image_view.register(app, client)
    editing.register(app, client)
    histogram.register(app)
    table.register(app)
    sample.register(app, client, staging)
    progress.register(app, client)
    _secure(app, server)
    return app


#: Keys of Dash's page config that only tell an attacker which versions run here.
VERSION_KEYS = ("dash_version", "python_version", "dash_version_url", "ddk_version", "plotly_version")


def _dash_class():
    from dash import Dash

    class SaemiDash(Dash):
        """Dash without the Python, Dash and Plotly versions in the page's config."""

        def _config(self):
            config = super()._config()
            for key in VERSION_KEYS:
                config.pop(key, None)
            return config

    return SaemiDash


def _secure(app, server):
    """Security headers and access control on the page's server (see saemi.api.security).

    The page's inline scripts are allowed by their hashes, computed once every
    callback exists. A server built by :func:`saemi.api.create_app` has the hook
    already; a front-end-only server gets it here, configured from the same
    environment variables.
    """
    from ..api.config import load_config
    from ..api.security import install_security

    server.config["SAEMI_CSP_SCRIPT_HASHES"] = list(app.csp_hashes())
    if not server.extensions.get("saemi_security"):
        cfg = load_config()
        install_security(server, cfg["SAEMI_BASIC_AUTH"], cfg["SAEMI_API_TOKEN"])
