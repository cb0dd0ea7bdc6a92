"""Slow clients (slowloris, slow mobile networks) against a real ``mlserve serve``.

Raw sockets on 127.0.0.1 trickle header or body bytes; the server must keep
answering everyone else at once, and close a request that is not in by
``--client-timeout`` (408 where an answer can still be sent).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from mlserve.store import ModelStore
from serving_support import Server, fit_regressor

ROW = [0.5, -1.2, 3.3, 0.1]
PREDICT_BODY = json.dumps({"features": ROW}).encode()
CLIENT_TIMEOUT = 2  # seconds, for the server that tests the timeout itself
MAX_BODY = 100_000
TRICKLE_PERIOD = 0.5  # seconds between two bytes of a slow client


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow") / "models"
    ModelStore(root).publish("reg", fit_regressor(), alias="production")
    return root


@pytest.fixture(scope="module")
def default_server(store_dir):
    """``mlserve serve`` with its defaults (client timeout 30 s), one worker, four threads."""
    server = Server(store_dir, "--workers", "1", "--threads", "4", "--reload-interval", "0")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(store_dir):
    """A server with a short client timeout, to watch it fire."""
    server = Server(
        store_dir,
        "--workers", "1", "--threads", "4", "--reload-interval", "0",
        "--client-timeout", str(CLIENT_TIMEOUT), "--max-body-bytes", str(MAX_BODY),
    )  # fmt: skip
    yield server
    server.stop()


def connect(server: Server, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_head(path: str, headers: dict[str, str | int]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def predict_request(body: bytes = PREDICT_BODY, **extra: str) -> bytes:
    headers = {"Content-Type": "application/json", "Content-Length": len(body), **extra}
    return request_head("/predict/reg", headers) + body


def read_response(sock: socket.socket, pending: bytearray | None = None) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body).

    ``pending`` holds bytes read past the previous response on this socket.
    """
    data = pending if pending is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {bytes(data)!r}")
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0))
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a response body")
        body += chunk
    data[:] = body[length:]
    return int(status_line.split()[1]), headers, bytes(body[:length])


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset), reading at most 1 s."""
    sock.settimeout(1.0)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


class SlowClients:
    """``n`` connections that send ``opening`` and then one more byte every TRICKLE_PERIOD."""

    def __init__(self, server: Server, n: int, opening: bytes, trickle: bytes = b"x") -> None:
        self.sockets = [connect(server) for _ in range(n)]
        for sock in self.sockets:
            sock.sendall(opening)
        self.trickle = trickle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(TRICKLE_PERIOD):
            for sock in self.sockets:
                try:
                    sock.send(self.trickle)
                except OSError:
                    pass  # the server closed it: fine

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


def latency(call) -> float:
    """Seconds ``call()`` took; a timeout or refused connection counts as forever."""
    start = time.monotonic()
    try:
        response = call()
    except requests.RequestException:
        return float("inf")
    assert response.status_code == 200, response.text
    return time.monotonic() - start


def test_64_slow_clients_do_not_delay_health_checks_or_predicts(default_server):
    url = default_server.url
    slow = [
        # trickling the headers: a header name that never ends
        SlowClients(default_server, 32, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow"),
        # full headers, then the body a byte at a time
        SlowClients(
            default_server, 32, request_head("/predict/reg", {"Content-Length": 10_000}), b" "
        ),
    ]
    try:
        time.sleep(1.0)  # every slow connection accepted and trickling
        health, predict = [], []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            health.append(latency(lambda: requests.get(f"{url}/v2/health/ready", timeout=3)))
            predict.append(
                latency(
                    lambda: requests.post(
                        f"{url}/predict/reg", json={"features": ROW}, timeout=3
                    )
                )
            )
            time.sleep(0.1)
    finally:
        for clients in slow:
            clients.close()
    assert max(health) < 1.0, f"health check latencies (s): {health}"
    assert max(predict) < 1.0, f"predict latencies (s): {predict}"


@pytest.mark.parametrize(
    "opening, trickle",
    [
        (b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow", b"x"),
        (request_head("/predict/reg", {"Content-Length": 1000}) + b'{"features": ', b" "),
    ],
    ids=["headers", "body"],
)
def test_trickling_client_gets_408_after_client_timeout(server, opening, trickle):
    clients = SlowClients(server, 1, opening, trickle)
    sock = clients.sockets[0]
    start = time.monotonic()
    try:
        sock.settimeout(CLIENT_TIMEOUT + 5)
        status, headers, body = read_response(sock)
        elapsed = time.monotonic() - start
        # measured from the start of the request, not reset by each byte
        assert CLIENT_TIMEOUT - 0.2 <= elapsed <= CLIENT_TIMEOUT + 1.5
        assert status == 408
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        message = json.loads(body)["error"]
        assert message == (
            f"the request was not received in full within {CLIENT_TIMEOUT:g} s "
            "(MLSERVE_CLIENT_TIMEOUT, mlserve serve --client-timeout)"
        )
        assert closed_by_server(sock)
    finally:
        clients.close()


def test_silent_connection_is_closed_without_an_answer(server):
    sock = connect(server, timeout=CLIENT_TIMEOUT + 5)
    start = time.monotonic()
    with sock:
        assert sock.recv(1024) == b""  # no 408 to a client that never asked anything
    assert time.monotonic() - start <= CLIENT_TIMEOUT + 1.5


def test_idle_keepalive_connection_after_a_request_is_closed_silently(server):
    with connect(server, timeout=15) as sock:
        sock.sendall(predict_request())
        assert read_response(sock)[0] == 200
        start = time.monotonic()
        assert sock.recv(1024) == b""  # gunicorn's keepalive (5 s), as before
        assert 4 <= time.monotonic() - start <= 8


def test_request_sent_slowly_but_within_the_timeout_is_served(server):
    request = predict_request()
    with connect(server) as sock:
        for piece in (request[:10], request[10:40], request[40:-5], request[-5:]):
            sock.sendall(piece)
            time.sleep(0.2)
        status, _, body = read_response(sock)
    assert status == 200, body
    assert json.loads(body)["prediction"] == pytest.approx(fit_regressor().predict([ROW])[0])


def test_keepalive_pipelined_and_chunked_requests(server):
    chunked = request_head(
        "/predict/reg", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    pieces = [PREDICT_BODY[:7], PREDICT_BODY[7:]]
    chunked += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with connect(server) as sock:
        pending = bytearray()
        sock.sendall(predict_request() + predict_request())  # two requests in one packet
        answers = [read_response(sock, pending), read_response(sock, pending)]
        sock.sendall(chunked[:50])
        time.sleep(0.2)
        sock.sendall(chunked[50:])
        answers.append(read_response(sock, pending))
        sock.sendall(predict_request())
        answers.append(read_response(sock, pending))
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert len({body for _, _, body in answers}) == 1  # the same row, the same prediction


def test_expect_100_continue_is_answered_before_the_body(server):
    with connect(server) as sock:
        sock.sendall(
            request_head(
                "/predict/reg",
                {
                    "Content-Type": "application/json",
                    "Content-Length": len(PREDICT_BODY),
                    "Expect": "100-continue",
                },
            )
        )
        sock.settimeout(1.0)  # curl waits 1 s for it before it sends the body anyway
        pending = bytearray()
        while b"\r\n\r\n" not in pending:
            pending += sock.recv(1024)
        assert bytes(pending) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(PREDICT_BODY)
        sock.settimeout(10.0)
        pending.clear()
        status, _, body = read_response(sock, pending)
    assert status == 200, body
    assert b"100 Continue" not in body and not pending


def test_declared_body_over_the_limit_gets_413_without_sending_it(server):
    with connect(server) as sock:
        sock.sendall(
            request_head(
                "/predict/reg",
                {"Content-Type": "application/json", "Content-Length": MAX_BODY + 1},
            )
        )
        status, headers, body = read_response(sock)
        assert status == 413
        assert json.loads(body)["error"] == (
            f"request body is {MAX_BODY + 1} bytes; the limit is {MAX_BODY} (MLSERVE_MAX_BODY_BYTES)"
        )
        # the unsent body stays on the wire, so the answer must not promise keep-alive
        assert headers.get("connection") == "close"
        assert closed_by_server(sock)


def test_chunked_body_over_the_limit_gets_413(server):
    head = request_head(
        "/predict/reg", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    chunk = b"%x\r\n%s\r\n" % (MAX_BODY // 2, b" " * (MAX_BODY // 2))
    with connect(server) as sock:
        sock.sendall(head + chunk * 3)  # no last chunk: the limit is reached first
        status, _, body = read_response(sock)
        assert status == 413
        assert json.loads(body)["error"] == (
            f"request body is over the limit of {MAX_BODY} bytes (MLSERVE_MAX_BODY_BYTES)"
        )
        assert closed_by_server(sock)


def test_endless_headers_get_431(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\n")
        try:
            for _ in range(200):  # 1.6 MB of headers at most, more than any limit
                sock.sendall(b"X-Filler: " + b"y" * 8000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        status, _, body = read_response(sock)
    assert status == 431
    assert "request headers are over" in json.loads(body)["error"]


def test_malformed_request_still_gets_gunicorns_400(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        status, _, _ = read_response(sock)
    assert status == 400


# ------------------------------------------------- the framing, without a server

FRAMED_REQUESTS = {
    "no body": b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n",
    "leading empty line": b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "content-length": predict_request(),
    "header case and spaces": b"POST /p HTTP/1.1\r\ncOnTeNt-LeNgTh:   3 \r\n\r\nabc",
    "chunked": (
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    ),
    "chunked with trailers": (
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n"
    ),
}


@pytest.mark.parametrize("name", list(FRAMED_REQUESTS))
def test_framing_finds_the_end_of_a_request_sent_byte_by_byte(name):
    from mlserve.serving.worker import NEED_MORE, READY, RequestFraming

    request = FRAMED_REQUESTS[name]
    framing = RequestFraming(max_head_bytes=10_000, max_body_bytes=1000)
    for i in range(len(request) - 1):
        framing.feed(request[i : i + 1])
        assert framing.check() is NEED_MORE, request[: i + 1]
    framing.feed(request[-1:])
    assert framing.check() is READY
    assert framing.take() == request


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /p HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"POST /p HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 1001\r\n\r\n",
    ],
    ids=["two lengths", "negative length", "length and chunked", "not chunked last",
         "bad chunk size", "bare LF", "declared over the limit"],
)  # fmt: skip
def test_framing_hands_what_it_cannot_judge_to_gunicorn_unread(request_bytes):
    from mlserve.serving.worker import HAND_OVER, RequestFraming

    framing = RequestFraming(max_head_bytes=10_000, max_body_bytes=1000)
    framing.feed(request_bytes)
    assert framing.check() is HAND_OVER  # gunicorn's parser answers; the connection then closes


def test_framing_asks_for_100_continue_only_while_the_body_is_missing():
    from mlserve.serving.worker import NEED_MORE, READY, RequestFraming

    framing = RequestFraming(max_head_bytes=10_000, max_body_bytes=1000)
    framing.feed(predict_request(Expect="100-continue")[: -len(PREDICT_BODY)])
    assert framing.check() is NEED_MORE and framing.wants_continue
    framing.feed(PREDICT_BODY)
    assert framing.check() is READY
