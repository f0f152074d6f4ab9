"""Run one GraphQL operation the same way for HTTP and websocket callers.

    parse (token cap) -> validate (graphql-core's rules, incl. introspection
    depth) -> pick the operation -> check its kind is allowed on this
    transport -> limits.check (depth, cost, aliases) -> execute/subscribe

Errors leave as `{"message", "locations", "path", "extensions": {"code"}}`:
a ServiceError keeps its code (and details); syntax, validation and limit
failures are INVALID_REQUEST; anything unexpected is INTERNAL_ERROR with a
request id, its traceback only in the server log — never in the answer.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import secrets
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationType,
    execute,
    parse,
    subscribe,
    validate,
)

from rustymt.api.graphql import limits as cost_limits
from rustymt.api.graphql.resolvers import dict_field
from rustymt.service.errors import ServiceError

log = logging.getLogger("rustymt.api.graphql")

QUERY_ONLY = frozenset({OperationType.QUERY})
QUERY_AND_MUTATION = frozenset({OperationType.QUERY, OperationType.MUTATION})
EVERY_KIND = frozenset(OperationType)


@dataclasses.dataclass(frozen=True)
class Settings:
    limits: cost_limits.Limits
    max_tokens: int


class RequestRejected(Exception):
    """The operation did not get to run; `errors` are already formatted."""

    def __init__(self, errors: list[dict]):
        super().__init__(errors[0]["message"])
        self.errors = errors


def error_dict(message: str, code: str, **extensions) -> dict:
    return {"message": message, "extensions": {"code": code, **extensions}}


def format_error(error: GraphQLError) -> dict:
    formatted = dict(error.formatted)
    original = error.original_error
    if isinstance(original, ServiceError):
        details = original.to_dict()["details"]
        formatted["message"] = original.message
        formatted["extensions"] = {"code": original.code, **({"details": details} if details is not None else {})}
    elif original is not None and not isinstance(original, GraphQLError):
        request_id = secrets.token_hex(8)
        log.error("internal error in GraphQL field %s (request_id=%s)", formatted.get("path"), request_id, exc_info=original)
        formatted["message"] = "internal error; the server log has the details"
        formatted["extensions"] = {"code": "INTERNAL_ERROR", "request_id": request_id}
    else:
        extensions = dict(formatted.get("extensions") or {})
        extensions.setdefault("code", "INVALID_REQUEST")
        formatted["extensions"] = extensions
    return formatted


def result_dict(result: ExecutionResult) -> dict:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [format_error(error) for error in result.errors]
    return body


def prepare(schema: GraphQLSchema, settings: Settings, payload: Any, allowed: frozenset[OperationType]):
    """Checked (document, operation name, variables, operation kind); RequestRejected otherwise."""
    if not isinstance(payload, dict):
        raise RequestRejected([error_dict("a GraphQL request is a JSON object with a query", "INVALID_REQUEST")])
    query, variables, operation_name = payload.get("query"), payload.get("variables"), payload.get("operationName")
    if not isinstance(query, str) or not query.strip():
        raise RequestRejected([error_dict("query must be a non-empty string", "INVALID_REQUEST")])
    if variables is not None and not isinstance(variables, dict):
        raise RequestRejected([error_dict("variables must be an object", "INVALID_REQUEST")])
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestRejected([error_dict("operationName must be a string", "INVALID_REQUEST")])
    try:
        document = parse(query, max_tokens=settings.max_tokens)
    except GraphQLError as exc:
        raise RequestRejected([format_error(exc)]) from None
    errors = validate(schema, document)
    if errors:
        raise RequestRejected([format_error(error) for error in errors])
    operation = cost_limits.choose_operation(document, operation_name)
    if operation is None:
        message = (f"no operation named {operation_name}" if operation_name
                   else "the document holds several operations: name one with operationName")
        raise RequestRejected([error_dict(message, "INVALID_REQUEST")])
    if operation.operation not in allowed:
        raise RequestRejected([error_dict(_not_allowed(operation.operation, allowed), "INVALID_REQUEST")])
    try:
        cost_limits.check(schema, document, operation, variables, settings.limits)
    except ServiceError as exc:
        raise RequestRejected([error_dict(exc.message, exc.code, details=exc.details)]) from None
    except GraphQLError as exc:  # a variable the cost walk could not coerce: execution would refuse it too
        raise RequestRejected([format_error(exc)]) from None
    return document, operation_name, variables, operation.operation


def _not_allowed(kind: OperationType, allowed: frozenset[OperationType]) -> str:
    if kind is OperationType.SUBSCRIPTION:
        return "subscriptions run over a websocket (graphql-transport-ws) at /graphql"
    if kind is OperationType.MUTATION and allowed == QUERY_ONLY:
        return "mutations need POST"
    return f"{kind.value} operations are not allowed here"


async def run(schema: GraphQLSchema, document: DocumentNode, operation_name, variables, context) -> dict:
    result = execute(schema, document, context_value=context, variable_values=variables,
                     operation_name=operation_name, field_resolver=dict_field)
    if inspect.isawaitable(result):
        result = await result
    return result_dict(result)


async def open_stream(schema: GraphQLSchema, document: DocumentNode, operation_name, variables, context):
    """An async iterator of ExecutionResult, or an ExecutionResult holding the refusal."""
    result = subscribe(schema, document, context_value=context, variable_values=variables,
                       operation_name=operation_name, field_resolver=dict_field)
    if inspect.isawaitable(result):
        result = await result
    return result
