"""The app that ``mlserve serve`` runs: the blueprint at the root of its own Flask app."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException

from mlserve.serving.blueprint import blueprint
from mlserve.serving.config import url_prefix
from mlserve.serving.errors import error_response
from mlserve.serving.fastpath import FastPredict

__all__ = ["create_app"]


def create_app(store_dir: str | os.PathLike[str] | None = None, **config: Any) -> Flask:
    """A Flask app serving ``store_dir`` at the root, so clients find /v1, /v2, /invocations.

    Keyword arguments are MLSERVE_* config keys (e.g. ``MLSERVE_RELOAD_INTERVAL=1``);
    ``MLSERVE_URL_PREFIX`` mounts the blueprint below the root instead.
    Without ``store_dir`` the MLSERVE_STORE environment variable is used.
    """
    store_dir = store_dir or os.environ.get("MLSERVE_STORE")
    if not store_dir:
        raise ValueError("no model store: pass store_dir or set MLSERVE_STORE")
    app = Flask("mlserve")
    app.config.update(config)
    prefix = url_prefix(app.config.get("MLSERVE_URL_PREFIX"))
    app.register_blueprint(blueprint(os.fspath(store_dir)), url_prefix=prefix)
    # V1 predict ahead of Flask's dispatch (this app only; it checks MLSERVE_FAST_PATH)
    app.wsgi_app = FastPredict(app, "mlserve", prefix)  # type: ignore[method-assign]

    @app.errorhandler(HTTPException)
    def _json_http_error(exc: HTTPException) -> Any:
        # routing errors (unknown path, wrong method) happen outside the blueprint
        response = error_response(exc.description or exc.name, exc.code or 500)
        for key, value in exc.get_headers():
            if key.lower() == "allow":
                response.headers["Allow"] = value
        return response

    return app
