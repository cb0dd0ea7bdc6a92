"""Explanations over HTTP: V1 ``:explain`` and ``"return": "explain"`` on /predict/<name>.

In-process (Flask's test client): the answers equal the served model's own
``explain`` and, for XGBoost models, XGBoost's ``pred_contribs`` (regression
and multiclass, by name, version and alias), JSON and .npy; every error is a
400/404/413/415 with a message (a k-means model and a linear model converted
without training means cannot explain; bad rows; options that do not apply).
A linear model fitted by mlserve explains against its stored training means. Over a real
gunicorn server: the same answers on the wire, and the OpenAPI document lists
the route.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
import xgboost as xgb
from flask import Flask
from serving_support import Server, fit_regressor
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression

import mlserve
from mlserve.serving import blueprint
from mlserve.store import ModelStore

X_REG, Y_REG = make_regression(300, 5, noise=1.0, random_state=0)
X_CLF, Y_CLF = make_classification(300, 5, n_informative=3, n_classes=3, random_state=0)
ROWS = X_REG[:7]


@pytest.fixture(scope="module")
def estimators():
    return {
        "xreg": xgb.XGBRegressor(n_estimators=10, max_depth=3).fit(X_REG, Y_REG),
        "xclf": xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(X_CLF, Y_CLF),
        "rf": RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0).fit(X_REG, Y_REG),
    }


@pytest.fixture(scope="module")
def models(estimators):
    return {name: mlserve.convert(est) for name, est in estimators.items()}


def _contribs(estimators, name, rows):
    booster = estimators[name].get_booster()
    return booster.predict(xgb.DMatrix(rows), pred_contribs=True)


def _publish(root, models):
    store = ModelStore(root)
    for name in ("xreg", "xclf", "rf"):
        store.publish(name, models[name], alias="production")
    store.publish("rf", mlserve.convert(
        RandomForestRegressor(n_estimators=3, max_depth=2, random_state=1).fit(X_REG, Y_REG)
    ))  # fmt: skip
    store.publish("lin", fit_regressor())  # mlserve's fit stores the training means
    sk = LinearRegression().fit(X_REG, Y_REG)
    store.publish("nomeans", mlserve.convert(sk))  # converted without reference=
    store.publish("km", mlserve.KMeans(2, random_state=0).fit(X_REG))
    return store


@pytest.fixture(scope="module")
def client(tmp_path_factory, models):
    store = _publish(tmp_path_factory.mktemp("explain") / "models", models)
    app = Flask("host")
    app.register_blueprint(blueprint(store, reload_interval=0), url_prefix="/ml")
    return app.test_client()


def _ok(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def _error(response, status, message):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json and set(response.json) == {"error"}
    assert message in response.json["error"], response.json["error"]


# ------------------------------------------------------------- in-process


def test_v1_explain_matches_xgboost_pred_contribs(client, estimators, models):
    body = _ok(client.post("/ml/v1/models/xreg:explain", json={"instances": ROWS.tolist()}))
    assert set(body) == {"explanations"}
    got = np.asarray(body["explanations"])
    assert got.shape == (7, 6)  # 5 features + the bias
    np.testing.assert_array_equal(got, models["xreg"].explain(ROWS))  # JSON round-trips exactly
    np.testing.assert_allclose(got, _contribs(estimators, "xreg", ROWS), rtol=0, atol=1e-4)
    # each row sums to the raw score
    np.testing.assert_allclose(got.sum(axis=1), estimators["xreg"].predict(ROWS), atol=1e-4)


def test_v1_explain_multiclass_and_columnar(client, estimators):
    rows = X_CLF[:4]
    body = _ok(client.post("/ml/v1/models/xclf:explain", json={"inputs": rows.tolist()}))
    got = np.asarray(body["explanations"])
    assert got.shape == (4, 3, 6)
    np.testing.assert_allclose(got, _contribs(estimators, "xclf", rows), rtol=0, atol=1e-4)


def test_v1_explain_by_version_and_label(client, models):
    v2 = _ok(client.post("/ml/v1/models/rf/versions/2:explain", json={"instances": ROWS.tolist()}))
    v1 = _ok(client.post(
        "/ml/v1/models/rf/labels/production:explain", json={"instances": ROWS.tolist()}
    ))  # fmt: skip
    np.testing.assert_array_equal(v1["explanations"], models["rf"].explain(ROWS))
    assert not np.allclose(v1["explanations"], v2["explanations"])
    newest = _ok(client.post("/ml/v1/models/rf:explain", json={"instances": ROWS.tolist()}))
    assert newest == v1  # the default alias is production


def test_predict_return_explain(client, models):
    body = _ok(client.post("/ml/predict/xreg", json={"features": ROWS[0].tolist(), "return": "explain"}))
    assert set(body) == {"model", "version", "explanation"}
    assert (body["model"], body["version"]) == ("xreg", 1)
    np.testing.assert_array_equal(body["explanation"], models["xreg"].explain(ROWS[:1])[0])
    body = _ok(client.post("/ml/predict/xreg", json={"instances": ROWS.tolist(), "return": "explain"}))
    np.testing.assert_array_equal(body["explanations"], models["xreg"].explain(ROWS))
    body = _ok(client.post(
        "/ml/predict/rf?version=2", json={"instances": ROWS.tolist(), "return": "explain"}
    ))  # fmt: skip
    assert body["version"] == 2


def test_predict_return_explain_npy(client, models):
    buffer = io.BytesIO()
    np.save(buffer, ROWS)
    response = client.post(
        "/ml/predict/xclf?return=explain", data=buffer.getvalue(),
        headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
    )  # fmt: skip
    assert response.status_code == 200, response.get_data(as_text=True)
    got = np.load(io.BytesIO(response.data), allow_pickle=False)
    np.testing.assert_array_equal(got, models["xclf"].explain(ROWS))
    # a .npy body, a JSON answer
    response = client.post("/ml/predict/xreg?return=explain", data=buffer.getvalue(),
                           headers={"Content-Type": "application/x-npy"})  # fmt: skip
    np.testing.assert_array_equal(_ok(response)["explanations"], models["xreg"].explain(ROWS))


def test_models_that_cannot_explain_are_400(client):
    for path, body in [
        ("/ml/v1/models/km:explain", {"instances": ROWS.tolist()}),
        ("/ml/predict/km", {"features": ROWS[0].tolist(), "return": "explain"}),
    ]:
        _error(client.post(path, json=body), 400, "model 'km' (KMeans) cannot explain")
    for path, body in [
        ("/ml/v1/models/nomeans:explain", {"instances": ROWS.tolist()}),
        ("/ml/predict/nomeans", {"features": ROWS[0].tolist(), "return": "explain"}),
    ]:
        _error(client.post(path, json=body), 400, "no training feature means")


def test_linear_model_explains_over_http(client):
    model = fit_regressor()
    rows = ROWS[:, :4]
    body = _ok(client.post("/ml/v1/models/lin:explain", json={"instances": rows.tolist()}))
    got = np.asarray(body["explanations"])
    mean = np.asarray(model.metadata["training"]["feature_mean"])
    np.testing.assert_allclose(got[:, :4], (rows - mean) * model.coef_, rtol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), model.predict(rows), atol=1e-9)


def test_bad_explain_requests(client):
    _error(client.post("/ml/v1/models/xreg:explain", json={"instances": ROWS[:, :3].tolist()}),
           400, "expected 5 features, got 3")  # fmt: skip
    _error(client.post("/ml/v1/models/xreg:explain", json={}), 400, "exactly one of")
    _error(client.post("/ml/v1/models/xreg:explain", json={"instances": []}), 400, "empty")
    _error(client.post("/ml/v1/models/xreg:explain", json={"instances": [["a"] * 5]}), 400, "")
    _error(client.post("/ml/v1/models/xreg:explain",
                       json={"instances": ROWS.tolist(), "return": "proba"}),
           400, "'return' does not apply to :explain")  # fmt: skip
    _error(client.post("/ml/v1/models/xreg:explain", data=b"{", content_type="application/json"),
           400, "malformed JSON")  # fmt: skip
    _error(client.post("/ml/v1/models/xreg:explain", data=b"x", content_type="text/plain"),
           415, "")  # fmt: skip
    _error(client.post("/ml/v1/models/nope:explain", json={"instances": ROWS.tolist()}), 404, "")
    _error(client.post("/ml/v1/models/xreg:explainx", json={}), 404, "unsupported verb")
    _error(client.get("/ml/v1/models/xreg:explain"), 405, "use POST")
    _error(client.post("/ml/predict/xreg", json={"features": [[1.0] * 5], "return": "explain"}),
           400, "'features' must be one row")  # fmt: skip
    npy = io.BytesIO()
    np.save(npy, np.zeros((0, 5)))
    _error(client.post("/ml/predict/xreg?return=explain", data=npy.getvalue(),
                       content_type="application/x-npy"), 400, "")  # fmt: skip


def test_explain_limits_and_overflow(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.publish("lin", fit_regressor())
    app = Flask("host")
    app.config["MLSERVE_MAX_ROWS"] = 3
    app.register_blueprint(blueprint(store, reload_interval=0))
    client = app.test_client()
    _error(client.post("/v1/models/lin:explain", json={"instances": [[0.0] * 4] * 4}),
           413, "the request has 4 rows; the limit is 3 (MLSERVE_MAX_ROWS)")  # fmt: skip
    _error(client.post("/predict/lin", json={"features": [1e308] * 4, "return": "explain"}),
           400, "NaN or infinity")  # fmt: skip


def test_openapi_documents_explain(client):
    document = _ok(client.get("/ml/openapi.json"))
    assert "/v1/models/{name}:explain" in document["paths"]
    simple = document["paths"]["/predict/{name}"]["post"]["requestBody"]
    assert "explain" in simple["content"]["application/json"]["schema"]["properties"]["return"]["enum"]


# ---------------------------------------------------------------- gunicorn


def test_explain_over_gunicorn(tmp_path, estimators, models):
    _publish(tmp_path / "models", models)
    server = Server(tmp_path / "models", "--workers", "1", "--threads", "2", "--no-access-log")
    try:
        response = requests.post(f"{server.url}/v1/models/xclf:explain",
                                 json={"instances": X_CLF[:5].tolist()}, timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        got = np.asarray(response.json()["explanations"])
        np.testing.assert_array_equal(got, models["xclf"].explain(X_CLF[:5]))
        np.testing.assert_allclose(got, _contribs(estimators, "xclf", X_CLF[:5]), atol=1e-4)
        response = requests.post(f"{server.url}/predict/xreg",
                                 json={"instances": ROWS.tolist(), "return": "explain"}, timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(response.json()["explanations"], models["xreg"].explain(ROWS))
        response = requests.post(f"{server.url}/v1/models/km:explain",
                                 json={"instances": ROWS.tolist()}, timeout=30)  # fmt: skip
        assert response.status_code == 400 and "cannot explain" in response.json()["error"]
        document = requests.get(f"{server.url}/openapi.json", timeout=30).json()
        assert "/v1/models/{name}:explain" in document["paths"]
    finally:
        server.stop()


def test_a_return_that_is_not_text_is_a_400(client):
    # an array decodes to an ndarray: comparing it with "explain" must not be a 500
    body = {"features": X_REG[0].tolist(), "return": [1, 2]}
    _error(client.post("/ml/predict/lin", json=body), 400, "'return' must be one of")
    _error(client.post("/ml/predict/lin", json=[1, 2]), 400, "expected a JSON object")
