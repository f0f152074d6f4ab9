"""GET /api/v1/openapi.json from a real daemon: a valid OpenAPI 3.1 document that is
exactly the server's route table, with valid JSON Schemas that real answers obey."""
from __future__ import annotations

import re

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from rustymt.api.app import collect_routes
from rustymt.api.openapi import openapi_path
from tests.api.edge_support import daemon, request_for, route_id, token, unique_name  # noqa: F401 - daemon is a fixture

ROUTES = collect_routes()


@pytest.fixture(scope="module")
def document(daemon):
    response = daemon.request("GET", "/api/v1/openapi.json", token=None)  # public
    assert response.status == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json


def _operations(document):
    return {(method.upper(), path): operation
            for path, item in document["paths"].items() for method, operation in item.items()}


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)  # raises with the first problem


def test_document_is_exactly_the_route_table(document):
    served = {(route.method, openapi_path(route.path)) for route in ROUTES}
    assert set(_operations(document)) == served
    assert ("GET", "/api/v1/openapi.json") in served and ("POST", "/api/v1/auth/token") in served


def test_every_described_operation_is_served(daemon, document):
    # Without a token: protected routes answer 401, public ones anything but 404/405.
    for (method, path), operation in _operations(document).items():
        concrete = re.sub(r"\{(\w+?)(_id)?\}", r"\1_none", path)  # {tenant_id} -> tenant_none, {webhook_id} -> webhook_none
        response = daemon.request(method, concrete, token=None, json={} if "requestBody" in operation else None)
        if operation["security"]:
            assert response.status == 401, (method, path, response.status)
        else:
            assert response.status not in (404, 405), (method, path, response.status)


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_security_and_permission_follow_the_route(document, route):
    operation = _operations(document)[(route.method, openapi_path(route.path))]
    if route.permission is None:
        assert operation["security"] == []
    else:
        assert operation["security"] == [{"bearerAuth": []}]
        assert operation["x-permission"] == route.permission
        assert {"401", "403", "429"} <= set(operation["responses"])
    assert operation["summary"] == route.summary
    declared_path = [p["name"] for p in operation["parameters"] if p["in"] == "path"]
    assert declared_path == [segment[1:-1] for segment in openapi_path(route.path).split("/") if segment.startswith("{")]
    assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} == set(route.query)
    assert ("requestBody" in operation) == (route.request_schema is not None)
    assert {str(status) for status in route.responses} <= set(operation["responses"])


def _schemas(document):
    for (method, path), operation in _operations(document).items():
        where = f"{method} {path}"
        body = operation.get("requestBody")
        if body:
            yield f"{where} request", body["content"]["application/json"]["schema"]
        for status, answer in operation["responses"].items():
            if "content" in answer:
                yield f"{where} {status}", answer["content"]["application/json"]["schema"]
        for parameter in operation["parameters"]:
            yield f"{where} parameter {parameter['name']}", parameter["schema"]
    for name, schema in document["components"]["schemas"].items():
        yield f"components {name}", schema


def test_every_schema_is_valid_json_schema_2020_12(document):
    checked = 0
    for where, schema in _schemas(document):
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            pytest.fail(f"{where}: {exc.message}")
        checked += 1
    assert checked > 2 * len(ROUTES)


def _validator(document, schema):
    # $refs in the document point at #/components/...: validate against a root that has them.
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def _check_answer(document, method, path, response):
    operation = _operations(document)[(method, path)]
    answer = operation["responses"].get(str(response.status))
    assert answer is not None, f"{method} {path} answered {response.status}, which the document does not list"
    errors = sorted(_validator(document, answer["content"]["application/json"]["schema"]).iter_errors(response.json),
                    key=str)
    assert not errors, f"{method} {path} {response.status}: {errors[0].message} at {list(errors[0].path)}"


def test_real_answers_match_the_declared_schemas(daemon, document):
    """Success and refusal bodies of every protected route, and the public ones, obey the document."""
    tenant_id = daemon.create_tenant(unique_name("doc"), tier="gold")["tenant_id"]
    reader = token(daemon, "monitor", tenant_id)
    checked = 0
    for route in ROUTES:
        path, body = request_for(route, tenant_id)
        described = openapi_path(route.path)
        if route.method == "GET":
            # Operator success, and the refusals a tenant-scoped reader gets.
            for bearer in (None if route.permission is None else daemon.admin_token, reader):
                response = daemon.request(route.method, path, token=bearer)
                if response.headers.get("content-type", "").startswith("application/json"):
                    _check_answer(document, route.method, described, response)
                    checked += 1
        if route.permission is not None:
            response = daemon.request(route.method, path, json=body, token=None)
            _check_answer(document, route.method, described, response)  # 401 shape
            checked += 1
    exchange = daemon.request("POST", "/api/v1/auth/token", token=None, json={"username": "nobody", "password": "x"})
    _check_answer(document, "POST", "/api/v1/auth/token", exchange)
    assert checked > len(ROUTES)
