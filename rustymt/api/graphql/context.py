"""What every resolver of one GraphQL operation sees, and per-request batching.

A Context holds the caller (Principal or None), the service layer, the cursor
codec and the operation's loaders. TenantLoader collects the tenant ids that
sibling fields ask for while graphql-core resolves one level of a result and
fetches them with a single service call, so a page of 100 tenants costs one
describe_many call, not 100 describe calls.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Awaitable, Callable

from rustymt.api.graphql.cursors import CursorCodec
from rustymt.service.authz import Principal
from rustymt.service.errors import ServiceError

# Loop turns a batch waits for more keys: graphql-core starts sibling resolvers
# as tasks one nesting level at a time, so keys of one level arrive within a
# couple of turns of the first.
BATCH_TURNS = 3


class BatchLoader:
    """load(key) -> awaitable value; keys requested close together go in one batch_fn call.

    batch_fn(keys) returns {key: value or ServiceError}; a key it leaves out
    gets `missing(key)`. Values are cached for the operation.
    """

    def __init__(self, batch_fn: Callable[[list], Awaitable[dict]], missing: Callable[[Any], Exception]):
        self._batch_fn = batch_fn
        self._missing = missing
        self._cache: dict[Any, asyncio.Future] = {}
        self._pending: dict[Any, asyncio.Future] = {}

    def load(self, key) -> asyncio.Future:
        future = self._cache.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._cache[key] = self._pending[key] = loop.create_future()
            if len(self._pending) == 1:
                self._schedule(loop, BATCH_TURNS)
        return future

    def forget(self, key) -> None:
        """Drop a cached value (after a mutation changed it)."""
        self._cache.pop(key, None)

    def _schedule(self, loop, turns: int) -> None:
        if turns:
            loop.call_soon(self._schedule, loop, turns - 1)
        else:
            loop.create_task(self._dispatch())

    async def _dispatch(self) -> None:
        batch, self._pending = self._pending, {}
        try:
            found = await self._batch_fn(list(batch))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting resolver
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for key, future in batch.items():
            value = found[key] if key in found else self._missing(key)
            if future.done():
                continue
            if isinstance(value, Exception):
                future.set_exception(value)
            else:
                future.set_result(value)


@dataclasses.dataclass
class Context:
    services: Any
    principal: Principal | None
    codec: CursorCodec
    settings: Any
    loaders: dict[str, BatchLoader] = dataclasses.field(default_factory=dict)

    def caller(self) -> Principal:
        """The authenticated caller; UNAUTHENTICATED when the request carried no token."""
        if self.principal is None:
            raise ServiceError("UNAUTHENTICATED", "this field needs Authorization: Bearer <token>")
        return self.principal

    @property
    def tenants(self) -> BatchLoader:
        loader = self.loaders.get("tenants")
        if loader is None:
            loader = self.loaders["tenants"] = BatchLoader(self._describe_tenants, _tenant_missing)
        return loader

    async def _describe_tenants(self, tenant_ids: list[str]) -> dict[str, Any]:
        service = self.services.tenants
        many = getattr(service, "describe_many", None)
        if many is not None:
            return await many(self.caller(), tenant_ids)
        found: dict[str, Any] = {}
        results = await asyncio.gather(*(service.describe(self.caller(), tid) for tid in tenant_ids), return_exceptions=True)
        for tid, result in zip(tenant_ids, results):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            found[tid] = result
        return found


def _tenant_missing(tenant_id: str) -> ServiceError:
    return ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
