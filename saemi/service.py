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
    :func:`saemi.measure.particle_table`: the particles not excluded),
    ``labels_png`` (base64 16-bit PNG of the labels, excluded ones zeroed) and
    ``overlay_png`` (base64 RGB PNG), unless ``include_images`` is false.
``particle_layer`` -> what the page draws over the image, from the labels kept
    in the store (see :meth:`AnalysisService.particle_layer`).

Settings follow :mod:`saemi.settings`: ``segment`` takes the segment-stage ones
(part of the cache key), ``analyze`` all of them; a re-analysis by
``image_id`` keeps the segment-stage settings the image was segmented with.
"""

import base64
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, replace

import numpy as np

from .cache import (KEY_RE, check_key, decode_handle, decode_labels, decode_segmentation, encode_handle, encode_labels,
                    encode_segmentation, open_store)
from .calibration import effective_calibration, with_calibration_columns
from .card import read_card
from .errors import SaemiError
from .export import csv_text
from .overlay import draw_overlay, hover_grid, particle_layer, png_bytes, preview_jpeg
from .pipeline import segment, split, split_and_measure
from .settings import Settings, names as setting_names

OVERLAY_MODES = ("outline", "filled")
#: Store keys: a segmentation under its content digest, a client's handle under its random id,
#: the labels of an analysis under its segmentation's digest and splitting settings.
SEG_PREFIX, ID_PREFIX, LABELS_PREFIX = "seg-", "id-", "lab-"


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


class _Entry:
    """A client's handle on a cached segmentation (what ``image_id`` names)."""

    __slots__ = ("image_id", "digest", "segmentation", "filename", "settings", "segment_settings")

    def __init__(self, image_id, digest, segmentation, filename, settings=None, segment_settings=None):
        self.image_id, self.digest, self.segmentation = image_id, digest, segmentation
        self.filename, self.settings = filename, settings
        # what the image was segmented with (saemi.settings stage "segment")
        self.segment_settings = segment_settings or Settings().segment_settings()


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
        self._labels = OrderedDict()    # label key -> labels of an analysis, decoded from the store
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
        return _Entry(image_id, record["digest"], seg, record.get("filename") or "image", record.get("settings"),
                      record.get("segment_settings"))

    def _save_handle(self, entry):
        self.store.put(ID_PREFIX + entry.image_id, encode_handle(
            {"digest": entry.digest, "filename": entry.filename, "settings": entry.settings,
             "segment_settings": entry.segment_settings}))

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

    def segment(self, data, filename="image", settings=None, deadline=None, image_id=None, preview=False):
        """Run load, scale-bar reading, banner removal and the network on uploaded bytes; cache the result.

        Parameters
        ----------
        data : bytes
        filename : str
            The client's name for the file: a label only (see :func:`upload_label`).
        settings : dict, optional
            Settings of the ``segment`` stage (``remove_banner``, ``scale_bar``);
            the others belong to :meth:`analyze`.
        deadline : saemi.budget.Deadline, optional
        image_id : str, optional
            Re-upload an image whose ``image_id`` expired under that same id (what
            the page does after a 404, so its state stays valid). An id that is
            still known is left as it is; without one a new random id is made.
        preview : bool
            Add ``preview``: the image as a JPEG for a browser (see
            :func:`saemi.overlay.preview_jpeg`), so the page never decodes the
            upload a second time.

        Returns
        -------
        dict
            See the module docstring.
        """
        values = dict(settings or {})
        other = sorted(set(values) - set(setting_names("segment")))
        if other:
            raise SaemiError(f"not settings of the segmentation: {', '.join(other)} (they belong to analyze); "
                             f"segment takes {', '.join(setting_names('segment'))}", code="bad_parameter")
        seg_settings = self.parse_settings(values).segment_settings()
        entry, cached = self._segment_entry(data, filename, seg_settings, deadline, image_id)
        out = self._segment_result(entry, cached)
        if preview:
            jpeg, stride = preview_jpeg(entry.segmentation.image)
            out["preview"] = {"jpeg": base64.b64encode(jpeg).decode(), "stride": stride}
        return out

    def _segment_result(self, entry, cached):
        timings = {k: round(v, 4) for k, v in entry.segmentation.timings.items()} if not cached else {}
        return {**self._describe(entry.image_id, entry), "timings": timings, "cached": cached}

    def _segment_entry(self, data, filename, seg_settings, deadline, image_id):
        """:meth:`segment`'s work: returns the image's handle and whether the network was skipped."""
        self.check_upload(data)
        filename = upload_label(filename) or "image"
        segmenter = self.segmenter  # a model that cannot load is a 503, even for a cached image
        # the segmentation depends on the weights, the bytes and the segment-stage settings
        digest = hashlib.sha256(self._model_key(segmenter) + bytes(data)
                                + json.dumps(seg_settings, sort_keys=True).encode()).hexdigest()[:40]
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
                fresh = segment(bytes(data), segmenter, seg_settings["remove_banner"], self.max_pixels,
                                detect_scale_bar=seg_settings["scale_bar"] == "auto", deadline=deadline,
                                filename=filename)
            finally:
                self._infer_lock.release()
            blob = encode_segmentation(fresh)
            self.store.put(SEG_PREFIX + digest, blob)
            # every analysis, here or on another worker, runs on what the store holds
            seg = decode_segmentation(blob)
            seg.timings = fresh.timings
            self._remember(self._memo, digest, seg)
        entry = _Entry(image_id or secrets.token_urlsafe(18), digest, seg, filename, None, seg_settings)
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

    def _settings_for(self, entry, values):
        """The settings of a re-analysis of ``entry``: ``values`` over the defaults, segment stage as segmented.

        A segment-stage setting that differs from what the image was segmented
        with is refused (422): it would change what the network saw.
        """
        s = self.parse_settings(values)
        given = {k: getattr(s, k) for k in setting_names("segment") if k in values}
        clash = {k: v for k, v in given.items() if v != entry.segment_settings.get(k)}
        if clash:
            k, v = next(iter(clash.items()))
            raise SaemiError(f"{k} applies when an image is segmented, and this one was segmented with {k}="
                             f"{json.dumps(entry.segment_settings.get(k))}; upload it again with {k}={json.dumps(v)}, "
                             "or leave it out of a re-analysis by image_id", code="bad_parameter")
        return replace(s, **entry.segment_settings)

    def _label_key(self, entry, settings):
        split = json.dumps(asdict(settings.split_settings()), sort_keys=True)
        return LABELS_PREFIX + hashlib.sha256(f"{entry.digest}|{split}".encode()).hexdigest()[:40]

    def _cached_labels(self, key):
        with self._lock:
            labels = self._labels.get(key)
        if labels is None:
            blob = self.store.get(key)
            if blob is None:
                return None
            labels = decode_labels(blob)
        self._remember(self._labels, key, labels)
        return labels

    def _keep_labels(self, key, labels):
        """Store an analysis's split labels for every worker, and in this process's memo."""
        self.store.put(key, encode_labels(labels))
        self._remember(self._labels, key, labels)

    def _measure(self, entry, settings, deadline=None):
        """:func:`split_and_measure` of a cached image, splitting only if no worker did it yet."""
        key = self._label_key(entry, settings)
        labels = self._cached_labels(key)
        result = split_and_measure(entry.segmentation, settings, deadline, split_labels=labels)
        if labels is None:
            self._keep_labels(key, result.split_labels)
        return result

    @staticmethod
    def _request_values(mode, settings):
        """The settings dict of a request, after checking its overlay mode (400/422 otherwise)."""
        if mode not in OVERLAY_MODES:
            raise SaemiError(f"overlay must be one of {', '.join(OVERLAY_MODES)}", code="bad_parameter")
        if settings is not None and not isinstance(settings, dict):
            raise SaemiError("settings must be a JSON object", code="bad_request")
        return dict(settings or {})

    def analyze(self, image_id=None, data=None, filename=None, settings=None,
                overlay="outline", overlay_alpha=0.7, include_images=True, deadline=None):
        """Split, measure and summarise; runs the network only for new image data.

        Exactly one of ``image_id`` and ``data`` is needed. ``settings`` is a
        dict (keys of :class:`saemi.settings.Settings`; missing ones take the
        model card's defaults). With ``image_id``, the segment-stage settings are
        those the image was segmented with. ``deadline``
        (:class:`saemi.budget.Deadline`) bounds the whole call.
        """
        if (image_id is None) == (data is None):
            raise SaemiError("give either an image or an image_id", code="bad_request")
        values = self._request_values(overlay, settings)
        s = self.parse_settings(values)
        t0 = time.perf_counter()
        if data is not None:
            entry, cached = self._segment_entry(data, filename, s.segment_settings(), deadline, None)
            info = self._segment_result(entry, cached)
        else:
            entry = self._get(image_id)
            s = self._settings_for(entry, values)
            info = {**self._describe(image_id, entry), "cached": True}
        image_id = entry.image_id
        result = self._measure(entry, s, deadline)
        entry.settings = s.to_dict()
        self._save_handle(entry)
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

    def particle_layer(self, image_id, settings=None, mode="outline", grid=True):
        """What the page draws over the image for one analysis: the particle layer and the hover grid.

        The labels come from the cache (split again only if it dropped them),
        so the browser never holds or sends a label image.

        Parameters
        ----------
        image_id : str
        settings : dict, optional
            Splitting settings and ``removed_labels`` (drawn darkened, to click back).
        mode : {'outline', 'filled'}
        grid : bool
            Add the hover grid (it changes only with the splitting settings).

        Returns
        -------
        dict
            ``layer_png`` (base64 RGBA PNG, the image's size), ``width``,
            ``height``, ``count`` (particles found) and, with ``grid``,
            ``grid``: ``z`` (base64 little-endian integers), ``dtype``,
            ``shape``, ``x0``, ``dx``, ``y0``, ``dy`` (see
            :func:`saemi.overlay.hover_grid`).
        """
        values = self._request_values(mode, settings)
        entry = self._get(image_id)
        s = self._settings_for(entry, values)
        key = self._label_key(entry, s)
        labels = self._cached_labels(key)
        if labels is None:  # the cache dropped them: split again (no table needed to draw)
            labels = split(entry.segmentation, s)
            self._keep_labels(key, labels)
        h, w = labels.shape
        out = {"layer_png": base64.b64encode(png_bytes(particle_layer(labels, s.removed_labels, mode), 3)).decode(),
               "width": w, "height": h, "count": int(np.count_nonzero(np.bincount(labels.ravel())[1:]))}
        if grid:
            g = hover_grid(labels)
            z = np.ascontiguousarray(g.pop("z"))
            out["grid"] = {**g, "z": base64.b64encode(z.astype(z.dtype.newbyteorder("<")).tobytes()).decode(),
                           "dtype": z.dtype.name, "shape": list(z.shape)}
        return out

    def particles_csv(self, image_id):
        """The last analysis of ``image_id`` as CSV text and a download file name.

        Re-measured from the cached labels with the settings of the last
        analysis (on any worker), or the defaults if the image was only segmented.
        """
        entry = self._get(image_id)
        values = {k: v for k, v in (entry.settings or {}).items() if k not in setting_names("segment")}
        analysis = self._measure(entry, self._settings_for(entry, values))
        table = with_calibration_columns(analysis.table, analysis.calibration)
        return csv_text(table), f"{safe_stem(entry.filename)}_particles.csv"


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
