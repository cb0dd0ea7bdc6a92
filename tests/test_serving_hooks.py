"""Custom pre- and postprocessors on the blueprint (mlserve.serving.hooks)."""

from __future__ import annotations

import logging
import sys
import textwrap
import threading

import numpy as np
import pytest
import requests
from flask import Flask, Response, abort, request

from mlserve.serving import blueprint
from mlserve.serving.hooks import ServingBlueprint
from mlserve.store import ModelStore
from serving_support import Server, fit_named_classifier, fit_regressor

CUSTOMER = {"tenure": 0.5, "monthly": -1.0, "support_calls": 2.0, "discount": 0.25}
FIELDS = ("tenure", "monthly", "support_calls", "discount")
WAIT_S = 20.0


def features(payload):
    """A preprocessor: {"customers": [{field: value}]} -> rows; a missing field is a 400."""
    rows = []
    for customer in payload["customers"]:
        missing = [f for f in FIELDS if f not in customer]
        if missing:
            raise ValueError(f"customer is missing {', '.join(missing)}")
        rows.append([float(customer[f]) for f in FIELDS])
    return rows


@pytest.fixture
def model():
    return fit_named_classifier(0)


@pytest.fixture
def store(tmp_path, model):
    store = ModelStore(tmp_path / "store")
    store.publish("churn", model, alias="production")
    store.publish("reg", fit_regressor(0), alias="production")
    return store


def make_app(bp, **config):
    app = Flask("host")
    app.config.update(config)
    app.register_blueprint(bp, url_prefix="/ml")
    return app


def test_blueprint_is_a_serving_blueprint(store):
    bp = blueprint(store)
    assert isinstance(bp, ServingBlueprint)
    assert not bp.hooks  # nothing registered: the /predict path skips hooks entirely


def test_preprocessor_and_postprocessor_shape_request_and_response(store, model):
    bp = blueprint(store, reload_interval=0)
    bp.preprocessor("churn")(features)

    @bp.postprocessor("churn")
    def answer(prediction):
        return {
            "churn": [label == 1 for label in prediction["predictions"]],
            "risk": [p[1] for p in prediction["probabilities"]],
            "version": prediction["version"],
        }

    client = make_app(bp).test_client()
    second = dict(CUSTOMER, tenure=-2.0, discount=3.0)
    r = client.post(
        "/ml/predict/churn", json={"customers": [CUSTOMER, second], "return": "all"}
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    rows = np.array([[CUSTOMER[f] for f in FIELDS], [second[f] for f in FIELDS]])
    assert body["churn"] == [bool(v == 1) for v in model.predict(rows)]
    np.testing.assert_allclose(body["risk"], model.predict_proba(rows)[:, 1], rtol=1e-12)
    assert body["version"] == 1
    assert r.headers["X-Model-Version"] == "1"
    assert r.headers["X-Request-ID"]


def test_preprocessor_returning_a_body_chooses_the_outputs(store, model):
    bp = blueprint(store, reload_interval=0)

    @bp.preprocessor("churn")
    def body(payload):
        return {"features": [payload[f] for f in FIELDS], "return": "proba"}

    client = make_app(bp).test_client()
    r = client.post("/ml/predict/churn", json=CUSTOMER)
    assert r.status_code == 200, r.get_json()
    row = np.array([[CUSTOMER[f] for f in FIELDS]])
    np.testing.assert_allclose(r.get_json()["probabilities"], model.predict_proba(row)[0])
    assert "prediction" not in r.get_json()


def test_preprocessor_rows_as_ndarray_keep_the_clients_return(store, model):
    bp = blueprint(store, reload_interval=0)
    bp.preprocessor("churn")(lambda payload: np.asarray(features(payload)))
    client = make_app(bp).test_client()
    r = client.post("/ml/predict/churn", json={"customers": [CUSTOMER], "return": "proba"})
    assert r.status_code == 200, r.get_json()
    row = np.array([[CUSTOMER[f] for f in FIELDS]])
    np.testing.assert_allclose(r.get_json()["probabilities"], model.predict_proba(row))


def test_value_error_in_a_hook_is_a_400_with_its_message(store):
    bp = blueprint(store, reload_interval=0)
    bp.preprocessor("churn")(features)

    @bp.postprocessor("churn")
    def refuse(prediction):
        raise ValueError("no answer for a customer with this profile")

    client = make_app(bp).test_client()
    r = client.post("/ml/predict/churn", json={"customers": [{"tenure": 1}]})
    assert r.status_code == 400
    assert r.get_json() == {"error": "customer is missing monthly, support_calls, discount"}
    r = client.post("/ml/predict/churn", json={"customers": [CUSTOMER]})
    assert r.status_code == 400
    assert r.get_json() == {"error": "no answer for a customer with this profile"}


def test_bad_model_input_from_a_preprocessor_is_the_codecs_400(store):
    bp = blueprint(store, reload_interval=0)
    bp.preprocessor("churn")(lambda payload: [[1.0, 2.0]])  # 2 features, the model wants 4
    client = make_app(bp).test_client()
    r = client.post("/ml/predict/churn", json={})
    assert r.status_code == 400
    assert "feature" in r.get_json()["error"]


@pytest.mark.parametrize("where", ["preprocessor", "postprocessor"])
def test_other_exception_in_a_hook_is_a_500_with_the_request_id_logged(store, caplog, where):
    bp = blueprint(store, reload_interval=0)
    if where == "postprocessor":
        bp.preprocessor("churn")(features)

    def broken(_):
        raise KeyError("secret-internal-detail")

    getattr(bp, where)("churn")(broken)
    client = make_app(bp).test_client()
    with caplog.at_level(logging.ERROR, logger="mlserve.serving"):
        r = client.post(
            "/ml/predict/churn", json={"customers": [CUSTOMER]},
            headers={"X-Request-ID": "req-hook-42"},
        )  # fmt: skip
    assert r.status_code == 500
    assert r.headers["X-Request-ID"] == "req-hook-42"
    error = r.get_json()["error"]
    assert f"the {where} of model 'churn' failed" in error
    assert "req-hook-42" in error
    assert "secret-internal-detail" not in error  # the exception's text stays in the log
    logged = [rec for rec in caplog.records if "req-hook-42" in rec.getMessage()]
    assert len(logged) == 1
    assert where in logged[0].getMessage()
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is KeyError


def test_postprocessor_answer_that_is_not_json_is_a_500_logged(store, caplog):
    bp = blueprint(store, reload_interval=0)
    bp.postprocessor("churn")(lambda prediction: {"when": object()})
    client = make_app(bp).test_client()
    with caplog.at_level(logging.ERROR, logger="mlserve.serving"):
        r = client.post("/ml/predict/churn", json={"features": list(CUSTOMER.values())})
    assert r.status_code == 500
    request_id = r.headers["X-Request-ID"]
    assert request_id in r.get_json()["error"]
    assert any(request_id in rec.getMessage() for rec in caplog.records)


def test_postprocessor_may_answer_numpy_values_or_a_response(store, model):
    bp = blueprint(store, reload_interval=0)
    bp.postprocessor("churn")(lambda p: {"risk": np.float32(p["probabilities"][1])})
    bp.postprocessor("reg")(lambda p: Response("custom", status=202, mimetype="text/plain"))
    client = make_app(bp).test_client()
    values = list(CUSTOMER.values())
    r = client.post("/ml/predict/churn", json={"features": values, "return": "all"})
    assert r.status_code == 200, r.get_json()
    expected = model.predict_proba(np.array([values]))[0, 1]
    assert r.get_json()["risk"] == pytest.approx(expected, rel=1e-6)
    r = client.post("/ml/predict/reg", json={"features": values})
    assert (r.status_code, r.data) == (202, b"custom")


def test_abort_in_a_hook_passes_through(store):
    bp = blueprint(store, reload_interval=0)
    bp.preprocessor("churn")(lambda payload: abort(403, description="customer opted out"))
    r = make_app(bp).test_client().post("/ml/predict/churn", json={})
    assert r.status_code == 403
    assert r.get_json() == {"error": "customer opted out"}


def test_hooks_apply_to_their_model_and_route_only(store, model):
    bp = blueprint(store, reload_interval=0)
    bp.preprocessor("churn")(features)
    bp.postprocessor("churn")(lambda prediction: {"wrapped": prediction})
    client = make_app(bp).test_client()
    values = list(CUSTOMER.values())
    r = client.post("/ml/predict/reg", json={"features": values})  # no hooks for reg
    assert r.status_code == 200 and "prediction" in r.get_json()
    # the model's own protocols (V2 here) take model input and answer unchanged
    r = client.post(
        "/ml/v2/models/churn/infer",
        json={"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                          "data": values}]},
    )  # fmt: skip
    assert r.status_code == 200, r.get_json()
    assert "wrapped" not in r.get_json()
    assert r.get_json()["outputs"][0]["data"] == model.predict(np.array([values])).tolist()


def test_npy_body_skips_the_preprocessor_and_keeps_the_postprocessor(store, model):
    import io

    bp = blueprint(store, reload_interval=0)
    bp.preprocessor("churn")(features)  # would fail on an array: it is not called
    bp.postprocessor("churn")(lambda prediction: {"labels": prediction["predictions"]})
    rows = np.array([list(CUSTOMER.values())])
    buffer = io.BytesIO()
    np.save(buffer, rows)
    r = make_app(bp).test_client().post(
        "/ml/predict/churn", data=buffer.getvalue(), content_type="application/x-npy"
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"labels": model.predict(rows).tolist()}


def test_hooks_belong_to_their_blueprint(store, model):
    """No global state: two blueprints on one app keep their own hooks."""
    first, second = blueprint(store, reload_interval=0), blueprint(store, name="other")
    first.postprocessor("churn")(lambda prediction: {"from": "first"})
    app = Flask("host")
    app.register_blueprint(first, url_prefix="/a")
    app.register_blueprint(second, url_prefix="/b")
    # registered after the blueprint was: still taken
    second.postprocessor("churn")(lambda prediction: {"from": "second"})
    client = app.test_client()
    body = {"features": list(CUSTOMER.values())}
    assert client.post("/a/predict/churn", json=body).get_json() == {"from": "first"}
    assert client.post("/b/predict/churn", json=body).get_json() == {"from": "second"}
    plain = make_app(blueprint(store)).test_client().post("/ml/predict/churn", json=body)
    assert "prediction" in plain.get_json()


def test_registration_errors(store):
    bp = blueprint(store)
    bp.preprocessor("churn")(features)
    with pytest.raises(ValueError, match="already has a preprocessor"):
        bp.preprocessor("churn")(features)
    with pytest.raises(TypeError, match="must be callable"):
        bp.postprocessor("churn")(42)
    with pytest.raises(TypeError, match="model name"):
        bp.postprocessor("")


@pytest.mark.parametrize("where", ["preprocessor", "postprocessor"])
def test_a_blocked_hook_does_not_hold_the_batcher(store, model, where):
    """A hook runs in its request's thread: while one request waits inside its hook,
    another request for the same model passes through the micro-batcher and answers."""
    bp = blueprint(store, reload_interval=0)
    entered, release = threading.Event(), threading.Event()

    def hook(value):
        if request.headers.get("X-Slow"):  # hooks run inside the request context
            entered.set()
            assert release.wait(WAIT_S)
        return value

    getattr(bp, where)("churn")(hook)
    app = make_app(bp, MLSERVE_BATCHING=True, MLSERVE_BATCH_MAX_DELAY_MS=5.0)
    assert app.extensions["mlserve"]["mlserve"].select("churn").batcher is not None
    rows = np.array([list(CUSTOMER.values())])
    body = {"features": rows[0].tolist()}
    results = {}

    def slow():
        results["slow"] = app.test_client().post(
            "/ml/predict/churn", json=body, headers={"X-Slow": "1"}
        )

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert entered.wait(WAIT_S), "the slow request never reached its hook"
        fast = app.test_client().post("/ml/predict/churn", json=body)
        assert fast.status_code == 200, fast.get_json()
        assert fast.get_json()["prediction"] == model.predict(rows)[0]
        assert not results  # the slow one is still inside its hook
    finally:
        release.set()
        thread.join(WAIT_S)
    assert results["slow"].status_code == 200, results["slow"].get_json()
    assert results["slow"].get_json()["prediction"] == model.predict(rows)[0]


APP_MODULE = """
import os

from flask import Flask

import mlserve

app = Flask("hooked")
bp = mlserve.blueprint(os.environ["HOOKS_TEST_STORE"])


@bp.preprocessor("churn")
def features(payload):
    fields = ("tenure", "monthly", "support_calls", "discount")
    missing = [f for f in fields if f not in payload]
    if missing:
        raise ValueError("missing " + ", ".join(missing))
    if payload.get("crash"):
        raise RuntimeError("hook bug")
    return [[float(payload[f]) for f in fields]]


@bp.postprocessor("churn")
def answer(prediction):
    return {"churn": prediction["predictions"][0] == 1,
            "risk": prediction["probabilities"][0][1]}


app.register_blueprint(bp)
"""


def test_hooks_over_gunicorn(tmp_path, store, model, monkeypatch):
    """The user's own app module with hooks, served by a real gunicorn."""
    (tmp_path / "hooked_app.py").write_text(textwrap.dedent(APP_MODULE))
    monkeypatch.setenv("HOOKS_TEST_STORE", str(store.root))
    command = [
        sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1",
        "--threads", "2", "--chdir", str(tmp_path), "hooked_app:app",
    ]  # fmt: skip
    server = Server(store.root, command=command)
    try:
        r = requests.post(
            f"{server.url}/predict/churn", json=dict(CUSTOMER, **{"return": "all"}), timeout=30
        )
        assert r.status_code == 200, r.text
        row = np.array([[CUSTOMER[f] for f in FIELDS]])
        assert r.json()["churn"] == bool(model.predict(row)[0] == 1)
        assert r.json()["risk"] == pytest.approx(model.predict_proba(row)[0, 1], rel=1e-12)
        r = requests.post(f"{server.url}/predict/churn", json={"tenure": 1}, timeout=30)
        assert r.status_code == 400
        assert r.json() == {"error": "missing monthly, support_calls, discount"}
        r = requests.post(
            f"{server.url}/predict/churn", json=dict(CUSTOMER, crash=True),
            headers={"X-Request-ID": "gunicorn-hook-7"}, timeout=30,
        )  # fmt: skip
        assert r.status_code == 500
        assert "gunicorn-hook-7" in r.json()["error"]
        assert "hook bug" not in r.json()["error"]
    finally:
        server.stop()
    log = "".join(server.log)
    assert "the preprocessor of model 'churn' failed (request id gunicorn-hook-7)" in log
    assert "RuntimeError: hook bug" in log


def test_cache_stores_the_model_input_and_the_postprocessor_runs_on_hits(store, model):
    """The cache sits between the hooks: keyed by the preprocessor's rows, and a hit
    still goes through the postprocessor."""
    bp = blueprint(store, reload_interval=0)
    bp.preprocessor("churn")(features)
    calls = []

    @bp.postprocessor("churn")
    def answer(prediction):
        calls.append(prediction)
        return {"labels": prediction["predictions"]}

    client = make_app(bp, MLSERVE_CACHE="memory").test_client()
    rows = np.array([[CUSTOMER[f] for f in FIELDS]])
    expected = {"labels": model.predict(rows).tolist()}
    first = client.post("/ml/predict/churn", json={"customers": [CUSTOMER]})
    # the same customer with its fields in another order: the same rows, one entry
    reordered = dict(reversed(CUSTOMER.items()))
    second = client.post("/ml/predict/churn", json={"customers": [reordered]})
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert first.get_json() == second.get_json() == expected
    assert len(calls) == 2
