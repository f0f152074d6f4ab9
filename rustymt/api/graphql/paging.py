"""Which slice of a list a connection field asks for, and the Relay envelope.

The spec's connections take page/pageSize; Relay clients pass first/after or
last/before with cursors from an earlier answer. Both come down to one
window (offset, limit) over the filtered list, which the service lists with
one call; the envelope then carries edges with signed cursors, pageInfo and
totalCount.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from rustymt.api.graphql.cursors import CursorCodec
from rustymt.service.errors import ServiceError

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20  # the spec's pageSize default


@dataclasses.dataclass(frozen=True)
class Window:
    offset: int
    limit: int


def page_size_of(args: dict[str, Any]) -> int:
    """The number of rows the arguments ask for (also what the cost limit charges)."""
    for name in ("first", "last", "pageSize"):
        value = args.get(name)
        if value is not None:
            if not 1 <= value <= MAX_PAGE_SIZE:
                raise ServiceError("INVALID_REQUEST", f"{name} must be between 1 and {MAX_PAGE_SIZE}", field=name)
            return value
    return DEFAULT_PAGE_SIZE


def window_of(args: dict[str, Any], codec: CursorCodec, kind: str, filters: dict[str, Any]) -> Window:
    size = page_size_of(args)
    after, before = args.get("after"), args.get("before")
    if after is not None and before is not None:
        raise ServiceError("INVALID_REQUEST", "pass either after or before, not both", field="after")
    if after is not None:
        return Window(codec.decode(after, kind, filters) + 1, size)
    if before is not None:
        end = codec.decode(before, kind, filters)
        start = max(0, end - size)
        return Window(start, end - start)
    page = args.get("page")
    page = 1 if page is None else page
    if page < 1:
        raise ServiceError("INVALID_REQUEST", "page must be 1 or more", field="page")
    return Window((page - 1) * size, size)


def connection(rows: list[Any], total: int, window: Window, codec: CursorCodec, kind: str, filters: dict[str, Any]) -> dict:
    edges = [{"node": row, "cursor": codec.encode(kind, filters, window.offset + index)} for index, row in enumerate(rows)]
    return {
        "edges": edges,
        "totalCount": total,
        "pageInfo": {
            "hasPreviousPage": window.offset > 0,
            "hasNextPage": window.offset + len(rows) < total,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }
