"""A WSGI-level fast path for V1 predict requests to ``mlserve serve``'s own app.

``create_app`` (the app ``mlserve serve`` runs) puts :class:`FastPredict` in
front of Flask's ``wsgi_app``. A ``POST <prefix>/v1/models/<name>[/versions/<v>
| /labels/<l>]:predict`` with a JSON body of known length is answered here,
without Flask's request context, URL map, hook dispatch or werkzeug's request
and response objects; everything else goes to Flask unchanged. Host apps that
register the Blueprint themselves keep Flask's handling: nothing here is
installed for them.

Same behaviour, by construction:

- the request runs the blueprint's own pieces in the blueprint's order
  (request id, in-flight gauge, store refresh, model selection with the canary
  header, the C decode, ``signature_name``, MLSERVE_MAX_ROWS, batching,
  drift monitoring's note of the rows, the C encode, Server-Timing,
  X-Model-Version, X-Request-ID, the metrics and the access-log line of :class:`~mlserve.serving.metrics.RequestRecord`), and
  the response has the headers Flask would send, in the same order;
- any error is answered by Flask: the body read here is put back in
  ``wsgi.input`` and the request goes to ``wsgi_app`` as if it came first
  there. An error raised before the prediction simply happens again in
  Flask; one raised by the prediction or the encoding is handed over in the
  environ (``FAST_PATH_ERROR``) and re-raised where the blueprint's view would
  predict, so the model is not called twice and Flask renders the same error;
- whatever the fast path does not reproduce sends every request to Flask:
  API keys, JWTs or rate limits (the Guard), CORS, the prediction cache, payload
  logging, a model with a shadow, a pipeline or an image model, Flask
  hooks, signals, sessions or MAX_CONTENT_LENGTH on the app, another
  Content-Type, a compressed or chunked body, a body over
  MLSERVE_MAX_BODY_BYTES, or ``MLSERVE_FAST_PATH=False``.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, signals
from flask.sessions import SecureCookieSessionInterface

from mlserve.serving import codecs
from mlserve.serving.blueprint import (
    FAST_PATH_ERROR,
    REQUEST_ID_ENVIRON,
    _signature_outputs,
)
from mlserve.serving.errors import ModelNotFound
from mlserve.serving.metrics import REQUEST_ID_HEADER, RequestRecord, request_id_from
from mlserve.serving.registry import EXTENSION_KEY
from mlserve.serving.runtime import ServingState, Timings, predict

__all__ = ["FAST_PATH_ERROR", "FastPredict"]

JSON = "application/json"
_NAME = r"[A-Za-z0-9_.\-]+"
_SIGNALS = ("request_started", "request_finished", "request_tearing_down",
            "got_request_exception", "appcontext_tearing_down", "appcontext_pushed",
            "appcontext_popped")  # fmt: skip


class _LoggedRequest:
    """What RequestRecord.finish reads of a request for the access-log line."""

    __slots__ = ("method", "path", "remote_addr")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.method = "POST"
        self.path = environ[
            "PATH_INFO"
        ]  # ASCII, one leading slash: werkzeug's request.path
        self.remote_addr = environ.get("REMOTE_ADDR")


class FastPredict:
    """WSGI middleware: V1 predict requests of ``app`` answered without Flask's dispatch.

    Parameters
    ----------
    app : Flask
        The app ``create_app`` built, with the blueprint registered under
        ``state_key`` and mounted at ``prefix`` (None for the root).
    """

    def __init__(
        self, app: Flask, state_key: str = "mlserve", prefix: str | None = None
    ) -> None:
        self.app = app
        self.wsgi_app: Callable[..., Iterable[bytes]] = app.wsgi_app
        self.state_key = state_key
        self.route = re.compile(
            re.escape(prefix or "")
            + rf"/v1/models/({_NAME})(?:/versions/({_NAME})|/labels/({_NAME}))?:predict"
        )
        self._plain: bool | None = (
            None  # the app has nothing Flask would run per request
        )

    def _app_is_plain(self) -> bool:
        app = self.app
        return (
            bool(app.config.get("MLSERVE_FAST_PATH", True))
            and app.config.get("MAX_CONTENT_LENGTH") is None
            and not any(app.before_request_funcs.values())
            and not any(app.after_request_funcs.values())
            and not any(app.teardown_request_funcs.values())
            and not any(app.url_value_preprocessors.values())
            and not app.teardown_appcontext_funcs
            and app.secret_key is None
            and type(app.session_interface) is SecureCookieSessionInterface
            and not any(getattr(signals, name).receivers for name in _SIGNALS)
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        match = self.route.fullmatch(environ.get("PATH_INFO", ""))
        if match is None:
            return self.wsgi_app(environ, start_response)
        if self._plain is None:
            self._plain = self._app_is_plain()
        state: ServingState | None = self.app.extensions.get(EXTENSION_KEY, {}).get(
            self.state_key
        )
        if not self._plain or state is None:
            return self.wsgi_app(environ, start_response)
        config = state.config
        raw_length = environ.get("CONTENT_LENGTH")
        if (
            state.guard.active
            or state.guard.cors_origins is not None
            or config.cache is not None
            or environ.get("CONTENT_TYPE") not in (JSON, None, "")
            or not raw_length
            or not raw_length.isdigit()
            or "HTTP_CONTENT_ENCODING" in environ
            or "HTTP_TRANSFER_ENCODING" in environ
            or int(raw_length) > config.max_body_bytes
            or config.payload_log is not None
            or _has_shadow(state, match.group(1))
        ):
            return self.wsgi_app(environ, start_response)
        return self._predict(environ, start_response, state, match, int(raw_length))

    def _predict(
        self, environ: dict[str, Any], start_response: Callable[..., Any], state: ServingState,
        match: re.Match[str], length: int,
    ) -> Iterable[bytes]:  # fmt: skip
        config = state.config
        record = RequestRecord(
            request_id_from(environ.get(REQUEST_ID_ENVIRON)), "v1_model"
        )
        metrics = state.request_metrics
        metrics.started(record)  # in flight until record.finish
        body = b""
        predicting = False
        try:
            state.maybe_refresh()
            start = time.perf_counter()
            timings = Timings()
            body = environ["wsgi.input"].read(length) if length else b""
            if len(body) != length:
                raise ValueError("short body")  # Flask reads it again and says so
            header = config.canary_key_header
            sticky_key = environ.get(_environ_key(header)) if header else None
            name, version, label = match.groups()
            loaded = state.select(name, version, label, sticky_key=sticky_key or None)
            record.model, record.version = loaded.name, str(loaded.version)
            if not _plain_rows(loaded):
                raise LookupError("not a model of plain rows")  # Flask serves it, from the start
            payload = codecs.decode_json(body)
            decoded = codecs.decode_v1(payload, loaded)
            outputs = _signature_outputs(payload, loaded, decoded.outputs)
            timings.decode = (time.perf_counter() - start) * 1000.0
            rows = decoded.rows
            n_rows = int(rows.shape[0]) if rows.ndim else 1
            record.rows = n_rows
            record.timings = timings
            if n_rows > config.max_rows:
                raise ValueError("too many rows")  # Flask's 413
            predicting = True
            results = predict(loaded, rows, outputs, timings)
            if state.drift is not None:  # one append; the drift thread does the rest
                state.drift.observe(loaded, rows, results)
            if loaded.batcher is None and n_rows:
                metrics.observe_execution(
                    loaded.name, loaded.version, n_rows, timings.compute
                )
            start = time.perf_counter()
            out = codecs.encode_json(codecs.encode_v1(results, decoded))
            timings.encode = (time.perf_counter() - start) * 1000.0
        except Exception as exc:  # noqa: BLE001 - Flask answers every error
            metrics.abandoned(record)
            environ["wsgi.input"] = io.BytesIO(body)
            if predicting:
                environ[FAST_PATH_ERROR] = exc
            return self.wsgi_app(environ, start_response)
        except BaseException:
            metrics.abandoned(record)
            raise
        # Flask's order: the Response's own two, the view's (_finish), then _served's
        headers = [
            ("Content-Type", JSON),
            ("Content-Length", str(len(out))),
            ("X-Model-Version", str(loaded.version)),
            ("Server-Timing", timings.header()),
            (REQUEST_ID_HEADER, record.request_id),
        ]
        record.finish(metrics, 200, _LoggedRequest(environ), config.access_log)
        start_response("200 OK", headers)
        return [out]


def _plain_rows(loaded: Any) -> bool:
    """A model that takes rows of numbers: not a pipeline's named columns or an image model."""
    metadata = loaded.metadata
    return metadata.get("input_schema") is None and "image" not in metadata


def _has_shadow(state: ServingState, name: str) -> bool:
    """Whether an alias of ``name`` mirrors its requests to a shadow (the blueprint does that)."""
    try:
        return bool(state.manifest(name).shadows)
    except ModelNotFound:  # Flask answers the 404
        return False


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")
