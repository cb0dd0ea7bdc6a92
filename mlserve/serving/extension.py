"""``MLServe``: the Flask extension form of the blueprint, configured by MLSERVE_* keys."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from mlserve.serving.blueprint import blueprint, serving_state
from mlserve.serving.config import DEFAULTS, ConfigError
from mlserve.serving.runtime import ServingState
from mlserve.store import ModelStore

__all__ = ["MLServe"]


class MLServe:
    """Serve a model store from a Flask app, configured with ``MLSERVE_*`` keys.

    Works with app factories and with several apps in one process: nothing
    about an app is kept on this object; each app's state lives in
    ``app.extensions["mlserve"]``.

    Parameters
    ----------
    app : Flask, optional
        Initialise this app now (else call :meth:`init_app` later).
    store : ModelStore or path, optional
        The store to serve; defaults to the app's ``MLSERVE_STORE``.

    Examples
    --------
    >>> app.config["MLSERVE_STORE"] = "models/"
    >>> app.config["MLSERVE_URL_PREFIX"] = "/ml"
    >>> MLServe(app)
    """

    def __init__(self, app: Flask | None = None, store: ModelStore | str | None = None) -> None:
        self.store = store
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        store = self.store if self.store is not None else app.config["MLSERVE_STORE"]
        if store is None:
            raise ConfigError(
                "MLSERVE_STORE is not set: set it to a model store folder, "
                "or pass store= to MLServe()"
            )
        if not isinstance(store, (ModelStore, str, os.PathLike)):
            raise ConfigError(
                f"MLSERVE_STORE must be a folder path or a ModelStore, got {type(store).__name__}"
            )
        prefix = app.config["MLSERVE_URL_PREFIX"]
        if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
            raise ConfigError(f"MLSERVE_URL_PREFIX must be '' or start with '/', got {prefix!r}")
        app.register_blueprint(blueprint(store), url_prefix=prefix.rstrip("/") or None)

    @staticmethod
    def state(app: Any = None) -> ServingState:
        """The serving state of ``app`` (default: the current app)."""
        return serving_state(app)
