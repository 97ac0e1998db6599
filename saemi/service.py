"""The prediction service: the layer the REST API and the in-process UI client share.

It turns uploads into JSON-ready dicts and keeps each image's network output in a
store shared by every worker (and, with Redis, every replica; see
:mod:`saemi.cache`), bounded in bytes, so a re-analysis with new splitting settings
never runs the network again, whichever worker it lands on. No web framework is
imported here.

JSON contract (what :meth:`AnalysisService.segment` and
:meth:`AnalysisService.analyze` return, and what ``/api/v1`` sends):

``segment`` ->
    ``image_id`` (str: random, one per upload, never derived from the content), ``filename`` (str), ``width``, ``height`` (int, pixels),
    ``banner_box`` ({x0, y0, x1, y1} in pixels, or null), ``scale`` (the scale
    bar read, see :meth:`saemi.scalebar.Scale.to_dict`, or null), ``calibration``
    (the calibration record, :meth:`saemi.calibration.Calibration.to_dict`: the
    file's pixel size, else the scale bar's), ``timings`` (seconds per stage),
    ``cached`` (bool: the network output was already there).
``analyze`` -> all of the above, plus
    ``settings`` (the settings used, defaults filled in), ``nm_per_pixel`` (the
    calibration used: the user's, else the file's, else the scale bar's, else
    null), ``calibration`` (its record under these settings), ``summary`` (see
    :func:`saemi.measure.summarize`), ``particles`` (list of row dicts, see
    :func:`saemi.measure.particle_table`), ``labels_png`` (base64 16-bit PNG
    of the labels), ``overlay_png`` (base64 RGB PNG).
"""

import base64
import hashlib
import secrets
import threading
import time
from collections import OrderedDict

import numpy as np

from .cache import KEY_RE, check_key, decode_handle, decode_segmentation, encode_handle, encode_segmentation, open_store
from .calibration import effective_calibration, with_calibration_columns
from .card import read_card
from .errors import SaemiError
from .export import csv_text
from .overlay import draw_overlay, png_bytes
from .pipeline import Settings, measure, segment

OVERLAY_MODES = ("outline", "filled")
#: Store keys: a segmentation under its content digest, a client's handle under its random id.
SEG_PREFIX, ID_PREFIX = "seg-", "id-"


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
    """A client's handle on a cached segmentation (what ``image_id`` names)."""

    __slots__ = ("image_id", "digest", "segmentation", "filename", "settings")

    def __init__(self, image_id, digest, segmentation, filename, settings=None):
        self.image_id, self.digest, self.segmentation = image_id, digest, segmentation
        self.filename, self.settings = filename, settings


#: Decoded segmentations each process keeps beside the shared store, most recent first:
#: a slider move on the same worker then skips reading and decoding the record.
MEMO_ENTRIES = 2


class AnalysisService:
    """Segment images once, analyse them many times, from any worker.

    Parameters
    ----------
    segmenter_factory : callable, optional
        Returns a :class:`saemi.model.Segmenter`; called once, on first use
        (or at once with :meth:`load`). Default: the bundled weights.
    store : saemi.cache.DiskStore or saemi.cache.RedisStore, optional
        Where segmentations and image handles live. Default: a disk store in
        :func:`saemi.cache.default_cache_dir`, 256 MB, 24 h.
    max_pixels : int, optional
        Size limit for uploads (default ``$SAEMI_MAX_PIXELS`` or 50 megapixels).
    max_upload_bytes : int, optional
        Largest upload file accepted (default: no limit beyond the pixel count).

    Every upload, from the API or the page, goes through :meth:`check_upload`
    and :func:`upload_label`: one validation path.
    """

    def __init__(self, segmenter_factory=None, store=None, max_pixels=None, max_upload_bytes=None):
        if segmenter_factory is None:
            from .pipeline import default_segmenter
            segmenter_factory = default_segmenter
        self._factory = segmenter_factory
        self._segmenter = None
        self._model_key_bytes = None
        self.store = store if store is not None else open_store()
        self._memo = OrderedDict()      # digest -> Segmentation, decoded from the store
        self._labels = OrderedDict()    # image_id -> labels of this process's last analysis of it
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
                "cached_images": self.store.count(SEG_PREFIX)}

    def default_settings(self):
        return Settings.from_dict(None, defaults=self.card.get("postprocess"))

    def parse_settings(self, values):
        """Validate a JSON dict of settings over the model card's defaults."""
        if values is not None and not isinstance(values, dict):
            raise SaemiError("settings must be a JSON object", code="bad_request")
        return Settings.from_dict(values, defaults=self.card.get("postprocess"))

    def _model_key(self, segmenter):
        """What identifies the network's output besides the image: weights file and model card.

        The store outlives processes and may be shared by servers with other weights;
        a segmentation is reused only for the same weights (path, size, date) and card.
        """
        if self._model_key_bytes is None:
            import json
            import os

            path = str(getattr(segmenter, "weights_path", "") or "")
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = type(segmenter).__qualname__
            card = json.dumps(getattr(segmenter, "card", {}), sort_keys=True, default=str)
            self._model_key_bytes = hashlib.sha256(f"{path}|{stamp}|{card}".encode()).digest()
        return self._model_key_bytes

    def _segmentation(self, digest):
        """The decoded segmentation of a content digest, or None once the store has dropped it."""
        key = SEG_PREFIX + digest
        with self._lock:
            seg = self._memo.get(digest)
        if seg is not None:
            if not self.store.touch(key):
                with self._lock:
                    self._memo.pop(digest, None)
                return None
        else:
            blob = self.store.get(key)
            if blob is None:
                return None
            seg = decode_segmentation(blob)
        self._remember(self._memo, digest, seg)
        return seg

    def _remember(self, memo, key, value):
        """Keep ``value`` in one of the per-process memos, the oldest beyond MEMO_ENTRIES dropped."""
        with self._lock:
            memo[key] = value
            memo.move_to_end(key)
            while len(memo) > MEMO_ENTRIES:
                memo.popitem(last=False)

    def _get(self, image_id):
        """The handle and segmentation of ``image_id``; 404 ``not_found`` once either was evicted."""
        gone = SaemiError(f"unknown image_id {str(image_id)[:40]!r} (expired or never uploaded); upload the image "
                          "again", code="not_found")
        try:
            blob = self.store.get(ID_PREFIX + check_key(image_id))
        except SaemiError:
            raise gone from None
        if blob is None:
            raise gone
        record = decode_handle(blob)
        seg = self._segmentation(record["digest"])
        if seg is None:
            raise gone
        return _Entry(image_id, record["digest"], seg, record.get("filename") or "image", record.get("settings"))

    def _save_handle(self, entry):
        self.store.put(ID_PREFIX + entry.image_id, encode_handle(
            {"digest": entry.digest, "filename": entry.filename, "settings": entry.settings}))

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

    def segment(self, data, filename="image", remove_banner=True, deadline=None, image_id=None):
        """Run load, banner removal and the network on uploaded bytes; cache the result.

        Parameters
        ----------
        data : bytes
        filename : str
            The client's name for the file: a label only (see :func:`upload_label`).
        remove_banner : bool
        deadline : saemi.budget.Deadline, optional
        image_id : str, optional
            Re-upload an image whose ``image_id`` expired under that same id (what
            the page does after a 404, so its state stays valid). An id that is
            still known is left as it is; without one a new random id is made.

        Returns
        -------
        dict
            See the module docstring.
        """
        entry, cached = self._segment_entry(data, filename, remove_banner, deadline, image_id)
        return self._segment_result(entry, cached)

    def _segment_result(self, entry, cached):
        timings = {k: round(v, 4) for k, v in entry.segmentation.timings.items()} if not cached else {}
        return {**self._describe(entry.image_id, entry), "timings": timings, "cached": cached}

    def _segment_entry(self, data, filename, remove_banner, deadline, image_id):
        """:meth:`segment`'s work: returns the image's handle and whether the network was skipped."""
        self.check_upload(data)
        filename = upload_label(filename) or "image"
        segmenter = self.segmenter  # a model that cannot load is a 503, even for a cached image
        digest = hashlib.sha256(self._model_key(segmenter) + bytes(data) + (b"1" if remove_banner else b"0")
                                ).hexdigest()[:40]
        if image_id is not None:
            if not isinstance(image_id, str) or not KEY_RE.match(image_id):
                # an id no upload could have been given: a malformed request, not an expired one
                raise SaemiError("'image_id' is not an id this server hands out", code="bad_request")
            try:
                existing = self._get(image_id)
            except SaemiError as exc:
                if exc.code != "not_found":
                    raise
                existing = None
            if existing is not None:
                return existing, True
        seg = self._segmentation(digest)
        cached = seg is not None
        if seg is None:
            self._acquire_inference(deadline)
            try:
                fresh = segment(bytes(data), segmenter, remove_banner, self.max_pixels, deadline=deadline,
                                filename=filename)
            finally:
                self._infer_lock.release()
            blob = encode_segmentation(fresh)
            self.store.put(SEG_PREFIX + digest, blob)
            # every analysis, here or on another worker, runs on what the store holds
            seg = decode_segmentation(blob)
            seg.timings = fresh.timings
            self._remember(self._memo, digest, seg)
        entry = _Entry(image_id or secrets.token_urlsafe(18), digest, seg, filename)
        self._save_handle(entry)
        return entry, cached

    @staticmethod
    def _describe(image_id, entry):
        seg = entry.segmentation
        h, w = seg.image.shape[:2]
        return {"image_id": image_id, "filename": entry.filename, "width": w, "height": h,
                "banner_box": _box_dict(seg.banner_box),
                "scale": None if seg.scale is None else seg.scale.to_dict(),
                "calibration": effective_calibration(seg.calibration, seg.scale).to_dict()}

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
        if data is not None:
            entry, cached = self._segment_entry(data, filename, s.remove_banner, deadline, None)
            info = self._segment_result(entry, cached)
        else:
            entry = self._get(image_id)
            info = {**self._describe(image_id, entry), "cached": True}
        image_id = entry.image_id
        result = measure(entry.segmentation, s, deadline)
        entry.settings = settings_dict(s)
        self._save_handle(entry)
        self._remember(self._labels, image_id, result.labels)
        out = {**info, "settings": entry.settings, "nm_per_pixel": result.nm_per_pixel,
               "calibration": result.calibration.to_dict(),
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

        Re-measured from the cached segmentation with the settings of the last
        analysis (on any worker), or the defaults if the image was only segmented.
        """
        entry = self._get(image_id)
        settings = self.parse_settings(entry.settings) if entry.settings else self.default_settings()
        analysis = measure(entry.segmentation, settings)
        table = with_calibration_columns(analysis.table, analysis.calibration)
        return csv_text(table), f"{safe_stem(entry.filename)}_particles.csv"

    def labels_of(self, image_id):
        """Label image of this process's last analysis of ``image_id`` (None if there is none)."""
        with self._lock:
            return self._labels.get(image_id)


#: Longest file name kept as a label; longer ones are shortened, keeping the suffix.
MAX_NAME_CHARS = 200


def upload_label(filename):
    r"""The client's file name as a label: its last path component, at most 200 characters.

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
