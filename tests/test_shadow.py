"""Shadow traffic: the store setting, the CLI, and mirrored requests in a Flask app."""

from __future__ import annotations

import time

import numpy as np
import pytest
from click.testing import CliRunner
from flask import Flask

import mlserve
from mlserve.cli import main
from mlserve.serving import blueprint
from mlserve.serving import shadow as shadow_module
from mlserve.store import (
    IncompatibleModelError,
    ModelNotFoundError,
    ModelStore,
    VersionInUseError,
)


def data(seed=0, n=400, n_features=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    return X, X @ np.arange(1.0, n_features + 1) + rng.normal(scale=0.5, size=n)


@pytest.fixture
def store(tmp_path):
    X, y = data()
    store = ModelStore(tmp_path / "store")
    labels = (y > 0).astype(np.int64)
    store.publish("clf", mlserve.LogisticRegression().fit(X, labels), alias="production")
    store.publish("clf", mlserve.LogisticRegression(C=0.001).fit(X, labels))
    return store


# ------------------------------------------------------------------ the store


def test_set_and_remove_a_shadow(store):
    assert store.shadows("clf") == {}
    store.set_shadow("clf", "production", 2)
    assert store.shadows("clf") == {"production": 2}
    assert store.describe("clf")["shadows"] == {"production": {"version": 2}}
    store.set_alias("clf", "staging", 2)  # other writes keep it
    store.set_alias("clf", "production", {1: 90, 2: 10})
    store.rollback("clf", "production")
    assert store.shadows("clf") == {"production": 2}
    store.remove_shadow("clf", "production")
    assert store.shadows("clf") == {}
    with pytest.raises(ModelNotFoundError, match="alias 'production' of model 'clf' has no shadow"):
        store.remove_shadow("clf", "production")


def test_refused_shadows_change_nothing(store, tmp_path):
    with pytest.raises(ModelNotFoundError, match="model 'clf' has no alias 'canary'"):
        store.set_shadow("clf", "canary", 2)
    with pytest.raises(ModelNotFoundError, match="model 'clf' has no version 7"):
        store.set_shadow("clf", "production", 7)
    X, y = data(n_features=3)
    store.publish("clf", mlserve.LogisticRegression().fit(X, (y > 0).astype(np.int64)))
    with pytest.raises(IncompatibleModelError, match="its n_features is 3, version 1 has 4"):
        store.set_shadow("clf", "production", 3)
    with pytest.raises(mlserve.store.StoreError, match="invalid version 0"):
        store.set_shadow("clf", "production", 0)
    assert store.shadows("clf") == {}


def test_a_shadow_version_cannot_be_deleted_and_removing_the_alias_ends_it(store):
    store.set_shadow("clf", "production", 2)
    with pytest.raises(VersionInUseError, match="it shadows alias 'production'"):
        store.delete("clf", 2)
    store.remove_alias("clf", "production")
    assert store.shadows("clf") == {}
    store.delete("clf", 2)


def test_the_cli(store):
    runner = CliRunner()
    result = runner.invoke(main, ["shadow", "clf", "production", "2", "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    assert result.output == "clf: production is shadowed by version 2\n"
    assert store.shadows("clf") == {"production": 2}
    result = runner.invoke(main, ["shadow", "clf", "production", "--off", "--store", str(store.root)])
    assert result.exit_code == 0 and result.output == "clf: production has no shadow\n"
    assert store.shadows("clf") == {}
    result = runner.invoke(main, ["shadow", "clf", "production", "--store", str(store.root)])
    assert result.exit_code == 2 and "missing VERSION (or --off to end the shadow)" in result.output
    result = runner.invoke(main, ["shadow", "clf", "nope", "2", "--store", str(store.root)])
    assert result.exit_code == 1 and "model 'clf' has no alias 'nope'" in result.output


# ------------------------------------------------------------------ serving


def make_client(store, **config):
    app = Flask(__name__)
    app.config.update({"MLSERVE_RELOAD_INTERVAL": 0, **config})
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    return app.test_client()


def shadows_of(client, name, rows):
    """GET /ml/models/<name>'s shadows once the shadow has seen ``rows`` rows (bounded wait)."""
    deadline = time.monotonic() + 10
    while True:
        shadows = client.get(f"/ml/models/{name}").json["shadows"]
        if shadows["production"]["rows"] >= rows or time.monotonic() > deadline:
            return shadows
        time.sleep(0.05)


def test_clients_get_the_alias_answer_and_the_agreement_is_exported(tmp_path):
    X, y = data(seed=1, n=2000)
    labels = (y > 0).astype(np.int64)
    store = ModelStore(tmp_path / "s")
    v1 = mlserve.LogisticRegression().fit(X, labels)
    v2 = mlserve.LogisticRegression(C=0.0005).fit(X, labels)
    store.publish("agree", v1, alias="production")
    store.publish("agree", v2)
    store.set_shadow("agree", "production", 2)
    client = make_client(store)
    rows = np.random.default_rng(2).normal(size=(300, 4)) * 0.3
    for i in range(0, 300, 10):
        response = client.post("/ml/predict/agree", json={"instances": rows[i:i + 10].tolist()})
        assert response.json["predictions"] == v1.predict(rows[i:i + 10]).tolist()
    # a request naming a version, or another alias, is not mirrored
    assert client.post("/ml/predict/agree?version=1", json={"instances": rows[:5].tolist()}).status_code == 200
    shadow = shadows_of(client, "agree", 300)["production"]
    expected = float(np.mean(v1.predict(rows) == v2.predict(rows)))
    assert 0.5 < expected < 1.0  # the two versions differ on these rows
    assert shadow == {
        "version": 2, "requests": 30, "rows": 300, "errors": 0,
        "agreement": pytest.approx(expected, abs=1e-12),
    }  # fmt: skip
    text = client.get("/ml/metrics").data.decode()
    assert 'mlserve_shadow_rows_total{alias="production",model="agree",version="2"} 300.0' in text
    agreements = round(expected * 300)
    assert f'mlserve_shadow_agreements_total{{alias="production",model="agree",version="2"}} {agreements}.0' in text


def test_a_regressor_shadow_reports_the_mean_absolute_difference(tmp_path):
    X, y = data(seed=3)
    store = ModelStore(tmp_path / "s")
    v1 = mlserve.LinearRegression().fit(X, y)
    v2 = mlserve.Ridge(alpha=50.0).fit(X, y)
    store.publish("reg", v1, alias="production")
    store.publish("reg", v2)
    store.set_shadow("reg", "production", 2)
    client = make_client(store)
    rows = X[:120]
    for i in range(0, 120, 12):
        body = {"instances": rows[i:i + 12].tolist()}
        assert client.post("/ml/predict/reg", json=body).json["predictions"] == pytest.approx(
            v1.predict(rows[i:i + 12]).tolist(), rel=1e-12
        )
    shadow = shadows_of(client, "reg", 120)["production"]
    assert shadow["rows"] == 120 and "agreement" not in shadow
    expected = float(np.mean(np.abs(v1.predict(rows) - v2.predict(rows))))
    assert shadow["mean_absolute_difference"] == pytest.approx(expected, rel=1e-9)


def test_the_shadow_follows_the_store_and_off_ends_it(tmp_path):
    X, y = data(seed=4)
    store = ModelStore(tmp_path / "s")
    labels = (y > 0).astype(np.int64)
    store.publish("live", mlserve.LogisticRegression().fit(X, labels), alias="production")
    store.publish("live", mlserve.LogisticRegression(C=0.01).fit(X, labels))
    client = make_client(store, MLSERVE_RELOAD_INTERVAL=0.01)
    assert client.get("/ml/models/live").json["shadows"] == {}
    store.set_shadow("live", "production", 2)
    time.sleep(0.05)
    client.post("/ml/predict/live", json={"instances": X[:4].tolist()})  # refreshes, then mirrored
    assert client.post("/ml/predict/live", json={"instances": X[:4].tolist()}).status_code == 200
    assert shadows_of(client, "live", 4)["production"]["rows"] >= 4
    store.remove_shadow("live", "production")
    time.sleep(0.05)
    client.post("/ml/predict/live", json={"instances": X[:4].tolist()})
    assert client.get("/ml/models/live").json["shadows"] == {}


def test_a_full_queue_drops_and_counts(store, monkeypatch):
    store.set_shadow("clf", "production", 2)
    client = make_client(store, MLSERVE_SHADOW_QUEUE=1)
    monkeypatch.setattr(shadow_module.Flusher, "wake", lambda self: None)  # the thread never runs
    X, _ = data()
    for _ in range(3):
        assert client.post("/ml/predict/clf", json={"instances": X[:2].tolist()}).status_code == 200
    text = client.get("/ml/metrics").data.decode()
    line = next(row for row in text.splitlines() if row.startswith('mlserve_shadow_dropped_total{model="clf"}'))
    assert float(line.split()[-1]) >= 2.0


def test_a_failing_shadow_is_counted_never_seen_by_clients(tmp_path, monkeypatch):
    X, y = data(seed=5)
    store = ModelStore(tmp_path / "s")
    labels = (y > 0).astype(np.int64)
    store.publish("fails", mlserve.LogisticRegression().fit(X, labels), alias="production")
    store.publish("fails", mlserve.LogisticRegression(C=0.01).fit(X, labels))
    store.set_shadow("fails", "production", 2)
    client = make_client(store)

    class Broken:
        def select(self, name, version):
            raise RuntimeError("the shadow is broken")

    mirror = client.application.extensions["mlserve"]["mlserve"].shadow
    monkeypatch.setattr(mirror, "_state", Broken())
    for _ in range(3):
        assert client.post("/ml/predict/fails", json={"instances": X[:2].tolist()}).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        shadow = client.get("/ml/models/fails").json["shadows"]["production"]
        if shadow["errors"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert shadow["errors"] == 3 and shadow["rows"] == 0 and shadow["agreement"] is None


def test_a_slow_shadow_never_delays_the_answer(tmp_path, monkeypatch):
    X, y = data(seed=6)
    store = ModelStore(tmp_path / "s")
    labels = (y > 0).astype(np.int64)
    store.publish("slow", mlserve.LogisticRegression().fit(X, labels), alias="production")
    store.publish("slow", mlserve.LogisticRegression(C=0.01).fit(X, labels))
    store.set_shadow("slow", "production", 2)
    client = make_client(store)
    state = client.application.extensions["mlserve"]["mlserve"]
    shadow_model = state.select("slow", 2).model
    fast_predict = shadow_model.predict

    def slow_predict(rows):
        time.sleep(1.0)
        return fast_predict(rows)

    monkeypatch.setattr(shadow_model, "predict", slow_predict)
    start = time.perf_counter()
    for _ in range(5):
        assert client.post("/ml/predict/slow", json={"instances": X[:2].tolist()}).status_code == 200
    assert time.perf_counter() - start < 1.0  # five answers before the shadow's first predict ends
    shadow = shadows_of(client, "slow", 10)["production"]
    assert shadow["rows"] == 10 and shadow["errors"] == 0


def test_the_flask_command(store):
    app = Flask(__name__)
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["mlserve", "shadow", "clf", "production", "2"])
    assert result.exit_code == 0, result.output
    assert result.output == "clf: production is shadowed by version 2\n"
    assert store.shadows("clf") == {"production": 2}
    result = runner.invoke(args=["mlserve", "shadow", "clf", "production", "2", "--off"])
    assert result.exit_code == 2 and "give either VERSION or --off, not both" in result.output
    result = runner.invoke(args=["mlserve", "shadow", "clf", "production", "--off"])
    assert result.exit_code == 0 and store.shadows("clf") == {}
