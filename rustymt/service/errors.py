"""The spec's error table, the one place codes map to HTTP statuses.

REST renders a ServiceError as {"error": {"code", "message", "details"}} with
the status below; GraphQL mutations return it as TenantError/PdbError and
other GraphQL failures carry the code in extensions.code.
"""
from __future__ import annotations

from typing import Any

# Codes and statuses fixed by spec/multitenant-api.md ("Error Codes").
SPEC_ERRORS: dict[str, int] = {
    "TENANT_NOT_FOUND": 404,
    "TENANT_ALREADY_EXISTS": 409,
    "QUOTA_EXCEEDED": 429,
    "ISOLATION_VIOLATION": 403,
    "INVALID_STATE": 400,
    "PDB_NOT_FOUND": 404,
    "INSUFFICIENT_RESOURCES": 507,
    "SLA_VIOLATION": 200,
    "PERMISSION_DENIED": 403,
}

# Cases the spec's table does not name; kept few and generic.
EXTRA_ERRORS: dict[str, int] = {
    "INVALID_REQUEST": 400,  # malformed JSON, wrong types, unknown or missing fields
    "UNAUTHENTICATED": 401,  # missing, expired or forged token
    "NOT_FOUND": 404,  # unknown route or a resource the spec has no code for (job, webhook)
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,  # duplicate of a non-tenant resource (PDB name, webhook, profile)
    "PAYLOAD_TOO_LARGE": 413,
    "IDEMPOTENCY_KEY_REUSED": 422,  # an Idempotency-Key retried with another body (IETF idempotency-key draft)
    "INTERNAL_ERROR": 500,  # a bug: logged with a request id, never with secrets
    "UNAVAILABLE": 503,  # engine instance down or restarting
}

HTTP_STATUS: dict[str, int] = {**SPEC_ERRORS, **EXTRA_ERRORS}


class ServiceError(Exception):
    """A refusal the caller can act on. `field` names the offending input field."""

    def __init__(self, code: str, message: str, details: Any = None, field: str | None = None):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.field = field

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_dict(self) -> dict[str, Any]:
        details = self.details
        if self.field is not None:
            details = {"field": self.field, **(details if isinstance(details, dict) else ({"reason": details} if details else {}))}
        return {"code": self.code, "message": self.message, "details": details}
