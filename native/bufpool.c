/*
** bufpool.c: a page buffer pool shared by every tenant, partitioned per tenant,
** installed as SQLite's page cache (sqlite3_pcache_methods2).
**
** SQLite's default page cache (pcache1.c) gives every connection its own LRU
** bounded by PRAGMA cache_size. In a multitenant engine that lets one tenant's
** table scan evict nothing of its neighbours' pages but also lets nobody share
** idle memory. This pool is the middle road of a database buffer manager:
**
**   rmt_pool
**   +-- frames[nframes]        fixed array; each frame holds at most one page
**   |     free list ---------> frames holding no page (LIFO)
**   +-- part[tenant]           one partition per tenant slot:
**   |     min_frames, max_frames, counters,
**   |     CLOCK ring --------> circular list of the tenant's resident frames
**   |                          (pinned or not) with a hand
**   +-- caches                 one rmt_cache per SQLite pager (xCreate):
**         tenant, page size, hash table pgno -> frame, counts
**
** A cache is tagged with the calling thread's current tenant when SQLite
** creates it (tenant.h): xCreate gets no connection pointer.
**
** Fetching a page that is not resident (createFlag 1 or 2) takes a frame:
**   1. createFlag 1 means "only if cheap": SQLite has dirty pages it could
**      spill instead. Refuse (NULL) when 90% of this cache's cache_size, of the
**      tenant's partition or of the pool is pinned -- checked BEFORE looking
**      for a clean page to recycle (the other order cost +32% misses on an
**      update-heavy phase).
**   2. A tenant at its max_frames recycles only its own pages (CLOCK over its
**      own ring), never a free frame or a neighbour's page. Exception: when
**      all its pages are pinned and createFlag is 2 (SQLite could spill
**      nothing), it overdraws like pcache1 does beyond cache_size, through
**      steps 3-4; unpinning sheds the excess. Its memory quota stays hard.
**   3. Otherwise a free frame is taken first.
**   4. Otherwise the victim tenant is the one furthest above its min_frames
**      (resident - min, ties to the lowest slot) that has an unpinned page;
**      a tenant at or below its min is never chosen, so it never loses frames
**      to others. If nobody qualifies, the tenant recycles its own pages.
**   5. The victim tenant's CLOCK hand sweeps its ring: pinned frames are
**      skipped, a set reference bit is cleared (second chance), the first
**      unpinned frame with a clear bit is recycled.
**   6. The frame's buffer is (re)sized for this cache's page size, charged to
**      the tenant's memory (tenantmem.c; over quota -> NULL -> SQLITE_NOMEM),
**      and the first 8 bytes of pExtra are zeroed: SQLite's pcache.c reads
**      them to tell a new page from one it already initialized, and a stale
**      value corrupts the database.
** A hit sets the frame's reference bit, which is what lets a hot page survive
** a scan's one-touch pages.
**
** SQLite's rules this file follows (../shared/notes/sqlite-native-hooks.md):
** createFlag 0 is a lookup that pins on a hit; xPagecount is truthful (SQLite
** only spills dirty pages when it exceeds the spill size); dirty pages stay
** pinned, so max_frames bounds dirty + referenced pages; xTruncate drops keys
** >= limit even if pinned and is O(1) when nothing is above the limit (it runs
** at the end of almost every transaction); xRekey is called on pinned pages
** and does not change pin state; a colliding key at the new number is dropped.
** Caches created with bPurgeable=0 (":memory:", temp_store=MEMORY) never unpin
** for good: their pages live in heap frames outside the pool (counted as the
** tenant's "unpooled" pages and charged to its memory), so they cannot pin
** the shared frames.
**
** Concurrency: every method but xInit/xShutdown can run on any thread at any
** time. One pool mutex guards everything; the notes measured ~6% more
** instructions than pcache1 on page-fetch-bound queries for this. Per-cache
** locks on the hit path with a locked steal path are the known next step.
**
** Page sizes are powers of two from 512 to 65536; a frame's buffer is sized on
** assignment (heap frames), so one pool serves every page size.
*/
#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bufpool.h"

typedef struct frame frame;
typedef struct partition partition;

/* One page slot. The sqlite3_pcache_page comes first: SQLite hands it back to
** xUnpin/xRekey and we cast it to the frame. */
struct frame {
    sqlite3_pcache_page page; /* pBuf = buf, pExtra = buf + szPage */
    rmt_cache *cache;         /* owner cache; NULL while on the free list */
    unsigned pgno;            /* key within the cache */
    int tenant;               /* partition the frame is charged to */
    unsigned char pinned;     /* handed to SQLite and not unpinned yet */
    unsigned char ref;        /* CLOCK reference bit, set by a hit */
    unsigned char pooled;     /* 1: in pool->frames; 0: heap frame (bPurgeable=0) */
    frame *hash_next;         /* next frame in the cache's hash bucket */
    frame *ring_next;         /* tenant CLOCK ring, or free list link */
    frame *ring_prev;         /* tenant CLOCK ring */
    void *buf;                /* page bytes followed by SQLite's extra bytes */
    size_t cap;               /* bytes allocated at buf (0 = none) */
};

/* One tenant's share of the pool. */
struct partition {
    uint32_t min_frames;      /* protected: others cannot take it below this */
    uint32_t max_frames;      /* resident cap; 0 = unlimited */
    uint32_t resident;        /* pooled frames on the ring */
    uint32_t pinned;          /* pooled frames pinned */
    uint32_t unpooled;        /* heap frames of bPurgeable=0 caches */
    uint32_t caches;          /* live caches tagged with this tenant */
    uint64_t hits, misses, evictions, fetch_failures; /* see rmt_pool_tenant_stats */
    frame *hand;              /* CLOCK hand: next frame to examine; NULL = empty ring */
};

struct rmt_pool {
    pthread_mutex_t mutex;    /* guards everything below */
    uint32_t nframes;         /* size of frames[] */
    frame *frames;            /* the pool */
    frame *free_list;         /* frames with cache == NULL, linked by ring_next */
    uint32_t nfree;           /* length of free_list */
    uint32_t npinned;         /* pooled frames pinned, all tenants */
    uint64_t caches_created;  /* xCreate count (canary) */
    uint32_t caches_live;     /* caches not destroyed */
    uint64_t frame_bytes;     /* sum of cap over pooled and heap frames */
    int tenant_hwm;           /* 1 + highest slot ever used: bounds victim scans */
    rmt_charge_fn charge;     /* memory accounting, or NULL */
    rmt_uncharge_fn uncharge;
    partition part[RMT_MAX_TENANTS];
};

struct rmt_cache {
    rmt_pool *pool;           /* the pool it draws from */
    int tenant;               /* partition charged for its pages */
    int szPage;               /* page bytes */
    int szExtra;              /* SQLite's per-page extra bytes */
    size_t szAlloc;           /* szPage + szExtra rounded up to 8 */
    int purgeable;            /* 0: pages live in heap frames, never recycled */
    unsigned nMax;            /* xCachesize: SQLite's cache_size in pages */
    unsigned n90pct;          /* nMax * 9 / 10: createFlag 1 refusal point */
    unsigned nPage;           /* resident pages (pooled or heap) */
    unsigned nPinned;         /* of those, pinned */
    unsigned iMaxKey;         /* every resident key is <= iMaxKey (truncate shortcut) */
    unsigned nHash;           /* buckets, a power of two */
    frame **apHash;           /* pgno & (nHash-1) -> chain */
};

/* Invariants (checked in full by rmt_pool_check). */
#define FRAME_OF(p) ((frame *)(p))
#define ASSERT_RESIDENT(f) assert((f)->cache != NULL && (f)->page.pBuf == (f)->buf)
#define ASSERT_PARTITION(p) assert((p)->pinned <= (p)->resident)
#define BUCKET(c, key) ((key) & ((c)->nHash - 1))
#define INITIAL_HASH 64

static void lock(rmt_pool *pool) { pthread_mutex_lock(&pool->mutex); }
static void unlock(rmt_pool *pool) { pthread_mutex_unlock(&pool->mutex); }

/* ---- hash table ------------------------------------------------------- */

static frame *hash_lookup(rmt_cache *c, unsigned key) {
    frame *f = c->apHash[BUCKET(c, key)];
    while (f != NULL && f->pgno != key) f = f->hash_next;
    return f;
}

static void hash_insert(rmt_cache *c, frame *f) {
    unsigned h = BUCKET(c, f->pgno);
    f->hash_next = c->apHash[h];
    c->apHash[h] = f;
}

static void hash_remove(rmt_cache *c, frame *f) {
    frame **pp = &c->apHash[BUCKET(c, f->pgno)];
    while (*pp != f) {
        assert(*pp != NULL);
        pp = &(*pp)->hash_next;
    }
    *pp = f->hash_next;
    f->hash_next = NULL;
}

/* Double the buckets when the table is full; on allocation failure keep the
** longer chains (correct, just slower). */
static void hash_grow(rmt_cache *c) {
    unsigned n = c->nHash * 2, i;
    frame **a = calloc(n, sizeof(frame *));
    if (a == NULL) return;
    for (i = 0; i < c->nHash; i++) {
        frame *f = c->apHash[i];
        while (f != NULL) {
            frame *next = f->hash_next;
            unsigned h = f->pgno & (n - 1);
            f->hash_next = a[h];
            a[h] = f;
            f = next;
        }
    }
    free(c->apHash);
    c->apHash = a;
    c->nHash = n;
}

/* ---- CLOCK rings ------------------------------------------------------ */

/* New frames go just behind the hand: examined last in the next sweep. */
static void ring_insert(partition *p, frame *f) {
    if (p->hand == NULL) {
        f->ring_next = f->ring_prev = f;
        p->hand = f;
    } else {
        f->ring_next = p->hand;
        f->ring_prev = p->hand->ring_prev;
        p->hand->ring_prev->ring_next = f;
        p->hand->ring_prev = f;
    }
}

static void ring_remove(partition *p, frame *f) {
    if (f->ring_next == f) {
        assert(p->hand == f);
        p->hand = NULL;
    } else {
        if (p->hand == f) p->hand = f->ring_next;
        f->ring_prev->ring_next = f->ring_next;
        f->ring_next->ring_prev = f->ring_prev;
    }
    f->ring_next = f->ring_prev = NULL;
}

/* Step 5: second-chance sweep. The caller guarantees an unpinned frame exists
** (resident > pinned), so this ends within two turns of the ring. */
static frame *clock_victim(partition *p) {
    frame *f = p->hand;
    assert(p->resident > p->pinned && f != NULL);
    for (;;) {
        if (!f->pinned) {
            if (!f->ref) break;
            f->ref = 0;
        }
        f = f->ring_next;
    }
    p->hand = f;  /* ring_remove advances the hand past the victim */
    return f;
}

static int evictable(const partition *p) {
    return p->resident > p->pinned;
}

/* ---- frames ----------------------------------------------------------- */

static void pin(rmt_pool *pool, frame *f) {
    assert(!f->pinned);
    f->pinned = 1;
    f->cache->nPinned++;
    if (f->pooled) {
        pool->part[f->tenant].pinned++;
        pool->npinned++;
    }
}

static void unpin(rmt_pool *pool, frame *f) {
    assert(f->pinned);
    f->pinned = 0;
    f->cache->nPinned--;
    if (f->pooled) {
        pool->part[f->tenant].pinned--;
        pool->npinned--;
    }
}

static void uncharge(rmt_pool *pool, int tenant, size_t bytes) {
    if (pool->uncharge != NULL && bytes > 0) pool->uncharge(tenant, (int64_t)bytes);
}

/* Detach a resident frame from its cache and tenant. Pooled frames go to the
** free list keeping their buffer (uncharged); heap frames are freed. */
static void release_frame(rmt_pool *pool, frame *f) {
    rmt_cache *c = f->cache;
    partition *p = &pool->part[f->tenant];
    ASSERT_RESIDENT(f);
    if (f->pinned) unpin(pool, f);
    hash_remove(c, f);
    c->nPage--;
    uncharge(pool, f->tenant, f->cap);
    if (f->pooled) {
        ring_remove(p, f);
        p->resident--;
        f->cache = NULL;
        f->ref = 0;
        f->ring_next = pool->free_list;
        pool->free_list = f;
        pool->nfree++;
    } else {
        p->unpooled--;
        pool->frame_bytes -= f->cap;
        free(f->buf);
        free(f);
    }
}

/* Give a frame's buffer back to the system (shrink). */
static void drop_buffer(rmt_pool *pool, frame *f) {
    assert(f->cache == NULL);
    pool->frame_bytes -= f->cap;
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
}

/* Recycle one of tenant t's unpinned pages (steps 2, 4, 5). */
static void evict_one(rmt_pool *pool, int t) {
    frame *f = clock_victim(&pool->part[t]);
    pool->part[t].evictions++;
    release_frame(pool, f);
}

/* Steps 2-4: find the tenant to recycle from; -2 = a free frame is there;
** -1 = nothing can be had. */
static int victim_tenant(rmt_pool *pool, int t, int createFlag) {
    partition *me = &pool->part[t];
    int v, best = -1;
    uint32_t best_excess = 0;
    if (me->max_frames != 0 && me->resident >= me->max_frames) {
        if (evictable(me)) return t;
        /* Every page of the tenant is pinned (dirty or referenced) and SQLite
        ** has nothing left to spill: createFlag 2 gets an overdraft like
        ** pcache1 gives, or VACUUM and big transactions fail. The memory
        ** quota still bounds it; the unpin path sheds the excess. */
        if (createFlag != 2) return -1;
    }
    if (pool->nfree > 0) return -2; /* a free frame: no victim needed */
    for (v = 0; v < pool->tenant_hwm; v++) {
        partition *p = &pool->part[v];
        if (p->resident > p->min_frames && evictable(p) && p->resident - p->min_frames > best_excess) {
            best = v;
            best_excess = p->resident - p->min_frames;
        }
    }
    if (best < 0 && evictable(me)) best = t;
    return best;
}

/* Step 1: createFlag 1 is refused when pinned pages crowd the cache, the
** partition or the pool. */
static int must_spill(rmt_pool *pool, rmt_cache *c) {
    partition *p = &pool->part[c->tenant];
    uint64_t cap = pool->nframes;
    if (p->max_frames != 0 && p->max_frames < cap) cap = p->max_frames;
    if (c->n90pct != 0 && c->nPinned >= c->n90pct) return 1;
    if ((uint64_t)p->pinned * 10 >= cap * 9) return 1;
    if ((uint64_t)pool->npinned * 10 >= (uint64_t)pool->nframes * 9) return 1;
    return 0;
}

/* Size a frame's buffer for cache c and charge it to c's tenant (step 6). */
static int attach_buffer(rmt_pool *pool, rmt_cache *c, frame *f) {
    if (f->cap != c->szAlloc) {
        void *buf = malloc(c->szAlloc);
        if (buf == NULL) return 0;
        pool->frame_bytes -= f->cap;
        free(f->buf);
        f->buf = buf;
        f->cap = c->szAlloc;
        pool->frame_bytes += f->cap;
    }
    if (pool->charge != NULL && !pool->charge(c->tenant, (int64_t)f->cap)) return 0;
    return 1;
}

/* A pooled frame for cache c, or NULL. */
static frame *take_pooled(rmt_pool *pool, rmt_cache *c, int createFlag) {
    frame *f;
    int v;
    if (createFlag == 1 && must_spill(pool, c)) return NULL;
    v = victim_tenant(pool, c->tenant, createFlag);
    if (v == -1) return NULL;
    if (v >= 0) evict_one(pool, v);
    assert(pool->free_list != NULL);
    f = pool->free_list;
    pool->free_list = f->ring_next;
    pool->nfree--;
    f->ring_next = NULL;
    if (!attach_buffer(pool, c, f)) {
        f->ring_next = pool->free_list;
        pool->free_list = f;
        pool->nfree++;
        return NULL;
    }
    f->pooled = 1;
    return f;
}

/* A heap frame for a bPurgeable=0 cache, or NULL. */
static frame *take_heap(rmt_pool *pool, rmt_cache *c) {
    frame *f = calloc(1, sizeof(frame));
    if (f == NULL) return NULL;
    if (!attach_buffer(pool, c, f)) {
        pool->frame_bytes -= f->cap;
        free(f->buf);
        free(f);
        return NULL;
    }
    return f;
}

/* ---- pool ------------------------------------------------------------- */

rmt_pool *rmt_pool_new(uint32_t nframes) {
    rmt_pool *pool;
    uint32_t i;
    if (nframes == 0) return NULL;
    pool = calloc(1, sizeof(rmt_pool));
    if (pool == NULL) return NULL;
    pool->frames = calloc(nframes, sizeof(frame));
    if (pool->frames == NULL) {
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->mutex, NULL);
    pool->nframes = nframes;
    /* Free list in index order: frame 0 is handed out first. */
    for (i = nframes; i-- > 0;) {
        pool->frames[i].ring_next = pool->free_list;
        pool->free_list = &pool->frames[i];
    }
    pool->nfree = nframes;
    pool->tenant_hwm = 1;
    return pool;
}

void rmt_pool_free(rmt_pool *pool) {
    uint32_t i;
    if (pool == NULL) return;
    assert(pool->caches_live == 0);
    for (i = 0; i < pool->nframes; i++) free(pool->frames[i].buf);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->frames);
    free(pool);
}

void rmt_pool_set_accounting(rmt_pool *pool, rmt_charge_fn charge, rmt_uncharge_fn uncharge) {
    lock(pool);
    pool->charge = charge;
    pool->uncharge = uncharge;
    unlock(pool);
}

static void note_tenant(rmt_pool *pool, int tenant) {
    if (tenant >= pool->tenant_hwm) pool->tenant_hwm = tenant + 1;
}

int rmt_pool_set_partition(rmt_pool *pool, int tenant, uint32_t min_frames, uint32_t max_frames) {
    partition *p;
    if (!RMT_TENANT_VALID(tenant) || (max_frames != 0 && min_frames > max_frames)) return 0;
    lock(pool);
    note_tenant(pool, tenant);
    p = &pool->part[tenant];
    p->min_frames = min_frames;
    p->max_frames = max_frames;
    while (max_frames != 0 && p->resident > max_frames && evictable(p)) evict_one(pool, tenant);
    unlock(pool);
    return 1;
}

void rmt_pool_get_stats(rmt_pool *pool, int tenant, rmt_pool_tenant_stats *out) {
    partition *p;
    memset(out, 0, sizeof(*out));
    if (!RMT_TENANT_VALID(tenant)) return;
    lock(pool);
    p = &pool->part[tenant];
    out->hits = p->hits;
    out->misses = p->misses;
    out->evictions = p->evictions;
    out->fetch_failures = p->fetch_failures;
    out->resident = p->resident;
    out->pinned = p->pinned;
    out->unpooled = p->unpooled;
    out->min_frames = p->min_frames;
    out->max_frames = p->max_frames;
    out->caches = p->caches;
    unlock(pool);
}

void rmt_pool_get_info(rmt_pool *pool, rmt_pool_info *out) {
    lock(pool);
    out->nframes = pool->nframes;
    out->nfree = pool->nfree;
    out->npinned = pool->npinned;
    out->caches_created = pool->caches_created;
    out->caches_live = pool->caches_live;
    out->frame_bytes = pool->frame_bytes;
    unlock(pool);
}

void rmt_pool_reset_counters(rmt_pool *pool, int tenant) {
    if (!RMT_TENANT_VALID(tenant)) return;
    lock(pool);
    pool->part[tenant].hits = pool->part[tenant].misses = 0;
    pool->part[tenant].evictions = pool->part[tenant].fetch_failures = 0;
    unlock(pool);
}

/* Count ring members of a partition and check their links and owner;
** *ok becomes 0 on a broken ring. */
static uint32_t ring_count(const partition *p, int t, uint32_t *pinned, int *ok) {
    uint32_t n = 0;
    const frame *f = p->hand;
    *pinned = 0;
    if (f == NULL) return 0;
    do {
        *ok &= f->pooled && f->cache != NULL && f->tenant == t && f->ring_next->ring_prev == f;
        if (f->pinned) (*pinned)++;
        n++;
        f = f->ring_next;
    } while (f != p->hand && n <= p->resident);
    return n;
}

int rmt_pool_check(rmt_pool *pool) {
    uint32_t i, nfree = 0, npinned = 0, pinned;
    int t, ok = 1;
    const frame *f;
    lock(pool);
    for (f = pool->free_list; f != NULL; f = f->ring_next) {
        ok &= f->cache == NULL;
        nfree++;
    }
    ok &= nfree == pool->nfree;
    for (i = 0; i < pool->nframes; i++) {
        f = &pool->frames[i];
        if (f->cache != NULL) {
            ok &= hash_lookup(f->cache, f->pgno) == f && f->pgno <= f->cache->iMaxKey;
            ok &= f->tenant == f->cache->tenant && f->cap == f->cache->szAlloc;
            npinned += f->pinned;
        }
    }
    ok &= npinned == pool->npinned;
    for (t = 0; t < RMT_MAX_TENANTS; t++) {
        const partition *p = &pool->part[t];
        ok &= ring_count(p, t, &pinned, &ok) == p->resident && pinned == p->pinned;
        ok &= p->max_frames == 0 || p->min_frames <= p->max_frames;
    }
    unlock(pool);
    assert(ok);
    return ok;
}

/* ---- caches ----------------------------------------------------------- */

rmt_cache *rmt_cache_create(rmt_pool *pool, int tenant, int szPage, int szExtra, int purgeable) {
    rmt_cache *c;
    assert(szPage >= 512 && szPage <= 65536 && (szPage & (szPage - 1)) == 0);
    assert(szExtra >= 0 && szExtra < 300);
    c = calloc(1, sizeof(rmt_cache));
    if (c == NULL) return NULL;
    c->apHash = calloc(INITIAL_HASH, sizeof(frame *));
    if (c->apHash == NULL) {
        free(c);
        return NULL;
    }
    c->nHash = INITIAL_HASH;
    c->pool = pool;
    c->tenant = RMT_TENANT_VALID(tenant) ? tenant : RMT_SYSTEM_TENANT;
    c->szPage = szPage;
    c->szExtra = szExtra;
    c->szAlloc = ((size_t)szPage + (size_t)szExtra + 7) & ~(size_t)7;
    c->purgeable = purgeable != 0;
    lock(pool);
    note_tenant(pool, c->tenant);
    pool->caches_created++;
    pool->caches_live++;
    pool->part[c->tenant].caches++;
    unlock(pool);
    return c;
}

void rmt_cache_set_size(rmt_cache *c, int nMax) {
    lock(c->pool);
    c->nMax = nMax > 0 ? (unsigned)nMax : 0;
    c->n90pct = c->nMax * 9 / 10;
    unlock(c->pool);
}

int rmt_cache_pagecount(rmt_cache *c) {
    int n;
    lock(c->pool);
    n = (int)c->nPage;
    unlock(c->pool);
    return n;
}

sqlite3_pcache_page *rmt_cache_fetch_ex(rmt_cache *c, unsigned key, int createFlag, int *outcome) {
    rmt_pool *pool = c->pool;
    partition *p = &pool->part[c->tenant];
    frame *f;
    int result = RMT_FETCH_NULL;
    lock(pool);
    f = hash_lookup(c, key);
    if (f != NULL) {
        /* A hit, even for createFlag 0, pins (pcache.c relies on it). */
        if (!f->pinned) pin(pool, f);
        f->ref = 1;
        p->hits++;
        result = RMT_FETCH_HIT;
    } else if (createFlag != 0) {
        f = c->purgeable ? take_pooled(pool, c, createFlag) : take_heap(pool, c);
        if (f != NULL) {
            f->cache = c;
            f->pgno = key;
            f->tenant = c->tenant;
            f->ref = 0;
            f->pinned = 0;
            f->page.pBuf = f->buf;
            f->page.pExtra = (char *)f->buf + c->szPage;
            memset(f->page.pExtra, 0, 8);
            hash_insert(c, f);
            c->nPage++;
            if (key > c->iMaxKey) c->iMaxKey = key;
            if (f->pooled) {
                ring_insert(p, f);
                p->resident++;
            } else {
                p->unpooled++;
            }
            pin(pool, f);
            p->misses++;
            if (c->nPage >= c->nHash) hash_grow(c);
            result = RMT_FETCH_CREATED;
        } else if (createFlag == 2) {
            p->fetch_failures++;
        }
    }
    ASSERT_PARTITION(p);
    unlock(pool);
    if (outcome != NULL) *outcome = result;
    return f != NULL ? &f->page : NULL;
}

void rmt_cache_unpin(rmt_cache *c, sqlite3_pcache_page *page, int discard) {
    rmt_pool *pool = c->pool;
    frame *f = FRAME_OF(page);
    partition *p = &pool->part[c->tenant];
    lock(pool);
    assert(f->cache == c && f->pinned);
    if (discard) {
        release_frame(pool, f);
    } else {
        unpin(pool, f);
        /* A partition lowered live below its residency sheds pages as they
        ** become unpinned. */
        if (f->pooled && p->max_frames != 0 && p->resident > p->max_frames) {
            p->evictions++;
            release_frame(pool, f);
        }
    }
    unlock(pool);
}

void rmt_cache_rekey(rmt_cache *c, sqlite3_pcache_page *page, unsigned oldKey, unsigned newKey) {
    rmt_pool *pool = c->pool;
    frame *f = FRAME_OF(page), *other;
    lock(pool);
    assert(f->cache == c && f->pgno == oldKey);
    (void)oldKey;
    other = hash_lookup(c, newKey);
    if (other != NULL && other != f) release_frame(pool, other);
    hash_remove(c, f);
    f->pgno = newKey;
    hash_insert(c, f);
    if (newKey > c->iMaxKey) c->iMaxKey = newKey;
    unlock(pool);
}

/* Drop every page with key >= limit, pinned or not. */
static void truncate_locked(rmt_cache *c, unsigned limit) {
    unsigned i;
    if (limit > c->iMaxKey) return;  /* the common case: O(1) */
    if (c->iMaxKey - limit < c->nHash) {
        /* Few candidate keys: look each up. */
        unsigned key = limit;
        for (;;) {
            frame *f = hash_lookup(c, key);
            if (f != NULL) release_frame(c->pool, f);
            if (key == c->iMaxKey) break;
            key++;
        }
    } else {
        for (i = 0; i < c->nHash; i++) {
            frame *f = c->apHash[i];
            while (f != NULL) {
                frame *next = f->hash_next;
                if (f->pgno >= limit) release_frame(c->pool, f);
                f = next;
            }
        }
    }
    c->iMaxKey = limit > 0 ? limit - 1 : 0;
}

void rmt_cache_truncate(rmt_cache *c, unsigned limit) {
    lock(c->pool);
    truncate_locked(c, limit);
    unlock(c->pool);
}

/* Memory pressure: give back this cache's unpinned pooled pages and their
** buffers. Heap frames of bPurgeable=0 caches hold data and stay. */
void rmt_cache_shrink(rmt_cache *c) {
    rmt_pool *pool = c->pool;
    unsigned i;
    lock(pool);
    for (i = 0; i < c->nHash; i++) {
        frame *f = c->apHash[i];
        while (f != NULL) {
            frame *next = f->hash_next;
            if (f->pooled && !f->pinned) {
                release_frame(pool, f);
                /* release_frame pushed it on the free list */
                drop_buffer(pool, f);
            }
            f = next;
        }
    }
    unlock(pool);
}

void rmt_cache_destroy(rmt_cache *c) {
    rmt_pool *pool = c->pool;
    lock(pool);
    truncate_locked(c, 0);
    assert(c->nPage == 0 && c->nPinned == 0);
    pool->caches_live--;
    pool->part[c->tenant].caches--;
    unlock(pool);
    free(c->apHash);
    free(c);
}

sqlite3_pcache_page *rmt_cache_peek(rmt_cache *c, unsigned key) {
    frame *f;
    lock(c->pool);
    f = hash_lookup(c, key);
    unlock(c->pool);
    return f != NULL ? &f->page : NULL;
}

int rmt_cache_is_pinned(rmt_cache *c, unsigned key) {
    frame *f;
    int pinned;
    lock(c->pool);
    f = hash_lookup(c, key);
    pinned = f == NULL ? -1 : f->pinned;
    unlock(c->pool);
    return pinned;
}

/* ---- sqlite3_pcache_methods2 ----------------------------------------- */

static rmt_pool *installed_pool;  /* the pool xCreate draws from */
static int init_refs;             /* xInit minus xShutdown calls */

static int pc_init(void *arg) {
    (void)arg;
    __atomic_add_fetch(&init_refs, 1, __ATOMIC_RELAXED);
    return SQLITE_OK;
}

static void pc_shutdown(void *arg) {
    (void)arg;
    __atomic_sub_fetch(&init_refs, 1, __ATOMIC_RELAXED);
}

static sqlite3_pcache *pc_create(int szPage, int szExtra, int bPurgeable) {
    return (sqlite3_pcache *)rmt_cache_create(installed_pool, rmt_tenant_current(), szPage, szExtra, bPurgeable);
}

static void pc_cachesize(sqlite3_pcache *c, int nMax) {
    rmt_cache_set_size((rmt_cache *)c, nMax);
}

static int pc_pagecount(sqlite3_pcache *c) {
    return rmt_cache_pagecount((rmt_cache *)c);
}

static sqlite3_pcache_page *pc_fetch(sqlite3_pcache *c, unsigned key, int createFlag) {
    return rmt_cache_fetch_ex((rmt_cache *)c, key, createFlag, NULL);
}

static void pc_unpin(sqlite3_pcache *c, sqlite3_pcache_page *page, int discard) {
    rmt_cache_unpin((rmt_cache *)c, page, discard);
}

static void pc_rekey(sqlite3_pcache *c, sqlite3_pcache_page *page, unsigned oldKey, unsigned newKey) {
    rmt_cache_rekey((rmt_cache *)c, page, oldKey, newKey);
}

static void pc_truncate(sqlite3_pcache *c, unsigned limit) {
    rmt_cache_truncate((rmt_cache *)c, limit);
}

static void pc_destroy(sqlite3_pcache *c) {
    rmt_cache_destroy((rmt_cache *)c);
}

static void pc_shrink(sqlite3_pcache *c) {
    rmt_cache_shrink((rmt_cache *)c);
}

static sqlite3_pcache_methods2 methods = {
    1, NULL, pc_init, pc_shutdown, pc_create, pc_cachesize, pc_pagecount,
    pc_fetch, pc_unpin, pc_rekey, pc_truncate, pc_destroy, pc_shrink,
};

const sqlite3_pcache_methods2 *rmt_bufpool_methods(rmt_pool *pool) {
    installed_pool = pool;
    methods.pArg = pool;
    return &methods;
}

rmt_pool *rmt_bufpool_installed(void) {
    return installed_pool;
}
