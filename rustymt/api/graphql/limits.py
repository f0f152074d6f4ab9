"""Refuse expensive GraphQL operations before running them.

After graphql-core's validation (which rejects fragment cycles and bounds
introspection depth with MaxIntrospectionDepthRule), one walk over the chosen
operation — with its variables, so `pageSize: $n` counts — measures:

* depth: nesting of fields below the root;
* cost: 1 per field, a list field multiplies what it selects by the rows it
  may return (its pageSize/first/last, or a fixed hint for unpaged lists);
* aliases: aliased fields, the usual way to repeat one expensive field.

Introspection fields (`__schema`, `__type`, `__typename`) are free: tools
need them and graphql-core bounds them already. Request size and the number
of operations in a batch are checked by the transport.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
    value_from_ast,
)
from graphql.type.definition import GraphQLInterfaceType, GraphQLUnionType

from rustymt.api.graphql.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from rustymt.service.errors import ServiceError

# Rows assumed for list fields without a page size: lists the service bounds
# itself (violations, common users, profiles, metering records by range cap).
UNPAGED_LIST_ROWS = 10
LIST_ROWS_HINT = {("Query", "tenantMeteringRecords"): 100}
PAGE_ARGS = ("first", "last", "pageSize")


@dataclasses.dataclass(frozen=True)
class Limits:
    max_depth: int = 10
    max_cost: int = 20000
    max_aliases: int = 30


@dataclasses.dataclass
class Measure:
    depth: int = 0
    cost: int = 0
    aliases: int = 0


def choose_operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [node for node in document.definitions if isinstance(node, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((op for op in operations if op.name and op.name.value == operation_name), None)


def measure(schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode, variables: dict[str, Any] | None) -> Measure:
    fragments = {node.name.value: node for node in document.definitions if isinstance(node, FragmentDefinitionNode)}
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[operation.operation]
    result = Measure()
    walker = _Walker(schema, fragments, variables or {}, result)
    result.cost = walker.selection_cost(operation.selection_set, root, 1)
    return result


def check(schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode, variables: dict[str, Any] | None, limits: Limits) -> Measure:
    """Measure and refuse with QUERY_TOO_COMPLEX-style INVALID_REQUEST errors."""
    found = measure(schema, document, operation, variables)
    if found.depth > limits.max_depth:
        raise ServiceError("INVALID_REQUEST", f"query depth {found.depth} exceeds the limit of {limits.max_depth}", details={"limit": "depth", "value": found.depth, "max": limits.max_depth})
    if found.aliases > limits.max_aliases:
        raise ServiceError("INVALID_REQUEST", f"{found.aliases} aliases exceed the limit of {limits.max_aliases}", details={"limit": "aliases", "value": found.aliases, "max": limits.max_aliases})
    if found.cost > limits.max_cost:
        raise ServiceError("INVALID_REQUEST", f"query cost {found.cost} exceeds the limit of {limits.max_cost}", details={"limit": "cost", "value": found.cost, "max": limits.max_cost})
    return found


class _Walker:
    def __init__(self, schema, fragments, variables, result: Measure):
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.result = result

    def selection_cost(self, selection_set: SelectionSetNode | None, parent, depth: int, seen: frozenset = frozenset()) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field_cost(selection, parent, depth, seen)
            elif isinstance(selection, InlineFragmentNode):
                on = self.schema.get_type(selection.type_condition.name.value) if selection.type_condition else parent
                total += self.selection_cost(selection.selection_set, on or parent, depth, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:  # validation reports these
                    continue
                on = self.schema.get_type(fragment.type_condition.name.value) or parent
                total += self.selection_cost(fragment.selection_set, on, depth, seen | {name})
        return total

    def field_cost(self, node: FieldNode, parent, depth: int, seen: frozenset) -> int:
        name = node.name.value
        if name.startswith("__"):
            return 0
        if node.alias is not None:
            self.result.aliases += 1
        self.result.depth = max(self.result.depth, depth)
        field = self._field_def(parent, name)
        if field is None:  # unknown field: validation reports it
            return 1
        rows = self._rows(parent, name, field, node)
        child = self.selection_cost(node.selection_set, get_named_type(field.type), depth + 1, seen)
        return 1 + rows * child

    @staticmethod
    def _field_def(parent, name):
        if isinstance(parent, (GraphQLObjectType, GraphQLInterfaceType)):
            return parent.fields.get(name)
        if isinstance(parent, GraphQLUnionType):  # only __typename is selectable directly
            return None
        return None

    def _rows(self, parent, name: str, field, node: FieldNode) -> int:
        args = {arg.name.value: arg for arg in node.arguments or ()}
        if "pageSize" in field.args:
            for arg_name in PAGE_ARGS:
                if arg_name in args:
                    value = value_from_ast(args[arg_name].value, field.args[arg_name].type, self.variables)
                    if isinstance(value, int) and value > 0:
                        # the resolver refuses more than MAX_PAGE_SIZE; charge what could run
                        return min(value, MAX_PAGE_SIZE)
            return DEFAULT_PAGE_SIZE
        if name == "edges" and parent.name.endswith("Connection"):
            return 1  # the connection field already charged its page size
        if is_list_type(get_nullable_type(field.type)):
            return LIST_ROWS_HINT.get((parent.name, name), UNPAGED_LIST_ROWS)
        return 1
