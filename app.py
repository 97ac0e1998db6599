"""SAEMI web app: ``gunicorn app:server``.

By default the prediction backend (``saemi.api``, REST at ``/api/v1``) runs in
the same process and the page calls it in-process. With ``SAEMI_BACKEND_URL``
set, no model is loaded here and the page posts to that backend instead.
The app itself is ``saemi.wsgi`` (shipped in the package, what ``saemi serve`` runs).
"""

from saemi.wsgi import app, server  # noqa: F401

if __name__ == "__main__":  # development only: python app.py
    app.run(debug=False, host="127.0.0.1", port=8050)
