"""Bearer tokens: issue and verify the spec's JWTs, and authenticate requests.

A token is a JWS signed with a key from rustymt.api.keys. The accepted
algorithms are pinned by config (`auth.algorithms`: EdDSA by default, HS256
optional) and nothing else is ever accepted: not "none", not an algorithm the
configuration leaves out, not a token whose header names one algorithm while
signed with another. `exp` and `iss` are required and checked. The payload is
the spec's ("JWT Payload"):

    {"user_id", "username", "roles": [...], "tenant_id", "permissions": [...], "exp"}
    + "iss", "iat", "jti"

`tenant_id` is null for operator tokens and set for tenant-scoped ones; a
tenant_admin token is always tenant-scoped. Effective permissions are computed
by rustymt.service.authz.Principal.from_claims (roles grant, the permissions
claim can only narrow).

Authentication (rustymt.api.middleware runs it for every request): for a
route that declares a permission it turns the Authorization header into
request["principal"] or answers 401 UNAUTHENTICATED (missing, malformed,
expired, forged, wrong algorithm, wrong issuer). It also refuses an X-Tenant-ID header that contradicts a
tenant-scoped token (403 ISOLATION_VIOLATION). Authorization proper (does this
principal hold the route's permission for this tenant?) is the service
layer's authz.require, which REST and GraphQL share.
"""
from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from typing import Any, Iterable

import jwt
from aiohttp import web

from rustymt.api.appstate import per_app
from rustymt.api.keys import SigningKeys, load_or_create_keys
from rustymt.service.authz import ROLE_PERMISSIONS, Principal, check_tenant_scope
from rustymt.service.errors import ServiceError

# Roles whose tokens must name a tenant: they act inside one tenant only.
TENANT_SCOPED_ROLES = frozenset({"tenant_admin"})
MAX_TOKEN_BYTES = 4096  # several times any token we issue; bounds parsing work
TENANT_HEADER = "X-Tenant-ID"


def _keys(keys_or_data_dir: SigningKeys | str | os.PathLike, settings) -> SigningKeys:
    if isinstance(keys_or_data_dir, SigningKeys):
        return keys_or_data_dir
    return load_or_create_keys(keys_or_data_dir, settings.auth.algorithms)


def token_claims(role: str, tenant_id: str | None, ttl: int, issuer: str,
                 username: str | None = None, user_id: str | None = None, now: int | None = None,
                 permissions: Iterable[str] | None = None) -> dict[str, Any]:
    """The payload of a token for one role (the spec's JWT Payload plus iss/iat/jti).

    `permissions` narrows the token below what the role grants (never widens).
    """
    if role not in ROLE_PERMISSIONS:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLE_PERMISSIONS)}")
    if role in TENANT_SCOPED_ROLES and not tenant_id:
        raise ValueError(f"a {role} token must name a tenant")
    if ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    granted = ROLE_PERMISSIONS[role]
    if permissions is not None:
        permissions = frozenset(permissions)
        if not permissions <= granted:
            raise ValueError(f"role {role} does not grant {', '.join(sorted(permissions - granted))}")
        granted = permissions
    issued = int(time.time()) if now is None else now
    username = username or (f"{role}@{tenant_id}" if tenant_id else role)
    return {
        "user_id": user_id or username,
        "username": username,
        "roles": [role],
        "tenant_id": tenant_id,
        "permissions": sorted(granted),
        "exp": issued + int(ttl),
        "iat": issued,
        "iss": issuer,
        "jti": secrets.token_hex(12),
    }


def issue_token(keys_or_data_dir: SigningKeys | str | os.PathLike, settings, role: str,
                tenant_id: str | None = None, ttl: int | None = None,
                username: str | None = None, user_id: str | None = None,
                permissions: Iterable[str] | None = None) -> str:
    """A signed token for `role` (optionally scoped to `tenant_id`), valid `ttl` seconds.

    Signed with the first of `settings.auth.algorithms`. `rustymt token create`
    and POST /api/v1/auth/token both come here.
    """
    ttl = settings.auth.token_ttl_seconds if ttl is None else ttl
    claims = token_claims(role, tenant_id, ttl, settings.auth.issuer, username, user_id, permissions=permissions)
    algorithm = settings.auth.algorithms[0]
    return jwt.encode(claims, _keys(keys_or_data_dir, settings).signing_key(algorithm), algorithm=algorithm)


def _unauthenticated(message: str) -> ServiceError:
    error = ServiceError("UNAUTHENTICATED", message)
    error.headers = {"WWW-Authenticate": 'Bearer realm="rustymt"'}  # RFC 6750 section 3; sent with the error answer
    return error


def verify_token(token: str, keys: SigningKeys, settings) -> Principal:
    """The Principal a token stands for, or ServiceError UNAUTHENTICATED."""
    return principal_from_claims(verified_claims(token, keys, settings))


def verified_claims(token: str, keys: SigningKeys, settings) -> dict[str, Any]:
    """The token's claims once signature, algorithm, exp and iss check out."""
    if len(token) > MAX_TOKEN_BYTES:
        raise _unauthenticated("bearer token too long")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError:
        raise _unauthenticated("bearer token is not a JWT") from None
    allowed = settings.auth.algorithms
    # Pin before touching keys: the header is attacker-controlled.
    if algorithm not in allowed:
        raise _unauthenticated(f"token algorithm not accepted (accepted: {', '.join(allowed)})")
    try:
        claims = jwt.decode(
            token,
            keys.verification_key(algorithm),
            algorithms=[algorithm],
            issuer=settings.auth.issuer,
            options={"require": ["exp", "iss"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthenticated("token expired") from None
    except jwt.InvalidIssuerError:
        raise _unauthenticated("token issuer not accepted") from None
    except jwt.InvalidTokenError:
        raise _unauthenticated("token signature or claims invalid") from None
    return claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Check the claim types the spec fixes, then build the Principal."""
    roles, permissions, tenant_id = claims.get("roles"), claims.get("permissions", []), claims.get("tenant_id")
    if not (isinstance(roles, list) and roles and all(isinstance(role, str) for role in roles)):
        raise _unauthenticated("token roles claim must be a non-empty list of strings")
    if not (isinstance(permissions, list) and all(isinstance(item, str) for item in permissions)):
        raise _unauthenticated("token permissions claim must be a list of strings")
    if tenant_id is not None and not (isinstance(tenant_id, str) and tenant_id):
        raise _unauthenticated("token tenant_id claim must be a string or null")
    if TENANT_SCOPED_ROLES.intersection(roles) and tenant_id is None:
        raise _unauthenticated("tenant-scoped role without a tenant_id claim")
    return Principal.from_claims(claims)


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is None:
        raise _unauthenticated("missing Authorization: Bearer <token> header")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("Authorization header must be 'Bearer <token>'")
    return token.strip()


# One key set per application, loaded on the first authenticated request (the
# daemon has normally created the keys at startup already).
app_keys = per_app(lambda app: load_or_create_keys(app["settings"].server.data_dir, app["settings"].auth.algorithms))


class TokenVerifier:
    """verify_token that remembers the tokens it has already verified.

    Parsing and checking an EdDSA signature costs more than the rest of a GET
    (0.3-0.7 ms here), and clients send the same token again and again. A
    token string that verified once verifies again until its `exp`: the
    signature covers every byte of it, and the keys and pinned algorithms do
    not change while the daemon runs. So the Principal is kept, keyed by the
    exact string, and only `exp` is re-checked on a hit. Refusals are never
    kept (an attacker could otherwise fill the memory); at most `capacity`
    tokens are, least recently used dropped first.
    """

    def __init__(self, keys: SigningKeys, settings, capacity: int = 10_000, clock=time.time):
        self._keys = keys
        self._settings = settings
        self._capacity = capacity
        self._clock = clock
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if self._clock() < expires:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
            raise _unauthenticated("token expired")
        claims = verified_claims(token, self._keys, self._settings)
        principal = principal_from_claims(claims)
        self._verified[token] = (principal, float(claims["exp"]))
        if len(self._verified) > self._capacity:
            self._verified.popitem(last=False)
        return principal


app_verifier = per_app(lambda app: TokenVerifier(app_keys(app), app["settings"]))


def authenticate(request: web.Request) -> Principal:
    """The request's verified Principal, checked against X-Tenant-ID when sent."""
    principal = app_verifier(request.app).verify(bearer_token(request))
    claimed_tenant = request.headers.get(TENANT_HEADER)
    if claimed_tenant is not None:
        check_tenant_scope(principal, claimed_tenant.strip())
    return principal


REFUSAL = "auth_refusal"  # request key: why authenticated() found no Principal


def route_needs_token(request: web.Request) -> bool:
    route = request.app["route_by_handler"].get(request.match_info.handler)
    return route is not None and route.permission is not None


def authenticated(request: web.Request) -> Principal | None:
    """The Principal of a request whose route needs a token and whose token authenticates; else None.

    The rate limiter asks first (it picks the caller's bucket before anything
    else runs); the outcome is kept on the request, so the token is verified
    once and rustymt.api.middleware answers the kept refusal.
    """
    if not route_needs_token(request):
        return None
    try:
        request["principal"] = principal = authenticate(request)
    except ServiceError as refusal:
        request[REFUSAL] = refusal
        return None
    return principal
