"""Drift monitoring and shadow traffic over a real gunicorn server with two workers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from serving_support import Server

import mlserve
from mlserve.serving.drift import DRIFT_SUBDIR
from mlserve.store import ModelStore

SCALES = np.array([1.0, 2.0, 0.5, 3.0])


def sample(rng, n):
    return rng.normal(size=(n, 4)) * SCALES


@pytest.fixture
def store(tmp_path, rng):
    X = sample(rng, 4000)
    labels = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    store = ModelStore(tmp_path / "store")
    store.publish("churn", mlserve.LogisticRegression().fit(X, labels), alias="production")
    store.publish("churn", mlserve.LogisticRegression(C=0.0005).fit(X, labels))
    return store


def post_rows(url, X, batch=10):
    """POST the rows in batches from 4 threads, each request on a new connection."""

    def one(i):
        response = requests.post(url, json={"instances": X[i:i + batch].tolist()}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    with ThreadPoolExecutor(4) as pool:
        return [p for part in pool.map(one, range(0, X.shape[0], batch)) for p in part]


def test_drift_windows_of_both_workers_are_merged(store, rng, tmp_path, monkeypatch):
    folder = tmp_path / "prom"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))  # to see each worker's window
    server = Server(store.root, "--workers", "2", "--drift")
    try:
        sent = 0
        for _ in range(10):  # until both workers have answered some (bounded)
            post_rows(f"{server.url}/predict/churn", sample(rng, 400))
            sent += 400
            if len(list((folder / DRIFT_SUBDIR).glob("*.win"))) >= 2:
                break
        assert len(list((folder / DRIFT_SUBDIR).glob("*.win"))) == 2
        report = requests.get(f"{server.url}/drift/churn", timeout=30).json()
        (entry,) = report["versions"]
        assert entry["window_size"] == sent  # every row, whichever worker answered it
        assert all(f["psi"] < 0.1 and not f["drifted"] for f in entry["features"])
        shifted = sample(rng, 10_000)
        shifted[:, 3] += 3 * SCALES[3]
        post_rows(f"{server.url}/predict/churn", shifted, batch=100)
        (entry,) = requests.get(f"{server.url}/drift/churn", timeout=30).json()["versions"]
        assert entry["window_size"] == 10_000
        assert entry["drifted_features"] == ["x3"]
        text = requests.get(f"{server.url}/metrics", timeout=30).text
        line = next(r for r in text.splitlines()
                    if r.startswith('mlserve_feature_drift_psi{feature="x3",model="churn",version="1"}'))
        assert float(line.split()[-1]) == pytest.approx(entry["features"][3]["psi"])
    finally:
        server.stop()


def test_shadow_over_two_workers(store, rng, monkeypatch):
    v1 = store.load_version("churn", 1)
    v2 = store.load_version("churn", 2)
    monkeypatch.setenv("MLSERVE_DRIFT", "true")  # the environment turns drift on too
    # set before the workers start: a live change reaches each worker at its own next
    # reload, so a request may still find the old manifest (test_shadow.py covers that)
    store.set_shadow("churn", "production", 2)
    server = Server(store.root, "--workers", "2", "--reload-interval", "0.1")
    try:
        url = f"{server.url}/predict/churn"
        X = sample(rng, 1000) * 0.2
        answers = post_rows(url, X)
        assert answers == v1.predict(X).tolist()  # clients only see production's answers
        deadline = time.monotonic() + 20
        while True:
            shadow = requests.get(f"{server.url}/models/churn", timeout=30).json()["shadows"]
            if shadow["production"]["rows"] >= 1000 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        expected = float(np.mean(v1.predict(X) == v2.predict(X)))
        assert expected < 1.0
        assert shadow == {
            "production": {"version": 2, "requests": 100, "rows": 1000, "errors": 0,
                           "agreement": pytest.approx(expected, abs=1e-12)},
        }  # fmt: skip
        assert requests.get(f"{server.url}/drift/churn", timeout=30).json()["versions"][0]["window_size"] == 1000
        store.remove_shadow("churn", "production")
        time.sleep(0.5)
        post_rows(url, X[:100])
        assert requests.get(f"{server.url}/models/churn", timeout=30).json()["shadows"] == {}
    finally:
        server.stop()
