"""Drift monitoring: training bins in the model file, PSI/KS against them, GET /drift/<name>.

The reference numbers are the textbook PSI (on the reference deciles, zero
shares filled as Evidently's get_binned_data does) and scipy.stats.ks_2samp's
statistic, computed on the raw rows. Evidently itself (0.7.23) does not import
next to pandas 3 (ImportError in its legacy package), so its definitions are
matched here from its source; see docs/DRIFT.md.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from flask import Flask
from scipy.stats import ks_2samp

import mlserve
from mlserve import _reference
from mlserve._reference import parse_reference, reference_statistics
from mlserve.cli import main
from mlserve.serving import ConfigError, blueprint
from mlserve.serving import drift as drift_module
from mlserve.store import ModelStore

N_TRAIN = 5000
MEANS = np.array([0.0, 5.0, -2.0, 10.0])
SCALES = np.array([1.0, 2.0, 0.5, 3.0])


def sample(rng, n):
    """Four normal features of different scales and one categorical (0, 1, 2)."""
    X = np.empty((n, 5))
    X[:, :4] = MEANS + SCALES * rng.normal(size=(n, 4))
    X[:, 4] = rng.choice([0.0, 1.0, 2.0], size=n, p=[0.5, 0.3, 0.2])
    return X


def labels_of(X):
    return ((X[:, 0] + (X[:, 1] - 5.0) / 2 + X[:, 4]) > 0.5).astype(np.int64)


@pytest.fixture
def train(rng):
    X = sample(rng, N_TRAIN)
    return X, labels_of(X)


def textbook_psi(ref, cur):
    """sum (p_cur - p_ref) ln(p_cur / p_ref), a zero share filled as Evidently's get_binned_data."""
    ref = np.asarray(ref, dtype=float) / np.sum(ref)
    cur = np.asarray(cur, dtype=float) / np.sum(cur)
    for p in (ref, cur):
        smallest = p[p != 0].min()
        np.place(p, p == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def decile_counts(train_col, col):
    edges = np.unique(np.quantile(train_col, np.arange(1, 10) / 10))
    ref = np.bincount(np.searchsorted(edges, train_col, side="right"), minlength=edges.size + 1)
    cur = np.bincount(np.searchsorted(edges, col, side="right"), minlength=edges.size + 1)
    return ref, cur


def served_counts(column, values):
    return np.bincount(column.code(values), minlength=column.n_bins).astype(float)


# ------------------------------------------------------------- the model file


def test_fit_stores_bins_and_the_prediction_distribution(train):
    X, y = train
    model = mlserve.LogisticRegression().fit(X, y)
    training = model.metadata["training"]
    assert training["n_binned"] == N_TRAIN
    features = training["features"]
    assert [f["type"] for f in features] == ["numeric"] * 4 + ["categorical"]
    for j in range(4):
        edges = np.unique(np.quantile(X[:, j], np.arange(1, 100) / 100))
        assert features[j]["edges"] == edges.tolist()
        assert sum(features[j]["counts"]) == N_TRAIN
        expected = np.bincount(np.searchsorted(edges, X[:, j], side="right"), minlength=edges.size + 1)
        assert features[j]["counts"] == expected.tolist()
        assert set(features[j]["psi_edges"]) <= set(features[j]["edges"])
    values, counts = np.unique(X[:, 4], return_counts=True)
    assert features[4] == {"type": "categorical", "values": values.tolist(), "counts": counts.tolist()}
    predicted = model.predict(X)
    assert training["prediction"] == {
        "type": "categorical",
        "values": [0, 1],
        "counts": [int((predicted == 0).sum()), int((predicted == 1).sum())],
    }


def test_regressor_and_kmeans_store_their_prediction_distribution(train):
    X, _ = train
    reg = mlserve.LinearRegression().fit(X, X @ np.array([1.0, 2.0, 0.0, -1.0, 0.5]))
    prediction = reg.metadata["training"]["prediction"]
    assert prediction["type"] == "numeric"
    assert prediction["edges"] == np.unique(np.quantile(reg.predict(X), np.arange(1, 100) / 100)).tolist()
    km = mlserve.KMeans(n_clusters=3, random_state=0).fit(X)
    prediction = km.metadata["training"]["prediction"]
    assert prediction["values"] == [0, 1, 2]
    assert prediction["counts"] == np.bincount(km.labels_, minlength=3).tolist()


def test_convert_with_reference_stores_bins_and_save_load_keeps_them(train, tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    X, y = train
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X, y)
    converted = mlserve.convert(forest, reference=X)
    training = converted.metadata["training"]
    predicted = forest.predict(X)
    assert training["prediction"]["counts"] == [int((predicted == 0).sum()), int((predicted == 1).sum())]
    assert len(training["features"]) == 5
    path = tmp_path / "forest.mls"
    mlserve.save(converted, path)
    assert mlserve.load(path).metadata["training"] == json.loads(json.dumps(training))
    assert parse_reference(mlserve.load(path).metadata) is not None


def test_bins_are_computed_on_a_bounded_sample(rng, monkeypatch):
    monkeypatch.setattr(_reference, "MAX_BIN_ROWS", 1000)
    X = rng.normal(size=(3000, 2))
    stats = reference_statistics(X)
    assert stats["n_binned"] == 1000
    assert sum(stats["features"][0]["counts"]) == 1000


def test_mlserve_info_shows_the_bins(train, tmp_path):
    X, y = train
    path = tmp_path / "m.mls"
    mlserve.save(mlserve.LogisticRegression().fit(X, y), path)
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert f"drift reference: bins of {N_TRAIN} rows" in result.output
    assert "x0             numeric      100 bins (p1 " in result.output
    assert "x4             categorical  3 values (0.0: " in result.output
    assert "prediction     categorical  2 values (0: " in result.output


def test_a_file_without_bins_says_so(tmp_path):
    from sklearn.ensemble import RandomForestRegressor

    X = np.random.default_rng(0).normal(size=(100, 3))
    converted = mlserve.convert(RandomForestRegressor(n_estimators=2).fit(X, X[:, 0]))
    assert parse_reference(converted.metadata) is None
    path = tmp_path / "old.mls"
    mlserve.save(converted, path)
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0


@pytest.mark.parametrize(
    "broken",
    [
        {"type": "numeric", "edges": [2.0, 1.0], "counts": [1, 1, 1], "psi_edges": [1.0]},
        {"type": "numeric", "edges": [1.0, 2.0], "counts": [1, 1], "psi_edges": [1.0]},
        {"type": "numeric", "edges": [1.0, 2.0], "counts": [1, -1, 1], "psi_edges": [1.0]},
        {"type": "numeric", "edges": [1.0, 2.0], "counts": [1, 1, 1], "psi_edges": [1.5]},
        {"type": "numeric", "edges": [1.0, float("nan")], "counts": [1, 1, 1], "psi_edges": []},
        {"type": "numeric", "edges": "1,2", "counts": [1, 1, 1], "psi_edges": []},
        {"type": "numeric", "edges": list(range(2000)), "counts": [1] * 2001, "psi_edges": []},
        {"type": "categorical", "values": [1, 1], "counts": [1, 1]},
        {"type": "categorical", "values": [], "counts": []},
        {"type": "categorical", "values": [1, 2], "counts": [1]},
        {"type": "categorical", "values": [1, 2], "counts": [0, 0]},
        {"type": "categorical", "values": [1, 2], "counts": [1.5, 1]},
        {"type": "histogram"},
        None,
        [],
    ],
)
def test_malformed_statistics_are_no_reference_never_a_crash(broken):
    good = {"type": "categorical", "values": [0, 1], "counts": [3, 4]}
    metadata = {"n_features": 2, "training": {"features": [good, broken]}}
    assert parse_reference(metadata) is None
    assert parse_reference({"n_features": 2, "training": {"features": [good]}}) is None
    assert parse_reference({"n_features": "x", "training": {"features": [good]}}) is None
    assert parse_reference({"n_features": 1, "training": "no"}) is None
    assert parse_reference({"n_features": 2, "training": {"features": [good, good]}}) is not None


# ------------------------------------------------------------- the numbers


def test_psi_and_ks_match_the_textbook_and_scipy(train, rng):
    X, _ = train
    ref = parse_reference({"n_features": 5, "training": reference_statistics(X)})
    for shift in (0.0, 0.3, 3.0):
        cur = sample(rng, 2000)
        cur[:, :4] += shift * SCALES
        for j in range(4):
            column = ref.features[j]
            counts = served_counts(column, cur[:, j])
            assert column.psi(counts) == pytest.approx(
                textbook_psi(*decile_counts(X[:, j], cur[:, j])), rel=1e-12, abs=1e-12
            )
            exact = ks_2samp(X[:, j], cur[:, j]).statistic
            ours = column.ks(counts)
            # evaluated at the 99 percentile edges: at most the exact statistic, and
            # below it by no more than the largest reference bin's share
            assert ours <= exact + 1e-12
            assert exact - ours <= column.ref_counts.max() / N_TRAIN + 1e-12
        column = ref.features[4]
        values, cur_counts = np.unique(cur[:, 4], return_counts=True)
        _, ref_counts = np.unique(X[:, 4], return_counts=True)
        assert values.tolist() == [0.0, 1.0, 2.0]
        assert column.psi(served_counts(column, cur[:, 4])) == pytest.approx(
            textbook_psi(ref_counts, cur_counts), rel=1e-12
        )
        assert column.ks(served_counts(column, cur[:, 4])) is None


def test_unseen_categories_count_against_the_reference():
    ref = parse_reference({"n_features": 1, "training": reference_statistics(np.array([[0.0], [1.0]] * 50))})
    column = ref.features[0]
    counts = served_counts(column, np.array([0.0] * 50 + [7.0] * 50))
    assert counts.tolist() == [50, 0, 50]
    assert column.psi(counts) == pytest.approx(textbook_psi([50, 50, 0], [50, 0, 50]))


# ------------------------------------------------------------- serving


def make_app(store, **config):
    app = Flask(__name__)
    app.config.update(MLSERVE_DRIFT=True, **config)
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    return app.test_client()


def send(client, name, X, batch=20):
    for i in range(0, X.shape[0], batch):
        response = client.post(f"/ml/predict/{name}", json={"instances": X[i:i + batch].tolist()})
        assert response.status_code == 200, response.json


def drift_of(client, name, **query):
    response = client.get(f"/ml/drift/{name}", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


@pytest.fixture
def store(tmp_path, train):
    store = ModelStore(tmp_path / "store")
    X, y = train
    store.publish("churn", mlserve.LogisticRegression().fit(X, y), alias="production")
    return store


def test_rows_from_the_training_distribution_do_not_drift(store, rng):
    client = make_app(store)
    send(client, "churn", sample(rng, 3000))
    report = drift_of(client, "churn")
    assert report["window"] == 10_000 and report["psi_threshold"] == 0.2
    (entry,) = report["versions"]
    assert entry["version"] == 1 and entry["reference"] is True
    assert entry["window_size"] == 3000
    assert [f["name"] for f in entry["features"]] == ["x0", "x1", "x2", "x3", "x4"]
    for feature in entry["features"]:
        assert feature["psi"] < 0.1, feature
        assert not feature["drifted"]
        assert ("ks" in feature) == (feature["type"] == "numeric")
    assert entry["drifted_features"] == []
    assert entry["prediction"]["psi"] < 0.1


def test_one_feature_shifted_by_three_sd_is_flagged_and_the_others_not(store, train, rng):
    client = make_app(store, MLSERVE_DRIFT_WINDOW=2000)
    send(client, "churn", sample(rng, 2000))
    shifted = sample(rng, 2000)
    shifted[:, 2] += 3 * SCALES[2]
    send(client, "churn", shifted)  # the window now holds only shifted rows
    (entry,) = drift_of(client, "churn")["versions"]
    assert entry["window_size"] == 2000
    assert entry["drifted_features"] == ["x2"]
    by_name = {f["name"]: f for f in entry["features"]}
    assert by_name["x2"]["psi"] > 1.0
    exact = ks_2samp(train[0][:, 2], shifted[:, 2]).statistic  # about 2 * Phi(1.5) - 1 = 0.87
    assert exact - 0.011 <= by_name["x2"]["ks"] <= exact + 1e-12
    for name in ("x0", "x1", "x3", "x4"):
        assert by_name[name]["psi"] < 0.1 and not by_name[name]["drifted"]


def test_drift_is_in_the_prometheus_gauges(store, rng):
    client = make_app(store)
    send(client, "churn", sample(rng, 500))
    text = client.get("/ml/metrics").data.decode()
    report = drift_of(client, "churn")
    for feature in report["versions"][0]["features"]:
        line = f'mlserve_feature_drift_psi{{feature="{feature["name"]}",model="churn",version="1"}} '
        assert any(row.startswith(line) for row in text.splitlines()), line
    assert 'mlserve_prediction_drift_psi{model="churn",version="1"} ' in text


def test_each_version_has_its_own_window_and_the_query_picks_one(store, train, rng):
    X, y = train
    store.publish("churn", mlserve.LogisticRegression(C=0.1).fit(X, y))
    client = make_app(store)
    send(client, "churn", sample(rng, 200))
    X2 = sample(rng, 100)
    response = client.post("/ml/predict/churn?version=2", json={"instances": X2.tolist()})
    assert response.status_code == 200
    assert drift_of(client, "churn")["versions"][0]["window_size"] == 200
    (entry,) = drift_of(client, "churn", version=2)["versions"]
    assert entry["version"] == 2 and entry["window_size"] == 100


def test_other_protocols_feed_the_window(store, rng):
    client = make_app(store)
    X = sample(rng, 30)
    assert client.post("/ml/v1/models/churn:predict", json={"instances": X[:10].tolist()}).status_code == 200
    body = {"inputs": [{"name": "x", "shape": [10, 5], "datatype": "FP64", "data": X[10:20].ravel().tolist()}]}
    assert client.post("/ml/v2/models/churn/infer", json=body).status_code == 200
    assert drift_of(client, "churn")["versions"][0]["window_size"] == 20


def test_a_model_without_reference_reports_no_reference(tmp_path):
    from sklearn.ensemble import RandomForestRegressor

    X = np.random.default_rng(0).normal(size=(100, 3))
    store = ModelStore(tmp_path / "s")
    store.publish("old", mlserve.convert(RandomForestRegressor(n_estimators=2).fit(X, X[:, 0])))
    client = make_app(store)
    send(client, "old", X[:10])
    (entry,) = drift_of(client, "old")["versions"]
    assert entry["reference"] is False and entry["window_size"] == 0
    assert entry["message"].startswith("no reference: the model file has no training statistics")


def test_drift_off_and_unknown_models_are_json_404s(store):
    app = Flask(__name__)
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    response = app.test_client().get("/ml/drift/churn")
    assert response.status_code == 404
    assert response.json["error"] == "drift monitoring is off; turn it on with MLSERVE_DRIFT=true"
    response = make_app(store).get("/ml/drift/nope")
    assert response.status_code == 404 and "nope" in response.json["error"]
    response = make_app(store).get("/ml/drift/churn?version=9")
    assert response.status_code == 404 and "no version 9" in response.json["error"]


def test_a_full_queue_drops_and_counts(store, rng, monkeypatch):
    monkeypatch.setattr(drift_module, "MAX_PENDING", 0)
    client = make_app(store)
    send(client, "churn", sample(rng, 100))
    (entry,) = drift_of(client, "churn")["versions"]
    assert entry["window_size"] == 0 and entry["dropped"] == 5
    assert all(f["psi"] is None and not f["drifted"] for f in entry["features"])


def test_shared_windows_merge_and_ignore_foreign_files(store, rng, tmp_path, monkeypatch):
    """With PROMETHEUS_MULTIPROC_DIR each worker's window is a file; a read merges them."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    client = make_app(store, MLSERVE_DRIFT_WINDOW=1000)
    send(client, "churn", sample(rng, 600))
    assert drift_of(client, "churn")["versions"][0]["window_size"] == 600  # and written
    folder = tmp_path / "prom" / drift_module.DRIFT_SUBDIR
    (mine,) = folder.glob("*.win")
    # another (live) worker's window: the same file under pid 1
    other = mine.with_name(mine.name.rsplit("@", 1)[0] + "@1.win")
    data = bytearray(mine.read_bytes())
    data[40:48] = (7).to_bytes(8, "little")  # header slot 5: requests that worker dropped
    other.write_bytes(bytes(data))
    dead = mine.with_name(mine.name.rsplit("@", 1)[0] + "@999999999.win")
    dead.write_bytes(mine.read_bytes())
    garbage = mine.with_name(mine.name.rsplit("@", 1)[0] + f"@{os.getppid()}.win")
    garbage.write_bytes(b"not a window")  # a live process's file that is no window
    (entry,) = drift_of(client, "churn")["versions"]
    assert entry["window_size"] == 1000  # 600 + 600, the newest of each in proportion
    assert entry["dropped"] == 7  # summed over workers
    assert not dead.exists()  # a worker that exited
    assert all(f["psi"] < 0.1 for f in entry["features"])
    assert garbage.exists()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MLSERVE_DRIFT", "yes", "MLSERVE_DRIFT must be True or False"),
        ("MLSERVE_DRIFT_WINDOW", 0, "MLSERVE_DRIFT_WINDOW must be a positive integer (rows)"),
        ("MLSERVE_DRIFT_WINDOW", 10**9, "MLSERVE_DRIFT_WINDOW must be at most 10000000 rows"),
        ("MLSERVE_DRIFT_PSI_THRESHOLD", -1, "MLSERVE_DRIFT_PSI_THRESHOLD must be a number > 0"),
        ("MLSERVE_DRIFT_PSI_THRESHOLD", "high", "MLSERVE_DRIFT_PSI_THRESHOLD must be a number > 0"),
    ],
)
def test_bad_settings_name_the_key(store, key, value, message):
    app = Flask(__name__)
    app.config[key] = value
    with pytest.raises(ConfigError) as info:
        app.register_blueprint(blueprint(store))
    assert str(info.value).startswith(message)
