"""Authentication cost on the single-row fast path: no auth, an API key, bearer JWTs.

    python benchmarks/bench_auth.py            # ~20 s
    python benchmarks/bench_auth.py --quick    # smoke run

Requests go through the blueprint in-process (Flask's test client: routing,
the Guard, decode, predict, encode, without sockets), POST /predict/lin
(mlserve.LinearRegression, 4 features, 1 row):

* no auth (the default); an API key (MLSERVE_API_KEYS, one SHA-256 and a
  constant-time compare per key);
* JWT RS256 / ES256, the same token on every request (a client's usual case:
  verified once, then remembered until it expires);
* JWT RS256 / ES256 verified on every request (the verifier's memory is
  cleared before each one: a new token per request, the worst case).

The raw verification (``JwtVerifier.authenticate`` with its memory cleared)
is timed on its own too. Keys are generated here (cryptography), tokens signed
with PyJWT. Medians of interleaved samples (benchmarks/_common.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    blueprint_app,
    fmt_ratio,
    fmt_time,
    load_average,
    machine_lines,
    markdown_table,
    measure_interleaved,
)

ISSUER, AUDIENCE = "https://idp.example/", "mlserve-bench"


def client(store, **config):
    app = blueprint_app(store, **config)
    return app, app.test_client()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    budget = 0.2 if args.quick else 1.5
    repeats = 5 if args.quick else 15

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    import mlserve
    from mlserve.serving.security import create_key

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    model = mlserve.LinearRegression().fit(X, X @ np.array([1.0, -2.0, 0.5, 3.0]))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [
        {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "r", "use": "sig"},
        {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "e", "use": "sig"},
    ]}  # fmt: skip
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "scope": "predict",
              "exp": int(time.time()) + 3600}  # fmt: skip
    rs256 = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "r"})
    es256 = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "e"})

    with tempfile.TemporaryDirectory() as tmp:
        store = mlserve.ModelStore(os.path.join(tmp, "store"))
        store.publish("lin", model, alias="production")
        keys = os.path.join(tmp, "keys.json")
        api_key, _ = create_key(keys, ["predict"], name="bench")
        jwks_path = os.path.join(tmp, "jwks.json")
        with open(jwks_path, "w") as f:
            json.dump(jwks, f)
        jwt_config = {"MLSERVE_JWT_JWKS": jwks_path, "MLSERVE_JWT_ISSUER": ISSUER,
                      "MLSERVE_JWT_AUDIENCE": AUDIENCE}  # fmt: skip
        _, plain = client(store)
        _, keyed = client(store, MLSERVE_API_KEYS=keys)
        app, tokened = client(store, **jwt_config)
        verifier = app.extensions["mlserve"]["mlserve"].config.jwt
        body = json.dumps({"features": X[0].tolist()})
        ns = {
            "plain": plain, "keyed": keyed, "tokened": tokened, "v": verifier, "body": body,
            "J": "application/json", "K": {"Authorization": f"Bearer {api_key}"},
            "R": {"Authorization": f"Bearer {rs256}"}, "E": {"Authorization": f"Bearer {es256}"},
            "rs256": rs256, "es256": es256,
        }  # fmt: skip
        expected = model.predict(X[:1])[0]
        for name, headers in [("plain", {}), ("keyed", ns["K"]), ("tokened", ns["R"]),
                              ("tokened", ns["E"])]:  # fmt: skip
            r = ns[name].post("/predict/lin", data=body, content_type="application/json",
                              headers=headers)  # fmt: skip
            assert r.status_code == 200, r.get_json()
            assert abs(r.get_json()["prediction"] - expected) < 1e-9
        assert tokened.post("/predict/lin", data=body, content_type="application/json").status_code == 401

        post = "post('/predict/lin', data=body, content_type=J, headers={})"
        requests_ = measure_interleaved(
            {
                "none": "plain." + post.format("None"),
                "key": "keyed." + post.format("K"),
                "rs256": "tokened." + post.format("R"),
                "es256": "tokened." + post.format("E"),
                "rs256_cold": "v._verified.clear(); tokened." + post.format("R"),
                "es256_cold": "v._verified.clear(); tokened." + post.format("E"),
            },
            ns, budget_s=budget, repeats=repeats,
        )  # fmt: skip
        raw = measure_interleaved(
            {
                "rs256": "v._verified.clear(); v.authenticate(rs256)",
                "es256": "v._verified.clear(); v.authenticate(es256)",
                "remembered": "v.authenticate(rs256)",
            },
            ns, budget_s=budget, repeats=repeats,
        )  # fmt: skip

    base = requests_["none"].median_ns
    labels = {
        "none": "no auth", "key": "API key",
        "rs256": "JWT RS256, same token (remembered)", "es256": "JWT ES256, same token (remembered)",
        "rs256_cold": "JWT RS256, verified every request", "es256_cold": "JWT ES256, verified every request",
    }  # fmt: skip
    rows = [[labels[k], fmt_time(m.median_ns), fmt_ratio(m.median_ns / base),
             fmt_ratio(m.median_ns / requests_["key"].median_ns)] for k, m in requests_.items()]  # fmt: skip
    print("\n".join(machine_lines(["numpy", "flask", "pyjwt", "cryptography"])))
    print(f"load average: {load_average()}")
    print(markdown_table(["POST /predict/lin, 1 row", "median", "vs no auth", "vs API key"], rows))
    print()
    print(markdown_table(
        ["JwtVerifier.authenticate", "median"],
        [["RS256 (2048-bit), verified", fmt_time(raw["rs256"].median_ns)],
         ["ES256 (P-256), verified", fmt_time(raw["es256"].median_ns)],
         ["remembered token", fmt_time(raw["remembered"].median_ns)]],
    ))  # fmt: skip


if __name__ == "__main__":
    main()
