/*
** bufpool.h: the tenant-partitioned page buffer pool, SQLite's page cache.
**
** One pool of frames is shared by every connection of the engine; each tenant
** has a partition {min_frames, max_frames}. The pool is installed with
** sqlite3_config(SQLITE_CONFIG_PCACHE2, rmt_bufpool_methods(pool)). The cache
** API below (rmt_cache_*) is what the pcache2 methods call; it is public so the
** C tests and the Python test API can drive a pool without SQLite.
** Design and invariants: the essay at the top of bufpool.c.
*/
#ifndef RUSTYMT_BUFPOOL_H
#define RUSTYMT_BUFPOOL_H

#include <stdint.h>

#include <sqlite3.h>

#include "tenant.h"

typedef struct rmt_pool rmt_pool;
typedef struct rmt_cache rmt_cache;

/* What rmt_cache_fetch_ex found. */
enum rmt_fetch_outcome {
    RMT_FETCH_NULL = 0,     /* nothing returned */
    RMT_FETCH_HIT = 1,      /* the page was resident */
    RMT_FETCH_CREATED = 2,  /* a new (or recycled) frame now holds the key */
};

/* One tenant's partition and figures (API names: hits, misses, evictions,
** resident, pinned, min, max; the hit ratio is hits / (hits + misses)). */
typedef struct rmt_pool_tenant_stats {
    uint64_t hits;            /* fetches that found the page resident */
    uint64_t misses;          /* fetches that had to create the page */
    uint64_t evictions;       /* this tenant's pages recycled by the CLOCK */
    uint64_t fetch_failures;  /* createFlag 2 fetches answered NULL (NOMEM) */
    uint32_t resident;        /* pool frames holding this tenant's pages */
    uint32_t pinned;          /* of those, pinned */
    uint32_t unpooled;        /* pages of bPurgeable=0 caches, outside the pool */
    uint32_t min_frames;      /* reserved: never lost to other tenants below it */
    uint32_t max_frames;      /* cap on resident; 0 = the whole pool */
    uint32_t caches;          /* live caches tagged with this tenant */
} rmt_pool_tenant_stats;

/* Pool-wide figures. */
typedef struct rmt_pool_info {
    uint32_t nframes;          /* frames in the pool */
    uint32_t nfree;            /* frames holding no page */
    uint32_t npinned;          /* pooled frames pinned */
    uint64_t caches_created;   /* xCreate calls ever (the start-up canary) */
    uint32_t caches_live;      /* caches not yet destroyed */
    uint64_t frame_bytes;      /* bytes of page buffers currently allocated */
} rmt_pool_info;

/* Memory accounting hooks (tenantmem's rmt_mem_charge/uncharge). charge
** returns 0 to refuse (the tenant's memory quota), and the fetch fails. */
typedef int (*rmt_charge_fn)(int tenant, int64_t nbytes);
typedef void (*rmt_uncharge_fn)(int tenant, int64_t nbytes);

/* Pool lifetime. rmt_pool_free requires every cache destroyed. */
rmt_pool *rmt_pool_new(uint32_t nframes);
void rmt_pool_free(rmt_pool *pool);
void rmt_pool_set_accounting(rmt_pool *pool, rmt_charge_fn charge, rmt_uncharge_fn uncharge);

/* Change a partition live: returns 0 for a bad slot or min > max (max != 0).
** Lowering max below resident evicts the tenant's unpinned pages now; pinned
** ones go when unpinned. */
int rmt_pool_set_partition(rmt_pool *pool, int tenant, uint32_t min_frames, uint32_t max_frames);
void rmt_pool_get_stats(rmt_pool *pool, int tenant, rmt_pool_tenant_stats *out);
void rmt_pool_get_info(rmt_pool *pool, rmt_pool_info *out);
/* Zero a tenant's hit/miss/eviction/failure counters (partition kept). */
void rmt_pool_reset_counters(rmt_pool *pool, int tenant);
/* Walk every structure and assert the invariants; returns 1 when they hold
** (so it can be used where asserts are compiled out). */
int rmt_pool_check(rmt_pool *pool);

/* The cache API (pcache2 semantics; see sqlite3.h "Custom Page Cache"). */
rmt_cache *rmt_cache_create(rmt_pool *pool, int tenant, int szPage, int szExtra, int purgeable);
void rmt_cache_set_size(rmt_cache *cache, int nMax);
int rmt_cache_pagecount(rmt_cache *cache);
sqlite3_pcache_page *rmt_cache_fetch_ex(rmt_cache *cache, unsigned key, int createFlag, int *outcome);
void rmt_cache_unpin(rmt_cache *cache, sqlite3_pcache_page *page, int discard);
void rmt_cache_rekey(rmt_cache *cache, sqlite3_pcache_page *page, unsigned oldKey, unsigned newKey);
void rmt_cache_truncate(rmt_cache *cache, unsigned limit);
void rmt_cache_shrink(rmt_cache *cache);
void rmt_cache_destroy(rmt_cache *cache);
/* Test API: the page for key without pinning or counting, or NULL. */
sqlite3_pcache_page *rmt_cache_peek(rmt_cache *cache, unsigned key);
/* Test API: is the page for key pinned (-1 when not resident). */
int rmt_cache_is_pinned(rmt_cache *cache, unsigned key);

/* The pcache2 methods over pool (which becomes the pool xCreate uses; the
** methods' xInit/xShutdown are reference counted). */
const sqlite3_pcache_methods2 *rmt_bufpool_methods(rmt_pool *pool);
/* The pool installed by rmt_bufpool_methods, or NULL. */
rmt_pool *rmt_bufpool_installed(void);

#endif
