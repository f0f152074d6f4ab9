"""Checks on caller input shared by REST and GraphQL; each names the field.

REST has already checked JSON types against the route schema; these are the
rules a schema cannot say (or that GraphQL callers must meet as well).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from rustymt.service.errors import ServiceError


def invalid(field: str, message: str) -> ServiceError:
    return ServiceError("INVALID_REQUEST", f"{field}: {message}", field=field)


def choice(field: str, value: Any, choices: Iterable[str]) -> str:
    """An enum value, matched case-insensitively, returned in canonical (lowercase) spelling."""
    choices = tuple(choices)
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise invalid(field, f"must be one of {', '.join(choices)}")


def text(field: str, value: Any, *, max_length: int = 256, pattern: str | None = None, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if not value.strip() and not allow_empty:
        raise invalid(field, "must not be empty")
    if len(value) > max_length:
        raise invalid(field, f"must be at most {max_length} characters")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise invalid(field, f"must match {pattern}")
    return value


def integer(field: str, value: Any, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if not minimum <= value <= maximum:
        raise invalid(field, f"must be between {minimum} and {maximum}")
    return value


def string_map(field: str, value: Any, *, max_items: int = 64) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > max_items:
        raise invalid(field, f"must be an object of at most {max_items} string values")
    for key, item in value.items():
        text(f"{field}.{key}", key, max_length=64)
        text(f"{field}.{key}", item, max_length=256, allow_empty=True)
    return dict(value)
