"""The prediction service: the layer the REST API and the in-process UI client share.

It turns uploads into JSON-ready dicts and keeps each image's network output in a
bounded cache, so a re-analysis with new splitting settings never runs the
network again. No web framework is imported here.

JSON contract (what :meth:`AnalysisService.segment` and
:meth:`AnalysisService.analyze` return, and what ``/api/v1`` sends):

``segment`` ->
    ``image_id`` (str), ``filename`` (str), ``width``, ``height`` (int, pixels),
    ``banner_box`` ({x0, y0, x1, y1} in pixels, or null), ``scale`` (the scale
    bar read, see :meth:`saemi.scalebar.Scale.to_dict`, or null), ``timings``
    (seconds per stage), ``cached`` (bool: the network output was already there).
``analyze`` -> all of the above, plus
    ``settings`` (the settings used, defaults filled in), ``nm_per_pixel`` (the
    calibration used: the user's, else the scale bar's, else null), ``summary`` (see
    :func:`saemi.measure.summarize`), ``particles`` (list of row dicts, see
    :func:`saemi.measure.particle_table`), ``labels_png`` (base64 16-bit PNG
    of the labels), ``overlay_png`` (base64 RGB PNG).
"""

import base64
import hashlib
import threading
import time
from collections import OrderedDict

import numpy as np

from .card import read_card
from .errors import SaemiError
from .export import csv_text
from .overlay import draw_overlay, png_bytes
from .pipeline import Settings, measure, segment

OVERLAY_MODES = ("outline", "filled")


def _box_dict(box):
    if box is None:
        return None
    y0, y1, x0, x1 = (int(v) for v in box)
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


def _json_number(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else float(v)
    return v


def records(table):
    """A particle table as a list of JSON-safe dicts (NaN becomes None)."""
    return [{k: _json_number(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def settings_dict(settings):
    return {"watershed": settings.watershed, "threshold": settings.threshold,
            "min_distance": settings.min_distance, "min_size": settings.min_size,
            "exclude_edge": settings.exclude_edge, "merge_threshold": settings.merge_threshold,
            "min_relative_size": settings.min_relative_size, "nm_per_pixel": settings.nm_per_pixel,
            "metric": settings.metric, "removed_labels": list(settings.removed_labels),
            "remove_banner": settings.remove_banner, "scale": settings.scale}


class _Entry:
    __slots__ = ("segmentation", "filename", "analysis")

    def __init__(self, segmentation, filename):
        self.segmentation, self.filename, self.analysis = segmentation, filename, None


class AnalysisService:
    """Segment images once, analyse them many times.

    Parameters
    ----------
    segmenter_factory : callable, optional
        Returns a :class:`saemi.model.Segmenter`; called once, on first use
        (or at once with :meth:`load`). Default: the bundled weights.
    cache_size : int
        How many images' network outputs to keep (least recently used go first).
    max_pixels : int, optional
        Size limit for uploads (default ``$SAEMI_MAX_PIXELS`` or 50 megapixels).
    max_upload_bytes : int, optional
        Largest upload file accepted (default: no limit beyond the pixel count).

    Every upload, from the API or the page, goes through :meth:`check_upload`
    and :func:`upload_label`: one validation path.
    """

    def __init__(self, segmenter_factory=None, cache_size=16, max_pixels=None, max_upload_bytes=None):
        if segmenter_factory is None:
            from .pipeline import default_segmenter
            segmenter_factory = default_segmenter
        self._factory = segmenter_factory
        self._segmenter = None
        self._cache = OrderedDict()
        self._cache_size = max(1, int(cache_size))
        self._lock = threading.Lock()
        # One forward pass at a time per process: a pass already uses every core,
        # and two at once only thrash the caches (and GPU memory).
        self._infer_lock = threading.Lock()
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        self.card = read_card()

    @property
    def segmenter(self):
        return self.load()

    def load(self):
        """Load the network now (idempotent); returns the segmenter."""
        with self._lock:
            if self._segmenter is None:
                self._segmenter = self._factory()
                self.card = getattr(self._segmenter, "card", self.card)
            return self._segmenter

    @property
    def loaded(self):
        return self._segmenter is not None

    def health(self):
        seg = self._segmenter
        return {"model_loaded": seg is not None,
                "device": str(seg.device) if seg is not None else None,
                "cached_images": len(self._cache)}

    def default_settings(self):
        return Settings.from_dict(None, defaults=self.card.get("postprocess"))

    def parse_settings(self, values):
        """Validate a JSON dict of settings over the model card's defaults."""
        if values is not None and not isinstance(values, dict):
            raise SaemiError("settings must be a JSON object", code="bad_request")
        return Settings.from_dict(values, defaults=self.card.get("postprocess"))

    def _get(self, image_id):
        with self._lock:
            entry = self._cache.get(image_id)
            if entry is None:
                raise SaemiError(f"unknown image_id {image_id!r} (expired or never uploaded); upload the image again",
                                 code="not_found")
            self._cache.move_to_end(image_id)
            return entry

    def check_upload(self, data):
        """Raise :class:`SaemiError` for upload bytes that are not bytes, empty or over the limit."""
        if not isinstance(data, (bytes, bytearray)):
            raise SaemiError("image data must be bytes", code="bad_request")
        if not data:
            raise SaemiError("the file is empty (0 bytes)", code="empty")
        limit = self.max_upload_bytes
        if limit and len(data) > limit:
            raise SaemiError(f"image file is {len(data):,} bytes ({len(data) / 2**20:.2f} MB); the limit is "
                             f"{int(limit):,} bytes ({limit / 2**20:g} MB)", code="too_large")

    def _acquire_inference(self, deadline):
        """Wait for this process's one forward pass slot, at most until the deadline."""
        wait = -1 if deadline is None or deadline.at is None else max(0.0, deadline.at - time.monotonic())
        if not self._infer_lock.acquire(timeout=wait):
            deadline.check("the network (waiting for other analyses to finish)")
            raise SaemiError("the server is busy; try again shortly", code="timeout")

    def segment(self, data, filename="image", remove_banner=True, deadline=None):
        """Run load, banner removal and the network on uploaded bytes; cache the result.

        Parameters
        ----------
        data : bytes
        filename : str
            The client's name for the file: a label only (see :func:`upload_label`).
        remove_banner : bool
        deadline : saemi.budget.Deadline, optional
        """
        self.check_upload(data)
        filename = upload_label(filename) or "image"
        image_id = hashlib.sha256(bytes(data) + (b"1" if remove_banner else b"0")).hexdigest()[:24]
        with self._lock:
            entry = self._cache.get(image_id)
            if entry is not None:
                self._cache.move_to_end(image_id)
                entry.filename = filename or entry.filename
        cached = entry is not None
        if entry is None:
            segmenter = self.segmenter
            self._acquire_inference(deadline)
            try:
                seg = segment(bytes(data), segmenter, remove_banner, self.max_pixels, deadline=deadline)
            finally:
                self._infer_lock.release()
            entry = _Entry(seg, filename or "image")
            with self._lock:
                self._cache[image_id] = entry
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return {**self._describe(image_id, entry),
                "timings": {k: round(v, 4) for k, v in entry.segmentation.timings.items()}, "cached": cached}

    @staticmethod
    def _describe(image_id, entry):
        seg = entry.segmentation
        h, w = seg.image.shape[:2]
        return {"image_id": image_id, "filename": entry.filename, "width": w, "height": h,
                "banner_box": _box_dict(seg.banner_box),
                "scale": None if seg.scale is None else seg.scale.to_dict()}

    def analyze(self, image_id=None, data=None, filename=None, settings=None,
                overlay="outline", overlay_alpha=0.7, include_images=True, deadline=None):
        """Split, measure and summarise; runs the network only for new image data.

        Exactly one of ``image_id`` and ``data`` is needed. ``deadline``
        (:class:`saemi.budget.Deadline`) bounds the whole call.
        """
        if (image_id is None) == (data is None):
            raise SaemiError("give either an image or an image_id", code="bad_request")
        if overlay not in OVERLAY_MODES:
            raise SaemiError(f"overlay must be one of {', '.join(OVERLAY_MODES)}", code="bad_parameter")
        s = settings if isinstance(settings, Settings) else self.parse_settings(settings)
        t0 = time.perf_counter()
        info = self.segment(data, filename, s.remove_banner, deadline) if data is not None else None
        image_id = info["image_id"] if info else image_id
        entry = self._get(image_id)
        if not info:
            info = {**self._describe(image_id, entry), "cached": True}
        result = measure(entry.segmentation, s, deadline)
        entry.analysis = result
        out = {**info, "settings": settings_dict(s), "nm_per_pixel": result.nm_per_pixel,
               "summary": {k: _json_number(v) for k, v in result.summary.items()},
               "particles": records(result.table),
               # only the stages this call ran: a cached image skips load, banner and network
               "timings": {k: round(v, 4) for k, v in result.timings.items()
                           if not info["cached"] or k in ("watershed", "table")}}
        if include_images:
            ov = draw_overlay(entry.segmentation.image, result.labels, overlay, overlay_alpha,
                              entry.segmentation.banner_box)
            out["labels_png"] = base64.b64encode(png_bytes(result.labels)).decode()
            out["overlay_png"] = base64.b64encode(png_bytes(ov)).decode()
        out["timings"]["total"] = round(time.perf_counter() - t0, 4)
        return out

    def particles_csv(self, image_id):
        """The last analysis of ``image_id`` as CSV text and a download file name.

        Analyses with the default settings first if the image was only segmented.
        """
        entry = self._get(image_id)
        if entry.analysis is None:
            entry.analysis = measure(entry.segmentation, self.default_settings())
        stem = safe_stem(entry.filename)
        return csv_text(entry.analysis.table), f"{stem}_particles.csv"

    def labels_of(self, image_id):
        """Label image of the last analysis of ``image_id`` (None if not analysed)."""
        entry = self._get(image_id)
        return None if entry.analysis is None else entry.analysis.labels


#: Longest file name kept as a label; longer ones are shortened, keeping the suffix.
MAX_NAME_CHARS = 200


def upload_label(filename):
    """The client's file name as a label: its last path component, at most 200 characters.

    The name is never opened or used as a path; outputs are named with
    :func:`safe_stem`. Returns None for no name.

    Raises
    ------
    SaemiError
        If the name is not a string (a JSON object or list sent as a name).

    Examples
    --------
    >>> upload_label("C:\\data\\../a.png")
    'a.png'
    >>> len(upload_label("x" * 5000 + ".tif")), upload_label("x" * 5000 + ".tif")[-4:]
    (200, '.tif')
    """
    if filename is None:
        return None
    if not isinstance(filename, str):
        raise SaemiError("the file name must be a string", code="bad_request")
    name = filename.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip()
    name = "".join(ch for ch in name if ch.isprintable())
    if len(name) > MAX_NAME_CHARS:
        dot = name.rfind(".")
        suffix = name[dot:] if 0 < dot and len(name) - dot <= 12 else ""
        name = name[:MAX_NAME_CHARS - len(suffix)] + suffix
    return name or None


def safe_stem(filename):
    """A file-name stem made only of safe characters (client names are never paths)."""
    import re
    from pathlib import PurePath

    stem = PurePath(str(filename or "image").replace("\\", "/")).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    return stem[:80]
