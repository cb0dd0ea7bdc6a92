"""Where each mounted blueprint keeps its ServingState: ``app.extensions["mlserve"]``.

Below both the blueprint (which stores the state when it is registered) and the
``flask mlserve ...`` commands (which read it), so neither imports the other.
"""

from __future__ import annotations

from typing import Any, Mapping

from flask import current_app, request

from mlserve.serving.runtime import ServingState

__all__ = ["EXTENSION_KEY", "serving_state"]

EXTENSION_KEY = "mlserve"


def serving_state(app: Any = None, name: str | None = None) -> ServingState:
    """The ServingState of a registered mlserve blueprint (in a request: the current one)."""
    app = app or current_app
    states: Mapping[str, ServingState] = app.extensions.get(EXTENSION_KEY, {})
    if name is None:
        blueprint_name = request.blueprint if request else None
        if blueprint_name in states:
            return states[blueprint_name]
        if len(states) == 1:
            return next(iter(states.values()))
        raise RuntimeError("several mlserve blueprints are registered; pass name=")
    if name not in states:
        raise RuntimeError(
            f"no mlserve blueprint named {name!r} is registered on this app"
            + (f"; registered: {', '.join(sorted(states))}" if states else "")
        )
    return states[name]
