"""JWT / OAuth2 bearer tokens (mlserve/serving/jwt_auth.py): real tokens signed with RSA and EC
keys generated here, a JWKS file and a JWKS URL served by a local http.server, one real gunicorn."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from prometheus_client import REGISTRY
from serving_support import Server, training_data

from mlserve.serving import ConfigError, blueprint, jwt_auth
from mlserve.serving.config import ServingConfig
from mlserve.serving.security import FORBIDDEN_MESSAGE, UNAUTHORIZED_MESSAGE, create_key
from mlserve.store import ModelStore

X, _ = training_data(seed=1, n=3)
ROW = X[0].tolist()
ISSUER = "https://idp.example.com/"
AUDIENCE = "mlserve-api"
BODY = {"features": ROW}


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(private_key, kid):
    if isinstance(private_key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def write_jwks(path, *jwks):
    path.write_text(json.dumps({"keys": list(jwks)}))
    return str(path)


@pytest.fixture
def jwks_file(tmp_path, rsa_key, ec_key):
    return write_jwks(tmp_path / "jwks.json", public_jwk(rsa_key, "rsa1"), public_jwk(ec_key, "ec1"))


def token(key, kid="rsa1", alg="RS256", scope="predict read", **claims):
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600}
    if scope is not None:
        payload["scope"] = scope
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def jwt_config(jwks, **extra):
    return {"MLSERVE_JWT_JWKS": jwks, "MLSERVE_JWT_ISSUER": ISSUER,
            "MLSERVE_JWT_AUDIENCE": AUDIENCE, **extra}  # fmt: skip


def make_app(store, **config):
    app = Flask("host")
    app.config.update({"MLSERVE_RELOAD_INTERVAL": 0, **config})
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    return app.test_client()


def bearer(value):
    return {"Authorization": f"Bearer {value}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rejected(reason):
    return REGISTRY.get_sample_value("mlserve_jwt_rejected_total", {"reason": reason}) or 0.0


# ------------------------------------------------------------------ accepted


def test_rsa_and_ec_tokens_are_accepted_with_their_scopes(store, jwks_file, rsa_key, ec_key):
    client = make_app(store, **jwt_config(jwks_file))
    for t in [token(rsa_key), token(ec_key, kid="ec1", alg="ES256")]:
        response = client.post("/ml/predict/reg", json=BODY, headers=bearer(t))
        assert response.status_code == 200, response.json
        assert client.get("/ml/models", headers=bearer(t)).status_code == 200
    # the same token through X-API-Key, and on the V1 and V2 protocols
    t = token(rsa_key)
    assert client.post("/ml/predict/reg", json=BODY, headers={"X-API-Key": t}).status_code == 200
    assert client.post("/ml/v1/models/reg:predict", json={"instances": [ROW]},
                       headers=bearer(t)).status_code == 200  # fmt: skip


def test_no_token_is_401_and_health_stays_open(store, jwks_file):
    client = make_app(store, **jwt_config(jwks_file))
    response = client.post("/ml/predict/reg", json=BODY)
    assert response.status_code == 401
    assert response.json == {"error": UNAUTHORIZED_MESSAGE}
    for path in ["/ml/v2/health/live", "/ml/v2/health/ready", "/ml/ping", "/ml/health"]:
        assert client.get(path).status_code == 200


def test_scope_claim_and_scp_list_mean_what_key_scopes_mean(store, jwks_file, rsa_key):
    client = make_app(store, **jwt_config(jwks_file))
    reg_only = token(rsa_key, scope="openid email predict:reg")
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(reg_only)).status_code == 200
    response = client.post("/ml/predict/clf", json=BODY, headers=bearer(reg_only))
    assert response.status_code == 403
    assert response.json["error"] == FORBIDDEN_MESSAGE + "; it needs 'predict' or 'predict:clf'"
    assert client.get("/ml/models", headers=bearer(reg_only)).status_code == 403
    scp = token(rsa_key, scope=None, scp=["read", "predict:clf"])
    assert client.post("/ml/predict/clf", json=BODY, headers=bearer(scp)).status_code == 200
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(scp)).status_code == 403
    assert client.get("/ml/models", headers=bearer(scp)).status_code == 200
    scp_text = token(rsa_key, scope=None, scp="predict")  # Azure AD sends scp as text
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(scp_text)).status_code == 200
    nothing = token(rsa_key, scope=None)
    response = client.post("/ml/predict/reg", json=BODY, headers=bearer(nothing))
    assert response.status_code == 403


def test_admin_endpoints_open_to_an_admin_token_only(store, jwks_file, rsa_key):
    client = make_app(store, **jwt_config(jwks_file))
    assert client.post("/ml/admin/reload", headers=bearer(token(rsa_key))).status_code == 403
    admin = token(rsa_key, scope="admin")
    assert client.post("/ml/admin/reload", headers=bearer(admin)).status_code == 200
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(admin)).status_code == 403
    closed = make_app(store, **jwt_config(jwks_file), MLSERVE_ADMIN_ENABLED=False)
    assert closed.post("/ml/admin/reload", headers=bearer(admin)).status_code == 404


def test_api_keys_and_tokens_together(store, jwks_file, rsa_key, tmp_path):
    keys = str(tmp_path / "keys.json")
    key, _ = create_key(keys, ["predict"], name="svc")
    client = make_app(store, MLSERVE_API_KEYS=keys, **jwt_config(jwks_file))
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(key)).status_code == 200
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(token(rsa_key))).status_code == 200
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer("mls_wrong")).status_code == 401
    expired = token(rsa_key, exp=int(time.time()) - 3600)
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(expired)).status_code == 401


def test_access_log_names_the_subject_never_the_token(store, jwks_file, rsa_key, caplog):
    client = make_app(store, **jwt_config(jwks_file))
    t = token(rsa_key, sub="svc-42")
    with caplog.at_level(logging.DEBUG):
        client.post("/ml/predict/reg", json=BODY, headers=bearer(t))
    assert '"key":"jwt:svc-42"' in caplog.text
    assert t not in caplog.text and t.split(".")[2] not in caplog.text


# ------------------------------------------------------------------ rejected


def hs256_with_public_key(rsa_key):
    """The algorithm confusion attack: HS256 keyed with the RSA public key's PEM."""
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600, "scope": "predict"}
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def alg_none(kid="rsa1"):
    now = int(time.time())
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600, "scope": "predict"}
    return f"{header}.{b64(json.dumps(claims).encode())}."


def test_every_rejected_token_gets_the_api_key_401(store, jwks_file, rsa_key, other_rsa_key, ec_key):
    client = make_app(store, **jwt_config(jwks_file))
    now = int(time.time())
    good = token(rsa_key)
    head, payload, signature = good.split(".")
    swapped = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "scope": "admin"}).encode())
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    cases = {
        "expired": (token(rsa_key, exp=now - 120), "expired"),
        "not yet valid": (token(rsa_key, nbf=now + 600), "not_yet_valid"),
        "wrong issuer": (token(rsa_key, iss="https://evil.example.com/"), "issuer"),
        "wrong audience": (token(rsa_key, aud="another-api"), "audience"),
        "no audience": (token(rsa_key, aud=None), "missing_claim"),
        "no exp": (token(rsa_key, exp=None), "missing_claim"),
        "alg none": (alg_none(), "algorithm"),
        "HS256 with the public key": (hs256_with_public_key(rsa_key), "algorithm"),
        "RS512 (not configured)": (token(rsa_key, alg="RS512"), "algorithm"),
        "EC key named by an RSA kid": (token(ec_key, kid="rsa1", alg="ES256"), "algorithm"),
        "unknown kid": (token(rsa_key, kid="nope"), "unknown_kid"),
        "no kid with two keys": (token(rsa_key, kid=None), "unknown_kid"),
        "bad signature (another key)": (token(other_rsa_key), "signature"),
        "bad signature (flipped)": (f"{head}.{payload}.{flipped}", "signature"),
        "payload swapped": (f"{head}.{swapped}.{signature}", "signature"),
        "malformed": ("a.b.c", "malformed"),
        "malformed header": (f"{b64(b'not json')}.{payload}.{signature}", "malformed"),
        "huge": ("a" * 20_000 + ".b.c", "malformed"),
    }
    for name, (value, reason) in cases.items():
        before = rejected(reason)
        response = client.post("/ml/predict/reg", json=BODY, headers=bearer(value))
        assert response.status_code == 401, name
        assert response.json == {"error": UNAUTHORIZED_MESSAGE}, name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert rejected(reason) == before + 1, (name, reason)
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(good)).status_code == 200


def test_leeway(store, jwks_file, rsa_key):
    now = int(time.time())
    client = make_app(store, **jwt_config(jwks_file))  # default 30 s
    skewed = token(rsa_key, exp=now - 10, nbf=now + 10)
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(skewed)).status_code == 200
    strict = make_app(store, **jwt_config(jwks_file, MLSERVE_JWT_LEEWAY_S=0))
    assert strict.post("/ml/predict/reg", json=BODY, headers=bearer(skewed)).status_code == 401


def test_a_remembered_token_still_expires(store, jwks_file, rsa_key):
    client = make_app(store, **jwt_config(jwks_file, MLSERVE_JWT_LEEWAY_S=0))
    t = token(rsa_key, exp=int(time.time()) + 2)
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(t)).status_code == 200
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(t)).status_code == 200
    time.sleep(3.1)
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(t)).status_code == 401


def test_jwks_file_change_is_picked_up(store, tmp_path, rsa_key, other_rsa_key, monkeypatch):
    monkeypatch.setattr(jwt_auth, "RECHECK_SECONDS", 0.0)
    path = write_jwks(tmp_path / "jwks.json", public_jwk(rsa_key, "k1"))
    client = make_app(store, **jwt_config(path))
    old = token(rsa_key, kid="k1")
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(old)).status_code == 200
    write_jwks(tmp_path / "jwks.json", public_jwk(other_rsa_key, "k2"))
    new = token(other_rsa_key, kid="k2")
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(new)).status_code == 200
    # the removed key's token (remembered as verified) no longer opens anything
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(old)).status_code == 401
    # a JWKS that turns bad keeps the last good keys
    (tmp_path / "jwks.json").write_text("{not json")
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(new)).status_code == 200


# --------------------------------------------------------------- JWKS over HTTP


class JwksServer:
    """A JWKS served by http.server on 127.0.0.1, counting its fetches."""

    def __init__(self, document, port=0):
        self.document = document
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks_server(rsa_key):
    server = JwksServer({"keys": [public_jwk(rsa_key, "k1")]})
    yield server
    server.close()


def test_jwks_url_is_cached_for_its_ttl_and_refetched(store, jwks_server, rsa_key, other_rsa_key):
    client = make_app(store, **jwt_config(jwks_server.url, MLSERVE_JWT_JWKS_TTL_S=1.0))
    assert jwks_server.fetches == 1
    for i in range(5):  # new tokens (not remembered): each verified against the cached JWKS
        t = token(rsa_key, kid="k1", jti=str(i))
        assert client.post("/ml/predict/reg", json=BODY, headers=bearer(t)).status_code == 200
    assert jwks_server.fetches == 1
    # the provider replaces the key under the same kid: old signatures fail after the TTL
    jwks_server.document = {"keys": [public_jwk(other_rsa_key, "k1")]}
    rotated = token(other_rsa_key, kid="k1")
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(rotated)).status_code == 401
    time.sleep(1.2)
    # the request that finds the TTL over starts a background fetch and is not held up
    statuses = []
    deadline = time.monotonic() + 10
    while not statuses or (statuses[-1] != 200 and time.monotonic() < deadline):
        statuses.append(client.post("/ml/predict/reg", json=BODY, headers=bearer(rotated)).status_code)
        time.sleep(0.02)
    assert statuses[-1] == 200 and set(statuses) <= {200, 401}, statuses
    assert jwks_server.fetches == 2
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(token(rsa_key, kid="k1"))).status_code == 401


def test_unknown_kid_refetches_at_most_every_ten_seconds(store, jwks_server, rsa_key, other_rsa_key, monkeypatch):
    client = make_app(store, **jwt_config(jwks_server.url))  # TTL 300 s
    assert jwks_server.fetches == 1
    jwks_server.document = {"keys": [public_jwk(rsa_key, "k1"), public_jwk(other_rsa_key, "k2")]}
    monkeypatch.setattr(jwt_auth, "REFETCH_MIN_SECONDS", 0.5)
    time.sleep(0.6)
    # a key added by rotation: the unknown kid triggers one fetch
    t = token(other_rsa_key, kid="k2")
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(t)).status_code == 200
    assert jwks_server.fetches == 2
    # random kids cannot make the server fetch on every request
    for i in range(5):
        bogus = token(rsa_key, kid=f"bogus{i}")
        assert client.post("/ml/predict/reg", json=BODY, headers=bearer(bogus)).status_code == 401
    assert jwks_server.fetches == 2


def test_unreachable_jwks_url_refuses_tokens_and_recovers(store, rsa_key, monkeypatch):
    server = JwksServer({"keys": [public_jwk(rsa_key, "k1")]})
    url = server.url
    server.close()  # nothing listens there now
    monkeypatch.setattr(jwt_auth, "REFETCH_MIN_SECONDS", 0.2)
    client = make_app(store, **jwt_config(url))
    t = token(rsa_key, kid="k1")
    assert client.post("/ml/predict/reg", json=BODY, headers=bearer(t)).status_code == 401
    port = int(url.split(":")[2].split("/")[0])
    revived = JwksServer({"keys": [public_jwk(rsa_key, "k1")]}, port=port)
    try:
        time.sleep(0.3)
        assert client.post("/ml/predict/reg", json=BODY, headers=bearer(t)).status_code == 200
    finally:
        revived.close()


# ------------------------------------------------------------------- config


def test_config_is_validated(store, jwks_file, tmp_path, rsa_key):
    def fails(match, **config):
        with pytest.raises(ConfigError, match=match):
            make_app(store, **config)

    fails("MLSERVE_JWT_ISSUER is required", MLSERVE_JWT_JWKS=jwks_file, MLSERVE_JWT_AUDIENCE=AUDIENCE)
    fails("MLSERVE_JWT_AUDIENCE is required", MLSERVE_JWT_JWKS=jwks_file, MLSERVE_JWT_ISSUER=ISSUER)
    fails("'HS256' is not allowed", **jwt_config(jwks_file, MLSERVE_JWT_ALGORITHMS="RS256,HS256"))
    fails("'none' is not allowed", **jwt_config(jwks_file, MLSERVE_JWT_ALGORITHMS=["none"]))
    fails("http:// is allowed only for a loopback host",
          **jwt_config("http://idp.example.com/jwks.json"))  # fmt: skip
    fails("must be a JWKS file path or an https:// URL", **jwt_config("ftp://idp/jwks"))
    fails("cannot read the JWKS file", **jwt_config(str(tmp_path / "missing.json")))
    (tmp_path / "bad.json").write_text("{")
    fails("is not JSON", **jwt_config(str(tmp_path / "bad.json")))
    private = {**public_jwk(rsa_key, "k"), "d": "AQAB"}
    fails("holds a private key", **jwt_config(write_jwks(tmp_path / "p.json", private)))
    fails("MLSERVE_JWT_LEEWAY_S must be", **jwt_config(jwks_file, MLSERVE_JWT_LEEWAY_S=-1))
    fails("MLSERVE_JWT_JWKS_TTL_S must be", **jwt_config(jwks_file, MLSERVE_JWT_JWKS_TTL_S=0))


def test_environment_variables(jwks_file):
    config = ServingConfig.from_environ({
        "MLSERVE_JWT_JWKS": jwks_file, "MLSERVE_JWT_ISSUER": ISSUER,
        "MLSERVE_JWT_AUDIENCE": "a,b", "MLSERVE_JWT_ALGORITHMS": "ES256",
        "MLSERVE_JWT_LEEWAY_S": "5", "MLSERVE_JWT_JWKS_TTL_S": "60",
    })  # fmt: skip
    verifier = config.jwt
    assert verifier.issuer == ISSUER and verifier.audience == ["a", "b"]
    assert verifier.algorithms == ("ES256",) and verifier.leeway_s == 5.0
    assert ServingConfig.from_environ({}).jwt is None


def test_serve_flags_are_validated_before_starting(tmp_path, models, jwks_file, monkeypatch):
    from click.testing import CliRunner

    from mlserve.cli import main as cli_main

    # serve prepares multiprocess metrics in its own process before it reads the flags:
    # give it a folder, and take the variable back afterwards (later tests run in-process)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))

    store = ModelStore(tmp_path / "store")
    store.publish("reg", models["reg"], alias="production")
    result = CliRunner().invoke(
        cli_main, ["serve", str(tmp_path / "store"), "--jwt-jwks", jwks_file, "--jwt-issuer", ISSUER]
    )
    assert result.exit_code == 2
    assert "MLSERVE_JWT_AUDIENCE is required with MLSERVE_JWT_JWKS" in result.output


def test_over_a_real_gunicorn(tmp_path, models, jwks_file, rsa_key, ec_key):
    store = ModelStore(tmp_path / "store")
    store.publish("reg", models["reg"], alias="production")
    server = Server(
        tmp_path / "store", "--workers", "2", "--jwt-jwks", jwks_file, "--jwt-issuer", ISSUER,
        "--jwt-audience", AUDIENCE,
    )  # fmt: skip
    try:
        url = f"{server.url}/predict/reg"
        with requests.Session() as session:
            for t in [token(rsa_key), token(ec_key, kid="ec1", alg="ES256")]:
                response = session.post(url, json=BODY, headers=bearer(t), timeout=10)
                assert response.status_code == 200, response.text
            for bad in [token(rsa_key, exp=int(time.time()) - 120), alg_none(),
                        hs256_with_public_key(rsa_key), None]:  # fmt: skip
                response = session.post(url, json=BODY, headers=bearer(bad) if bad else {}, timeout=10)
                assert response.status_code == 401
                assert response.json() == {"error": UNAUTHORIZED_MESSAGE}
            reader = token(rsa_key, scope="read")
            assert session.post(url, json=BODY, headers=bearer(reader), timeout=10).status_code == 403
            assert session.get(f"{server.url}/models", headers=bearer(reader), timeout=10).status_code == 200
    finally:
        server.stop()
