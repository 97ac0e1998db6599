"""Analyses that run in the background, with their progress in the shared store.

A large micrograph takes seconds to minutes; a client that waits on one HTTP
request sees nothing until the end. :class:`JobBoard` runs the work in a
thread of the process that received it and writes the job's record (status,
the stage now running, the stages so far) to the store every worker shares
(:mod:`saemi.cache`), so a status request answered by any worker, or any
replica on Redis, sees the same progress.

The stages are the names every analysis already passes to
:meth:`saemi.budget.Deadline.check`: "reading the scale bar", "removing the
data bar", "network tile 3 of 12", "splitting touching particles",
"measuring the particles".

Decisions:

- A process runs at most ``max_running`` jobs at once (the network takes one
  forward pass at a time anyway) and holds at most ``max_queued`` waiting; past
  that :meth:`JobBoard.submit` refuses with code ``busy`` (503) rather than
  queueing work nobody will wait for.
- A job whose process died (a worker restart) would say "running" for ever.
  Its record carries the time by which it must have ended (its deadline plus
  :data:`LOST_GRACE_S`); past it, :func:`job_status` reports ``lost``.
- Records expire with the store's TTL, like the images they analyse.
"""

import json
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .budget import Deadline
from .errors import SaemiError

log = logging.getLogger(__name__)

JOB_PREFIX = "job-"
STATUSES = ("queued", "running", "done", "failed", "lost")
#: Seconds after its deadline before a job that never finished is called lost.
LOST_GRACE_S = 30.0
#: Progress is written at most this often (a stage change is always written).
WRITE_EVERY_S = 0.25
#: Stages kept in a record's history (a 50-megapixel image has ~200 tiles).
MAX_STAGES = 64


def new_job_id():
    """A random, URL-safe job id: ``job-`` plus 24 hex digits."""
    return JOB_PREFIX + secrets.token_hex(12)


def check_job_id(job_id):
    """Return ``job_id`` if it has the shape :func:`new_job_id` makes, else raise ``not_found``."""
    if not (isinstance(job_id, str) and job_id.startswith(JOB_PREFIX) and len(job_id) == len(JOB_PREFIX) + 24
            and all(c in "0123456789abcdef" for c in job_id[len(JOB_PREFIX):])):
        raise SaemiError(f"no job {str(job_id)[:80]!r}: job ids look like job-<24 hex digits>", code="not_found")
    return job_id


def _encode(record):
    return json.dumps(record, separators=(",", ":")).encode()


def job_status(record, now=None):
    """The public view of a stored job record.

    Parameters
    ----------
    record : dict
        As written by :class:`JobBoard`.
    now : float, optional
        ``time.time()``; given by tests.

    Returns
    -------
    dict
        ``job_id``, ``status`` (one of :data:`STATUSES`), ``stage`` (what runs
        now, or ran last), ``stages`` (``[{"stage", "at_s"}]``, seconds since
        the job started), ``elapsed_s``, and ``result`` once done or ``error``
        (``{"code", "message"}``) once failed or lost.
    """
    now = time.time() if now is None else now
    out = {k: record.get(k) for k in ("job_id", "status", "stage", "stages", "label")}
    started = record.get("started") or record["created"]
    end = record.get("ended") or now
    out["elapsed_s"] = round(max(0.0, end - started), 3)
    if record["status"] in ("queued", "running") and record.get("must_end") and now > record["must_end"]:
        out["status"] = "lost"
        out["error"] = {"code": "job_lost", "message": "the worker running this job stopped before it finished; "
                                                       "submit the image again"}
    elif record["status"] == "done":
        out["result"] = record.get("result")
    elif record["status"] == "failed":
        out["error"] = record.get("error")
    return out


PROGRESS_PREFIX = "prg-"


def _progress_key(key):
    """The store key of a caller's stage record; ``not_found`` for a key no record could have."""
    from .cache import check_key

    return PROGRESS_PREFIX + check_key(key)[:100]


class StageLog:
    """``on_stage`` for a :class:`saemi.budget.Deadline` that keeps the latest stage in the store.

    For work that runs in a request of its own (the page's upload) while
    another request, maybe in another worker, asks how far it got
    (:func:`read_stage`). ``key`` is the caller's (a browser tab's token).

    Parameters
    ----------
    store : saemi.cache.DiskStore or saemi.cache.RedisStore
    key : str
        8-100 URL-safe characters.
    """

    def __init__(self, store, key):
        self.store, self.key = store, _progress_key(key)
        self.started, self._last_write, self._stage = time.time(), 0.0, None

    def _write(self, stage, now, done):
        self.store.put(self.key, _encode({"stage": stage, "started": self.started, "at": now, "done": done}))

    def __call__(self, stage):
        now = time.time()
        if stage != self._stage or now - self._last_write >= WRITE_EVERY_S:
            self._stage, self._last_write = stage, now
            self._write(stage, now, False)

    def finish(self):
        """Mark the work ended, so a reader stops asking."""
        self._write("done", time.time(), True)


def run_reporting(fn, deadline, *args, **kwargs):
    """``fn(*args, deadline=deadline, **kwargs)``; then the deadline's stage record, if any, is marked done.

    Done whatever the outcome, so a client polling the record (the page's
    progress line, ``GET /progress/<token>``) stops. ``deadline.on_stage`` is a
    :class:`StageLog` or None.
    """
    try:
        return fn(*args, deadline=deadline, **kwargs)
    finally:
        if deadline.on_stage is not None:
            deadline.on_stage.finish()


def read_stage(store, key):
    """What :class:`StageLog` wrote under ``key``: ``{"stage", "elapsed_s", "done"}``, or None."""
    try:
        blob = store.get(_progress_key(key))
    except SaemiError:
        return None
    if blob is None:
        return None
    rec = json.loads(blob)
    return {"stage": rec["stage"], "elapsed_s": round(rec["at"] - rec["started"], 3), "done": rec["done"]}


class JobBoard:
    """Run analyses in background threads; keep their progress in ``store``.

    Parameters
    ----------
    store : saemi.cache.DiskStore or saemi.cache.RedisStore
        Shared by the workers, so any of them can answer a status request.
    timeout : float or None
        Seconds a job may run (its :class:`saemi.budget.Deadline`).
    max_running, max_queued : int
        Jobs this process runs at once, and holds waiting, before refusing.
    """

    def __init__(self, store, timeout=None, max_running=1, max_queued=8):
        self.store, self.timeout = store, timeout
        self.max_running, self.max_queued = int(max_running), int(max_queued)
        self._pool = None
        self._pending = 0
        self._lock = threading.Lock()

    def _executor(self):
        # built on first use, so a forked worker never inherits a parent's threads
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_running, thread_name_prefix="saemi-job")
        return self._pool

    def _put(self, record):
        self.store.put(record["job_id"], _encode(record))

    def get(self, job_id):
        """The public status of a job (:func:`job_status`); ``not_found`` if unknown or expired."""
        blob = self.store.get(check_job_id(job_id))
        if blob is None:
            raise SaemiError(f"no job {job_id!r}: it never existed, or it finished more than the cache's "
                             "lifetime ago", code="not_found")
        return job_status(json.loads(blob))

    def submit(self, work, label=""):
        """Queue ``work(deadline)`` and return the new job's status.

        Parameters
        ----------
        work : callable
            Called in a background thread with a :class:`saemi.budget.Deadline`
            to pass down the analysis; it returns the job's JSON-ready result.
            A :class:`SaemiError` it raises becomes the job's ``error``.
        label : str
            Shown in the status (the upload's name).

        Raises
        ------
        SaemiError
            ``busy`` when this process already holds ``max_queued`` jobs.
        """
        with self._lock:
            if self._pending >= self.max_running + self.max_queued:
                raise SaemiError(f"this worker already has {self._pending} analyses running or waiting; "
                                 "try again in a moment", code="busy")
            self._pending += 1
        now = time.time()
        record = {"job_id": new_job_id(), "status": "queued", "stage": "waiting for a free worker thread",
                  "stages": [], "label": label, "created": now, "started": None, "ended": None,
                  "pid": os.getpid(), "must_end": None}
        queued = job_status(record)
        try:
            self._put(record)
            self._executor().submit(self._run, record, work)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        return queued

    def _run(self, record, work):
        last_write = [0.0]

        def on_stage(stage):
            now = time.time()
            changed = stage != record["stage"]
            record["stage"] = stage
            if len(record["stages"]) < MAX_STAGES:
                record["stages"].append({"stage": stage, "at_s": round(now - record["started"], 3)})
            if changed or now - last_write[0] >= WRITE_EVERY_S:
                last_write[0] = now
                self._put(record)

        try:
            record["started"] = time.time()
            record["status"] = "running"
            if self.timeout is not None:
                record["must_end"] = record["started"] + self.timeout + LOST_GRACE_S
            on_stage("starting")
            try:
                result = work(Deadline(self.timeout, on_stage=on_stage))
                record.update(status="done", stage="done", result=result)
            except SaemiError as e:
                record.update(status="failed", error={"code": e.code, "message": str(e)})
            except MemoryError:
                record.update(status="failed", error={"code": "too_large",
                                                      "message": "the image needs more memory than this "
                                                                 "worker has"})
            except Exception as e:  # a bug: the job says so, the worker stays up
                log.exception("job %s failed", record["job_id"])
                record.update(status="failed", error={"code": "internal_error",
                                                      "message": f"the analysis failed ({type(e).__name__})"})
            record["ended"] = time.time()
            self._put(record)
        finally:
            with self._lock:
                self._pending -= 1
