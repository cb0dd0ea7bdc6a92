"""schemathesis against /openapi.json on a real gunicorn server: no 5xx, responses match the document.

Bounded: at most MLSERVE_SCHEMATHESIS_EXAMPLES (default 25) examples per
operation and phase, and MLSERVE_SCHEMATHESIS_SECONDS (default 30) in all.
The server runs with API keys on (the key has every scope), so the guard is
exercised too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlserve.serving.security import create_key
from mlserve.store import ModelStore
from serving_support import Server, fit_classifier, fit_regressor

EXAMPLES = os.environ.get("MLSERVE_SCHEMATHESIS_EXAMPLES", "25")
SECONDS = os.environ.get("MLSERVE_SCHEMATHESIS_SECONDS", "30")
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


def _schemathesis() -> str | None:
    for name in ("st", "schemathesis"):
        candidate = Path(sys.executable).parent / name
        if candidate.exists():
            return str(candidate)
        found = shutil.which(name)
        if found:
            return found
    return None


def test_schemathesis_no_5xx_and_responses_match_the_document(tmp_path):
    pytest.importorskip("schemathesis")
    st = _schemathesis()
    if st is None:
        pytest.skip("the schemathesis command is not installed")
    store = ModelStore(tmp_path / "models")
    store.publish("reg", fit_regressor(), alias="production")
    store.publish("clf", fit_classifier(), alias="production")
    # a recommender, so /recommend and /similar are fuzzed against a real one too
    import numpy as np

    import mlserve

    rng = np.random.default_rng(0)
    store.publish("rec", mlserve.Recommender(rng.normal(size=(20, 4)), rng.normal(size=(50, 4))),
                  alias="production")  # fmt: skip
    keys = str(tmp_path / "keys.json")
    key, _ = create_key(keys, ["predict", "read", "admin"], name="schemathesis")
    server = Server(
        tmp_path / "models", "--workers", "1", "--threads", "4", "--no-access-log",
        "--default-model", "reg", "--api-keys", keys,
    )  # fmt: skip
    # one schemathesis worker: with two, hypothesis parses lambda sources on two threads at
    # once, which CPython < 3.11.8 can fail with "SystemError: AST constructor recursion
    # depth mismatch" (gh-106905), a runtime error of the tool, not of the server
    try:
        result = subprocess.run(
            [st, "run", f"{server.url}/openapi.json", "--checks", CHECKS,
             "--phases", "examples,coverage,fuzzing", "--max-examples", EXAMPLES,
             "--max-time", SECONDS, "--seed", "1", "--request-timeout", "10", "-w", "1",
             "-H", f"Authorization: Bearer {key}", "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=int(SECONDS) + 120,
            env=dict(os.environ, SCHEMATHESIS_HOOKS=""),
        )  # fmt: skip
    finally:
        server.stop()
    output = result.stdout[-8000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    assert "passed" in result.stdout, output
    assert not any("Traceback" in line for line in server.log), "".join(server.log)[-4000:]
