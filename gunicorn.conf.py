"""Gunicorn settings for ``gunicorn -c gunicorn.conf.py`` from the repository root (Procfile, Docker).

The settings themselves ship inside the package, ``saemi/gunicorn_conf.py`` (what ``saemi serve``
passes to gunicorn), so an installed saemi has them too; see that file for the environment it reads.
"""

from saemi.gunicorn_conf import *  # noqa: F401,F403  (bind, workers, threads, hooks, ...)
