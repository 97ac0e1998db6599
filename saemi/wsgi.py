"""The web app as a module of the package: ``gunicorn saemi.wsgi:server``.

What ``saemi serve`` runs, so an installed saemi (no checkout, no ``app.py``) can serve
the page. ``app.py`` at the repository root is the same app for the Procfile and Docker.
By default the prediction backend (``saemi.api``, REST at ``/api/v1``) runs in the same
process; with ``SAEMI_BACKEND_URL`` set, no model is loaded here and the page posts to
that backend instead.
"""

from .ui import build_app

app = build_app()
server = app.server
