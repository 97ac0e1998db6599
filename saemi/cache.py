"""The re-analysis cache: segmentations shared by every worker and replica, bounded in bytes.

What is stored
--------------
Three kinds of record, all as bytes under string keys:

* a **segmentation**, under the SHA-256 of the upload (a de-duplication key that
  never leaves the server): the image (one grey channel when its three are
  equal) and the class probabilities at the network's working scale as uint8
  (see :mod:`saemi.probability`), plus the banner box, the scale bar read and
  the timings; :func:`encode_segmentation` / :func:`decode_segmentation`;
* a **handle**, under a random id that the client gets (``image_id``): which
  segmentation it points to, the client's file name and its last settings.
  Two users who upload the same file get two handles and share one
  segmentation; neither can guess the other's id;
* the **labels** of one analysis (a segmentation under some splitting
  settings), so that a click, an overlay change or a CSV download never splits
  again or sends labels to the browser; :func:`encode_labels`.

Stores
------
:class:`DiskStore` (default): files in one folder, written atomically, shared by
all workers on a host. :class:`RedisStore` (``SAEMI_REDIS_URL``): shared by
replicas on several hosts. Both are bounded in bytes (least recently used
records go first) and expire records unused for ``ttl`` seconds.
:func:`open_store` picks one from the configuration. A record that was evicted
reads as None; the service then answers 404 ``not_found``, and the page uploads
the image again by itself.
"""

import io
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .errors import SaemiError
from .probability import dequantize, quantize, resize_probability

#: Keys are hex digests or URL-safe random ids: nothing that could name a path.
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
FORMAT = 1


def check_key(key):
    """Raise :class:`SaemiError` (``not_found``) for a key that no record could have."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise SaemiError("unknown image_id (expired or never uploaded); upload the image again", code="not_found")
    return key


# --- (de)serialisation -------------------------------------------------------------------------

def encode_segmentation(seg):
    """A :class:`saemi.pipeline.Segmentation` as compact bytes (an uncompressed ``.npz``).

    The probabilities are stored at the network's scale as uint8 when the
    segmentation has them there, else at full resolution as uint8.
    """
    image = np.asarray(seg.image)
    grey = image.ndim == 3 and bool((image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all())
    prob = seg.network_probability if seg.network_probability is not None else seg.probability
    meta = {"format": FORMAT, "shape": list(image.shape[:2]), "grey": grey,
            "banner_box": None if seg.banner_box is None else [int(v) for v in seg.banner_box],
            "timings": {k: float(v) for k, v in (seg.timings or {}).items()},
            "scale": None if seg.scale is None else seg.scale.to_dict(),
            "extra": _extra_fields(seg)}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
             image=image[..., 0] if grey else image, probability=quantize(prob))
    return buf.getvalue()


def _extra_fields(seg):
    """JSON-able fields of a segmentation beyond the arrays and the ones encoded above."""
    from dataclasses import fields

    skip = {"image", "cleaned", "probability", "network_probability", "banner_box", "timings", "scale"}
    out = {}
    for f in fields(seg):
        if f.name in skip:
            continue
        value = getattr(seg, f.name)
        out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
    return out


def decode_segmentation(blob):
    """The inverse of :func:`encode_segmentation`.

    ``cleaned`` is not stored (only the network needs it): it comes back as the
    image itself. ``probability`` is rebuilt at full resolution.
    """
    from .pipeline import Segmentation
    from .scalebar import Scale

    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        image, q = z["image"], z["probability"]
    if meta.get("format") != FORMAT:
        raise ValueError("cache record of another format")
    if meta["grey"]:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = meta["shape"]
    network = dequantize(q)
    prob = resize_probability(network, (h, w))
    scale = None if meta["scale"] is None else _scale_from_dict(Scale, meta["scale"])
    seg = Segmentation(image, image, prob, None if meta["banner_box"] is None else tuple(meta["banner_box"]),
                       meta["timings"], scale, network if network.shape[1:] != (h, w) else None)
    for name, value in (meta.get("extra") or {}).items():
        setattr(seg, name, _restore_field(name, value))
    if "network_scale" not in (meta.get("extra") or {}):
        # a record from before size-normalised inference: its scale is what the shapes say
        seg.network_scale = (network.shape[1] / h + network.shape[2] / w) / 2
    return seg


def _scale_from_dict(cls, d):
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    return cls(**{k: (tuple(v) if k.endswith("_box") and v is not None else v) for k, v in d.items() if k in names})


def _restore_field(name, value):
    from . import pipeline

    restore = getattr(pipeline, "SEGMENTATION_FIELD_DECODERS", {}).get(name)
    return restore(value) if restore and value is not None else value


def encode_labels(labels):
    """A label image as compact bytes: uint16 where it fits, zlib-compressed (labels compress ~20x)."""
    import zlib

    lab = np.asarray(labels)
    lab = lab.astype(np.uint16) if lab.max(initial=0) <= 65535 else lab.astype(np.int32)
    buf = io.BytesIO()
    np.save(buf, lab, allow_pickle=False)
    return zlib.compress(buf.getvalue(), 1)


def decode_labels(blob):
    """The int32 label image :func:`encode_labels` stored."""
    import zlib

    return np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False).astype(np.int32)


def encode_handle(record):
    return json.dumps(record).encode()


def decode_handle(blob):
    return json.loads(blob.decode())


# --- stores -----------------------------------------------------------------------------------

def check_fits(blob, max_bytes):
    """Raise :class:`SaemiError` (``too_large``) for a record larger than the whole store."""
    if len(blob) > max_bytes:
        raise SaemiError(f"this image's analysis ({len(blob) / 2**20:.0f} MB) does not fit the server's cache "
                         f"of {max_bytes / 2**20:.0f} MB (SAEMI_CACHE_BYTES)", code="too_large")


class DiskStore:
    """Records as files in one folder, shared by every process on the host.

    Parameters
    ----------
    root : str or Path
    max_bytes : int
        Total size of the records kept; the least recently used go first.
    ttl : float
        Seconds a record may stay unused.
    """

    kind = "disk"

    def __init__(self, root, max_bytes, ttl):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.ttl = int(max_bytes), float(ttl)
        self._lock = threading.Lock()

    def _path(self, key):
        return self.root / f"{check_key(key)}.rec"

    def put(self, key, blob):
        check_fits(blob, self.max_bytes)
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.evict()

    def get(self, key):
        path = self._path(key)
        try:
            st = path.stat()
            if time.time() - st.st_mtime > self.ttl:
                path.unlink(missing_ok=True)
                return None
            blob = path.read_bytes()
            os.utime(path)  # most recently used
            return blob
        except FileNotFoundError:
            return None

    def touch(self, key):
        """Mark a record used; False when it is gone (evicted or expired)."""
        path = self._path(key)
        try:
            if time.time() - path.stat().st_mtime > self.ttl:
                path.unlink(missing_ok=True)
                return False
            os.utime(path)
            return True
        except FileNotFoundError:
            return False

    def delete(self, key):
        self._path(key).unlink(missing_ok=True)

    def entries(self):
        """(mtime, size, path) of every record."""
        out = []
        with os.scandir(self.root) as it:
            for e in it:
                if e.name.endswith(".rec"):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    out.append((st.st_mtime, st.st_size, Path(e.path)))
        return out

    def size_bytes(self):
        return sum(size for _, size, _ in self.entries())

    def evict(self):
        """Drop expired records, then the least recently used until the total fits."""
        with self._lock:
            now = time.time()
            entries = sorted(self.entries())
            total = sum(size for _, size, _ in entries)
            for mtime, size, path in entries:
                if total <= self.max_bytes and now - mtime <= self.ttl:
                    continue
                path.unlink(missing_ok=True)
                total -= size

    def count(self, prefix=""):
        return sum(1 for _, _, p in self.entries() if p.name.startswith(prefix))


class RedisStore:
    """Records in Redis, shared by replicas on several hosts.

    Each record is a string key with the TTL; a sorted set (last use) and a hash
    (sizes) beside them give least-recently-used eviction down to ``max_bytes``.

    Parameters
    ----------
    url : str
        ``redis://host:port/db``.
    max_bytes : int
    ttl : float
    prefix : str
    """

    kind = "redis"

    def __init__(self, url, max_bytes, ttl, prefix="saemi:"):
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.max_bytes, self.ttl, self.prefix = int(max_bytes), max(1, int(ttl)), prefix
        self._lru, self._sizes = prefix + "lru", prefix + "sizes"

    def _k(self, key):
        return self.prefix + "rec:" + check_key(key)

    def put(self, key, blob):
        check_fits(blob, self.max_bytes)
        pipe = self.redis.pipeline()
        pipe.set(self._k(key), blob, ex=self.ttl)
        pipe.zadd(self._lru, {key: time.time()})
        pipe.hset(self._sizes, key, len(blob))
        pipe.execute()
        self.evict()

    def get(self, key):
        blob = self.redis.get(self._k(key))
        if blob is None:
            self.redis.zrem(self._lru, key)
            self.redis.hdel(self._sizes, key)
            return None
        pipe = self.redis.pipeline()
        pipe.zadd(self._lru, {key: time.time()})
        pipe.expire(self._k(key), self.ttl)
        pipe.execute()
        return blob

    def touch(self, key):
        """Mark a record used; False when it is gone (evicted or expired)."""
        if not self.redis.expire(self._k(key), self.ttl):
            self.redis.zrem(self._lru, key)
            self.redis.hdel(self._sizes, key)
            return False
        self.redis.zadd(self._lru, {key: time.time()})
        return True

    def delete(self, key):
        pipe = self.redis.pipeline()
        pipe.delete(self._k(key))
        pipe.zrem(self._lru, key)
        pipe.hdel(self._sizes, key)
        pipe.execute()

    def size_bytes(self):
        return sum(int(v) for v in self.redis.hvals(self._sizes))

    def evict(self):
        cutoff = time.time() - self.ttl
        for key in self.redis.zrangebyscore(self._lru, "-inf", cutoff):
            self.delete(key.decode())
        total = self.size_bytes()
        while total > self.max_bytes:
            oldest = self.redis.zpopmin(self._lru, 1)
            if not oldest:
                break
            key = oldest[0][0].decode()
            size = int(self.redis.hget(self._sizes, key) or 0)
            self.delete(key)
            total -= size

    def count(self, prefix=""):
        return sum(1 for k in self.redis.zrange(self._lru, 0, -1) if k.decode().startswith(prefix))


def default_cache_dir():
    """``$TMPDIR/saemi-cache-<uid>``: one folder per user, shared by that user's workers."""
    return Path(tempfile.gettempdir()) / f"saemi-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def open_store(redis_url=None, cache_dir=None, max_bytes=256 * 2**20, ttl=24 * 3600):
    """The store the configuration asks for: Redis with a URL, else the disk folder."""
    if redis_url:
        return RedisStore(redis_url, max_bytes, ttl)
    return DiskStore(cache_dir or default_cache_dir(), max_bytes, ttl)
