"""The executable schema: schema.graphql plus resolvers, scalars and enum spelling.

The SDL file is the single source of the schema (the contract test compares
it, as served, with the spec). Here it gets behaviour:

* resolvers from resolvers.py / subscriptions.py, bound by type and field name;
* DateTime (scalars.py);
* enums: the service layer spells values in lowercase (REST's "silver",
  "best_effort"); output is upper-cased to the GraphQL name, input arrives as
  the GraphQL name and resolvers lower-case it for the service;
* unions resolve by the `__typename` key resolvers put in their answers.
"""
from __future__ import annotations

import functools
from importlib import resources

from graphql import GraphQLEnumType, GraphQLSchema, build_schema

from rustymt.api.graphql import resolvers, scalars, subscriptions


def sdl() -> str:
    return resources.files("rustymt.api.graphql").joinpath("schema.graphql").read_text(encoding="utf-8")


def _upper_enum(enum: GraphQLEnumType) -> None:
    coerce = enum.coerce_output_value

    def coerce_any_case(value):
        return coerce(value.upper() if isinstance(value, str) else value)

    enum.serialize = enum.coerce_output_value = coerce_any_case


@functools.lru_cache(maxsize=1)
def executable_schema() -> GraphQLSchema:
    schema = build_schema(sdl())
    scalars.install_datetime(schema)
    for named in schema.type_map.values():
        if isinstance(named, GraphQLEnumType) and not named.name.startswith("__"):
            _upper_enum(named)
    for name, resolver in resolvers.QUERY.items():
        schema.query_type.fields[name].resolve = resolver
    for name, resolver in resolvers.MUTATION.items():
        schema.mutation_type.fields[name].resolve = resolver
    for name, subscriber in subscriptions.SUBSCRIPTION.items():
        field = schema.subscription_type.fields[name]
        field.subscribe = subscriber
        field.resolve = subscriptions.event_value
    for (type_name, field_name), resolver in resolvers.FIELDS.items():
        schema.type_map[type_name].fields[field_name].resolve = resolver
    unbound = [name for name in (*schema.query_type.fields, *schema.mutation_type.fields)
               if schema.query_type.fields.get(name, schema.mutation_type.fields.get(name)).resolve is None]
    assert not unbound, f"operations without a resolver: {unbound}"
    return schema
