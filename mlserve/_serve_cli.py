"""``mlserve serve | publish | models | alias | rollback | delete | demo`` (registered in mlserve.cli)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from functools import partial
from typing import Any, Callable

import click

__all__ = ["register_serving_commands"]

STORE_ENV = "MLSERVE_STORE"
DEFAULT_STORE = "models"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
DEMO_MODEL = "demo"
DEMO_ROW = [0.5, -1.2, 3.3, 0.1]
CHECK_TIMEOUT_SECONDS = 30.0
CLIENT_TIMEOUT_SECONDS = 30.0  # MLSERVE_CLIENT_TIMEOUT's default (serving/config.py)
#: seconds gunicorn lets in-flight requests finish after SIGTERM (a Kubernetes pod's
#: terminationGracePeriodSeconds must be longer: deploy/kubernetes/, tests/test_deploy.py)
GRACEFUL_TIMEOUT_SECONDS = 10

store_option = click.option(
    "--store",
    "store_dir",
    envvar=STORE_ENV,
    default=DEFAULT_STORE,
    show_default=True,
    type=click.Path(file_okay=False),
    help=f"Model store folder (or ${STORE_ENV}).",
)


def _open_store(store_dir: str) -> Any:
    from mlserve.store import ModelStore

    return ModelStore(store_dir)


def _existing_store(store_dir: str) -> Any:
    if not os.path.isdir(store_dir):
        raise click.ClickException(f"no model store at {store_dir!r}")
    return _open_store(store_dir)


# ------------------------------------------------------------------- serve


def _json_option(name: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None


def run_gunicorn(app_factory: Callable[[], Any], options: dict[str, Any]) -> None:
    """Run ``app_factory()`` under gunicorn in this process (each worker builds its own app)."""
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        raise click.ClickException(
            "mlserve serve runs under gunicorn: pip install gunicorn "
            "(or use --dev for the Flask development server)"
        ) from None

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # control_socket_disable: gunicorn >= 24 only
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return app_factory()

    _Server().run()


@click.command("serve")
@click.argument("store_dir", type=click.Path(file_okay=False), envvar=STORE_ENV)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), help="Processes.")
@click.option(
    "--threads", default=4, show_default=True, type=click.IntRange(1), help="Threads per worker."
)
@click.option(
    "--reload-interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between checks of the store for new versions and moved aliases (0: never).",
)
@click.option("--default-model", default=None, help="The model behind /invocations.")
@click.option(
    "--max-body-bytes",
    default=64 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1),
    help="Larger request bodies get 413.",
)
@click.option(
    "--max-rows",
    default=100_000,
    show_default=True,
    type=click.IntRange(1),
    help="Requests with more rows get 413.",
)
@click.option(
    "--api-keys",
    default=None,
    type=click.Path(dir_okay=False),
    help="Keys file (mlserve keys create): requests then need a key. Default: no auth.",
)
@click.option(
    "--admin/--no-admin",
    "admin",
    default=None,
    help="The admin endpoints (POST /admin/reload, /v2/repository/models/<name>/load|unload). "
    "Default: on only with --api-keys, for keys with the admin scope; --admin opens them "
    "without keys too.",
)
@click.option(
    "--rate-limit",
    default=None,
    help='Per client (key, or address without keys), e.g. "100/second". Counted per worker '
    "unless --rate-limit-storage is shared.",
)
@click.option(
    "--rate-limit-storage",
    default="memory://",
    show_default=True,
    help='Where rate limits are counted, e.g. "redis://localhost:6379".',
)
@click.option(
    "--cors-origins", default=None, help='Allowed CORS origins: "*" or comma-separated origins.'
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="One JSON line per request on stderr.",
)
@click.option(
    "--batching/--no-batching",
    default=True,
    show_default=True,
    help="Coalesce concurrent requests for one model version into one core call.",
)
@click.option(
    "--max-batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Most rows in one batched core call.",
)
@click.option(
    "--max-delay-ms",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Longest a queued request waits for others to join its batch.",
)
@click.option(
    "--batching-models",
    default=None,
    metavar="JSON",
    help='Per-model batching options as JSON, e.g. \'{"churn": {"max_batch_size": 16}, '
    '"tiny": false}\' (keys as MLSERVE_BATCHING_MODELS).',
)
@click.option(
    "--client-timeout",
    default=CLIENT_TIMEOUT_SECONDS,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a request may take to arrive in full (from its start); then 408 and close.",
)
@click.option(
    "--cache",
    default=None,
    help='Prediction cache: "memory" (an LRU per worker) or "redis://host:port/db" (shared).',
)
@click.option(
    "--jwt-jwks",
    default=None,
    help="Accept bearer JWTs signed by the keys of this JWKS (a file path or an https:// URL).",
)
@click.option("--jwt-issuer", default=None, help="The JWTs' required issuer (iss).")
@click.option(
    "--jwt-audience", default=None, help="The JWTs' required audience (aud); comma-separated."
)
@click.option(
    "--payload-log",
    default=None,
    help='Log each predict request\'s inputs and outputs as JSON lines: a file path or "stderr".',
)
@click.option(
    "--drift/--no-drift",
    default=False,
    help="Drift monitoring: GET /drift/<name>, PSI/KS of the served rows against the "
    "training bins (MLSERVE_DRIFT; off by default).",
)
@click.option(
    "--grpc-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Also serve the KServe V2 gRPC service (inference.GRPCInferenceService) on this "
    "port, in every worker (SO_REUSEPORT). Default: no gRPC.",
)
@click.option(
    "--max-image-pixels",
    default=89_478_485,
    show_default=True,
    type=click.IntRange(1),
    help="Uploaded images (image models) with more pixels get 400.",
)
@click.option("--dev", is_flag=True, help="Use the Flask development server instead of gunicorn.")
def serve_command(
    store_dir: str,
    host: str,
    port: int,
    workers: int,
    threads: int,
    reload_interval: float,
    default_model: str | None,
    max_body_bytes: int,
    max_rows: int,
    api_keys: str | None,
    admin: bool | None,
    rate_limit: str | None,
    rate_limit_storage: str,
    cors_origins: str | None,
    access_log: bool,
    batching: bool,
    max_batch_size: int,
    max_delay_ms: float,
    batching_models: str | None,
    client_timeout: float,
    cache: str | None,
    jwt_jwks: str | None,
    jwt_issuer: str | None,
    jwt_audience: str | None,
    payload_log: str | None,
    drift: bool,
    grpc_port: int | None,
    max_image_pixels: int,
    dev: bool,
) -> None:
    """Serve the models of STORE_DIR over HTTP (V1, V2, MLflow and /predict at the root),
    and over gRPC (KServe V2) with --grpc-port.

    Every MLSERVE_* configuration key is also read from the environment (a
    Kubernetes ConfigMap); a flag on the command line wins over it.
    """
    _existing_store(store_dir)
    if not dev:
        # before prometheus_client is first imported: each worker then writes its
        # metrics to files there, and /metrics sums them (mlserve.serving.metrics)
        _choose_multiprocess_metrics_dir()
    # imported only now: prometheus_client must see the folder prepared above
    from mlserve.serving.app import create_app
    from mlserve.serving.worker import worker_class

    flags = {
        "MLSERVE_RELOAD_INTERVAL": reload_interval,
        "MLSERVE_DEFAULT_MODEL": default_model,
        "MLSERVE_MAX_BODY_BYTES": max_body_bytes,
        "MLSERVE_MAX_ROWS": max_rows,
        "MLSERVE_API_KEYS": api_keys,
        "MLSERVE_ADMIN_ENABLED": admin,
        "MLSERVE_RATE_LIMIT": rate_limit,
        "MLSERVE_RATE_LIMIT_STORAGE": rate_limit_storage,
        "MLSERVE_CORS_ORIGINS": cors_origins,
        "MLSERVE_ACCESS_LOG": access_log,
        "MLSERVE_BATCHING": batching,
        "MLSERVE_BATCH_MAX_SIZE": max_batch_size,
        "MLSERVE_BATCH_MAX_DELAY_MS": max_delay_ms,
        "MLSERVE_BATCHING_MODELS": _json_option("--batching-models", batching_models),
        "MLSERVE_CLIENT_TIMEOUT": client_timeout,
        "MLSERVE_CACHE": cache,
        "MLSERVE_JWT_JWKS": jwt_jwks,
        "MLSERVE_JWT_ISSUER": jwt_issuer,
        "MLSERVE_JWT_AUDIENCE": jwt_audience,
        "MLSERVE_PAYLOAD_LOG": payload_log,
        "MLSERVE_DRIFT": drift,
        "MLSERVE_GRPC_PORT": grpc_port,
        "MLSERVE_MAX_IMAGE_PIXELS": max_image_pixels,
    }
    config, serving = _serve_config(flags)
    if serving.grpc_port:
        _check_port_free(host, serving.grpc_port)
    if not dev:  # only once the flags are valid: a mistyped flag leaves the folder alone
        _clear_previous_run_metrics()
    access_log = serving.access_log

    def factory() -> Any:
        if access_log:
            _log_access_to_stderr()
        return create_app(store_dir, **config)

    if dev:
        app = factory()
        grpc_server = None
        if serving.grpc_port is not None:  # no fork here: the gRPC server runs in this process
            grpc_server = _start_grpc(app, host, threads)
        try:
            app.run(host=host, port=port, threaded=True)
        finally:
            if grpc_server is not None:
                grpc_server.stop()
        return
    run_gunicorn(
        factory,
        {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            # gthread, but each request is read whole in the event loop before a
            # thread runs it: slow clients cannot hold the threads (serving/worker.py)
            "worker_class": worker_class(serving.client_timeout, serving.max_body_bytes),
            "timeout": 60,
            "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
            "keepalive": 5,
            # one control socket per user would clash between servers on one host
            "control_socket_disable": True,
            "child_exit": _child_exit,
            "worker_exit": _worker_exit,
            # the gRPC service starts in each worker after the fork (grpcio is not
            # fork-safe: the arbiter never imports grpc); mlserve.serving.grpc_service
            **(
                {"post_worker_init": partial(_post_worker_init, host, threads)}
                if serving.grpc_port is not None
                else {}
            ),
        },
    )


#: serve's command-line parameter of each flag's MLSERVE_* key
FLAG_PARAMETERS = {
    "MLSERVE_RELOAD_INTERVAL": "reload_interval",
    "MLSERVE_DEFAULT_MODEL": "default_model",
    "MLSERVE_MAX_BODY_BYTES": "max_body_bytes",
    "MLSERVE_MAX_ROWS": "max_rows",
    "MLSERVE_API_KEYS": "api_keys",
    "MLSERVE_ADMIN_ENABLED": "admin",
    "MLSERVE_RATE_LIMIT": "rate_limit",
    "MLSERVE_RATE_LIMIT_STORAGE": "rate_limit_storage",
    "MLSERVE_CORS_ORIGINS": "cors_origins",
    "MLSERVE_ACCESS_LOG": "access_log",
    "MLSERVE_BATCHING": "batching",
    "MLSERVE_BATCH_MAX_SIZE": "max_batch_size",
    "MLSERVE_BATCH_MAX_DELAY_MS": "max_delay_ms",
    "MLSERVE_BATCHING_MODELS": "batching_models",
    "MLSERVE_CLIENT_TIMEOUT": "client_timeout",
    "MLSERVE_CACHE": "cache",
    "MLSERVE_JWT_JWKS": "jwt_jwks",
    "MLSERVE_JWT_ISSUER": "jwt_issuer",
    "MLSERVE_JWT_AUDIENCE": "jwt_audience",
    "MLSERVE_PAYLOAD_LOG": "payload_log",
    "MLSERVE_DRIFT": "drift",
    "MLSERVE_GRPC_PORT": "grpc_port",
    "MLSERVE_MAX_IMAGE_PIXELS": "max_image_pixels",
}
#: Keys that serve takes as arguments, not as app configuration
NOT_APP_CONFIG = ("MLSERVE_STORE",)


def _serve_config(flags: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The app's MLSERVE_* config: flags given on the command line, else the
    environment, else the flags' defaults; validated here, so a bad value is a
    usage error naming the key, not a traceback in every worker."""
    from mlserve.serving.config import ConfigError, ServingConfig, parse_environ, url_prefix

    context = click.get_current_context()
    try:
        config = parse_environ()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    for key in NOT_APP_CONFIG:
        config.pop(key, None)
    for key, value in flags.items():
        source = context.get_parameter_source(FLAG_PARAMETERS[key])
        if source is click.core.ParameterSource.COMMANDLINE or key not in config:
            config[key] = value
    try:
        serving = ServingConfig.from_mapping(config)
        url_prefix(config.get("MLSERVE_URL_PREFIX"))
        if serving.api_keys:
            from mlserve.serving.security import KeyFile

            KeyFile(serving.api_keys)
    except (ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    return config, serving


def _choose_multiprocess_metrics_dir() -> None:
    """Point prometheus_client at a folder shared by this server's workers: the
    operator's PROMETHEUS_MULTIPROC_DIR, else a fresh one removed at exit."""
    import atexit
    import shutil
    import tempfile

    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        os.makedirs(directory, exist_ok=True)
        return
    directory = tempfile.mkdtemp(prefix="mlserve-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    master = os.getpid()
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(directory, ignore_errors=True))


def _clear_previous_run_metrics() -> None:
    """Remove the metric files and drift windows a previous run left in the folder
    (this process's own files, written since prometheus_client's import, stay)."""
    import glob

    directory = os.environ[MULTIPROC_ENV]
    own = f"_{os.getpid()}.db"
    for path in glob.glob(os.path.join(directory, "*.db")):
        if not path.endswith(own):
            os.unlink(path)
    for path in glob.glob(os.path.join(directory, "mlserve-drift", "*.win")):
        os.unlink(path)  # drift windows of the previous run's workers


def _child_exit(server: Any, worker: Any) -> None:
    """gunicorn child_exit: a dead worker's live gauges (in-flight requests) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _check_port_free(host: str, port: int) -> None:
    """A usage error now if another program holds the gRPC port (the workers bind it
    with SO_REUSEPORT, which would not notice; grpc itself is not imported here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.UsageError(
                f"--grpc-port / MLSERVE_GRPC_PORT: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None


def _start_grpc(app: Any, host: str, threads: int) -> Any:
    from mlserve.serving.grpc_service import start_grpc_server

    grpc_server = start_grpc_server(app, host=host, threads=threads)
    print(
        f"mlserve: gRPC (inference.GRPCInferenceService) listening at "
        f"{host}:{grpc_server.port} (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    return grpc_server


def _post_worker_init(host: str, threads: int, worker: Any) -> None:
    """gunicorn post_worker_init: this worker's gRPC server, over its app's state."""
    try:
        worker.mlserve_grpc = _start_grpc(worker.wsgi, host, threads)
    except OSError as exc:
        print(f"mlserve: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None  # gunicorn's "worker failed to boot": the server stops


def _worker_exit(server: Any, worker: Any) -> None:
    """gunicorn worker_exit, after in-flight requests finished (graceful_timeout): the
    gRPC server (if any) finishes its RPCs, then the micro-batcher drains its queue here
    when it provides ``drain()``."""
    grpc_server = getattr(worker, "mlserve_grpc", None)
    if grpc_server is not None:
        grpc_server.stop()
    try:
        from mlserve.serving import batching  # type: ignore[attr-defined]
    except ImportError:
        return
    drain = getattr(batching, "drain", None)
    if callable(drain):
        drain()
    from mlserve.serving.deferred import flush_all

    flush_all()  # the metrics and access-log lines gathered off the request path


def _log_access_to_stderr() -> None:
    """The mlserve.access logger's JSON lines to stderr (unless the app configured it),
    written in batches by a BufferedLineHandler (one write per 0.05 s under load)."""
    import logging

    from mlserve.serving.deferred import BufferedLineHandler

    logger = logging.getLogger("mlserve.access")
    if not logger.handlers:
        handler = BufferedLineHandler(sys.stderr)  # no formatter: the message as it is
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


# ------------------------------------------------------------ store commands


@click.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", "-n", required=True, help="Model name.")
@click.option("--alias", "-a", default=None, help="Point this alias at the new version.")
@click.option(
    "--force",
    is_flag=True,
    help="Move the alias even if the version differs from what it serves "
    "(task, features, classes, dtype, outputs).",
)
@store_option
def publish_command(file: str, name: str, alias: str | None, force: bool, store_dir: str) -> None:
    """Publish an .mls FILE as the next version of model NAME (checked against --alias)."""
    from mlserve.serving.commands import run_store_command

    store = _open_store(store_dir)
    version = run_store_command(lambda: store.publish(name, file, alias=alias, force=force))
    click.echo(f"published {name} version {version}" + (f" as {alias}" if alias else ""))


@click.command("models")
@click.argument(
    "store_dir", type=click.Path(file_okay=False), envvar=STORE_ENV, default=DEFAULT_STORE
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_command(store_dir: str, as_json: bool) -> None:
    """List the models in STORE_DIR with their versions and aliases."""
    from mlserve.serving.commands import format_models, run_store_command

    store = _existing_store(store_dir)
    if as_json:
        described = run_store_command(lambda: [store.describe(n) for n in store.names()])
        click.echo(json.dumps({"models": described}, indent=2))
    else:
        click.echo(run_store_command(lambda: format_models(store)))


@click.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("versions")
@click.option(
    "--force",
    is_flag=True,
    help="Move the alias even if a version differs from what it serves "
    "(task, features, classes, dtype, outputs).",
)
@store_option
def alias_command(name: str, alias: str, versions: str, force: bool, store_dir: str) -> None:
    """Point ALIAS of model NAME at VERSIONS: "3", or "3=90,4=10" for a canary split."""
    from mlserve.serving.commands import format_targets, parse_alias_targets, run_store_command

    store = _existing_store(store_dir)
    targets = run_store_command(
        lambda: store.set_alias(name, alias, parse_alias_targets(versions), force=force)
    )
    click.echo(f"{name}: {alias} -> {format_targets(targets)}")


@click.command("rollback")
@click.argument("name")
@click.argument("alias")
@store_option
def rollback_command(name: str, alias: str, store_dir: str) -> None:
    """Move ALIAS of model NAME back to the versions it pointed to before."""
    from mlserve.serving.commands import format_targets, run_store_command

    store = _existing_store(store_dir)
    targets = run_store_command(lambda: store.rollback(name, alias))
    click.echo(f"{name}: {alias} -> {format_targets(targets)}")


@click.command("shadow")
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False, type=click.IntRange(1))
@click.option("--off", is_flag=True, help="End the shadow of ALIAS.")
@store_option
def shadow_command(name: str, alias: str, version: int | None, off: bool, store_dir: str) -> None:
    """Mirror the requests ALIAS of model NAME answers to VERSION (shadow traffic).

    Clients only ever get ALIAS's answers; servers run VERSION on a copy of each
    request off the request path and show its agreement at GET /models/NAME.
    ``mlserve shadow NAME ALIAS --off`` ends it.
    """
    from mlserve.serving.commands import shadow_action

    click.echo(shadow_action(_existing_store(store_dir), name, alias, version, off))


@click.command("delete")
@click.argument("name")
@click.argument("version", type=click.IntRange(1))
@store_option
def delete_command(name: str, version: int, store_dir: str) -> None:
    """Delete VERSION of model NAME (refused while an alias points to it)."""
    from mlserve.serving.commands import run_store_command

    store = _existing_store(store_dir)
    run_store_command(lambda: store.delete(name, version))
    click.echo(f"deleted {name} version {version}")


# -------------------------------------------------------------------- demo


def _fit_demo_model() -> Any:
    import numpy as np

    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, len(DEMO_ROW)))
    logits = X @ np.array([1.5, -2.0, 0.8, 0.0]) + 0.3
    y = np.where(logits + rng.normal(scale=0.5, size=len(X)) > 0, "churn", "stay")
    return mlserve.LogisticRegression(C=1.0).fit(X, y)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _demo_curl(host: str, port: int) -> str:
    body = json.dumps({"features": DEMO_ROW})
    return (
        f"curl -s -H 'Content-Type: application/json' -d '{body}' "
        f"http://{host}:{port}/predict/{DEMO_MODEL}"
    )


def _check_server(host: str, port: int, process: subprocess.Popen) -> str:
    """Wait (bounded) until the server is ready, send the demo request, return the response."""
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + CHECK_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            raise click.ClickException(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"the server did not get ready in {CHECK_TIMEOUT_SECONDS:g} s"
            )
        time.sleep(0.1)
    request = urllib.request.Request(
        f"{base}/predict/{DEMO_MODEL}",
        data=json.dumps({"features": DEMO_ROW}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


@click.command("demo")
@click.option(
    "--dir",
    "store_dir",
    default="demo-store",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the demo's model store.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to serve on (0: any free port).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Start the server, send it one request, print the answer and exit.",
)
def demo_command(store_dir: str, host: str, port: int, check: bool) -> None:
    """Fit a small model on generated data, publish it to a local store and serve it."""
    store = _open_store(store_dir)
    if DEMO_MODEL not in store.names():
        version = store.publish(DEMO_MODEL, _fit_demo_model(), alias="production")
        click.echo(
            f"fitted a LogisticRegression on generated data; published {DEMO_MODEL!r} "
            f"version {version} to {store_dir}/"
        )
    else:
        click.echo(f"serving the existing {DEMO_MODEL!r} model in {store_dir}/")
    if port == 0:
        port = _free_port(host)
    click.echo("try:\n  " + _demo_curl(host, port))
    click.echo(f"or open http://{host}:{port}/openapi.json")
    command = [
        sys.executable,
        "-m",
        "mlserve.cli",
        "serve",
        store_dir,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--threads",
        "4",
    ]
    if not check:
        sys.stdout.flush()
        os.execv(sys.executable, command)  # replace this process with the server
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        answer = _check_server(host, port, process)
    except click.ClickException:
        process.kill()
        _, stderr = process.communicate(timeout=10)
        click.echo(stderr.decode(errors="replace")[-2000:], err=True)
        raise
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    click.echo(answer)


SERVING_COMMANDS = (
    serve_command,
    publish_command,
    models_command,
    alias_command,
    rollback_command,
    shadow_command,
    delete_command,
    demo_command,
)


def register_serving_commands(group: click.Group) -> None:
    """Add the serving and store commands to the ``mlserve`` command group."""
    for command in SERVING_COMMANDS:
        group.add_command(command)
