"""A gunicorn worker that never lets a slow client hold a thread.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as its
first bytes arrive; the thread then blocks reading the rest of the request. Four
clients that send half a header and wait keep all four threads, and so
``/health``, unanswered (measured: 240 s with the stock worker).

:class:`BufferingThreadWorker` reads each request in the worker's event loop,
without blocking, the way nginx buffers requests: the header, and a body of
declared length up to the upload limit. Only a complete request reaches a
thread. A client that has not sent its whole request within
``SAEMI_CLIENT_TIMEOUT`` seconds (default 30) of its first byte, or of its
previous request on a kept-alive connection, is answered ``408`` and closed.
Chunked bodies (no declared length) and bodies over the limit are handed over
after the header; the application then refuses an oversized body with 413.

Used by ``gunicorn.conf.py`` (``worker_class``) for every SAEMI server.
"""

import errno
import os
import selectors
import time
from functools import partial

from gunicorn.workers import gthread

#: Seconds a client may take to send one whole request.
DEFAULT_CLIENT_TIMEOUT = 30.0
#: Bodies up to this many bytes are buffered before a thread sees the request
#: (the default upload limit in base64 JSON plus form overhead).
DEFAULT_MAX_BUFFERED_BODY = 72 * 2**20
MAX_HEADER_BYTES = 64 * 1024

_TIMEOUT_BODY = b'{"error": {"code": "request_timeout", "message": "the request was not sent in time"}}'
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(_TIMEOUT_BODY)) + _TIMEOUT_BODY


class _Pending:
    """A request being read in the event loop: bytes so far, deadline, total length once known."""

    __slots__ = ("buf", "deadline", "needed")

    def __init__(self, deadline):
        self.buf, self.deadline, self.needed = bytearray(), deadline, None


def _env_float(name, default):
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def bytes_needed(buf, max_body):
    """How many bytes the request in ``buf`` has in all, once its header is there.

    Parameters
    ----------
    buf : bytes
        The start of a request: at least its header, or everything so far.
    max_body : int
        Bodies declared longer than this are not waited for.

    Returns
    -------
    int or None
        None while the header is incomplete; else the length of header plus a
        body that is worth waiting for (a chunked, malformed or over-long body
        counts as 0: the thread and the application deal with it).

    Examples
    --------
    >>> bytes_needed(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n", 10) is None
    True
    >>> bytes_needed(b"POST / HTTP/1.1\\r\\nContent-Length: 3\\r\\n\\r\\nab", 10)
    41
    >>> bytes_needed(b"POST / HTTP/1.1\\r\\nContent-Length: 99\\r\\n\\r\\nab", 10)
    39
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        # an endless header: hand it over, gunicorn's parser refuses it with 431/400
        return 0 if len(buf) > MAX_HEADER_BYTES else None
    header_len = end + 4
    length = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return header_len
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return header_len
    return header_len + (length if 0 < length <= max_body else 0)


class BufferingThreadWorker(gthread.ThreadWorker):
    """``gthread`` with request buffering in the event loop (see the module docstring)."""

    def init_process(self):
        self.client_timeout = _env_float("SAEMI_CLIENT_TIMEOUT", DEFAULT_CLIENT_TIMEOUT)
        self.max_buffered_body = int(_env_float("SAEMI_MAX_BUFFERED_BODY", DEFAULT_MAX_BUFFERED_BODY))
        self.buffering = {}  # conn -> _Pending
        super().init_process()

    # --- entry points: new connections and kept-alive ones are buffered first -----------

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = gthread.TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._start_buffering(conn)

    def on_client_socket_readable(self, conn, client):
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_buffering(conn)

    def _start_buffering(self, conn):
        conn.sock.setblocking(False)
        self.buffering[conn] = _Pending(time.monotonic() + self.client_timeout)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn, sock):
        pending = self.buffering[conn]
        try:
            chunk = sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client went away
            self._drop(conn)
            return
        pending.buf += chunk
        if pending.needed is None:
            head = bytes(pending.buf[:MAX_HEADER_BYTES + 4])
            pending.needed = bytes_needed(head, self.max_buffered_body)
            if pending.needed is not None and len(pending.buf) < pending.needed and \
                    b"\r\nexpect: 100-continue" in head[:head.find(b"\r\n\r\n")].lower():
                # the client waits for this before it sends the body we are waiting for (curl
                # gives up waiting after 1 s); gunicorn's own 100 comes later, and a second
                # interim response is harmless
                try:
                    sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except OSError:
                    pass
        if pending.needed is None or len(pending.buf) < pending.needed:
            return
        self.poller.unregister(sock)
        del self.buffering[conn]
        conn.sock.setblocking(True)
        conn.init()
        # the request so far goes to the parser ahead of whatever the socket still holds
        conn.parser.unreader.unread(bytes(pending.buf))
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, conn, answer=False):
        self.buffering.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass
        if answer:
            try:
                conn.sock.send(_TIMEOUT_RESPONSE)
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        for conn, pending in list(self.buffering.items()):
            if now > pending.deadline:
                if pending.buf:
                    self.log.info("closed a connection that sent %d bytes of a request in %.0f s",
                                  len(pending.buf), self.client_timeout)
                self._drop(conn, answer=bool(pending.buf))
