"""examples/flask_app.py (a host app mounting the blueprint) and the mlserve store commands."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import gunicorn.config
import pytest
import requests
from click.testing import CliRunner

import mlserve
from mlserve.cli import main
from mlserve.store import ModelStore
from serving_support import Server, fit_classifier, fit_regressor, training_data

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_app.py"
X, _ = training_data(seed=4, n=3)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "reg.mls"
    mlserve.save(fit_regressor(), path)
    return path


def load_example():
    spec = importlib.util.spec_from_file_location("flask_app_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_flask_app_serves_its_routes_and_the_models(tmp_path):
    store = ModelStore(tmp_path / "models")
    model = fit_classifier()
    store.publish("churn", model, alias="production")
    app = load_example().create_app(str(store.root))
    client = app.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/orders/7").json == {"order": 7, "status": "shipped"}
    response = client.post("/ml/predict/churn", json={"instances": X.tolist()})
    assert response.json["predictions"] == model.predict(X).tolist()
    assert client.get("/ml/v2/health/ready").status_code == 200
    assert client.get("/ml/openapi.json").json["servers"] == [{"url": "/ml"}]


def test_example_flask_app_under_gunicorn(tmp_path):
    store = ModelStore(tmp_path / "models")
    model = fit_regressor()
    store.publish("reg", model)
    command = [
        sys.executable, "-m", "gunicorn", "--chdir", str(EXAMPLE.parent),
        "--bind", "127.0.0.1:0", "--worker-class", "gthread", "--threads", "2",
        *(["--no-control-socket"] if hasattr(gunicorn.config, "ControlSocketDisable") else []),
        f"flask_app:create_app({str(store.root)!r})",
    ]  # fmt: skip
    server = Server(store.root, command=command, ready_path="/ml/v2/health/ready")
    try:
        assert requests.get(f"{server.url}/orders/3", timeout=10).json()["order"] == 3
        response = requests.post(
            f"{server.url}/ml/v1/models/reg:predict", json={"instances": X.tolist()}, timeout=10
        )
        assert response.json()["predictions"] == pytest.approx(model.predict(X).tolist())
    finally:
        server.stop()


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_store_commands(tmp_path, model_file):
    store_dir = tmp_path / "models"
    result = invoke(
        "publish", model_file, "--name", "reg", "--alias", "production", "--store", store_dir
    )
    assert result.exit_code == 0 and result.output == "published reg version 1 as production\n"
    assert (
        invoke("publish", model_file, "-n", "reg", "--store", store_dir).output
        == "published reg version 2\n"
    )
    result = invoke("models", store_dir)
    assert result.output.startswith(
        "reg  versions: 1, 2  aliases: production -> v1  input: [-1, 4]"
    )
    listing = json.loads(invoke("models", store_dir, "--json").output)
    assert listing["models"][0]["versions"] == [1, 2]
    assert (
        invoke("alias", "reg", "production", "2", "--store", store_dir).output
        == "reg: production -> v2\n"
    )
    result = invoke("alias", "reg", "canary", "1=90,2=10", "--store", store_dir)
    assert result.output == "reg: canary -> v1 (90%), v2 (10%)\n"
    assert (
        invoke("rollback", "reg", "production", "--store", store_dir).output
        == "reg: production -> v1\n"
    )
    result = invoke("delete", "reg", "1", "--store", store_dir)
    assert result.exit_code == 1
    assert (
        "cannot delete version 1 of model 'reg': alias 'canary', 'production' points to it"
        in result.output
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("rollback", "reg", "production"), "no previous version to roll back to"),
        (("alias", "reg", "production", "9"), "model 'reg' has no version 9"),
        (("alias", "reg", "production", "x=1"), "expected VERSION or VERSION=WEIGHT"),
        (("rollback", "nope", "production"), "model 'nope' not found"),
    ],
)
def test_store_command_errors(tmp_path, model_file, args, message):
    store_dir = tmp_path / "models"
    invoke("publish", model_file, "--name", "reg", "--alias", "production", "--store", store_dir)
    result = invoke(*args, "--store", store_dir)
    assert result.exit_code != 0
    assert message in result.output


def test_serve_refuses_a_missing_store(tmp_path):
    result = invoke("serve", tmp_path / "missing", "--port", "0")
    assert result.exit_code == 1 and "no model store at" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-batch-size", "0"], "--max-batch-size"),
        (["--max-delay-ms", "-1"], "--max-delay-ms"),
        (["--batching-models", "{not json"], "not valid JSON"),
        (["--batching-models", '{"reg": {"max_batch_size": 0}}'], "max_batch_size must be"),
        (["--batching-models", '{"reg": {"colour": 1}}'], "unknown batching option 'colour'"),
    ],
)
def test_serve_refuses_bad_batching_options(tmp_path, model_file, args, message, monkeypatch):
    # serve points prometheus_client at a multiprocess folder before it validates (the
    # variable must be set before prometheus_client is imported); keep that out of this process
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    store_dir = tmp_path / "store"
    invoke("publish", model_file, "--name", "reg", "--store", store_dir)
    result = invoke("serve", store_dir, "--port", "0", *args)
    assert result.exit_code == 2 or result.exit_code == 1, result.output
    assert message in result.output, result.output
