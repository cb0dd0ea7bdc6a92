"""JWT / OAuth2 bearer tokens (MLSERVE_JWT_*), verified by PyJWT against a JWKS.

Off by default. ``MLSERVE_JWT_JWKS`` (``mlserve serve --jwt-jwks``) names the
identity provider's public keys: a JWKS file (re-read when it changes, checked
at most once a second) or an ``https://`` URL (fetched and kept for
``MLSERVE_JWT_JWKS_TTL_S`` seconds; ``http://`` only for a loopback host, as a
local test server or a sidecar). ``MLSERVE_JWT_ISSUER`` and
``MLSERVE_JWT_AUDIENCE`` are required with it: without an audience, a token the
same provider issued for another service would open this one.

A request presents the token as ``Authorization: Bearer <jwt>`` (or
``X-API-Key``); with ``MLSERVE_API_KEYS`` too, a request may present either (an
mlserve key never contains a dot, a JWT always two). The token is accepted when

* its header's ``alg`` is one of ``MLSERVE_JWT_ALGORITHMS`` (default RS256,
  ES256; only public-key algorithms can be configured, so ``none`` and HS256
  signed with the public key as a shared secret, the algorithm confusion
  attack, are refused before any signature check);
* its ``kid`` names a signing key of the JWKS whose type (and ``alg``, when the
  JWK has one) fits that algorithm (a token without ``kid`` only when the JWKS
  holds exactly one key);
* PyJWT verifies the signature, ``exp`` (required), ``nbf``, ``iss`` and
  ``aud``, with ``MLSERVE_JWT_LEEWAY_S`` seconds of leeway (default 30).

Its scopes come from the ``scope`` claim (space-separated, RFC 8693 / OAuth2)
or ``scp`` (a list, or space-separated text, as Azure AD and Okta send it) and
mean what API-key scopes mean: ``predict``, ``predict:<model>``, ``read``,
``admin``; other scopes (``openid``, ``email``, ...) are ignored. A rejected
token gets the same 401 as a bad API key (which check failed is counted in
``mlserve_jwt_rejected_total{reason}`` and logged at DEBUG on
``mlserve.serving``, never said to the client); a valid token without the scope
gets 403. The access log and the rate limits know the client as ``jwt:<sub>``.

A verified token is remembered (by its text, up to 4096 tokens per worker) until
its ``exp`` plus the leeway or until the JWKS changes, so a client that sends
the same token on every request pays for one signature check, not one per
request.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter

from mlserve.serving.security import ApiKey, validate_scope

__all__ = ["ALLOWED_ALGORITHMS", "JwksError", "JwtVerifier", "make_verifier"]

log = logging.getLogger("mlserve.serving")

REJECTED = Counter(
    "mlserve_jwt_rejected", "Bearer JWTs refused with 401, by the check that failed.", ["reason"]
)

#: the algorithms MLSERVE_JWT_ALGORITHMS may name: public-key signatures only
#: (a JWKS publishes public keys; HS* would make the public key a shared secret)
ALLOWED_ALGORITHMS = {
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "EC", "ES384": "EC", "ES512": "EC",
    "EdDSA": "OKP",
}  # fmt: skip
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
RECHECK_SECONDS = 1.0  # a JWKS file: how often its stat is compared
REFETCH_MIN_SECONDS = 10.0  # a JWKS URL: the least time between fetches (unknown kid, failures)
FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1 << 20
MAX_TOKEN_CHARS = 16 * 1024
VERIFIED_CACHE_SIZE = 4096
MAX_SUBJECT_CHARS = 128


class JwksError(ValueError):
    """The JWKS cannot be read or is malformed; the message names where it came from."""


class _Rejected(Exception):
    """A token refused; ``reason`` is the label of mlserve_jwt_rejected_total."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_jwks(data: bytes, where: str) -> dict[str, dict[str, Any]]:
    """kid -> JWK (a dict) of the signing keys in a JWKS document."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise JwksError(f"JWKS {where} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError(f'JWKS {where}: expected an object with a "keys" list')
    keys: dict[str, dict[str, Any]] = {}
    for position, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
            raise JwksError(f"JWKS {where}: key {position} is not a JWK (no kty)")
        if "d" in jwk:
            raise JwksError(
                f"JWKS {where}: key {position} holds a private key ('d'); publish public keys only"
            )
        if jwk.get("use", "sig") != "sig" or jwk["kty"] not in ("RSA", "EC", "OKP"):
            continue  # encryption keys and shared secrets ("oct") never verify a token here
        kid = jwk.get("kid", "")
        if not isinstance(kid, str):
            raise JwksError(f"JWKS {where}: key {position} has a kid that is not text")
        if kid in keys:
            raise JwksError(f"JWKS {where}: two keys have the kid {kid!r}")
        keys[kid] = jwk
    return keys


def _check_url(url: str) -> None:
    """https, or http to a loopback host only (ValueError otherwise)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
        raise ValueError(
            f"MLSERVE_JWT_JWKS {url!r}: http:// is allowed only for a loopback host "
            "(127.0.0.1, ::1, localhost); use https://"
        )
    raise ValueError(f"MLSERVE_JWT_JWKS {url!r} must be a JWKS file path or an https:// URL")


class _FileSource:
    """A JWKS file, re-read when its (inode, mtime, size) changes; the last good keys kept."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stat: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.keys, self.generation = self._read(), 1

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise JwksError(f"cannot read the JWKS file {self.path!r}: {exc}") from None
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError(f"JWKS file {self.path!r} is over {MAX_JWKS_BYTES} bytes")
        keys = _parse_jwks(data, f"file {self.path!r}")
        self._stat = (st.st_ino, st.st_mtime_ns, st.st_size)
        return keys

    def current(self, unknown_kid: bool = False) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        if now - self._checked >= RECHECK_SECONDS and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                st = os.stat(self.path)
                if (st.st_ino, st.st_mtime_ns, st.st_size) != self._stat:
                    self.keys = self._read()
                    self.generation += 1
            except (OSError, JwksError) as exc:
                log.error("mlserve: %s; keeping the previous JWKS", exc)
            finally:
                self._lock.release()
        return self.keys


class _UrlSource:
    """A JWKS URL, fetched again after ``ttl_s`` (or for an unknown kid, at most every 10 s).

    The first fetch happens at start-up. When the TTL runs out, the request that
    notices starts a background fetch and goes on with the keys it has (no request
    waits for the provider); a token naming an unknown kid (a key added by a
    rotation) makes its request fetch and wait, at most once per
    REFETCH_MIN_SECONDS. A failed fetch keeps the last good keys (none before the
    first success: every token is then refused) and is retried after
    REFETCH_MIN_SECONDS.
    """

    def __init__(self, url: str, ttl_s: float) -> None:
        _check_url(url)
        self.url = url
        self.ttl_s = ttl_s
        self.keys: dict[str, dict[str, Any]] = {}
        self.generation = 0
        self.fetches = 0
        self._next = 0.0  # monotonic time of the next due fetch
        self._last_attempt = -REFETCH_MIN_SECONDS
        self._lock = threading.Lock()
        self._fetch()

    def _fetch(self) -> None:
        self._last_attempt = time.monotonic()
        self.fetches += 1
        try:
            request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
                data = response.read(MAX_JWKS_BYTES + 1)
            if len(data) > MAX_JWKS_BYTES:
                raise JwksError(f"JWKS {self.url!r} is over {MAX_JWKS_BYTES} bytes")
            keys = _parse_jwks(data, repr(self.url))
        except (OSError, ValueError, urllib.error.URLError) as exc:
            self._next = self._last_attempt + REFETCH_MIN_SECONDS
            log.error("mlserve: cannot fetch the JWKS %s: %s; keeping the previous keys", self.url, exc)
            return
        self.keys = keys
        self.generation += 1
        self._next = self._last_attempt + self.ttl_s

    def current(self, unknown_kid: bool = False) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        due = now >= self._next or (
            unknown_kid and now - self._last_attempt >= REFETCH_MIN_SECONDS
        )
        if due and self._lock.acquire(blocking=False):
            if unknown_kid or not self.keys:  # this request needs the fetched keys
                try:
                    self._fetch()
                finally:
                    self._lock.release()
            else:
                threading.Thread(target=self._fetch_and_release, name="mlserve-jwks-fetch",
                                 daemon=True).start()  # fmt: skip
        return self.keys

    def _fetch_and_release(self) -> None:
        try:
            self._fetch()
        finally:
            self._lock.release()


class JwtVerifier:
    """Verifies bearer JWTs; :meth:`authenticate` returns the token's principal or None."""

    def __init__(
        self, source: Any, issuer: str, audience: str | tuple[str, ...],
        algorithms: tuple[str, ...], leeway_s: float,
    ) -> None:  # fmt: skip
        import jwt  # PyJWT: pip install 'mlserve[jwt]'

        self._jwt = jwt
        self.source = source
        self.issuer = issuer
        self.audience = list(audience) if isinstance(audience, tuple) else audience
        self.algorithms = algorithms
        self.leeway_s = leeway_s
        self._pyjwks: dict[tuple[int, str, str], Any] = {}  # (generation, kid, alg) -> PyJWK
        self._verified: dict[str, tuple[ApiKey, float, int]] = {}  # token -> (who, until, gen)

    def authenticate(self, token: str | None) -> ApiKey | None:
        """The principal (an ApiKey named jwt:<sub> with the token's scopes) or None."""
        if not token:
            return None
        hit = self._verified.get(token)
        if hit is not None:
            self.source.current()  # a changed JWKS (new generation) forgets every verified token
            if hit[2] == self.source.generation and time.time() <= hit[1]:
                return hit[0]
        try:
            principal, until = self._verify(token)
        except _Rejected as exc:
            REJECTED.labels(exc.reason).inc()
            log.debug("mlserve: bearer JWT refused: %s", exc.reason)
            return None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, until, self.source.generation)
        return principal

    def _verify(self, token: str) -> tuple[ApiKey, float]:
        jwt = self._jwt
        if len(token) > MAX_TOKEN_CHARS:
            raise _Rejected("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Rejected("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _Rejected("algorithm")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _Rejected("malformed")
        jwk = self._find_key(kid)
        if jwk is None:
            raise _Rejected("unknown_kid")
        if not _fits(jwk, alg):
            raise _Rejected("algorithm")
        generation = self.source.generation
        cache_key = (generation, jwk.get("kid", ""), alg)
        key = self._pyjwks.get(cache_key)
        if key is None:
            try:
                key = jwt.PyJWK(jwk, algorithm=alg)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                raise _Rejected("unknown_kid") from None  # a JWK PyJWT cannot use
            if len(self._pyjwks) > 256:
                self._pyjwks.clear()
            self._pyjwks[cache_key] = key
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_s, options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise _Rejected("expired") from None
        except jwt.ImmatureSignatureError:
            raise _Rejected("not_yet_valid") from None
        except jwt.InvalidIssuerError:
            raise _Rejected("issuer") from None
        except jwt.InvalidAudienceError:
            raise _Rejected("audience") from None
        except jwt.InvalidSignatureError:
            raise _Rejected("signature") from None
        except jwt.MissingRequiredClaimError:
            raise _Rejected("missing_claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _Rejected("malformed") from None
        subject = claims.get("sub")
        subject = subject[:MAX_SUBJECT_CHARS] if isinstance(subject, str) and subject else "-"
        principal = ApiKey("jwt:" + subject, "", frozenset(_scopes(claims)))
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise _Rejected("malformed")
        return principal, float(exp) + self.leeway_s

    def _find_key(self, kid: str | None) -> dict[str, Any] | None:
        keys = self.source.current()
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        jwk = keys.get(kid)
        if jwk is None:  # a rotated key the cached JWKS does not have yet
            jwk = self.source.current(unknown_kid=True).get(kid)
        return jwk


def _fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether a token signed with ``alg`` may be checked with ``jwk`` (type, curve, alg)."""
    if jwk.get("alg") not in (None, alg):
        return False
    if jwk.get("kty") != ALLOWED_ALGORITHMS[alg]:
        return False
    curve = _EC_CURVES.get(alg)
    return curve is None or jwk.get("crv") == curve


def _scopes(claims: Mapping[str, Any]) -> Iterable[str]:
    """The mlserve scopes among the token's ``scope`` / ``scp`` claims (others ignored)."""
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found += value.split()
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
    for scope in found:
        try:
            yield validate_scope(scope)
        except ValueError:
            continue


def parse_algorithms(value: Any) -> tuple[str, ...]:
    """MLSERVE_JWT_ALGORITHMS as a tuple (ValueError naming a refused algorithm)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"MLSERVE_JWT_ALGORITHMS must list algorithms such as RS256,ES256, got {value!r}")
    for alg in value:
        if alg not in ALLOWED_ALGORITHMS:
            raise ValueError(
                f"MLSERVE_JWT_ALGORITHMS: {alg!r} is not allowed; use public-key algorithms "
                f"({', '.join(ALLOWED_ALGORITHMS)}): a JWKS holds public keys, and 'none' or "
                "HS* would let anyone who has them sign tokens"
            )
    return tuple(value)


def make_verifier(
    jwks: Any, ttl_s: float, issuer: Any, audience: Any, algorithms: Any, leeway_s: float,
) -> JwtVerifier | None:  # fmt: skip
    """The verifier MLSERVE_JWT_* describe, or None when MLSERVE_JWT_JWKS is unset."""
    if jwks is None or jwks == "":
        return None
    if not isinstance(jwks, (str, os.PathLike)):
        raise ValueError(  # noqa: TRY004 - a ConfigError (a ValueError) naming the key
            f"MLSERVE_JWT_JWKS must be a JWKS file path or an https:// URL, got {jwks!r}"
        )
    if not isinstance(issuer, str) or not issuer:
        raise ValueError(
            "MLSERVE_JWT_ISSUER is required with MLSERVE_JWT_JWKS: the 'iss' your identity "
            "provider puts in its tokens"
        )
    if isinstance(audience, str):
        audience = audience if "," not in audience else tuple(
            a.strip() for a in audience.split(",") if a.strip()
        )
    if isinstance(audience, list):
        audience = tuple(audience)
    if not audience or not (
        isinstance(audience, str)
        or (isinstance(audience, tuple) and all(isinstance(a, str) and a for a in audience))
    ):
        raise ValueError(
            "MLSERVE_JWT_AUDIENCE is required with MLSERVE_JWT_JWKS (this API's 'aud'; "
            "comma-separated for several): without it a token issued for another service "
            "of the same provider would be accepted"
        )
    algorithms = parse_algorithms(algorithms)
    try:
        import jwt  # noqa: F401 - PyJWT, checked here so that its absence is a config error
    except ImportError:
        raise ValueError(
            "MLSERVE_JWT_JWKS needs PyJWT with cryptography: pip install 'mlserve[jwt]'"
        ) from None
    text = os.fspath(jwks)
    if "://" in text:
        source: Any = _UrlSource(text, ttl_s)
    else:
        source = _FileSource(text)
    return JwtVerifier(source, issuer, audience, algorithms, leeway_s)
