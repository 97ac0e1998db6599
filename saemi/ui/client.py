"""How the front end reaches the analysis backend: one interface, two implementations.

* :class:`InProcessClient` calls a :class:`saemi.service.AnalysisService` in the
  same process (the default deployment: one gunicorn command). A sync worker must
  never send HTTP to itself, so this path makes no request at all.
* :class:`RemoteClient` posts to a backend at ``$SAEMI_BACKEND_URL`` (the GPU
  server deployment) over ``/api/v1``.

Both return the dicts of the JSON contract documented in :mod:`saemi.service`
and raise :class:`ClientError` with a message meant for the user. Nothing here
imports torch.
"""

import base64
import logging

from ..errors import SaemiError

log = logging.getLogger(__name__)

#: Settings keys the UI sends with an analysis (see saemi.pipeline.Settings).
SETTINGS_KEYS = ("watershed", "min_distance", "threshold", "min_size", "exclude_edge", "merge_threshold",
                 "min_relative_size", "nm_per_pixel", "removed_labels", "metric")

#: Used when the backend cannot tell its defaults (kept equal to saemi.card.DEFAULT_CARD).
FALLBACK_DEFAULTS = {"watershed": True, "threshold": 0.5, "min_distance": 15, "min_size": 20,
                     "exclude_edge": False, "merge_threshold": 0.0, "min_relative_size": 0.0}


class ClientError(SaemiError):
    """Something the user should read: a bad upload, bad settings, or a backend that is down."""


class AnalysisClient:
    """The interface the Dash callbacks use."""

    #: Shown in the page footer ("in-process" or the backend's URL).
    description = ""

    def segment(self, data, filename="image", image_id=None):
        """Upload image bytes; returns the ``segment`` dict (with ``image_id``).

        ``image_id``: upload an image again under its expired id.
        """
        raise NotImplementedError

    def analyze(self, image_id, settings=None, overlay="outline"):
        """Split and measure a segmented image; returns the ``analyze`` dict."""
        raise NotImplementedError

    def default_settings(self):
        """Post-processing defaults of the model in use (dict of SETTINGS_KEYS)."""
        raise NotImplementedError


def _clean_settings(settings):
    return {k: v for k, v in (settings or {}).items() if k in SETTINGS_KEYS}


def _labels_match(labels, particles):
    """True when a label image holds exactly the particles of a table (same labels, same areas)."""
    import numpy as np

    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64))
    counts[0] = 0
    if int(np.count_nonzero(counts)) != len(particles):
        return False
    for p in particles:
        lab = int(p["label"])
        if lab >= len(counts) or int(counts[lab]) != int(p["area_px"]):
            return False
    return True


class InProcessClient(AnalysisClient):
    """Calls :class:`saemi.service.AnalysisService` methods directly."""

    description = "in-process backend"

    def __init__(self, service):
        self.service = service

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SaemiError as exc:
            raise ClientError(exc.message, code=exc.code) from exc
        except Exception as exc:  # a bug or an out-of-memory: say so, never a blank page
            log.exception("analysis failed")
            raise ClientError(f"the analysis failed unexpectedly ({type(exc).__name__}: {exc})",
                              code="internal") from exc

    def segment(self, data, filename="image", image_id=None):
        extra = {"image_id": image_id} if image_id else {}
        return self._call(self.service.segment, bytes(data), filename, **extra)

    def analyze(self, image_id, settings=None, overlay="outline"):
        """The ``analyze`` dict with ``labels_png`` (``overlay_png`` only when the fast path fails).

        The page draws its own overlay, so the service's overlay picture is skipped
        (a third of a re-analysis); the label image is taken from the service's
        cache and checked against the particle table, since another thread may have
        re-analysed the same image in between.
        """
        settings = _clean_settings(settings)
        res = self._call(self.service.analyze, image_id=image_id, settings=settings, overlay=overlay,
                         include_images=False)
        labels_of = getattr(self.service, "labels_of", None)
        labels = self._call(labels_of, image_id) if labels_of else None
        if labels is not None and _labels_match(labels, res.get("particles", [])):
            from ..overlay import png_bytes

            res["labels_png"] = base64.b64encode(png_bytes(labels)).decode()
            return res
        return self._call(self.service.analyze, image_id=image_id, settings=settings, overlay=overlay,
                          overlay_alpha=1.0)

    def default_settings(self):
        try:
            from ..service import settings_dict
            return {**FALLBACK_DEFAULTS, **settings_dict(self.service.default_settings())}
        except Exception:  # a broken model card must not stop the page from loading
            log.exception("could not read the model's default settings")
            return dict(FALLBACK_DEFAULTS)


class RemoteClient(AnalysisClient):
    """Talks to a SAEMI backend over HTTP (``/api/v1``).

    Parameters
    ----------
    base_url : str
        The backend's root URL, e.g. ``http://gpu-box:8000`` (``/api/v1`` is appended).
    timeout : float
        Seconds to wait for an answer (the first request may load the model).
    session : requests.Session, optional
    token : str, optional
        Bearer token for a backend that requires one (its ``SAEMI_API_TOKEN``).
    """

    def __init__(self, base_url, timeout=120.0, session=None, token=None):
        import requests

        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/api/v1"):
            self.base_url = self.base_url[: -len("/api/v1")]
        self.timeout = float(timeout)
        self._requests = requests
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.description = f"backend at {self.base_url}"

    def _url(self, path):
        return f"{self.base_url}/api/v1/{path}"

    def _request(self, method, path, **kwargs):
        req = self._requests
        try:
            resp = self.session.request(method, self._url(path), timeout=kwargs.pop("timeout", self.timeout),
                                        **kwargs)
        except req.exceptions.Timeout as exc:
            raise ClientError(f"the analysis backend at {self.base_url} did not answer within "
                              f"{self.timeout:g} s; try again, or a smaller image", code="backend_timeout") from exc
        except req.exceptions.RequestException as exc:
            raise ClientError(f"the analysis backend at {self.base_url} is not reachable "
                              f"({type(exc).__name__}); is it running?", code="backend_unavailable") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400 or not isinstance(body, dict):
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict) and err.get("message"):
                raise ClientError(str(err["message"]), code=str(err.get("code") or "backend_error"))
            raise ClientError(f"the analysis backend at {self.base_url} answered HTTP {resp.status_code} "
                              "without a usable result", code="backend_error")
        return body

    def segment(self, data, filename="image", image_id=None):
        return self._request("POST", "segment", files={"file": (filename or "image", bytes(data))},
                             data={"image_id": image_id} if image_id else None)

    def segment_json(self, data, filename="image"):
        """The same as :meth:`segment`, with the image base64-encoded in a JSON body."""
        return self._request("POST", "segment",
                             json={"image": base64.b64encode(bytes(data)).decode(), "filename": filename})

    def analyze(self, image_id, settings=None, overlay="outline"):
        body = {"image_id": image_id, **_clean_settings(settings), "overlay": overlay}
        return self._request("POST", "analyze", json=body)

    def default_settings(self):
        """The backend's defaults when it publishes its model card, else the local card's."""
        for path in ("model", "health"):
            try:
                body = self._request("GET", path, timeout=min(self.timeout, 5.0))
            except ClientError:
                continue
            card = body.get("card", body) if isinstance(body, dict) else {}
            post = card.get("postprocess") if isinstance(card, dict) else None
            if isinstance(post, dict):
                return {**FALLBACK_DEFAULTS, **{k: v for k, v in post.items() if k in SETTINGS_KEYS}}
        try:
            from ..card import read_card
            return {**FALLBACK_DEFAULTS, **{k: v for k, v in read_card()["postprocess"].items()
                                            if k in SETTINGS_KEYS}}
        except Exception:
            return dict(FALLBACK_DEFAULTS)
