"""Custom pre- and post-processing: the user's Python around the C model.

``mlserve.blueprint(store)`` returns a :class:`ServingBlueprint`, a Flask
Blueprint with two decorators::

    bp = mlserve.blueprint(store)

    @bp.preprocessor("churn")
    def features(payload):          # the decoded JSON body of POST /predict/churn
        return [[payload["tenure"], payload["monthly"] * 12, ...]]

    @bp.postprocessor("churn")
    def answer(prediction):         # the response /predict/churn would give
        return {"churn": prediction["predictions"][0] == 1}

The hooks live on the blueprint that registered them (no module state), so
two blueprints on one app, or two apps, keep their own. They run in the
request's own thread before and after ``runtime.predict``, never inside the
micro-batcher's critical section: a slow hook delays only its own request.

A ``ValueError`` raised by a hook is a 400 with its message; a serving error
or werkzeug HTTP error (``abort(404)``) passes through as raised; any other
exception is logged with the request id on the ``mlserve.serving`` logger
and answered with a 500 naming that id (never the exception's text).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint
from werkzeug.exceptions import HTTPException

from mlserve.serving.errors import BadRequest, ServingError

__all__ = ["HookFailed", "Hooks", "ServingBlueprint"]

log = logging.getLogger("mlserve.serving")

Hook = Callable[[Any], Any]


class HookFailed(ServingError):
    """A hook raised something other than a ValueError: the server's fault, a 500."""

    status = 500


class Hooks:
    """The pre- and postprocessors one blueprint registered, by model name."""

    def __init__(self) -> None:
        self.pre: dict[str, Hook] = {}
        self.post: dict[str, Hook] = {}

    def __bool__(self) -> bool:
        return bool(self.pre or self.post)

    def preprocess(self, name: str, payload: Any, request_id: str) -> Any:
        """The simple-JSON body for model ``name``: its preprocessor's result, or ``payload``.

        A dict result is used as the body (``features`` / ``instances`` /
        ``return``); anything else is the rows (``instances``), keeping the
        client's ``return`` if it sent one.
        """
        hook = self.pre.get(name)
        if hook is None:
            return payload
        result = _call(hook, "preprocessor", name, payload, request_id)
        if isinstance(result, Mapping):
            return result
        body: dict[str, Any] = {"instances": result}
        if isinstance(payload, Mapping) and "return" in payload:
            body["return"] = payload["return"]
        return body

    def postprocess(self, name: str, prediction: dict[str, Any], request_id: str) -> Any:
        """What model ``name``'s postprocessor makes of ``prediction`` (the default response)."""
        hook = self.post.get(name)
        if hook is None:
            return prediction
        return _call(hook, "postprocessor", name, prediction, request_id)


    @staticmethod
    def failed(kind: str, name: str, request_id: str, exc: BaseException) -> HookFailed:
        """The 500 for a hook's bug, after logging it with the request id."""
        log.error(
            "the %s of model %r failed (request id %s)", kind, name, request_id, exc_info=exc
        )
        return HookFailed(
            f"the {kind} of model {name!r} failed; see the server log for request id {request_id}"
        )


def _call(hook: Hook, kind: str, name: str, argument: Any, request_id: str) -> Any:
    try:
        return hook(argument)
    except (ServingError, HTTPException):
        raise
    except ValueError as exc:
        raise BadRequest(str(exc) or f"the {kind} of model {name!r} rejected the request") from exc
    except Exception as exc:  # a hook's bug: a 500, logged with the request id
        raise Hooks.failed(kind, name, request_id, exc) from exc


class ServingBlueprint(Blueprint):
    """A Flask Blueprint that also takes per-model pre- and postprocessors (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooks = Hooks()

    def preprocessor(self, model: str) -> Callable[[Hook], Hook]:
        """Decorate ``f(payload) -> model input`` to run before model ``model`` predicts.

        ``payload`` is the decoded JSON body of ``POST /predict/<model>``; the
        result is either a body as that route reads it (a dict with
        ``features`` or ``instances``, optionally ``return``) or the rows
        themselves (a list of rows, a list of records, or a 2-D array).
        """
        return self._register(self.hooks.pre, model, "preprocessor")

    def postprocessor(self, model: str) -> Callable[[Hook], Hook]:
        """Decorate ``f(prediction) -> response`` to run after model ``model`` predicts.

        ``prediction`` is the response ``POST /predict/<model>`` would give
        (``{"model", "version", "predictions" | "prediction", "probabilities"...}``,
        plain lists); the result is answered as JSON (numpy arrays and
        scalars allowed), or as is when it is a Flask Response.
        """
        return self._register(self.hooks.post, model, "postprocessor")

    @staticmethod
    def _register(table: dict[str, Hook], model: str, kind: str) -> Callable[[Hook], Hook]:
        if not isinstance(model, str) or not model:
            raise TypeError(f"a {kind} is registered for a model name (a non-empty str)")

        def register(hook: Hook) -> Hook:
            if not callable(hook):
                raise TypeError(f"the {kind} of model {model!r} must be callable")
            if model in table:
                raise ValueError(f"model {model!r} already has a {kind}")
            table[model] = hook
            return hook

        return register
