"""The WSGI fast path of ``mlserve serve``'s app (mlserve/serving/fastpath.py).

V1 predict requests answered ahead of Flask's dispatch must get exactly what
Flask answers: the same status, headers (in order) and body, errors included,
the same access-log line and metrics. Each request goes to two apps (or two
real ``mlserve serve`` servers) over the same store, one with
MLSERVE_FAST_PATH=False; only the timings in Server-Timing, the log's time and
latency and the Date header may differ.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import time

import numpy as np
import pytest
from serving_support import Server, fit_classifier, fit_regressor, training_data
from sklearn.linear_model import LinearRegression

import mlserve
from mlserve.serving.app import create_app
from mlserve.serving.fastpath import FastPredict
from mlserve.serving.security import create_key
from mlserve.store import ModelStore

X, _ = training_data(seed=3, n=4)
ROW = X[:1].tolist()
RID = "fixed-request-id-1"
JSON_CT = "application/json"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "models"
    store = ModelStore(path)
    store.publish("clf", fit_classifier(), alias="production")
    store.publish("clf", fit_classifier(seed=2), alias="staging")
    store.publish("reg", fit_regressor(), alias="production")
    huge = LinearRegression().fit(*training_data())
    huge.coef_ = np.full_like(huge.coef_, 1e308)  # predictions overflow to inf
    store.publish("huge", mlserve.convert(huge), alias="production")
    return path


def counted(app):
    """The app with a count of the requests that reached Flask's wsgi_app."""
    fast = app.wsgi_app
    assert isinstance(fast, FastPredict)
    inner = fast.wsgi_app
    calls = []

    def flask_wsgi_app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    fast.wsgi_app = flask_wsgi_app
    return calls


@pytest.fixture
def apps(store_dir):
    fast = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0)
    slow = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_FAST_PATH=False)
    return fast, slow


def normalized(response):
    headers = [
        (k, re.sub(r"dur=[0-9.]+", "dur=_", v) if k == "Server-Timing" else v)
        for k, v in response.headers.to_wsgi_list()
    ]
    return response.status, headers, response.get_data()


# (path, body, headers): successes first, then every kind of error
CASES = [
    ("/v1/models/clf:predict", {"instances": ROW}, {}),
    ("/v1/models/clf:predict", {"instances": X.tolist()}, {}),
    ("/v1/models/clf:predict", {"instances": ROW, "return": ["proba"]}, {}),
    (
        "/v1/models/clf:predict",
        {"instances": ROW, "signature_name": "serving_default"},
        {},
    ),
    ("/v1/models/clf/versions/2:predict", {"instances": ROW}, {}),
    ("/v1/models/clf/labels/staging:predict", {"instances": ROW}, {}),
    ("/v1/models/reg:predict", {"inputs": ROW}, {}),
    ("/v1/models/clf:predict", {"instances": ROW}, {"Content-Type": None}),
    (
        "/v1/models/clf:predict",
        {"instances": ROW},
        {"Content-Type": "application/json; charset=utf-8"},
    ),
    ("/v1/models/nope:predict", {"instances": ROW}, {}),
    ("/v1/models/clf/versions/9:predict", {"instances": ROW}, {}),
    ("/v1/models/clf/labels/nope:predict", {"instances": ROW}, {}),
    ("/v1/models/clf:predict", b"{not json", {}),
    ("/v1/models/clf:predict", b"", {}),
    ("/v1/models/clf:predict", {"instances": []}, {}),
    ("/v1/models/clf:predict", {"instances": [[1.0, 2.0]]}, {}),
    ("/v1/models/clf:predict", {"instances": [[1.0, "x", 3.0, 4.0]]}, {}),
    ("/v1/models/clf:predict", {"rows": ROW}, {}),
    ("/v1/models/clf:predict", {"instances": ROW, "signature_name": "nope"}, {}),
    ("/v1/models/clf:predict", {"instances": ROW, "return": ["nope"]}, {}),
    ("/v1/models/clf:predict", {"instances": ROW}, {"Content-Type": "text/plain"}),
    ("/v1/models/huge:predict", {"instances": [[1e10, 1e10, 1e10, 1e10]]}, {}),
    ("/v1/models/clf:explain", {"instances": ROW}, {}),
    ("/v1/models/clf:predict/", {"instances": ROW}, {}),
]


def send(client, path, body, headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"X-Request-ID": RID, "Content-Type": JSON_CT}
    sent.update(headers)
    sent = {k: v for k, v in sent.items() if v is not None}
    return client.post(path, data=data, headers=sent)


@pytest.mark.parametrize("path, body, headers", CASES)
def test_the_same_response_with_and_without_the_fast_path(apps, path, body, headers):
    fast, slow = apps
    calls = counted(fast)
    got = send(fast.test_client(), path, body, headers)
    want = send(slow.test_client(), path, body, headers)
    assert normalized(got) == normalized(want)
    exact_type = "charset" not in (headers.get("Content-Type") or "")
    if got.status_code == 200 and path.endswith(":predict") and exact_type:
        assert calls == []  # answered without Flask
    else:
        assert len(calls) == 1  # Flask answered it


def test_the_model_error_is_raised_once_and_rendered_by_flask(apps):
    fast, _ = apps
    calls = counted(fast)
    response = send(fast.test_client(), "/v1/models/huge:predict",
                    {"instances": [[1e10] * 4]}, {})  # fmt: skip
    assert response.status_code == 400 and "inf" in response.get_json()["error"].lower()
    assert calls == ["/v1/models/huge:predict"]


def test_gzip_bodies_and_body_limits_go_to_flask(store_dir):
    fast = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_MAX_BODY_BYTES=100)
    slow = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_MAX_BODY_BYTES=100,
                      MLSERVE_FAST_PATH=False)  # fmt: skip
    calls = counted(fast)
    small = json.dumps({"instances": ROW}).encode()
    cases = [
        (gzip.compress(small), {"Content-Encoding": "gzip"}),
        (json.dumps({"instances": X.tolist() * 3}).encode(), {}),  # over 100 bytes
    ]
    for data, headers in cases:
        sent = {"X-Request-ID": RID, "Content-Type": JSON_CT, **headers}
        got = fast.test_client().post("/v1/models/clf:predict", data=data, headers=sent)
        want = slow.test_client().post(
            "/v1/models/clf:predict", data=data, headers=sent
        )
        assert normalized(got) == normalized(want)
    assert len(calls) == 2


def test_max_rows_is_enforced_as_in_flask(store_dir):
    fast = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_MAX_ROWS=2)
    slow = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_MAX_ROWS=2,
                      MLSERVE_FAST_PATH=False)  # fmt: skip
    got = send(
        fast.test_client(), "/v1/models/clf:predict", {"instances": X.tolist()}, {}
    )
    want = send(
        slow.test_client(), "/v1/models/clf:predict", {"instances": X.tolist()}, {}
    )
    assert got.status_code == 413
    assert normalized(got) == normalized(want)


def test_an_app_with_hooks_or_keys_keeps_flask(store_dir, tmp_path):
    app = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0)
    seen = []
    app.after_request(lambda response: seen.append(1) or response)
    calls = counted(app)
    assert (
        send(
            app.test_client(), "/v1/models/clf:predict", {"instances": ROW}, {}
        ).status_code
        == 200
    )
    assert calls and seen == [1]

    keys = str(tmp_path / "keys.json")
    secret, _ = create_key(keys, ["predict"], name="client")
    app = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_API_KEYS=keys)
    calls = counted(app)
    client = app.test_client()
    assert (
        send(client, "/v1/models/clf:predict", {"instances": ROW}, {}).status_code
        == 401
    )
    ok = send(client, "/v1/models/clf:predict", {"instances": ROW},
              {"Authorization": f"Bearer {secret}"})  # fmt: skip
    assert ok.status_code == 200 and len(calls) == 2


def log_lines(caplog):
    out = []
    for record in caplog.records:
        if record.name != "mlserve.access":
            continue
        line = json.loads(record.getMessage())
        line.pop("time")
        line.pop("latency_ms")
        out.append(line)
    return out


def metric_counts(app):
    """{series: value} of the request and row counters (/metrics flushes first)."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    out = {}
    for line in text.splitlines():
        # the scrapes' own counts depend on when the flusher ran: only the predict series
        if line.startswith(("mlserve_requests_total{", "mlserve_rows_total")) \
                and 'endpoint="metrics"' not in line:  # fmt: skip
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def test_the_same_access_log_and_metrics(apps, caplog):
    lines, deltas = {}, {}
    for name, app in zip(("fast", "slow"), apps):
        before = metric_counts(app)  # both apps count in this process's one registry
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mlserve.access"):
            client = app.test_client()
            for path, body, headers in CASES[:3] + CASES[9:11]:
                send(client, path, body, headers)
        lines[name] = log_lines(caplog)
        after = metric_counts(app)
        deltas[name] = {
            k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k)
        }
    assert len(lines["fast"]) == 5
    assert lines["fast"] == lines["slow"]
    assert lines["fast"][0]["model"] == "clf" and lines["fast"][0]["rows"] == 1
    assert deltas["fast"] == deltas["slow"] != {}


# ---- real servers ---------------------------------------------------------------


def raw_request(port, path, body, content_type=JSON_CT):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {RID}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    raw = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: _", raw)
    return re.sub(rb"dur=[0-9.]+", b"dur=_", raw)


def test_mlserve_serve_gives_the_same_bytes_on_the_wire(store_dir, monkeypatch):
    bodies = [
        ("/v1/models/clf:predict", json.dumps({"instances": ROW}).encode()),
        (
            "/v1/models/clf/labels/staging:predict",
            json.dumps({"instances": X.tolist()}).encode(),
        ),
        ("/v1/models/nope:predict", json.dumps({"instances": ROW}).encode()),
        ("/v1/models/clf:predict", b"[1, 2"),
        ("/v1/models/clf:predict", json.dumps({"instances": [[1.0]]}).encode()),
        ("/v1/models/huge:predict", json.dumps({"instances": [[1e10] * 4]}).encode()),
    ]
    answers = {}
    for mode in ("True", "False"):
        monkeypatch.setenv("MLSERVE_FAST_PATH", mode)
        server = Server(store_dir, "--workers", "1", "--threads", "2")
        try:
            answers[mode] = [
                raw_request(server.port, path, body) for path, body in bodies
            ]
            time.sleep(0.3)  # the buffered access log is written every 0.05 s
            log = [
                json.loads(line) for line in server.log if line.startswith('{"time"')
            ]
        finally:
            server.stop()
        for line in log:
            line.pop("time"), line.pop("latency_ms")
        answers[mode + "-log"] = [
            line for line in log if line["endpoint"] == "v1_model"
        ]
    for fast, slow in zip(answers["True"], answers["False"]):
        assert fast == slow
    assert answers["True"][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"X-Request-ID: " + RID.encode() in answers["True"][0]
    assert answers["True-log"] == answers["False-log"] and len(
        answers["True-log"]
    ) == len(bodies)


def test_a_url_prefix_is_honoured(store_dir):
    fast = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_URL_PREFIX="/ml")
    slow = create_app(
        store_dir,
        MLSERVE_RELOAD_INTERVAL=0,
        MLSERVE_URL_PREFIX="/ml",
        MLSERVE_FAST_PATH=False,
    )
    calls = counted(fast)
    for path in ("/ml/v1/models/clf:predict", "/v1/models/clf:predict"):
        got = send(fast.test_client(), path, {"instances": ROW}, {})
        want = send(slow.test_client(), path, {"instances": ROW}, {})
        assert normalized(got) == normalized(want)
    # only the unprefixed path (a 404) reached Flask
    assert calls == ["/v1/models/clf:predict"]


def test_payload_log_and_shadows_keep_flask(store_dir, tmp_path):
    """What the blueprint's _predict does beyond the prediction sends requests to Flask."""
    log = tmp_path / "payload.jsonl"
    app = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_PAYLOAD_LOG=str(log))
    calls = counted(app)
    assert send(app.test_client(), "/v1/models/clf:predict", {"instances": ROW}, {}).status_code == 200
    assert calls == ["/v1/models/clf:predict"]
    shadowed = tmp_path / "shadowed"
    store = ModelStore(shadowed)
    store.publish("clf", fit_classifier(), alias="production")
    store.publish("clf", fit_classifier(seed=2))
    store.set_shadow("clf", "production", 2)
    app = create_app(shadowed, MLSERVE_RELOAD_INTERVAL=0)
    calls = counted(app)
    client = app.test_client()
    assert send(client, "/v1/models/clf:predict", {"instances": ROW}, {}).status_code == 200
    assert calls == ["/v1/models/clf:predict"]
    app = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0)   # no shadow: the fast path answers
    calls = counted(app)
    assert send(app.test_client(), "/v1/models/clf:predict", {"instances": ROW}, {}).status_code == 200
    assert calls == []


def test_pipelines_are_served_by_flask_with_the_same_answer(tmp_path):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    pipe = Pipeline([("prep", ColumnTransformer([("num", StandardScaler(), ["a", "b"])])),
                     ("clf", LogisticRegression())]).fit(frame, frame.a > frame.b)
    store = ModelStore(tmp_path / "models")
    store.publish("pipe", mlserve.convert(pipe), alias="production")   # numbers only: rows decode
    fast = create_app(tmp_path / "models", MLSERVE_RELOAD_INTERVAL=0)
    slow = create_app(tmp_path / "models", MLSERVE_RELOAD_INTERVAL=0, MLSERVE_FAST_PATH=False)
    calls = counted(fast)
    body = {"instances": [{"b": 0.5, "a": -1.0}, {"a": 2.0, "b": 0.0}]}
    answers = [send(app.test_client(), "/v1/models/pipe:predict", body, {}) for app in (fast, slow)]
    assert calls == ["/v1/models/pipe:predict"]
    assert normalized(answers[0]) == normalized(answers[1])
    assert answers[0].get_json()["predictions"] == pipe.predict(pd.DataFrame(body["instances"])).tolist()


def test_drift_monitoring_sees_the_fast_path_rows(store_dir):
    fast = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_DRIFT=True)
    slow = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_DRIFT=True, MLSERVE_FAST_PATH=False)
    calls = counted(fast)
    windows = []
    for app in (fast, slow):
        client = app.test_client()
        for _ in range(7):
            assert send(client, "/v1/models/clf:predict", {"instances": ROW * 2}, {}).status_code == 200
        (entry,) = client.get("/drift/clf").get_json()["versions"]
        windows.append(entry["window_size"])
    assert calls == ["/drift/clf"] and windows == [14, 14]  # only the GET reached Flask
