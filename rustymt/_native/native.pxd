# The native units (native/*.h) as the binding sees them.
from libc.stdint cimport int64_t, uint32_t, uint64_t
from rustymt._native.csqlite cimport sqlite3, sqlite3_stmt, sqlite3_mem_methods, sqlite3_pcache_methods2, sqlite3_pcache_page

cdef extern from "tenant.h" nogil:
    int RMT_MAX_TENANTS
    void rmt_tenant_set_current(int tenant)
    int rmt_tenant_current()

cdef extern from "tenantmem.h" nogil:
    ctypedef struct rmt_mem_stats:
        int64_t allocated_bytes
        int64_t quota_bytes
        int64_t peak_usage_bytes
        uint64_t oom_count
        uint64_t allocation_count
        uint64_t deallocation_count
    const sqlite3_mem_methods *rmt_tenantmem_methods()
    void *rmt_mem_malloc(int nbytes)
    void rmt_mem_free(void *p)
    void *rmt_mem_realloc(void *p, int nbytes)
    int rmt_mem_size(void *p)
    int rmt_mem_owner(void *p)
    int rmt_mem_charge(int tenant, int64_t nbytes)
    void rmt_mem_uncharge(int tenant, int64_t nbytes)
    int rmt_mem_set_quota(int tenant, int64_t quota_bytes)
    void rmt_mem_get_stats(int tenant, rmt_mem_stats *out)
    void rmt_mem_reset_stats(int tenant)

cdef extern from "bufpool.h" nogil:
    ctypedef struct rmt_pool
    ctypedef struct rmt_cache
    ctypedef struct rmt_pool_tenant_stats:
        uint64_t hits
        uint64_t misses
        uint64_t evictions
        uint64_t fetch_failures
        uint32_t resident
        uint32_t pinned
        uint32_t unpooled
        uint32_t min_frames
        uint32_t max_frames
        uint32_t caches
    ctypedef struct rmt_pool_info:
        uint32_t nframes
        uint32_t nfree
        uint32_t npinned
        uint64_t caches_created
        uint32_t caches_live
        uint64_t frame_bytes
    ctypedef int (*rmt_charge_fn)(int, int64_t)
    ctypedef void (*rmt_uncharge_fn)(int, int64_t)
    rmt_pool *rmt_pool_new(uint32_t nframes)
    void rmt_pool_free(rmt_pool *pool)
    void rmt_pool_set_accounting(rmt_pool *pool, rmt_charge_fn charge, rmt_uncharge_fn uncharge)
    int rmt_pool_set_partition(rmt_pool *pool, int tenant, uint32_t min_frames, uint32_t max_frames)
    void rmt_pool_get_stats(rmt_pool *pool, int tenant, rmt_pool_tenant_stats *out)
    void rmt_pool_get_info(rmt_pool *pool, rmt_pool_info *out)
    void rmt_pool_reset_counters(rmt_pool *pool, int tenant)
    int rmt_pool_check(rmt_pool *pool)
    rmt_cache *rmt_cache_create(rmt_pool *pool, int tenant, int szPage, int szExtra, int purgeable)
    void rmt_cache_set_size(rmt_cache *cache, int nMax)
    int rmt_cache_pagecount(rmt_cache *cache)
    sqlite3_pcache_page *rmt_cache_fetch_ex(rmt_cache *cache, unsigned key, int createFlag, int *outcome)
    void rmt_cache_unpin(rmt_cache *cache, sqlite3_pcache_page *page, int discard)
    void rmt_cache_rekey(rmt_cache *cache, sqlite3_pcache_page *page, unsigned oldKey, unsigned newKey)
    void rmt_cache_truncate(rmt_cache *cache, unsigned limit)
    void rmt_cache_shrink(rmt_cache *cache)
    void rmt_cache_destroy(rmt_cache *cache)
    sqlite3_pcache_page *rmt_cache_peek(rmt_cache *cache, unsigned key)
    int rmt_cache_is_pinned(rmt_cache *cache, unsigned key)
    const sqlite3_pcache_methods2 *rmt_bufpool_methods(rmt_pool *pool)
    rmt_pool *rmt_bufpool_installed()

cdef extern from "exechooks.h" nogil:
    ctypedef struct rmt_exec_ctx:
        int tenant
        int depth
        int busy_timeout_ms
    void rmt_exec_enter(rmt_exec_ctx *ctx)
    void rmt_exec_leave(rmt_exec_ctx *ctx)
    void rmt_exec_attach(sqlite3 *db, rmt_exec_ctx *ctx)

cdef extern from "wireloop.h" nogil:
    int RMT_WL_MAX_UNREPORTED
    int RMT_WL_MAX_ANSWER
    ctypedef struct rmt_wl_signals:
        unsigned interrupts
        unsigned auth_epoch
        int stepping
    ctypedef struct rmt_wl_session:
        int nentries
        size_t answer_cap
    ctypedef struct rmt_wl_result:
        int status
        int os_error
        size_t in_start
        size_t in_len
        int served
        int reused
        double latency_ms[256]
        int step_rc
        int step_extended
        char step_message[256]
    void rmt_wl_session_init(rmt_wl_session *s, sqlite3 *db, rmt_exec_ctx *ctx, rmt_wl_signals *signals)
    void rmt_wl_session_set_max_message(rmt_wl_session *s, size_t bytes)
    void rmt_wl_session_clear(rmt_wl_session *s)
    void rmt_wl_session_free(rmt_wl_session *s)
    int rmt_wl_register(rmt_wl_session *s, sqlite3_stmt *stmt, const char *name, size_t name_len,
                        const unsigned char *parse_body, size_t parse_len,
                        const unsigned char *result_formats, size_t result_formats_len,
                        const unsigned char *row_description, size_t row_description_len,
                        int nparams, const unsigned char *param_text, const unsigned char *param_binary,
                        int ncols, const unsigned char *columns, unsigned auth_epoch)
    void rmt_wl_unregister(rmt_wl_session *s, sqlite3_stmt *stmt)
    void rmt_wl_run(rmt_wl_session *s, int fd, const unsigned char *out, size_t out_len,
                    unsigned char *inbuf, size_t in_cap, int timeout_ms, int serve, int report_ms,
                    rmt_wl_result *result)
    void rmt_wl_signal_interrupt(rmt_wl_signals *signals)
    void rmt_wl_signal_auth(rmt_wl_signals *signals)
    unsigned rmt_wl_auth_epoch(const rmt_wl_signals *signals)
    int rmt_wl_stepping(const rmt_wl_signals *signals)
