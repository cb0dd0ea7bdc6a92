"""A short soak (scripts/soak.py) in the normal suite; MLSERVE_SOAK_SECONDS=60 for the long form.

The short run checks zero 5xx, zero lost and zero misrouted responses under a
mix of valid, invalid and oversized requests with hot reloads; memory growth
is judged only for runs of 60 s or more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import soak  # noqa: E402

SECONDS = float(os.environ.get("MLSERVE_SOAK_SECONDS", "10"))


def test_soak_zero_5xx_lost_or_misrouted():
    args = argparse.Namespace(
        seconds=SECONDS, workers=2, threads=4, clients=4, publish_every=2.0,
        max_body_bytes=1 << 20, max_rows=1000, warmup=None, max_rss_growth=0.02, json=True,
    )  # fmt: skip
    result = soak.run(args)
    print(json.dumps(result, indent=2))
    assert result["ok"], json.dumps(result, indent=2)
    assert result["kinds"].get("publish", 0) >= 2
    assert len(result["versions_answering"]) >= 2  # answers came from several published versions
    assert {"200", "400", "413"} <= set(result["statuses"])
