"""Backend configuration: environment variables with documented defaults.

Every setting has the same name as a Flask config key and as an environment
variable, so ``create_app({"SAEMI_TIMEOUT": 60})`` and
``SAEMI_TIMEOUT=60 gunicorn ...`` mean the same thing. Precedence: the dict
given to :func:`saemi.api.create_app`, then the environment, then the defaults
below. Values are read when an app is created, never at import time, so tests
and workers can each have their own.
"""

import os

from ..budget import DEFAULT_MEMORY_MB, pixels_for_memory

#: name -> (default, parser, description). The table in docs/deploy.md mirrors this.
SETTINGS = {
    "SAEMI_WEIGHTS": (None, str, "Weights file (.pt state dict) or folder holding saemi_unet_resnet18.pt "
                                 "and model_card.json. Default: the bundled model_weights/."),
    "SAEMI_DEVICE": ("auto", str, "auto (CUDA when present, else CPU), cpu or cuda."),
    "SAEMI_MAX_UPLOAD_MB": (50.0, float, "Largest image file accepted, in MB (decoded bytes; a base64 JSON "
                                         "body may be about 4/3 of that)."),
    "SAEMI_MAX_PIXELS": (None, int, "Largest image accepted, in pixels (width x height); checked from the "
                                    "header, before decoding. Default: what SAEMI_MEMORY_MB allows "
                                    "(saemi.io.pixels_for_memory), at most 50 megapixels."),
    "SAEMI_MEMORY_MB": (DEFAULT_MEMORY_MB, float, "Memory one worker may use for one analysis on top of its loaded "
                                                 "model, in MB. Images whose measured peak would exceed it are refused "
                                                 "(413) before decoding; unless SAEMI_MAX_PIXELS is set, it sets the "
                                                 "pixel limit (see docs/deploy.md for the figure per dyno size)."),
    "SAEMI_TIMEOUT": (180.0, float, "Seconds one analysis may take. Past it the work stops at the next stage or "
                                    "network tile and the request gets 503 (code timeout); the worker stays up."),
    "SAEMI_BASIC_AUTH": ("", str, "user:password[,user2:password2]: require HTTP basic auth on the page and "
                                  "the API (health and ready stay open). Empty: no authentication."),
    "SAEMI_API_TOKEN": ("", str, "A bearer token API clients may send (Authorization: Bearer ...) instead of "
                                 "basic auth. Empty: none."),
    "SAEMI_CACHE_BYTES": (256 * 2**20, int, "Bytes of segmentations kept for re-analysis, shared by all workers "
                                            "(least recently used dropped first). About 1.75 bytes per pixel for "
                                            "a grey image: 1.8 MB for 1 MP, 21 MB for 12 MP."),
    "SAEMI_CACHE_DIR": ("", str, "Folder of the on-disk cache shared by the workers of one host. Default: "
                                 "$TMPDIR/saemi-cache-<uid>."),
    "SAEMI_CACHE_TTL": (24 * 3600.0, float, "Seconds a cached image may stay unused before it expires."),
    "SAEMI_REDIS_URL": ("", str, "redis://host:port/db: keep the cache in Redis instead, shared by replicas on "
                                 "several hosts. Empty: the on-disk cache."),
    "SAEMI_ALLOWED_ORIGINS": ("", str, "Comma-separated origins allowed to call the API from a browser "
                                       "(CORS), or * for any. Empty: same origin only."),
    "SAEMI_LOAD": ("eager", str, "When the model is loaded: eager (while the worker starts; it takes "
                                 "requests once loaded), background (a thread loads it; /ready answers 503 "
                                 "until done) or lazy (on the first request that needs it)."),
}

DEVICES = ("auto", "cpu", "cuda")
LOAD_MODES = ("eager", "background", "lazy")


def load_config(overrides=None, environ=None):
    """Resolve the backend settings.

    Parameters
    ----------
    overrides : dict, optional
        Values that win over the environment (e.g. from a test).
    environ : mapping, optional
        Default :data:`os.environ`.

    Returns
    -------
    dict
        Every key of :data:`SETTINGS`, parsed and checked.

    Raises
    ------
    ValueError
        For a value that cannot be used; a misconfigured server should refuse
        to start rather than fail on the first request.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    out = {}
    for name, (default, parse, _) in SETTINGS.items():
        raw = overrides[name] if name in overrides else environ.get(name)
        if raw is None or (isinstance(raw, str) and raw.strip() == "" and parse is not str):
            out[name] = default
            continue
        try:
            value = parse(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={raw!r} is not a valid {parse.__name__}") from None
        out[name] = value
    if out["SAEMI_WEIGHTS"] == "":
        out["SAEMI_WEIGHTS"] = None
    out["SAEMI_DEVICE"] = out["SAEMI_DEVICE"].lower()
    out["SAEMI_LOAD"] = out["SAEMI_LOAD"].lower()
    if out["SAEMI_DEVICE"] not in DEVICES:
        raise ValueError(f"SAEMI_DEVICE must be one of {', '.join(DEVICES)}, got {out['SAEMI_DEVICE']!r}")
    if out["SAEMI_LOAD"] not in LOAD_MODES:
        raise ValueError(f"SAEMI_LOAD must be one of {', '.join(LOAD_MODES)}, got {out['SAEMI_LOAD']!r}")
    for name in ("SAEMI_MAX_UPLOAD_MB", "SAEMI_MEMORY_MB", "SAEMI_TIMEOUT", "SAEMI_CACHE_BYTES", "SAEMI_CACHE_TTL"):
        if not out[name] > 0:
            raise ValueError(f"{name} must be positive, got {out[name]!r}")
    if out["SAEMI_MAX_PIXELS"] is None:
        out["SAEMI_MAX_PIXELS"] = pixels_for_memory(out["SAEMI_MEMORY_MB"])
    elif not out["SAEMI_MAX_PIXELS"] > 0:
        raise ValueError(f"SAEMI_MAX_PIXELS must be positive, got {out['SAEMI_MAX_PIXELS']!r}")
    from .security import parse_basic_auth

    parse_basic_auth(out["SAEMI_BASIC_AUTH"])  # refuse to start on a malformed entry
    return out


def allowed_origins(value):
    """Parse ``SAEMI_ALLOWED_ORIGINS`` into a set (``{"*"}`` allows any)."""
    return {o.strip().rstrip("/") for o in (value or "").split(",") if o.strip()}
