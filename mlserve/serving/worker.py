"""A gunicorn worker that reads each whole request in its event loop before a thread runs it.

gunicorn's gthread worker gives a connection to a thread as soon as its first
bytes arrive; the thread then blocks on ``recv`` until the request is in. A
client that trickles its headers or body (slowloris, or a slow mobile network)
holds that thread as long as it likes, and ``--threads`` such clients freeze
the worker, health checks included.

:class:`BufferingThreadWorker` keeps gthread's event loop, thread pool, keep-alive
and graceful shutdown, and changes one thing: the event loop reads each request
with non-blocking ``recv`` calls until it is complete (the head, then a body of
its Content-Length or chunked up to the last chunk, at most ``max_body_bytes``),
and only then hands the buffered bytes to gunicorn's own parser in a thread.
A thread never waits for a client. A request that is not in by
``client_timeout`` seconds after it started (measured from the connection's
accept, or from the first byte after a keep-alive pause; never reset by a
trickled byte) gets a 408 and the connection closes.

Run it directly with ``gunicorn -k mlserve.serving.worker.BufferingThreadWorker``
(limits from the MLSERVE_CLIENT_TIMEOUT and MLSERVE_MAX_BODY_BYTES environment
variables, else their defaults), or through ``mlserve serve``, which builds a
subclass with its ``--client-timeout`` and ``--max-body-bytes`` (:func:`worker_class`).
"""

from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import time
from collections import OrderedDict
from functools import partial
from typing import Any

from gunicorn.http.unreader import Unreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from mlserve.serving.config import ServingConfig

__all__ = ["BufferingThreadWorker", "RequestFraming", "worker_class"]

#: After a "Connection: close" answer, how long the read side stays open to
#: swallow what the client still sends (RFC 9112 9.6; gunicorn's close_graceful).
LINGER_SECONDS = 2.0
READ_SIZE = 64 * 1024
BODY_READ_SIZE = 1024 * 1024  # a large body in few recv() calls
CHUNK_SIZE_LINE_LIMIT = 8190  # gunicorn's limit for a chunk-size line
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: The header fields that say where a request ends (matched in the lower-cased head)
FRAMING_HEADER = re.compile(rb"\r\n(content-length|transfer-encoding|expect):([^\r\n]*)")


# ------------------------------------------------------------------ framing


class Ready:
    """The request can go to a thread. ``complete`` is False when its body was not
    read (declared over the limit, or framing that gunicorn's parser must judge):
    the connection then closes after the answer."""

    __slots__ = ("complete",)

    def __init__(self, complete: bool) -> None:
        self.complete = complete


class Refusal:
    """Answer ``status`` with ``{"error": message}`` from the event loop and close."""

    __slots__ = ("status", "reason", "message")

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message


NEED_MORE = None
READY = Ready(True)
HAND_OVER = Ready(False)


class RequestFraming:
    """Finds where one HTTP/1.x request ends in the bytes received so far.

    Only the framing is read here (end of the head, Content-Length,
    Transfer-Encoding: chunked, Expect): everything else, and every malformed
    or unusual message, is left to gunicorn's parser, which answers 400/501 as
    it does under gthread. Each :meth:`check` resumes where the last one stopped.
    """

    def __init__(self, max_head_bytes: int, max_body_bytes: int) -> None:
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.buffer = bytearray()
        self.wants_continue = False  # the client waits for "100 Continue" before its body
        self._body_start = -1  # offset of the body once the head is complete
        self._length = 0  # Content-Length, or -1 for a chunked body
        self._scan = 0  # where the next search for the head's end or a chunk starts
        self._body_bytes = 0  # chunked: decoded bytes so far

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def read_size(self) -> int:
        return BODY_READ_SIZE if self._body_start >= 0 else READ_SIZE

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer = bytearray()
        return data

    def check(self) -> Ready | Refusal | None:
        """NEED_MORE (None), a :class:`Ready` or a :class:`Refusal`."""
        if self._body_start < 0:
            verdict = self._check_head()
            if self._body_start < 0 or verdict is not NEED_MORE:
                return verdict
        if self._length >= 0:
            if len(self.buffer) - self._body_start >= self._length:
                return READY
            return NEED_MORE
        return self._check_chunks()

    def _check_head(self) -> Ready | Refusal | None:
        end = self.buffer.find(b"\r\n\r\n", max(0, self._scan - 3))
        if end < 0:
            self._scan = len(self.buffer)
            if len(self.buffer) > self.max_head_bytes:
                return Refusal(
                    431,
                    "Request Header Fields Too Large",
                    f"request headers are over {self.max_head_bytes} bytes",
                )
            return NEED_MORE
        head = bytes(self.buffer[:end]).lower()
        if head.count(b"\n") != head.count(b"\r\n"):
            return HAND_OVER  # bare LF: gunicorn refuses it
        request_line_end = head.find(b"\r\n", 2)  # one empty line before it is allowed
        request_line = head[: request_line_end if request_line_end >= 0 else len(head)]
        lengths, codings, expect = [], [], b""
        for name, value in FRAMING_HEADER.findall(head):
            value = value.strip(b" \t")
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [c.strip(b" \t") for c in value.split(b",")]
            else:
                expect = value
        self._body_start = end + 4
        self._scan = self._body_start
        if codings:
            if lengths or codings[-1] != b"chunked":
                return HAND_OVER  # gunicorn answers 400 / 501
            self._length = -1
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                return HAND_OVER
            self._length = int(lengths[0])
            if self._length > self.max_body_bytes:
                return HAND_OVER  # the app answers 413 without reading the body
        self.wants_continue = expect == b"100-continue" and request_line.endswith(b"http/1.1")
        return NEED_MORE

    def _check_chunks(self) -> Ready | Refusal | None:
        buffer = self.buffer
        while True:
            line_end = buffer.find(b"\r\n", self._scan)
            if line_end < 0:
                if len(buffer) - self._scan > CHUNK_SIZE_LINE_LIMIT:
                    return HAND_OVER
                return NEED_MORE
            size_text = bytes(buffer[self._scan : line_end]).split(b";", 1)[0].strip(b" \t")
            try:
                size = int(size_text, 16)
            except ValueError:
                return HAND_OVER  # gunicorn: invalid chunk size
            if size == 0:
                return self._check_trailers(line_end + 2)
            self._body_bytes += size
            if self._body_bytes > self.max_body_bytes:
                return Refusal(
                    413,
                    "Content Too Large",
                    f"request body is over the limit of {self.max_body_bytes} bytes "
                    "(MLSERVE_MAX_BODY_BYTES)",
                )
            next_chunk = line_end + 2 + size + 2
            if len(buffer) < next_chunk:
                self._body_bytes -= size  # counted again when the chunk is in
                return NEED_MORE
            self._scan = next_chunk

    def _check_trailers(self, start: int) -> Ready | None:
        if self.buffer[start : start + 2] == b"\r\n":
            return READY
        if self.buffer.find(b"\r\n\r\n", start) >= 0:
            return READY
        if len(self.buffer) - start > self.max_head_bytes:
            return HAND_OVER
        return NEED_MORE


def max_head_bytes(cfg: Any) -> int:
    """The largest request head gunicorn's parser accepts with ``cfg``'s limits."""
    fields = cfg.limit_request_fields
    if fields <= 0 or fields > 32768:
        fields = 32768
    field_size = cfg.limit_request_field_size or 8190
    line = cfg.limit_request_line or 8190
    return line + 2 + fields * (field_size + 2) + 4


def error_payload(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


# ------------------------------------------------------------------- worker


class BufferUnreader(Unreader):
    """gunicorn's parser reads from what the event loop received; never the socket.

    Bytes past the request (a pipelined next one) stay here and go back to the
    event loop after the answer.
    """

    def chunk(self, size_hint: int | None = None) -> bytes:
        return b""  # end of data: a request the framing misjudged fails, it never blocks


class BufferedConn(TConn):
    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, closer: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.closer = closer
        self.framing: RequestFraming | None = None
        self.deadline = 0.0
        self.received = b""
        self.request_complete = True
        self.sent_continue = False
        self.data_ready = True  # the event loop has the request: no wait in the thread

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.closer(self.sock)  # lingers in the event loop, not blocking it
        else:
            super().close()


class BufferingThreadWorker(ThreadWorker):
    """gthread, with whole requests read in the event loop (see the module docstring)."""

    #: Seconds a request may take to arrive, and the largest body read; None: from
    #: the environment's MLSERVE_CLIENT_TIMEOUT / MLSERVE_MAX_BODY_BYTES or their defaults.
    client_timeout: float | None = None
    max_body_bytes: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.client_timeout is None or self.max_body_bytes is None:
            config = ServingConfig.from_environ()
            self.client_timeout = self.client_timeout or config.client_timeout
            self.max_body_bytes = self.max_body_bytes or config.max_body_bytes
        self.max_head_bytes = max_head_bytes(self.cfg)
        # insertion order is deadline order: every deadline is now + one constant
        self.reading: OrderedDict[BufferedConn, None] = OrderedDict()
        self.lingering: OrderedDict[socket.socket, float] = OrderedDict()

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        unsupported = {
            "TLS (certfile)": cfg.is_ssl,
            f"protocol {cfg.protocol!r}": cfg.protocol != "http",
            "proxy_protocol": cfg.proxy_protocol != "off",
            "http2_cleartext": getattr(cfg, "http2_cleartext", "off") != "off",
            "HTTP/2": "h2" in (getattr(cfg, "http_protocols", None) or ["h1"]),
        }
        found = [name for name, used in unsupported.items() if used]
        if found:
            raise RuntimeError(
                f"{cls.__module__}.{cls.__qualname__} reads plain HTTP/1.x only; "
                f"not supported: {', '.join(found)} (terminate them in a reverse proxy)"
            )

    # -- connections in the event loop

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(
            self.cfg, client_sock, client_addr, listener.getsockname(), self._close_gracefully
        )
        self._start_reading(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def on_client_socket_readable(self, conn: BufferedConn, client: Any) -> None:
        """A kept-alive connection sends its next request: that request's clock starts now."""
        self.keepalived_conns.remove(conn)
        self._start_reading(conn)
        self._on_readable(conn, client)  # most requests arrive in one piece: handed over now
        if conn in self.reading:  # not yet: wait for the rest in the loop
            self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _start_reading(self, conn: BufferedConn, leftover: bytes = b"") -> None:
        conn.sock.setblocking(False)
        conn.framing = RequestFraming(self.max_head_bytes, self.max_body_bytes)
        conn.framing.feed(leftover)
        conn.deadline = time.monotonic() + self.client_timeout
        conn.sent_continue = False
        self.reading[conn] = None

    def _on_readable(self, conn: BufferedConn, _fileobj: Any) -> None:
        framing = conn.framing
        try:
            data = conn.sock.recv(framing.read_size())
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away mid-request (or between requests)
            self._stop_reading(conn)
            self.nr_conns -= 1
            conn.close()
            return
        framing.feed(data)
        self._advance(conn)

    def _advance(self, conn: BufferedConn) -> None:
        framing = conn.framing
        verdict = framing.check()
        if verdict is NEED_MORE:
            if framing.wants_continue and not conn.sent_continue:
                conn.sent_continue = True  # the client waits for it before sending its body
                self._send_now(conn.sock, CONTINUE)
            return
        self._stop_reading(conn)
        if isinstance(verdict, Refusal):
            self._refuse(conn, verdict.status, verdict.reason, verdict.message)
            return
        conn.request_complete = verdict.complete
        conn.received = framing.take()
        conn.framing = None
        self.enqueue_req(conn)

    def _stop_reading(self, conn: BufferedConn) -> None:
        del self.reading[conn]
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _refuse(self, conn: BufferedConn, status: int, reason: str, message: str) -> None:
        self._send_now(conn.sock, error_payload(status, reason, message))
        self.nr_conns -= 1
        self._close_gracefully(conn.sock)

    @staticmethod
    def _send_now(sock: socket.socket, data: bytes) -> None:
        """Send what the socket takes without waiting (a small answer always fits)."""
        try:
            sock.send(data)
        except OSError:
            pass

    def _close_gracefully(self, sock: socket.socket) -> None:
        """Half-close, then swallow what the client still sends for LINGER_SECONDS, in the loop."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self.lingering[sock] = time.monotonic() + LINGER_SECONDS
        self.poller.register(sock, selectors.EVENT_READ, self._on_lingering_readable)

    def _on_lingering_readable(self, sock: socket.socket) -> None:
        try:
            if sock.recv(READ_SIZE):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        sock.close()

    def murder_pending(self) -> None:
        """Runs once per loop turn: requests past the client timeout, finished lingers."""
        super().murder_pending()
        now = time.monotonic()
        expired = []
        for conn in self.reading:
            if conn.deadline > now:
                break
            expired.append(conn)
        if not self.alive:  # stopping: a connection that sent nothing yet closes now
            expired += [c for c in self.reading if not c.framing.buffer and c not in expired]
        for conn in expired:
            self._stop_reading(conn)
            if conn.framing.buffer:
                message = (
                    f"the request was not received in full within {self.client_timeout:g} s "
                    "(MLSERVE_CLIENT_TIMEOUT, mlserve serve --client-timeout)"
                )
                self._refuse(conn, 408, "Request Timeout", message)
            else:  # nothing asked, nothing to answer
                self.nr_conns -= 1
                conn.close()
        while self.lingering:
            sock, deadline = next(iter(self.lingering.items()))
            if deadline > now:
                break
            self._end_linger(sock)

    # -- the request in a thread

    def handle(self, conn: BufferedConn) -> Any:
        conn.sock.setblocking(True)  # the answer is written by the thread
        conn.init()
        if not isinstance(conn.parser.unreader, BufferUnreader):
            conn.parser.unreader = BufferUnreader()
        conn.parser.unreader.unread(conn.received)
        conn.received = b""
        return super().handle(conn)

    def handle_request(self, req: Any, conn: BufferedConn) -> Any:
        if conn.sent_continue:
            req._expected_100_continue = False  # the event loop sent "100 Continue" already
        if not conn.request_complete:
            # Its body is still on the wire: the answer says "Connection: close", so
            # the client never sends its next request on a connection about to close.
            req.must_close = True
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn: BufferedConn, keepalive: bool) -> bool:
        if not conn.request_complete:
            return False  # the rest of its body is still on the wire: close
        return super()._keepalive_after(conn, keepalive)

    def finish_request(self, conn: BufferedConn, fs: Any) -> None:
        try:
            kept_alive = not fs.cancelled() and fs.result() is True
        except Exception:
            kept_alive = False
        if kept_alive:
            pipelined = conn.parser.unreader.take_buffered()
            if pipelined:  # the next request arrived with this one: read its rest in the loop
                self._start_reading(conn, pipelined)
                self.poller.register(
                    conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn)
                )
                self._advance(conn)
                return
        super().finish_request(conn, fs)


def worker_class(client_timeout: float, max_body_bytes: int) -> type[BufferingThreadWorker]:
    """A :class:`BufferingThreadWorker` with these limits (gunicorn takes a class as worker_class)."""
    return type(
        "BufferingThreadWorker",
        (BufferingThreadWorker,),
        {
            "client_timeout": float(client_timeout),
            "max_body_bytes": int(max_body_bytes),
            "__module__": __name__,
        },
    )
