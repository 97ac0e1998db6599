"""SAEMI web app: ``gunicorn app:server``.

By default the prediction backend (``saemi.api``, REST at ``/api/v1``) runs in
the same process and the page calls it in-process. With ``SAEMI_BACKEND_URL``
set, no model is loaded here and the page posts to that backend instead.
"""

from saemi.ui import build_app

app = build_app()
server = app.server

if __name__ == "__main__":  # development only: python app.py
    app.run(debug=False, host="127.0.0.1", port=8050)
