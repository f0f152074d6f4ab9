"""Pure-Python twin of native/bufpool.c: the tenant-partitioned page pool.

It mirrors the C algorithm decision for decision (free list, per-tenant CLOCK
rings with the same hand movements, victim tenant choice, createFlag rules), so
driving both with the same operations must give the same outcomes and the same
per-tenant counters. The API is the C test API's (`_core.TestPool`).
Buffers are not modelled: frame identity and bytes are the C side's business.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_TENANTS = 256


@dataclass(eq=False)
class Frame:
    cache: "Cache | None" = None
    pgno: int = 0
    tenant: int = 0
    pinned: bool = False
    ref: bool = False
    pooled: bool = False
    next: "Frame | None" = None  # ring link
    prev: "Frame | None" = None


@dataclass
class Partition:
    min_frames: int = 0
    max_frames: int = 0
    resident: int = 0
    pinned: int = 0
    unpooled: int = 0
    caches: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    fetch_failures: int = 0
    hand: Frame | None = None

    def evictable(self) -> bool:
        return self.resident > self.pinned


@dataclass(eq=False)
class Cache:
    tenant: int
    purgeable: bool
    n_max: int = 0
    n90pct: int = 0
    n_pinned: int = 0
    max_key: int = 0
    pages: dict[int, Frame] = field(default_factory=dict)


class Pool:
    def __init__(self, nframes: int):
        if nframes <= 0:
            raise ValueError("nframes must be positive")
        self.nframes = nframes
        self.free: list[Frame] = [Frame() for _ in range(nframes)][::-1]  # top = end
        self.npinned = 0
        self.parts = [Partition() for _ in range(MAX_TENANTS)]
        self.caches: dict[int, Cache] = {}
        self.next_handle = 1
        self.caches_created = 0
        self.tenant_hwm = 1

    # ---- rings ---------------------------------------------------------
    @staticmethod
    def _ring_insert(p: Partition, f: Frame) -> None:
        if p.hand is None:
            f.next = f.prev = f
            p.hand = f
        else:
            f.next = p.hand
            f.prev = p.hand.prev
            p.hand.prev.next = f
            p.hand.prev = f

    @staticmethod
    def _ring_remove(p: Partition, f: Frame) -> None:
        if f.next is f:
            p.hand = None
        else:
            if p.hand is f:
                p.hand = f.next
            f.prev.next = f.next
            f.next.prev = f.prev
        f.next = f.prev = None

    @staticmethod
    def _clock_victim(p: Partition) -> Frame:
        assert p.evictable()
        f = p.hand
        while True:
            if not f.pinned:
                if not f.ref:
                    break
                f.ref = False
            f = f.next
        p.hand = f
        return f

    # ---- frames --------------------------------------------------------
    def _pin(self, f: Frame) -> None:
        f.pinned = True
        f.cache.n_pinned += 1
        if f.pooled:
            self.parts[f.tenant].pinned += 1
            self.npinned += 1

    def _unpin(self, f: Frame) -> None:
        f.pinned = False
        f.cache.n_pinned -= 1
        if f.pooled:
            self.parts[f.tenant].pinned -= 1
            self.npinned -= 1

    def _release(self, f: Frame) -> None:
        c, p = f.cache, self.parts[f.tenant]
        if f.pinned:
            self._unpin(f)
        del c.pages[f.pgno]
        if f.pooled:
            self._ring_remove(p, f)
            p.resident -= 1
            f.cache = None
            f.ref = False
            self.free.append(f)
        else:
            p.unpooled -= 1

    def _evict_one(self, t: int) -> None:
        f = self._clock_victim(self.parts[t])
        self.parts[t].evictions += 1
        self._release(f)

    def _victim_tenant(self, t: int, create_flag: int) -> int:
        me = self.parts[t]
        if me.max_frames and me.resident >= me.max_frames:
            if me.evictable():
                return t
            if create_flag != 2:
                return -1
        if self.free:
            return -2
        best, best_excess = -1, 0
        for v in range(self.tenant_hwm):
            p = self.parts[v]
            if p.resident > p.min_frames and p.evictable() and p.resident - p.min_frames > best_excess:
                best, best_excess = v, p.resident - p.min_frames
        if best < 0 and me.evictable():
            best = t
        return best

    def _must_spill(self, c: Cache) -> bool:
        p = self.parts[c.tenant]
        cap = self.nframes
        if p.max_frames and p.max_frames < cap:
            cap = p.max_frames
        if c.n90pct and c.n_pinned >= c.n90pct:
            return True
        if p.pinned * 10 >= cap * 9:
            return True
        return self.npinned * 10 >= self.nframes * 9

    def _take_pooled(self, c: Cache, create_flag: int) -> Frame | None:
        if create_flag == 1 and self._must_spill(c):
            return None
        v = self._victim_tenant(c.tenant, create_flag)
        if v == -1:
            return None
        if v >= 0:
            self._evict_one(v)
        f = self.free.pop()
        f.pooled = True
        return f

    def _note_tenant(self, t: int) -> None:
        self.tenant_hwm = max(self.tenant_hwm, t + 1)

    # ---- the test API --------------------------------------------------
    def create_cache(self, tenant: int, page_size: int = 1024, extra: int = 16, purgeable: bool = True) -> int:
        tenant = tenant if 0 <= tenant < MAX_TENANTS else 0
        handle = self.next_handle
        self.next_handle += 1
        self.caches[handle] = Cache(tenant, bool(purgeable))
        self._note_tenant(tenant)
        self.caches_created += 1
        self.parts[tenant].caches += 1
        return handle

    def set_cache_size(self, handle: int, n: int) -> None:
        c = self.caches[handle]
        c.n_max = n if n > 0 else 0
        c.n90pct = c.n_max * 9 // 10

    def pagecount(self, handle: int) -> int:
        return len(self.caches[handle].pages)

    def fetch(self, handle: int, key: int, create_flag: int) -> str | None:
        c = self.caches[handle]
        p = self.parts[c.tenant]
        f = c.pages.get(key)
        if f is not None:
            if not f.pinned:
                self._pin(f)
            f.ref = True
            p.hits += 1
            return "hit"
        if create_flag == 0:
            return None
        f = self._take_pooled(c, create_flag) if c.purgeable else Frame()
        if f is None:
            if create_flag == 2:
                p.fetch_failures += 1
            return None
        f.cache, f.pgno, f.tenant, f.ref, f.pinned = c, key, c.tenant, False, False
        c.pages[key] = f
        c.max_key = max(c.max_key, key)
        if f.pooled:
            self._ring_insert(p, f)
            p.resident += 1
        else:
            p.unpooled += 1
        self._pin(f)
        p.misses += 1
        return "created"

    def unpin(self, handle: int, key: int, discard: bool = False) -> None:
        c = self.caches[handle]
        f = c.pages.get(key)
        if f is None or not f.pinned:
            raise KeyError(key)
        p = self.parts[c.tenant]
        if discard:
            self._release(f)
            return
        self._unpin(f)
        if f.pooled and p.max_frames and p.resident > p.max_frames:
            p.evictions += 1
            self._release(f)

    def rekey(self, handle: int, old: int, new: int) -> None:
        c = self.caches[handle]
        f = c.pages.get(old)
        if f is None:
            raise KeyError(old)
        other = c.pages.get(new)
        if other is not None and other is not f:
            self._release(other)
        del c.pages[old]
        f.pgno = new
        c.pages[new] = f
        c.max_key = max(c.max_key, new)

    def _truncate(self, c: Cache, limit: int) -> None:
        if limit > c.max_key:
            return
        for key in [k for k in c.pages if k >= limit]:
            self._release(c.pages[key])
        c.max_key = limit - 1 if limit > 0 else 0

    def truncate(self, handle: int, limit: int) -> None:
        self._truncate(self.caches[handle], limit)

    def shrink(self, handle: int) -> None:
        c = self.caches[handle]
        for f in [f for f in c.pages.values() if f.pooled and not f.pinned]:
            self._release(f)

    def destroy(self, handle: int) -> None:
        c = self.caches.pop(handle)
        self._truncate(c, 0)
        self.parts[c.tenant].caches -= 1

    def is_pinned(self, handle: int, key: int) -> bool | None:
        f = self.caches[handle].pages.get(key)
        return None if f is None else f.pinned

    def set_partition(self, tenant: int, min_frames: int, max_frames: int) -> bool:
        if not 0 <= tenant < MAX_TENANTS or (max_frames and min_frames > max_frames):
            return False
        self._note_tenant(tenant)
        p = self.parts[tenant]
        p.min_frames, p.max_frames = min_frames, max_frames
        while max_frames and p.resident > max_frames and p.evictable():
            self._evict_one(tenant)
        return True

    def stats(self, tenant: int) -> dict:
        p = self.parts[tenant]
        lookups = p.hits + p.misses
        return {
            "hits": p.hits, "misses": p.misses, "evictions": p.evictions,
            "resident": p.resident, "pinned": p.pinned, "min": p.min_frames, "max": p.max_frames,
            "hit_ratio": p.hits / lookups if lookups else 0.0,
            "unpooled": p.unpooled, "fetch_failures": p.fetch_failures, "caches": p.caches,
        }

    def info(self) -> dict:
        return {
            "frames": self.nframes, "free": len(self.free), "pinned": self.npinned,
            "caches_created": self.caches_created, "caches_live": len(self.caches),
        }
