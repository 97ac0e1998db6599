"""Security for any SAEMI Flask server: response headers, optional access control, JSON errors.

One hook, :func:`install_security`, applied to every server SAEMI builds (the
backend of :func:`saemi.api.create_app` and the page's server of
:func:`saemi.ui.create_dash_app`, including a front end without a local
backend):

* **Headers** on every response: ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` and a
  ``Content-Security-Policy``. JSON and files get ``default-src 'none'``; the
  page gets :func:`page_policy`, which allows only the server's own scripts plus
  the hashes of Dash's inline scripts (``app.config["SAEMI_CSP_SCRIPT_HASHES"]``,
  set by the Dash app once its callbacks exist).
* **Access control** (off by default, for a local run), from the environment:
  ``SAEMI_BASIC_AUTH`` = ``user:password[,user2:password2]`` asks for HTTP basic
  auth on the page and the API; ``SAEMI_API_TOKEN`` lets API clients send
  ``Authorization: Bearer <token>`` instead. ``/api/v1/health`` and
  ``/api/v1/ready`` stay open for load balancers (they reveal nothing but
  "up" and "model loaded").

Passwords and tokens are compared in constant time and never logged.
"""

import base64
import binascii
import hmac
import logging

log = logging.getLogger("saemi.api")

#: Paths a load balancer must reach without credentials.
OPEN_PATHS = ("/api/v1/health", "/api/v1/ready")

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def page_policy(script_hashes=()):
    """The Content-Security-Policy of the Dash page.

    Parameters
    ----------
    script_hashes : sequence of str
        CSP hashes (``'sha256-...'``) of the page's inline scripts, from
        :meth:`dash.Dash.csp_hashes`.

    Returns
    -------
    str
    """
    scripts = " ".join(["'self'", *script_hashes])
    return ("default-src 'self'; "
            f"script-src {scripts}; "
            # React and Plotly set inline styles; styles cannot run code.
            "style-src 'self' 'unsafe-inline'; "
            # the micrograph and its overlays are data: URLs drawn by Plotly
            "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
            "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def parse_basic_auth(value):
    """``user:password[,user2:password2]`` to a dict (empty when unset).

    Raises
    ------
    ValueError
        For an entry without a user name or a password, so that a
        misconfigured server refuses to start instead of running open.
    """
    users = {}
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ValueError("SAEMI_BASIC_AUTH entries must be user:password (comma-separated)")
        users[user] = password
    return users


def _basic_ok(header, users):
    if not header or not header[:6].lower() == "basic ":
        return False
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    expected = users.get(user)
    # compare something of equal cost even for an unknown user
    return hmac.compare_digest(password.encode(), (expected or "\0" * 16).encode()) and expected is not None


def _bearer_ok(header, token):
    if not token or not header or not header[:7].lower() == "bearer ":
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def install_security(app, basic_auth="", api_token="", api_prefix="/api/v1"):
    """Add the headers and (when configured) the access check to a Flask app.

    Parameters
    ----------
    app : flask.Flask
    basic_auth : str
        ``SAEMI_BASIC_AUTH``: ``user:password[,...]``; empty for no basic auth.
    api_token : str
        ``SAEMI_API_TOKEN``: a bearer token accepted on ``api_prefix``; empty for none.
    api_prefix : str

    Returns
    -------
    flask.Flask
        ``app``. Installing twice on one app is a no-op.
    """
    from flask import request

    from .errors import error_response

    if app.extensions.get("saemi_security"):
        return app
    users = parse_basic_auth(basic_auth)
    token = (api_token or "").strip()
    app.extensions["saemi_security"] = {"basic_auth": bool(users), "api_token": bool(token)}

    if users or token:
        @app.before_request
        def _require_credentials():
            path = request.path
            if path in OPEN_PATHS or request.method == "OPTIONS":
                return None
            header = request.headers.get("Authorization", "")
            is_api = path == api_prefix or path.startswith(api_prefix + "/")
            if (users and _basic_ok(header, users)) or (is_api and _bearer_ok(header, token)):
                return None
            challenge = {"WWW-Authenticate": 'Basic realm="SAEMI", charset="UTF-8"'} if users else \
                {"WWW-Authenticate": 'Bearer realm="SAEMI"'}
            return error_response("unauthorized", "credentials are required for this server "
                                                  "(HTTP basic auth" + (" or a bearer token" if token else "") + ")",
                                  401, challenge)

    @app.after_request
    def _security_headers(resp):
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype == "text/html":
            policy = page_policy(app.config.get("SAEMI_CSP_SCRIPT_HASHES", ()))
        else:
            policy = API_POLICY
        h.setdefault("Content-Security-Policy", policy)
        return resp

    return app
