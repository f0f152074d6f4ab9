# A small C-level test API: a private pool driven without SQLite (the property
# tests run it against the pure-Python twin), and raw allocator calls.
from libc.stdint cimport uint64_t

_FETCH_OUTCOMES = {0: None, 1: "hit", 2: "created"}


cdef class TestPool:
    """A pool of its own (not the installed one) and its caches, by handle."""

    cdef rmt_pool *pool
    cdef dict caches           # handle -> address of rmt_cache
    cdef int next_handle

    def __cinit__(self, uint32_t nframes):
        self.pool = rmt_pool_new(nframes)
        if self.pool == NULL:
            raise ValueError("nframes must be positive")
        self.caches = {}
        self.next_handle = 1

    def __dealloc__(self):
        if self.pool != NULL:
            for address in self.caches.values():
                rmt_cache_destroy(<rmt_cache *><size_t>address)
            rmt_pool_free(self.pool)

    cdef rmt_cache *_cache(self, int handle) except NULL:
        return <rmt_cache *><size_t>self.caches[handle]

    def create_cache(self, int tenant, int page_size=1024, int extra=16, bint purgeable=True):
        cdef rmt_cache *c = rmt_cache_create(self.pool, tenant, page_size, extra, purgeable)
        if c == NULL:
            raise MemoryError()
        handle = self.next_handle
        self.next_handle += 1
        self.caches[handle] = <size_t>c
        return handle

    def set_cache_size(self, int handle, int n):
        rmt_cache_set_size(self._cache(handle), n)

    def pagecount(self, int handle):
        return rmt_cache_pagecount(self._cache(handle))

    def fetch(self, int handle, unsigned key, int create_flag):
        """None, "hit" or "created". A created page must arrive with the first
        8 bytes of pExtra zeroed; the test API then scribbles on them, as
        SQLite does, so a recycled frame that skipped the zeroing is caught."""
        cdef int outcome = 0
        cdef sqlite3_pcache_page *page = rmt_cache_fetch_ex(self._cache(handle), key, create_flag, &outcome)
        if outcome == 2:
            if (<uint64_t *>page.pExtra)[0] != 0:
                raise AssertionError("recycled page handed out with a dirty pExtra")
            (<uint64_t *>page.pExtra)[0] = 0xfeedfacecafebeef
            (<unsigned *>page.pBuf)[0] = key
        elif outcome == 1 and (<unsigned *>page.pBuf)[0] != key:
            raise AssertionError("hit returned another page's buffer")
        return _FETCH_OUTCOMES[outcome]

    def unpin(self, int handle, unsigned key, bint discard=False):
        cdef rmt_cache *c = self._cache(handle)
        cdef sqlite3_pcache_page *page = rmt_cache_peek(c, key)
        if page == NULL or rmt_cache_is_pinned(c, key) != 1:
            raise KeyError(key)
        rmt_cache_unpin(c, page, discard)

    def rekey(self, int handle, unsigned old, unsigned new):
        cdef rmt_cache *c = self._cache(handle)
        cdef sqlite3_pcache_page *page = rmt_cache_peek(c, old)
        if page == NULL:
            raise KeyError(old)
        rmt_cache_rekey(c, page, old, new)
        (<unsigned *>page.pBuf)[0] = new

    def truncate(self, int handle, unsigned limit):
        rmt_cache_truncate(self._cache(handle), limit)

    def shrink(self, int handle):
        rmt_cache_shrink(self._cache(handle))

    def destroy(self, int handle):
        rmt_cache_destroy(self._cache(handle))
        del self.caches[handle]

    def is_pinned(self, int handle, unsigned key):
        """True/False, or None when the key is not resident."""
        cdef int pinned = rmt_cache_is_pinned(self._cache(handle), key)
        return None if pinned < 0 else bool(pinned)

    def set_partition(self, int tenant, uint32_t min_frames, uint32_t max_frames):
        return bool(rmt_pool_set_partition(self.pool, tenant, min_frames, max_frames))

    def stats(self, int tenant):
        _check_slot(tenant)
        return _pool_stats_dict(self.pool, tenant)

    def info(self):
        return _pool_info_dict(self.pool)

    def check(self):
        return bool(rmt_pool_check(self.pool))


def _mem_malloc(int tenant, int nbytes):
    """Allocate through the tenant allocator as tenant; address or 0."""
    rmt_tenant_set_current(tenant)
    cdef void *p = rmt_mem_malloc(nbytes)
    rmt_tenant_set_current(0)
    return <size_t>p


def _mem_realloc(size_t address, int nbytes):
    return <size_t>rmt_mem_realloc(<void *>address, nbytes)


def _mem_free(size_t address):
    rmt_mem_free(<void *>address)


def _mem_size(size_t address):
    return rmt_mem_size(<void *>address)


def _mem_owner(size_t address):
    return rmt_mem_owner(<void *>address)


def _mem_charge(int tenant, int64_t nbytes):
    return bool(rmt_mem_charge(tenant, nbytes))


def _mem_uncharge(int tenant, int64_t nbytes):
    rmt_mem_uncharge(tenant, nbytes)
