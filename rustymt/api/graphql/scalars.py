"""The DateTime scalar: ISO-8601 instants, always written in UTC with a Z.

Output accepts what the service layer holds (an aware datetime or an ISO-8601
string) and normalises it; input must name its zone (Z or +hh:mm) because a
naive time is ambiguous on a server whose tenants live in many zones, and is
converted to UTC. Anything else is a GraphQL error, never a guess.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from graphql import GraphQLError, StringValueNode, ValueNode, print_ast

UTC = dt.timezone.utc


def parse_iso_utc(text: str) -> dt.datetime:
    """ISO-8601 with a zone -> aware UTC datetime; ValueError otherwise."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40 or "T" not in text.upper():
        raise ValueError("expected an ISO-8601 date-time such as 2025-12-11T10:00:00Z")
    value = dt.datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("date-time needs a zone: Z or +hh:mm")
    return value.astimezone(UTC)


def format_utc(value: dt.datetime) -> str:
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0") + "Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def serialize_datetime(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise GraphQLError("DateTime cannot represent a time without a zone")
        return format_utc(value)
    if isinstance(value, str):
        try:
            return format_utc(parse_iso_utc(value))
        except ValueError as exc:
            raise GraphQLError(f"DateTime cannot represent {value!r}: {exc}") from None
    raise GraphQLError(f"DateTime cannot represent a {type(value).__name__}")


def parse_datetime_value(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise GraphQLError(f"DateTime must be a string, got {type(value).__name__}")
    try:
        return parse_iso_utc(value)
    except ValueError as exc:
        raise GraphQLError(f"invalid DateTime {value!r}: {exc}") from None


def parse_datetime_literal(node: ValueNode, _variables: Any = None) -> dt.datetime:
    if not isinstance(node, StringValueNode):
        raise GraphQLError(f"DateTime must be a string, got {print_ast(node)}", node)
    return parse_datetime_value(node.value)


def install_datetime(schema) -> None:
    """Give the SDL's `scalar DateTime` its behaviour."""
    scalar = schema.type_map["DateTime"]
    # graphql-core 3.3 names these coerce_*; the 3.2 names stay for older callers.
    scalar.serialize = scalar.coerce_output_value = serialize_datetime
    scalar.parse_value = scalar.coerce_input_value = parse_datetime_value
    scalar.parse_literal = parse_datetime_literal
    scalar.coerce_input_literal = parse_datetime_literal
    scalar.specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339"
