"""The spec's GraphQL SDL blocks, and a comparison with a served schema.

The spec (../shared/spec/multitenant-api.md beside the repository) holds its
schema in ```graphql fenced blocks that reference types defined nowhere, so
they are parsed (not built) and every definition is compared with the schema
the daemon serves, as rebuilt from its introspection answer.
"""
from __future__ import annotations

import os
import re

from graphql import (
    EnumTypeDefinitionNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InputObjectTypeDefinitionNode,
    NamedTypeNode,
    ObjectTypeDefinitionNode,
    UnionTypeDefinitionNode,
    Undefined,
    ast_from_value,
    is_non_null_type,
    parse,
    print_ast,
)
from graphql.language import visit, Visitor

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_PATH = os.path.join(REPO_ROOT, "..", "shared", "spec", "multitenant-api.md")
BUILTIN_SCALARS = {"ID", "String", "Int", "Float", "Boolean"}


def spec_blocks(path: str = SPEC_PATH) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return re.findall(r"```graphql\n(.*?)```", text, flags=re.S)


def spec_definitions(path: str = SPEC_PATH) -> dict[str, object]:
    definitions = {}
    for block in spec_blocks(path):
        for node in parse(block).definitions:
            assert node.name.value not in definitions, f"spec defines {node.name.value} twice"
            definitions[node.name.value] = node
    return definitions


def referenced_type_names(path: str = SPEC_PATH) -> set[str]:
    names: set[str] = set()

    class Collect(Visitor):
        def enter_named_type(self, node: NamedTypeNode, *_):
            names.add(node.name.value)

    for block in spec_blocks(path):
        visit(parse(block), Collect())
    return names


def _default_text(arg) -> str | None:
    if arg.default_value is None:
        return None
    return print_ast(arg.default_value)


def served_default_text(arg) -> str | None:
    """An argument's default as GraphQL text (graphql-core 3.3 `default`, 3.2 `default_value`)."""
    default = getattr(arg, "default", None)
    if default is not None:
        literal = getattr(default, "literal", Undefined)
        if literal is not Undefined and literal is not None:
            return print_ast(literal)
        return print_ast(ast_from_value(default.value, arg.type))
    if arg.default_value is Undefined or arg.default_value is None:
        return None
    return print_ast(ast_from_value(arg.default_value, arg.type))


def _check_type(problems: list[str], where: str, served_type, spec_type_node) -> None:
    """Same type and nullability, as SDL text ("[SlaViolation!]!")."""
    if str(served_type) != print_ast(spec_type_node):
        problems.append(f"{where}: type {served_type}, spec {print_ast(spec_type_node)}")


def compare(served: GraphQLSchema, path: str = SPEC_PATH) -> list[str]:
    """Every difference between the spec's SDL and `served`; [] when they agree."""
    problems: list[str] = []
    definitions = spec_definitions(path)
    for name, node in definitions.items():
        have = served.type_map.get(name)
        if have is None:
            problems.append(f"type {name} missing")
            continue
        if isinstance(node, ObjectTypeDefinitionNode):
            if not isinstance(have, GraphQLObjectType):
                problems.append(f"{name} is not an object type")
                continue
            wanted = {field.name.value: field for field in node.fields}
            extra = set(have.fields) - set(wanted)
            if extra:
                problems.append(f"{name} has fields the spec lacks: {sorted(extra)}")
            for field_name, field in wanted.items():
                got = have.fields.get(field_name)
                if got is None:
                    problems.append(f"{name}.{field_name} missing")
                    continue
                _check_type(problems, f"{name}.{field_name}", got.type, field.type)
                spec_args = {arg.name.value: arg for arg in field.arguments or ()}
                for arg_name, arg in spec_args.items():
                    got_arg = got.args.get(arg_name)
                    if got_arg is None:
                        problems.append(f"{name}.{field_name}({arg_name}) missing")
                        continue
                    _check_type(problems, f"{name}.{field_name}({arg_name})", got_arg.type, arg.type)
                    want_default = _default_text(arg)
                    got_default = served_default_text(got_arg)
                    if want_default != got_default:
                        problems.append(f"{name}.{field_name}({arg_name}): default {got_default}, spec {want_default}")
                for extra_arg, got_arg in got.args.items():
                    if extra_arg not in spec_args and is_non_null_type(got_arg.type):
                        problems.append(f"{name}.{field_name}({extra_arg}) is required but not in the spec")
        elif isinstance(node, EnumTypeDefinitionNode):
            if not isinstance(have, GraphQLEnumType):
                problems.append(f"{name} is not an enum")
                continue
            want = [value.name.value for value in node.values]
            if list(have.values) != want:
                problems.append(f"enum {name}: values {list(have.values)}, spec {want}")
        elif isinstance(node, InputObjectTypeDefinitionNode):
            if not isinstance(have, GraphQLInputObjectType):
                problems.append(f"{name} is not an input type")
                continue
            want = {field.name.value: print_ast(field.type) for field in node.fields}
            got = {field_name: str(field.type) for field_name, field in have.fields.items()}
            if want != got:
                problems.append(f"input {name}: fields {got}, spec {want}")
        elif isinstance(node, UnionTypeDefinitionNode):
            if not isinstance(have, GraphQLUnionType):
                problems.append(f"{name} is not a union")
                continue
            want = {member.name.value for member in node.types}
            got = {member.name for member in have.types}
            if want != got:
                problems.append(f"union {name}: members {sorted(got)}, spec {sorted(want)}")
        else:
            problems.append(f"{name}: the contract test does not know {type(node).__name__}")
    for name in referenced_type_names(path) - set(definitions) - BUILTIN_SCALARS:
        if name not in served.type_map:
            problems.append(f"type {name} is referenced by the spec but not served")
    return problems
