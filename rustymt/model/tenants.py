"""The tenant lifecycle as a state machine (pure; no I/O).

    ACTIVE ──suspend──> SUSPENDED ──resume──> ACTIVE
    ACTIVE ──────────> MAINTENANCE ─────────> ACTIVE
    ACTIVE ──────────> MIGRATING ───────────> ACTIVE
    any state but TERMINATED ──terminate──> TERMINATED (final)

Anything else is refused with INVALID_STATE (HTTP 400). REST spells states
lowercase; GraphQL uppercases the same names.
"""
from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping

from rustymt.service.errors import ServiceError


class TenantState(str, enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    MAINTENANCE = "maintenance"
    MIGRATING = "migrating"
    TERMINATED = "terminated"


S = TenantState
TRANSITIONS: Mapping[TenantState, frozenset[TenantState]] = MappingProxyType({
    S.ACTIVE: frozenset({S.SUSPENDED, S.MAINTENANCE, S.MIGRATING, S.TERMINATED}),
    S.SUSPENDED: frozenset({S.ACTIVE, S.TERMINATED}),
    S.MAINTENANCE: frozenset({S.ACTIVE, S.TERMINATED}),
    S.MIGRATING: frozenset({S.ACTIVE, S.TERMINATED}),
    S.TERMINATED: frozenset(),
})
del S

STATE_NAMES: tuple[str, ...] = tuple(state.value for state in TenantState)


def check_transition(current: TenantState | str, target: TenantState | str) -> None:
    current, target = TenantState(current), TenantState(target)
    if target not in TRANSITIONS[current]:
        raise ServiceError(
            "INVALID_STATE",
            f"a tenant in state {current.value} cannot become {target.value}",
            details={"current_state": current.value, "requested_state": target.value},
        )


def check_mutable(current: TenantState | str) -> None:
    """Settings (tier, quota, priority) may change in any state but TERMINATED."""
    if TenantState(current) is TenantState.TERMINATED:
        raise ServiceError("INVALID_STATE", "the tenant is terminated", details={"current_state": "terminated"})
