"""Who may do what: roles -> the spec's permissions, and tenant scoping.

One implementation for REST and GraphQL. A Principal comes from a verified JWT
(rustymt.api.auth). Effective permissions are those of the token's roles; a
token's `permissions` claim can only narrow them, never widen them. A principal
with a tenant_id acts only on that tenant: touching another tenant is
ISOLATION_VIOLATION, lacking a permission is PERMISSION_DENIED.
"""
from __future__ import annotations

import dataclasses

from rustymt.service.errors import ServiceError

# The spec's permission table ("Permission Model").
PERMISSIONS = (
    "tenant:read", "tenant:write", "tenant:admin",
    "pdb:read", "pdb:manage", "pdb:clone",
    "resources:read", "resources:update",
    "sla:read", "cdb:admin", "common_user:manage",
)

# Roles are data: what each grants. cdb_admin is the operator; tenant_admin is
# a tenant's own administrator (always tenant-scoped); the rest are narrower.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "cdb_admin": frozenset(PERMISSIONS),
    "tenant_admin": frozenset({
        "tenant:read", "tenant:write", "pdb:read", "pdb:manage", "pdb:clone",
        "resources:read", "sla:read",
    }),
    "pdb_manager": frozenset({"pdb:read", "pdb:manage", "pdb:clone", "tenant:read"}),
    "monitor": frozenset({"tenant:read", "pdb:read", "resources:read", "sla:read"}),
}


@dataclasses.dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    roles: tuple[str, ...]
    tenant_id: str | None  # None: may act on every tenant (operators)
    permissions: frozenset[str]  # effective, already narrowed by the token claim

    @classmethod
    def from_claims(cls, claims: dict) -> "Principal":
        roles = tuple(role for role in claims.get("roles", ()) if role in ROLE_PERMISSIONS)
        granted = frozenset().union(*(ROLE_PERMISSIONS[role] for role in roles)) if roles else frozenset()
        claimed = claims.get("permissions")
        if isinstance(claimed, list):
            granted = granted & frozenset(claimed)
        return cls(
            user_id=str(claims.get("user_id", "")),
            username=str(claims.get("username", "")),
            roles=roles,
            tenant_id=claims.get("tenant_id") or None,
            permissions=granted,
        )

    @property
    def is_cdb_admin(self) -> bool:
        return "cdb:admin" in self.permissions and self.tenant_id is None


def require(principal: Principal, permission: str, tenant_id: str | None = None) -> None:
    """Refuse unless `principal` holds `permission` (and may touch `tenant_id`)."""
    assert permission in PERMISSIONS, permission
    # Scope first: a token aimed at another tenant is a cross-tenant attempt
    # (ISOLATION_VIOLATION) whatever its role would have allowed.
    check_tenant_scope(principal, tenant_id)
    if permission not in principal.permissions:
        raise ServiceError("PERMISSION_DENIED", f"this operation needs the {permission} permission")


def check_tenant_scope(principal: Principal, tenant_id: str | None) -> None:
    if tenant_id is not None and principal.tenant_id is not None and principal.tenant_id != tenant_id:
        raise ServiceError("ISOLATION_VIOLATION", "this token is scoped to another tenant")
