"""Issue 16 part 6: the Dockerfile, the Kubernetes manifests, the Grafana dashboard
and the Prometheus alerts, checked with the real tools and a real server.

- the Dockerfile passes hadolint, and its CMD / HEALTHCHECK / the Deployment's
  args are parsed by the real `mlserve serve` command and name real routes (no
  Docker engine here, so the image itself is not built);
- `kubectl kustomize` renders the base and the Redis overlay, and every
  rendered object validates with kubernetes-validate (strict) against the
  newest Kubernetes version it knows;
- every ConfigMap key is a real MLSERVE_* setting and its value parses;
- a real `mlserve serve` started with the ConfigMap's environment answers
  requests, and every metric name the dashboard and the alerts use is in its
  /metrics; promtool checks the alert rules.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading

import pytest
import requests
import yaml
from serving_support import Server, fit_regressor, training_data

from mlserve import ModelStore
from mlserve._serve_cli import GRACEFUL_TIMEOUT_SECONDS
from mlserve.cli import main as cli_main
from mlserve.serving.app import create_app
from mlserve.serving.config import DEFAULTS, ServingConfig, parse_environ

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
KUSTOMIZE_DIRS = ["deploy/kubernetes", "deploy/kubernetes/overlays/redis"]
PROMETHEUS_BUILTIN = {"up"}  # series Prometheus makes itself for every scrape target


def _tool(name: str) -> str:
    """The path of a command-line tool that .ci/run installs."""
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    assert found, f"{name} is not installed (bash .ci/run installs it)"
    return found


# ------------------------------------------------------------------ Dockerfile


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [_tool("hadolint"), "--config", os.path.join(ROOT, ".hadolint.yaml"), "Dockerfile"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_and_copies_what_the_wheel_needs():
    steps = _dockerfile()
    froms = [a for w, a in steps if w == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build") and "slim" in froms[1]
    assert any(w == "RUN" and "pip wheel" in a for w, a in steps)
    assert any(w == "COPY" and a.startswith("--from=build") for w, a in steps)
    users = [a for w, a in steps if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    for w, a in steps:
        if w == "COPY" and not a.startswith("--from"):
            for source in shlex.split(a)[:-1]:
                assert os.path.exists(os.path.join(ROOT, source)), source
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    assert {".git", "tests/", "build/"} <= ignored
    assert not ignored & {"csrc/", "mlserve/", "setup.py", "pyproject.toml", "README.md"}


def _serve_context(args: list[str]):
    """Parse `mlserve ARGS` with the real click command (raises on an unknown flag)."""
    assert args[0] == "serve", args
    serve = cli_main.commands["serve"]
    return serve.make_context("serve", list(args[1:]))


def test_the_image_command_and_healthcheck_are_real_flags_and_routes(tmp_path):
    steps = dict(_dockerfile())  # the last of each instruction
    assert _exec_form(steps["ENTRYPOINT"]) == ["mlserve"]
    cmd = _exec_form(steps["CMD"])
    assert cmd == ["serve", "/models", "--host", "0.0.0.0", "--port", "8080"]
    params = _serve_context(cmd).params
    assert params["store_dir"] == "/models" and params["port"] == 8080
    assert params["host"] == "0.0.0.0"
    health = steps["HEALTHCHECK"]
    assert "http://127.0.0.1:8080/v2/health/ready" in health
    rules = {r.rule for r in create_app(str(tmp_path)).url_map.iter_rules()}
    assert {"/v2/health/ready", "/v2/health/live", "/metrics"} <= rules
    # the healthcheck's own command, run against a real server, exits 0 when ready
    store = tmp_path / "models"
    ModelStore(store).publish("reg", fit_regressor(), alias="production")
    server = Server(store)
    try:
        probe = _exec_form(health.split(" CMD ", 1)[1])
        assert probe[0] == "python"
        code = probe[2].replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
        probe_run = subprocess.run([sys.executable, "-c", code], check=False, timeout=30)
        assert probe_run.returncode == 0
    finally:
        server.stop()


# ------------------------------------------------------------------ Kubernetes


def _render(path: str) -> list[dict]:
    result = subprocess.run(
        [_tool("kubectl"), "kustomize", path], check=False, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=KUSTOMIZE_DIRS)
def rendered(request):
    return request.param, _render(request.param)


def test_every_rendered_object_validates_against_current_kubernetes(rendered):
    import kubernetes_validate

    path, objects = rendered
    version = kubernetes_validate.latest_version()
    kinds = sorted(o["kind"] for o in objects)
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PersistentVolumeClaim",
                "PodDisruptionBudget", "Service"]  # fmt: skip
    if path.endswith("redis"):
        expected = sorted([*expected, "Deployment", "Service"])
    assert kinds == expected
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any error


def test_a_broken_manifest_is_refused_by_the_validator():
    import kubernetes_validate

    deployment = next(o for o in _render(KUSTOMIZE_DIRS[0]) if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def _by_kind(objects: list[dict], kind: str, name: str = "mlserve") -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_the_deployment_probes_drain_and_store_volume(rendered, tmp_path):
    _, objects = rendered
    deployment = _by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    rules = {r.rule for r in create_app(str(tmp_path)).url_map.iter_rules()}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in rules
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert {"requests", "limits"} <= set(container["resources"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > GRACEFUL_TIMEOUT_SECONDS + pre_stop
    args = container["command"] + container["args"]
    params = _serve_context(args[1:]).params
    assert params["port"] == 8080 and params["host"] == "0.0.0.0"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == params["store_dir"])
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert _by_kind(objects, "PersistentVolumeClaim", claim)
    assert pod["securityContext"]["runAsNonRoot"] is True
    config_name = container["envFrom"][0]["configMapRef"]["name"]
    assert _by_kind(objects, "ConfigMap", config_name)


def test_service_pdb_and_hpa_select_the_deployment(rendered):
    _, objects = rendered
    deployment = _by_kind(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = _by_kind(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = _by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = _by_kind(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]


def _config_data(objects: list[dict]) -> dict[str, str]:
    return _by_kind(objects, "ConfigMap", "mlserve-config")["data"]


def test_every_configmap_key_is_a_real_setting_with_a_valid_value(rendered):
    path, objects = rendered
    data = _config_data(objects)
    unknown = sorted(set(data) - set(DEFAULTS))
    assert not unknown, f"not MLSERVE_* settings of mlserve/serving/config.py: {unknown}"
    assert all(isinstance(v, str) for v in data.values())  # env values are text
    values = parse_environ(data)  # raises ConfigError naming a bad value
    assert set(values) == set(data)
    config = ServingConfig.from_mapping(values)
    if path.endswith("redis"):
        assert values["MLSERVE_RATE_LIMIT_STORAGE"].startswith("redis://mlserve-redis:6379")
        assert values["MLSERVE_CACHE"].startswith("redis://mlserve-redis:6379")
        redis = _by_kind(objects, "Service", "mlserve-redis")
        assert redis["spec"]["ports"][0]["port"] == 6379
    assert config.max_rows == int(data["MLSERVE_MAX_ROWS"])


def test_parse_environ_refuses_what_a_wrong_configmap_would_hold():
    from mlserve.serving.config import ConfigError

    with pytest.raises(ConfigError, match="MLSERVE_MAX_ROWS"):
        parse_environ({"MLSERVE_MAX_ROWS": "many"})


# -------------------------------------------------------- dashboard and alerts

METRIC = re.compile(r"\b(mlserve_[a-z_]+|up)\b(?=\s*[{\[(]|\s*[=!<>)]|\s*$)")


def _dashboard() -> dict:
    with open(os.path.join(DEPLOY, "grafana", "mlserve-dashboard.json")) as f:
        return json.load(f)


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]


def _alerts() -> list[dict]:
    with open(os.path.join(DEPLOY, "prometheus", "alerts.yml")) as f:
        return [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]


def _names(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def test_the_dashboard_file_is_what_its_script_writes():
    sys.path.insert(0, os.path.join(DEPLOY, "grafana"))
    try:
        import make_dashboard
    finally:
        sys.path.pop(0)
    with open(make_dashboard.PATH) as f:
        assert f.read() == make_dashboard.render(), "run python deploy/grafana/make_dashboard.py"


def test_the_dashboard_covers_rate_errors_latency_batches_queue_and_in_flight():
    exprs = " ".join(_dashboard_exprs())
    for needle in ("rate(mlserve_requests_total", 'status=~"4..|5.."',
                   "histogram_quantile(0.99, sum by (model, le) (rate(mlserve_request_duration",
                   "mlserve_batch_size_bucket", "mlserve_batch_queue_delay_seconds_bucket",
                   "mlserve_requests_in_flight", "sum by (model, version)"):  # fmt: skip
        assert needle in exprs, needle
    variables = {v["name"] for v in _dashboard()["templating"]["list"]}
    assert {"model", "version", "datasource"} <= variables


def test_promtool_accepts_the_alert_rules():
    result = subprocess.run(
        [_tool("promtool"), "check", "rules", os.path.join(DEPLOY, "prometheus", "alerts.yml")],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    names = {r["alert"] for r in _alerts()}
    assert {"MLServeHighErrorRatio", "MLServeHighLatency", "MLServeInstanceDown"} <= names


def test_the_alerts_fire_on_synthetic_series_and_stay_silent_otherwise():
    """promtool's rule unit tests (deploy/prometheus/alerts_test.yml): 5% server errors,
    a p99 of about 1 s, one instance down, and no instance at all."""
    result = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts_test.yml"],
        check=False, cwd=os.path.join(DEPLOY, "prometheus"), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """/metrics of a real `mlserve serve` run with the base ConfigMap's environment,
    after successful, rejected and concurrent (batched) requests."""
    store = tmp_path_factory.mktemp("deploy") / "models"
    ModelStore(store).publish("reg", fit_regressor(), alias="production")
    env = _config_data(_render(KUSTOMIZE_DIRS[0]))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server = Server(store, "--workers", "2", "--threads", "4")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        X, _ = training_data(seed=2, n=8)
        url = f"{server.url}/predict/reg"

        def client(rows):
            with requests.Session() as session:
                for _ in range(10):
                    response = session.post(url, json={"instances": rows}, timeout=30)
                    assert response.status_code == 200, response.text

        threads = [threading.Thread(target=client, args=(X[: i + 1].tolist(),)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert requests.post(url, json={"instances": [[1.0]]}, timeout=30).status_code == 400
        nope = requests.post(f"{server.url}/predict/nope", json={"features": [1.0]}, timeout=30)
        assert nope.status_code == 404
        text = requests.get(f"{server.url}/metrics", timeout=30).text
    finally:
        server.stop()
    samples = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    return text, samples


def test_every_metric_of_the_dashboard_and_alerts_is_served(scraped):
    text, samples = scraped
    used = _names(_dashboard_exprs()) | _names([r["expr"] for r in _alerts()])
    assert {"mlserve_requests_total", "mlserve_request_duration_seconds_bucket",
            "mlserve_batch_size_bucket", "up"} <= used  # fmt: skip
    missing = sorted(used - PROMETHEUS_BUILTIN - samples)
    assert not missing, f"used by the dashboard/alerts but not in /metrics: {missing}\n{text}"
    assert 'status="400"' in text and 'version="1"' in text


def test_metric_name_extraction_sees_through_functions():
    names = _names(["histogram_quantile(0.9, sum by (model, le) (rate(mlserve_x_bucket[5m])))",
                    'sum(up{job="a"}) / mlserve_y', "absent(up == 1)"])  # fmt: skip
    assert names == {"mlserve_x_bucket", "mlserve_y", "up"}
