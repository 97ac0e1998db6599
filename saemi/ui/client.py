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

from ..budget import Deadline
from ..jobs import run_reporting
from ..errors import SaemiError
from ..settings import defaults as setting_defaults, names as setting_names

log = logging.getLogger(__name__)

#: Settings keys the UI may send with an analysis (every setting of saemi.settings).
SETTINGS_KEYS = setting_names()

#: Used when the backend cannot tell its defaults: the schema's built-in ones.
FALLBACK_DEFAULTS = setting_defaults()


class ClientError(SaemiError):
    """Something the user should read: a bad upload, bad settings, or a backend that is down."""


class AnalysisClient:
    """The interface the Dash callbacks use."""

    #: Shown in the page footer ("in-process" or the backend's URL).
    description = ""

    def segment(self, data, filename="image", image_id=None, preview=False, progress=None):
        """Upload image bytes; returns the ``segment`` dict (with ``image_id``).

        ``image_id``: upload an image again under its expired id. ``preview``:
        add the image as a JPEG the browser can show (``preview``).
        ``progress``: a browser tab's token; the stages of the work are kept
        under it for :meth:`progress` (ignored by a client that cannot).
        """
        raise NotImplementedError

    def analyze(self, image_id, settings=None, progress=None):
        """Split and measure a segmented image; returns the ``analyze`` dict, without pictures."""
        raise NotImplementedError

    def progress(self, token):
        """The stage of the work running under ``token``: ``{"stage", "elapsed_s", "done"}`` or None."""
        return None

    def particle_layer(self, image_id, settings=None, mode="outline", grid=True):
        """The particle layer (and hover grid) of an analysis, drawn by the backend; see
        :meth:`saemi.service.AnalysisService.particle_layer`."""
        raise NotImplementedError

    def default_settings(self):
        """Post-processing defaults of the model in use (dict of SETTINGS_KEYS)."""
        raise NotImplementedError

    def edit(self, image_id, edits, settings=None):
        """Add manual edits (see :mod:`saemi.edits`); returns the service's ``edit`` dict."""
        raise NotImplementedError

    def undo(self, image_id, settings=None):
        raise NotImplementedError

    def redo(self, image_id, settings=None):
        raise NotImplementedError

    def labels_png(self, image_id, settings=None, every_particle=False):
        """The corrected 16-bit label PNG of an analysis: (bytes, file name)."""
        raise NotImplementedError

    def training_pair(self, image_id, settings=None):
        """The image and its corrected mask as a zip for ``saemi train --extra``: (bytes, file name)."""
        raise NotImplementedError

    def preview(self, image_id):
        """``segment``'s answer for an image uploaded before, with its ``preview`` (no network run)."""
        raise NotImplementedError

    def sample(self, images, options=None, fmt="json"):
        """The combined distribution of several images (see :meth:`saemi.service.AnalysisService.sample`).

        ``options``: ``metric``, ``weighting``, ``filters``, ``unit``, ``name``. ``fmt`` "json" returns
        the dict without its table; "particles.csv" or "summary.csv" returns the CSV text.
        """
        raise NotImplementedError


def _clean_settings(settings):
    return {k: v for k, v in (settings or {}).items() if k in SETTINGS_KEYS}


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

    def _with_progress(self, progress, fn, *args, **kwargs):
        """Call ``fn`` with a deadline that keeps each stage under the tab's token, then mark it done."""
        stages = self.service.stage_log(progress) if progress else None
        if stages is None:
            return self._call(fn, *args, **kwargs)
        return self._call(run_reporting, fn, Deadline(None, on_stage=stages), *args, **kwargs)

    def segment(self, data, filename="image", image_id=None, preview=False, progress=None):
        extra = {"image_id": image_id} if image_id else {}
        return self._with_progress(progress, self.service.segment, bytes(data), filename, preview=preview, **extra)

    def analyze(self, image_id, settings=None, progress=None):
        # the page draws the particles from particle_layer: no pictures here
        return self._with_progress(progress, self.service.analyze, image_id=image_id,
                                   settings=_clean_settings(settings), include_images=False)

    def progress(self, token):
        return self.service.progress(token)

    def particle_layer(self, image_id, settings=None, mode="outline", grid=True):
        return self._call(self.service.particle_layer, image_id, _clean_settings(settings), mode, grid)

    def edit(self, image_id, edits, settings=None):
        return self._call(self.service.edit, image_id, edits, _clean_settings(settings))

    def undo(self, image_id, settings=None):
        return self._call(self.service.undo, image_id, _clean_settings(settings))

    def redo(self, image_id, settings=None):
        return self._call(self.service.redo, image_id, _clean_settings(settings))

    def labels_png(self, image_id, settings=None, every_particle=False):
        return self._call(self.service.labels_png, image_id, _clean_settings(settings), every_particle)

    def training_pair(self, image_id, settings=None):
        return self._call(self.service.training_pair, image_id, _clean_settings(settings))

    def preview(self, image_id):
        return self._call(self.service.preview, image_id)

    def sample(self, images, options=None, fmt="json"):
        from ..sample import public, sample_csv

        o = dict(options or {})
        stats = self._call(self.service.sample, images, o.get("metric", "equivalent_diameter"),
                           o.get("weighting", "number"), o.get("filters"), o.get("unit", "auto"))
        return public(stats) if fmt == "json" else self._call(sample_csv, stats, fmt, o.get("name") or "sample")

    def default_settings(self):
        try:
            return {**FALLBACK_DEFAULTS, **self.service.default_settings().to_dict()}
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

    def _raw(self, method, path, **kwargs):
        """The backend's response; an error answer raises :class:`ClientError` with its message."""
        resp = self._send(method, path, **kwargs)
        if resp.status_code >= 400:
            self._json(resp)  # raises with the backend's message
        return resp

    def _request(self, method, path, **kwargs):
        return self._json(self._send(method, path, **kwargs))

    def _send(self, method, path, **kwargs):
        req = self._requests
        try:
            return self.session.request(method, self._url(path), timeout=kwargs.pop("timeout", self.timeout),
                                        **kwargs)
        except req.exceptions.Timeout as exc:
            raise ClientError(f"the analysis backend at {self.base_url} did not answer within "
                              f"{self.timeout:g} s; try again, or a smaller image", code="backend_timeout") from exc
        except req.exceptions.RequestException as exc:
            raise ClientError(f"the analysis backend at {self.base_url} is not reachable "
                              f"({type(exc).__name__}); is it running?", code="backend_unavailable") from exc

    def _json(self, resp):
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

    def segment(self, data, filename="image", image_id=None, preview=False, progress=None):
        fields = {**({"image_id": image_id} if image_id else {}), **({"preview": "true"} if preview else {}),
                  **({"progress": progress} if progress else {})}
        return self._request("POST", "segment", files={"file": (filename or "image", bytes(data))},
                             data=fields or None)

    def segment_json(self, data, filename="image"):
        """The same as :meth:`segment`, with the image base64-encoded in a JSON body."""
        return self._request("POST", "segment",
                             json={"image": base64.b64encode(bytes(data)).decode(), "filename": filename})

    def analyze(self, image_id, settings=None, progress=None):
        body = {"image_id": image_id, **_clean_settings(settings), "include_images": False,
                **({"progress": progress} if progress else {})}
        return self._request("POST", "analyze", json=body)

    def progress(self, token):
        """The backend's record of the work sent with ``token`` (``GET /progress/<token>``), or None.

        None too when the backend does not answer in a second or has no such
        route (an older backend): a poll never fails the page.
        """
        try:
            resp = self._send("GET", f"progress/{token}", timeout=1.0)
            body = resp.json() if resp.status_code == 200 else None
        except (ClientError, ValueError):
            return None
        return body if isinstance(body, dict) and "stage" in body else None

    def particle_layer(self, image_id, settings=None, mode="outline", grid=True):
        body = {"image_id": image_id, **_clean_settings(settings), "overlay": mode, "grid": bool(grid)}
        return self._request("POST", "layer", json=body)

    def edit(self, image_id, edits, settings=None):
        return self._request("POST", f"analyses/{image_id}/edits",
                             json={"edits": edits if isinstance(edits, list) else [edits],
                                   "settings": _clean_settings(settings)})

    def undo(self, image_id, settings=None):
        return self._request("POST", f"analyses/{image_id}/edits/undo", json={"settings": _clean_settings(settings)})

    def redo(self, image_id, settings=None):
        return self._request("POST", f"analyses/{image_id}/edits/redo", json={"settings": _clean_settings(settings)})

    def _download(self, path, settings, **extra):
        params = {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else
                      (str(v).lower() if isinstance(v, bool) else str(v)))
                  for k, v in {**_clean_settings(settings), **extra}.items() if v is not None}
        resp = self._raw("GET", path, params=params)
        name = resp.headers.get("Content-Disposition", "").rsplit("filename=", 1)[-1].strip('"') or "download"
        return resp.content, name

    def labels_png(self, image_id, settings=None, every_particle=False):
        return self._download(f"analyses/{image_id}/labels.png", settings, every_particle=bool(every_particle))

    def training_pair(self, image_id, settings=None):
        return self._download(f"analyses/{image_id}/training-pair.zip", settings)

    def preview(self, image_id):
        return self._request("GET", f"analyses/{image_id}/preview")

    def sample(self, images, options=None, fmt="json"):
        body = {"images": images, **{k: v for k, v in (options or {}).items()
                                     if k in ("metric", "weighting", "filters", "unit", "name")}, "format": fmt}
        if fmt == "json":
            return self._request("POST", "sample", json=body)
        return self._raw("POST", "sample", json=body).text

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
