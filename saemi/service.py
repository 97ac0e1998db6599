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

from . import budget
from .cache import (KEY_RE, check_key, decode_handle, decode_labels, decode_segmentation, encode_handle, encode_labels,
                    encode_segmentation, open_store)
from .calibration import effective_calibration, with_calibration_columns
from .card import read_card
from .edits import MAX_EDITS, Corrected, apply_edits, changed_labels, check_edit, label_points
from .errors import SaemiError
from .export import csv_text
from .instances import StageMemo
from .jobs import StageLog, read_stage
from .measure import particle_table, update_table, with_origin
from .overlay import display_stride, draw_overlay, hover_grid, output_mark, particle_layer, png_bytes, preview_jpeg
from .pipeline import diameter_fields, resegment, segment, split, split_and_measure
from .settings import Settings, names as setting_names

OVERLAY_MODES = ("outline", "filled")
#: Store keys: a segmentation under its content digest, a client's handle under its random id,
#: the labels of an analysis under its segmentation's digest and splitting settings.
#: the user's edits of an image under its id (apart from the handle: an analysis saving the
#: handle on one worker must not overwrite an edit another worker has just stored).
SEG_PREFIX, ID_PREFIX, LABELS_PREFIX, EDITS_PREFIX = "seg-", "id-", "lab-", "edt-"

#: Particle tables each process keeps for samples (one per image of the largest sample).
MAX_SAMPLE_IMAGES = 200

#: Images whose splitting stages each process keeps (saemi.instances.StageMemo: the masks and
#: distance transform a slider does not change; about 100 MB for a 12-megapixel image).
STAGE_MEMO_IMAGES = 2

#: Particle tables (pixel units) each process keeps, per labelling: a few kB each, so that going
#: back to earlier settings (or an exclusion click after a slider) measures nothing.
TABLE_ENTRIES = 16

#: Earlier labellings of an image whose rows a new one's unchanged particles take (a slider moved
#: back and forth: see saemi.measure.particle_table's ``previous``).
PREVIOUS_TABLES = 3

#: Edited labellings each process keeps (the last few edit states: undo and the next edit
#: each replay one edit, not all of them).
EDITED_ENTRIES = 3


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

    __slots__ = ("image_id", "digest", "segmentation", "filename", "settings", "segment_settings", "network_ran")

    def __init__(self, image_id, digest, segmentation, filename, settings=None, segment_settings=None):
        self.image_id, self.digest, self.segmentation = image_id, digest, segmentation
        self.filename, self.settings = filename, settings
        # what the image was segmented with (saemi.settings stage "segment")
        self.segment_settings = segment_settings or Settings().segment_settings()
        # set by a re-analysis that ran the network again for another diameter (_with_diameter)
        self.network_ran = False


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
        self._edited = OrderedDict()    # label key + edits digest -> saemi.edits.Corrected
        self._tables = OrderedDict()    # the same keys -> the particle table (pixel units) of those labels
        self._sample_tables = OrderedDict()  # the same keys -> tables of a sample's images (see sample())
        self._stages = OrderedDict()    # digest -> saemi.instances.StageMemo of its splitting
        self._previous_tables = OrderedDict()  # digest -> [(labels, pixel table)] of its last analyses
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
                "engine": (f"{getattr(seg, 'engine', 'torch')} {getattr(seg, 'precision', '')}".strip()
                           if seg is not None else None),
                "cached_images": self.store.count(SEG_PREFIX)}

    def default_settings(self):
        return Settings.from_dict(None, defaults=self.card.get("postprocess"))

    def parse_settings(self, values):
        """Validate a JSON dict of settings over the model card's defaults."""
        if values is not None and not isinstance(values, dict):
            raise SaemiError("settings must be a JSON object", code="bad_request")
        return Settings.from_dict(values, defaults=self.card.get("postprocess"))

    def _model_key(self, segmenter):
        """What identifies the network's output besides the image: weights, card, engine and precision.

        The store outlives processes and may be shared by servers with other weights
        or another inference engine (torch on a GPU box, OpenVINO bf16 on a CPU one,
        whose probabilities differ in the last bits); a segmentation is reused only for
        the same weights (path, size, date), card, engine and precision.
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
            runs = f"{getattr(segmenter, 'engine', 'torch')}:{getattr(segmenter, 'precision', '')}"
            self._model_key_bytes = hashlib.sha256(f"{path}|{stamp}|{card}|{runs}".encode()).digest()
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

    def _remember(self, memo, key, value, size=MEMO_ENTRIES):
        """Keep ``value`` in one of the per-process memos, the oldest beyond ``size`` dropped."""
        with self._lock:
            memo[key] = value
            memo.move_to_end(key)
            while len(memo) > size:
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

    def stage_log(self, key):
        """An ``on_stage`` callable that keeps the stage of work in progress under ``key``.

        For :class:`saemi.budget.Deadline`; :meth:`progress` reads it back from
        any worker. None for a key no record could have (then nothing is kept).
        """
        try:
            return StageLog(self.store, key)
        except SaemiError:
            return None

    def progress(self, key):
        """The latest stage written by :meth:`stage_log` under ``key`` (see :func:`saemi.jobs.read_stage`)."""
        return read_stage(self.store, key)

    def check_image_id(self, image_id):
        """Raise :class:`SaemiError` (``not_found``) unless ``image_id`` names an image still in the store."""
        self._get(image_id)

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

    def _store_segmentation(self, digest, fresh):
        """Store a new segmentation under ``digest``; return it as decoded from the store.

        Every analysis, here or on another worker, runs on what the store holds
        (probabilities quantised), so this worker uses the decoded copy too.
        """
        blob = encode_segmentation(fresh)
        self.store.put(SEG_PREFIX + digest, blob)
        seg = decode_segmentation(blob)
        seg.timings = fresh.timings
        self._remember(self._memo, digest, seg)
        return seg

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
                                filename=filename, diameter=seg_settings.get("diameter"), full_probability=False)
            finally:
                self._infer_lock.release()
            seg = self._store_segmentation(digest, fresh)  # the full-resolution stack rebuilt there
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
                "calibration": effective_calibration(seg.calibration, seg.scale).to_dict(),
                **diameter_fields(seg)}

    def _settings_for(self, entry, values):
        """The settings of a re-analysis of ``entry``: ``values`` over the defaults, segment stage as segmented.

        A segment-stage setting that differs from what the image was segmented
        with is refused (422): it would change what the network saw.
        """
        s = self.parse_settings(values)
        if "diameter" in values and s.diameter != entry.segment_settings.get("diameter"):
            self._with_diameter(entry, s.diameter)
        given = {k: getattr(s, k) for k in setting_names("segment") if k in values}
        clash = {k: v for k, v in given.items() if v != entry.segment_settings.get(k)}
        if clash:
            k, v = next(iter(clash.items()))
            raise SaemiError(f"{k} applies when an image is segmented, and this one was segmented with {k}="
                             f"{json.dumps(entry.segment_settings.get(k))}; upload it again with {k}={json.dumps(v)}, "
                             "or leave it out of a re-analysis by image_id", code="bad_parameter")
        return replace(s, **entry.segment_settings)

    def _with_diameter(self, entry, diameter, deadline=None):
        """Point ``entry`` at its image segmented for another typical ``diameter`` (None: estimated).

        The only segment-stage setting a re-analysis by ``image_id`` may change
        (the page's "Typical particle diameter" field): the network runs again
        on the stored image (:func:`saemi.pipeline.resegment`), once per
        diameter, its result stored like an upload's.
        """
        digest = hashlib.sha256(f"{entry.digest}|diameter={json.dumps(diameter)}".encode()).hexdigest()[:40]
        seg = self._segmentation(digest)
        if seg is None:
            segmenter = self.segmenter
            self._acquire_inference(deadline)
            try:
                fresh = resegment(entry.segmentation, segmenter, diameter, deadline)
            finally:
                self._infer_lock.release()
            seg = self._store_segmentation(digest, fresh)
            entry.network_ran = True
        entry.digest, entry.segmentation = digest, seg
        entry.segment_settings = {**entry.segment_settings, "diameter": diameter}

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

    def _split_labels(self, entry, settings, deadline=None):
        """The split labels of a cached image under ``settings``, split only if no worker did it yet."""
        key = self._label_key(entry, settings)
        labels = self._cached_labels(key)
        if labels is None:
            budget.check(deadline, "splitting touching particles")
            labels = split(entry.segmentation, settings, self._stage_memo(entry.digest))
            self._keep_labels(key, labels)
        return labels

    def _stage_memo(self, digest):
        """The splitting stages kept for a segmentation (see :func:`saemi.pipeline.split`)."""
        with self._lock:
            memo = self._stages.get(digest)
        if memo is None:
            memo = StageMemo()
        self._remember(self._stages, digest, memo, STAGE_MEMO_IMAGES)
        return memo

    def _edits(self, image_id):
        """The edits record of an image: ``done`` (applied, oldest first) and ``undone`` (for redo)."""
        blob = self.store.get(EDITS_PREFIX + image_id)
        record = decode_handle(blob) if blob is not None else {}
        return {"done": list(record.get("done", [])), "undone": list(record.get("undone", []))}

    def _save_edits(self, image_id, record):
        self.store.put(EDITS_PREFIX + image_id, encode_handle(record))

    def _state(self, entry, settings, edits, deadline=None):
        """The labels of ``entry`` under ``settings`` after ``edits``, and the key of that state.

        Returns (:class:`saemi.edits.Corrected`, str). Edited labellings are
        memoised per process under the label key and a digest chain of the
        edits, so a new edit, an undo or a redo replays one edit from a
        neighbouring state (another worker replays them all once), and the
        particle table of the neighbouring state is updated for the particles
        that changed instead of measured again.
        """
        labels = self._split_labels(entry, settings, deadline)
        base = self._label_key(entry, settings)
        if not edits:
            return Corrected(labels, {}, [], int(labels.max(initial=0)) + 1, 0), base
        chain = [base]
        for e in edits:
            chain.append(hashlib.sha256((chain[-1] + json.dumps(e, sort_keys=True)).encode()).hexdigest())
        with self._lock:
            n, start = next(((n, self._edited[chain[n]]) for n in range(len(edits), 0, -1)
                             if chain[n] in self._edited), (0, None))
            table = self._tables.get(chain[n])
        if n == len(edits):
            self._remember(self._edited, chain[n], start, EDITED_ENTRIES)
            return start, chain[n]
        out = apply_edits(labels, edits, start=start)
        self._remember(self._edited, chain[-1], out, EDITED_ENTRIES)
        if table is not None:
            before = labels if start is None else start.labels
            self._remember(self._tables, chain[-1], update_table(table, out.labels, changed_labels(before, out.labels)),
                           TABLE_ENTRIES)
        return out, chain[-1]

    def _corrected(self, entry, settings, edits):
        """The labels of ``entry`` under ``settings`` after ``edits`` (a :class:`saemi.edits.Corrected`)."""
        return self._state(entry, settings, edits)[0]

    def _measure(self, entry, settings, deadline=None):
        """:func:`split_and_measure` of a cached image with its edits; returns (Analysis, edits summary)."""
        record = self._edits(entry.image_id)
        t = time.perf_counter()
        corrected, state = self._state(entry, settings, record["done"], deadline)
        t_split = time.perf_counter() - t
        with self._lock:
            table = self._tables.get(state)
        if table is None:
            # the particles a slider left alone keep their rows (see particle_table's ``previous``)
            with self._lock:
                previous = list(self._previous_tables.get(entry.digest, ()))
            table = particle_table(corrected.labels, previous=previous)
            self._remember(self._tables, state, table, TABLE_ENTRIES)
            with self._lock:
                recent = [(corrected.labels, table)] + previous[:PREVIOUS_TABLES - 1]
            self._remember(self._previous_tables, entry.digest, recent, STAGE_MEMO_IMAGES)
        result = split_and_measure(entry.segmentation, settings, deadline, split_labels=corrected.labels,
                                   origins=corrected.origins, px_table=table)
        result.timings["watershed"] = t_split  # splitting (or its cache) and replaying the edits
        return result, _edits_summary(record, corrected)

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
            info = {**self._describe(image_id, entry), "cached": not entry.network_ran}
        image_id = entry.image_id
        result, edits = self._measure(entry, s, deadline)
        entry.settings = s.to_dict()
        self._save_handle(entry)
        out = {**info, "settings": entry.settings, "nm_per_pixel": result.nm_per_pixel,
               "calibration": result.calibration.to_dict(),
               "summary": {k: _json_number(v) for k, v in result.summary.items()},
               "particles": records(result.table), "edits": edits,
               # only the stages this call ran: a cached image skips load, banner and network
               "timings": {k: round(v, 4) for k, v in result.timings.items()
                           if not info["cached"] or k in ("watershed", "table")}}
        if include_images:
            ov = draw_overlay(entry.segmentation.image, result.labels, overlay, overlay_alpha,
                              entry.segmentation.banner_box)
            # made per slider move: fast zlib levels (the overlay, a photograph, is 20 % larger at 1 than at 6,
            # in 0.09 s against 0.23 s at 1024x768; the labels 30 % of 28 kB at 3)
            out["labels_png"] = base64.b64encode(png_bytes(result.labels, 3)).decode()
            out["overlay_png"] = base64.b64encode(png_bytes(ov, 1)).decode()
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
            ``layer_png`` (base64 RGBA PNG of every ``stride``-th pixel, as
            the preview), ``stride``, ``width``,
            ``height``, ``count`` (particles found) and, with ``grid``,
            ``grid``: ``z`` (base64 little-endian integers), ``dtype``,
            ``shape``, ``x0``, ``dx``, ``y0``, ``dy`` (see
            :func:`saemi.overlay.hover_grid`).
        """
        values = self._request_values(mode, settings)
        entry = self._get(image_id)
        s = self._settings_for(entry, values)
        labels = self._corrected(entry, s, self._edits(image_id)["done"]).labels
        h, w = labels.shape
        stride = display_stride(labels.shape)
        layer = particle_layer(labels, s.removed_labels, mode, stride)
        out = {"layer_png": base64.b64encode(png_bytes(layer, 3)).decode(), "stride": stride,
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
        analysis, _ = self._measure(entry, self._settings_for(entry, values))
        table = with_calibration_columns(analysis.table, analysis.calibration)
        return csv_text(table), f"{safe_stem(entry.filename)}_particles.csv"

    # --- manual corrections (see saemi.edits) ---------------------------------------------------

    def _last_settings(self, entry, settings):
        """The settings a request about ``entry`` means: ``settings`` if given, else its last analysis's."""
        if settings is None:
            settings = {k: v for k, v in (entry.settings or {}).items() if k not in setting_names("segment")}
        if not isinstance(settings, dict):
            raise SaemiError("settings must be a JSON object", code="bad_request")
        return self._settings_for(entry, settings)

    def _edit_answer(self, entry, record, before, after):
        counts = np.bincount(after.labels.ravel())
        return {"image_id": entry.image_id, "edits": _edits_summary(record, after),
                "changed_labels": changed_labels(before.labels, after.labels),
                "count": int(np.count_nonzero(counts[1:]))}

    def edit(self, image_id, edits, settings=None):
        """Add edits to an image's labelling; they apply to every analysis of it from now on.

        Parameters
        ----------
        image_id : str
        edits : dict or list of dict
            One edit or several, as :mod:`saemi.edits` describes them. ``erase``
            and ``merge`` may give ``labels`` (particle numbers in the labelling
            of ``settings`` before this request) instead of ``points``.
        settings : dict, optional
            The splitting settings the edits were made on (default: those of
            the image's last analysis).

        Returns
        -------
        dict
            ``image_id``, ``edits`` (the summary analyses carry: ``count``,
            ``applied``, ``dropped``, ``can_undo``, ``can_redo``),
            ``changed_labels`` (particles made, removed or reshaped) and
            ``count`` (particles now).

        Raises
        ------
        SaemiError
            ``bad_parameter`` for a malformed edit or one that would change
            nothing (a point on background, a line that cuts no particle in
            two, ...): then none of the request's edits is kept.
        """
        entry = self._get(image_id)
        s = self._last_settings(entry, settings)
        if isinstance(edits, dict):
            edits = [edits]
        if not isinstance(edits, list) or not edits:
            raise SaemiError("edits must be an edit object or a non-empty list of them", code="bad_parameter")
        record = self._edits(image_id)
        if len(record["done"]) + len(edits) > MAX_EDITS:
            raise SaemiError(f"an image holds at most {MAX_EDITS} edits; this one has {len(record['done'])}",
                             code="bad_parameter")
        before = self._corrected(entry, s, record["done"])
        stored = []
        for i, e in enumerate(edits):
            where = f"edit {i + 1}" if len(edits) > 1 else "the edit"
            try:
                if isinstance(e, dict) and e.get("op") in ("erase", "merge") and "labels" in e and "points" not in e:
                    if not isinstance(e["labels"], list) or not e["labels"]:
                        raise SaemiError("labels must be a non-empty list of particle numbers", code="bad_parameter")
                    e = {"op": e["op"], **{k: v for k, v in e.items() if k not in ("op", "labels")},
                         "points": label_points(before.labels, e["labels"])}
                stored.append(check_edit(e, before.labels.shape))
            except SaemiError as exc:
                raise SaemiError(f"{where}: {exc.message}", code=exc.code) from None
        after = apply_edits(before.labels, record["done"] + stored, start=before)
        if after.dropped[len(before.dropped):]:
            bad = after.dropped[len(before.dropped)]
            where = f"edit {bad['index'] - len(record['done']) + 1}" if len(edits) > 1 else "the edit"
            raise SaemiError(f"{where} ({bad['op']}) changes nothing: {bad['reason']}; no edit was kept",
                             code="bad_parameter")
        record = {"done": record["done"] + stored, "undone": []}
        self._save_edits(image_id, record)
        self._corrected(entry, s, record["done"])  # remembers ``after`` for the analysis that follows
        return self._edit_answer(entry, record, before, after)

    def _move_edit(self, image_id, settings, source, target, verb):
        entry = self._get(image_id)
        s = self._last_settings(entry, settings)
        record = self._edits(image_id)
        if not record[source]:
            raise SaemiError(f"there is no edit to {verb}", code="bad_parameter")
        before = self._corrected(entry, s, record["done"])
        record[target].append(record[source].pop())
        self._save_edits(image_id, record)
        return self._edit_answer(entry, record, before, self._corrected(entry, s, record["done"]))

    def undo(self, image_id, settings=None):
        """Take back the last edit (it can be redone); returns what :meth:`edit` returns."""
        return self._move_edit(image_id, settings, "done", "undone", "undo")

    def redo(self, image_id, settings=None):
        """Apply again the last edit undone; returns what :meth:`edit` returns."""
        return self._move_edit(image_id, settings, "undone", "done", "redo")

    def list_edits(self, image_id):
        """The edits of an image: ``done`` (oldest first) and ``undone`` (the redo stack, next last)."""
        self._get(image_id)
        return {"image_id": image_id, **self._edits(image_id)}

    def clear_edits(self, image_id, settings=None):
        """Drop every edit of an image (not undoable); returns what :meth:`edit` returns."""
        entry = self._get(image_id)
        s = self._last_settings(entry, settings)
        record = self._edits(image_id)
        before = self._corrected(entry, s, record["done"])
        self.store.delete(EDITS_PREFIX + image_id)
        empty = {"done": [], "undone": []}
        return self._edit_answer(entry, empty, before, self._corrected(entry, s, []))

    def labels_png(self, image_id, settings=None, every_particle=False):
        """The corrected label image of an analysis as a 16-bit PNG, and its download name.

        The same contract as the CLI's ``<name>_labels.png``: 0 is background,
        each particle one number, the particles the user excluded zeroed,
        unless ``every_particle`` (a training mask: an excluded particle is
        still a particle).
        """
        entry = self._get(image_id)
        result, _ = self._measure(entry, self._last_settings(entry, settings))
        labels = result.split_labels if every_particle else result.labels
        return png_bytes(labels, software=output_mark("labels")), f"{safe_stem(entry.filename)}_labels.png"

    def training_pair(self, image_id, settings=None):
        """The image and its corrected mask as a zip of ``images/<name>.png`` and ``segmaps/<name>.png``.

        Unzipped into one folder with other such pairs, it is what
        ``saemi train --extra DIR`` takes. Returns (zip bytes, download name).
        """
        import zipfile
        from io import BytesIO

        entry = self._get(image_id)
        mask, _ = self.labels_png(image_id, settings, every_particle=True)
        stem = f"{safe_stem(entry.filename)}_{image_id[:8]}"
        buf = BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # PNGs are compressed already
            z.writestr(f"images/{stem}.png", png_bytes(entry.segmentation.image))
            z.writestr(f"segmaps/{stem}.png", mask)
        return buf.getvalue(), f"{safe_stem(entry.filename)}_training_pair.zip"


    # --- samples (see saemi.sample) --------------------------------------------------------------

    def preview(self, image_id):
        """The image of ``image_id`` as the page shows it: ``segment``'s answer without the network, with
        ``preview`` (a JPEG, see :func:`saemi.overlay.preview_jpeg`). For stepping through a sample."""
        entry = self._get(image_id)
        jpeg, stride = preview_jpeg(entry.segmentation.image)
        return {**self._describe(image_id, entry), "preview": {"jpeg": base64.b64encode(jpeg).decode(),
                                                               "stride": stride}}

    def _sample_px_table(self, entry, settings):
        """The pixel particle table of ``entry``'s current labelling (its edits applied), every particle found.

        Kept per process under the labelling's state key, for as many images as a sample holds:
        a click in one image then re-measures nothing in the others.
        """
        corrected, state = self._state(entry, settings, self._edits(entry.image_id)["done"])
        with self._lock:
            table = self._sample_tables.get(state)
        if table is None:
            with self._lock:
                table = self._tables.get(state)
            if table is None:
                table = particle_table(corrected.labels)
            table = with_origin(table, corrected.origins)
            self._remember(self._sample_tables, state, table, MAX_SAMPLE_IMAGES)
        return table

    def sample(self, images, metric="equivalent_diameter", weighting="number", filters=None, unit="auto"):
        """The combined distribution of several analysed images (see :func:`saemi.sample.sample_statistics`).

        Parameters
        ----------
        images : list of dict
            One per image: ``image_id``, ``settings`` (splitting settings and
            ``removed_labels``; default: the image's last analysis's) and
            ``nm_per_pixel`` (the calibration in force; None: sizes in px).
        metric, weighting, filters, unit
            See :func:`saemi.sample.sample_statistics`.

        Returns
        -------
        dict
            Its answer, the ``table`` kept aside: a :class:`pandas.DataFrame`
            under ``table`` (the caller turns it into CSV or drops it).
        """
        from .measure import kept_particles
        from .sample import sample_statistics, unique_name

        if not isinstance(images, list) or not images:
            raise SaemiError("images must be a non-empty list of {image_id, settings, nm_per_pixel}",
                             code="bad_parameter")
        if len(images) > MAX_SAMPLE_IMAGES:
            raise SaemiError(f"a sample holds at most {MAX_SAMPLE_IMAGES} images; {len(images)} were given", code="bad_parameter")
        tables, nms, seen, ids = {}, {}, {}, {}
        for i, item in enumerate(images):
            if not isinstance(item, dict):
                raise SaemiError(f"image {i + 1} must be an object with an image_id", code="bad_parameter")
            entry = self._get(item.get("image_id"))
            s = self._last_settings(entry, item.get("settings"))
            name = unique_name(entry.filename, seen)
            tables[name] = kept_particles(self._sample_px_table(entry, s), s.removed_labels)
            nm = item.get("nm_per_pixel")
            nms[name] = float(nm) if isinstance(nm, (int, float)) and not isinstance(nm, bool) and nm > 0 else None
            ids[name] = entry.image_id
        out = sample_statistics(tables, nms, metric, weighting, filters, unit)
        for row in out["per_image"]:
            row["image_id"] = ids[row["image"]]
        out["filtered"] = {ids[n]: labels for n, labels in out["filtered"].items()}
        return out


def _edits_summary(record, corrected):
    """What an analysis says about the edits it applied (see :meth:`AnalysisService.edit`)."""
    return {"count": len(record["done"]), "applied": len(record["done"]) - len(corrected.dropped),
            "dropped": corrected.dropped, "can_undo": bool(record["done"]), "can_redo": bool(record["undone"])}


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
