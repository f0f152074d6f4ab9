"""Pure-Python twin of native/tenantmem.c: per-tenant allocator accounting.

Blocks are modelled as handles with (size, owner); counters, quota refusals
and peaks follow the C rules exactly: reserve first and back out over quota,
free/realloc charge the block's owner, realloc moves bytes and never counts as
an allocation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

MAX_TENANTS = 256


@dataclass
class Line:
    allocated: int = 0
    quota: int = 0
    peak: int = 0
    ooms: int = 0
    allocations: int = 0
    deallocations: int = 0


@dataclass
class TenantMem:
    lines: list[Line] = field(default_factory=lambda: [Line() for _ in range(MAX_TENANTS)])
    blocks: dict[int, tuple[int, int]] = field(default_factory=dict)  # handle -> (size, owner)
    _handles: count = field(default_factory=lambda: count(1))

    def _reserve(self, tenant: int, n: int) -> bool:
        line = self.lines[tenant]
        line.allocated += n
        if line.quota > 0 and n > 0 and line.allocated > line.quota:
            line.allocated -= n
            line.ooms += 1
            return False
        line.peak = max(line.peak, line.allocated)
        return True

    def malloc(self, tenant: int, n: int) -> int | None:
        if n <= 0 or not self._reserve(tenant, n):
            return None
        self.lines[tenant].allocations += 1
        handle = next(self._handles)
        self.blocks[handle] = (n, tenant)
        return handle

    def free(self, handle: int) -> None:
        size, owner = self.blocks.pop(handle)
        self.lines[owner].allocated -= size
        self.lines[owner].deallocations += 1

    def realloc(self, handle: int, n: int) -> int | None:
        if n <= 0:
            return None
        size, owner = self.blocks[handle]
        delta = n - size
        if delta > 0 and not self._reserve(owner, delta):
            return None
        if delta < 0:
            self.lines[owner].allocated += delta
        self.blocks[handle] = (n, owner)
        return handle

    def charge(self, tenant: int, n: int) -> bool:
        return self._reserve(tenant, n)

    def uncharge(self, tenant: int, n: int) -> None:
        self.lines[tenant].allocated -= n

    def set_quota(self, tenant: int, quota: int) -> bool:
        if not 0 <= tenant < MAX_TENANTS or quota < 0 or (tenant == 0 and quota != 0):
            return False
        self.lines[tenant].quota = quota
        return True

    def stats(self, tenant: int) -> dict:
        line = self.lines[tenant]
        return {
            "allocated_bytes": line.allocated, "quota_bytes": line.quota,
            "peak_usage_bytes": line.peak, "oom_count": line.ooms,
            "allocation_count": line.allocations, "deallocation_count": line.deallocations,
        }
