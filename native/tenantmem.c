/*
** tenantmem.c: SQLite's allocator, charging every byte to a tenant.
**
** SQLite asks for memory through sqlite3_mem_methods. This unit wraps the
** system malloc and puts an 8-byte header in front of every block:
**
**     malloc'd block:  [ uint32 size | int32 tenant ][ SQLite's bytes ... ]
**                                                   ^ pointer SQLite sees
**
** malloc returns 16-byte aligned memory, so SQLite's pointer is 8-byte aligned,
** which is all SQLite needs. The header answers the two questions SQLite's
** interface cannot: how big is this block (xSize) and whom was it charged to.
** Free and realloc charge the block's OWNER, never the calling thread's current
** tenant, because a block allocated while working for tenant A may be freed by
** a thread working for tenant B (shared schema, a cache torn down later).
**
** Counters. Each tenant has a line of counters aligned to its own cache line so
** two threads working for different tenants never share a line. They are
** updated with relaxed atomics: SQLite's own global memory statistics take a
** mutex on every call, so the binding turns them off (SQLITE_CONFIG_MEMSTATUS
** 0) and these counters replace them.
**
** Quota. A tenant with a quota is refused an allocation that would take its
** allocated_bytes above the quota: the method returns NULL, which SQLite turns
** into SQLITE_NOMEM for the statement that asked (inside BEGIN...COMMIT SQLite
** rolls back the whole transaction). The check reserves first and backs out on
** failure, so concurrent allocations of one tenant can never overshoot.
**
** Page-pool frames (bufpool.c) are not allocated through SQLite, but they are
** memory the tenant holds: the pool charges them with rmt_mem_charge().
*/
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "tenantmem.h"

/* The header in front of every block. Exactly 8 bytes, keeping alignment. */
typedef struct mem_header {
    uint32_t size;   /* bytes SQLite asked for (after xRoundup) */
    int32_t tenant;  /* slot charged for this block */
} mem_header;

/* One tenant's counters, alone on a 64-byte cache line. */
typedef struct __attribute__((aligned(64))) mem_line {
    int64_t allocated;     /* live bytes charged (blocks + frames) */
    int64_t quota;         /* 0 = unlimited */
    int64_t peak;          /* high-water mark of allocated */
    uint64_t ooms;         /* refusals */
    uint64_t allocations;  /* successful allocations */
    uint64_t deallocations;/* frees */
} mem_line;

static mem_line lines[RMT_MAX_TENANTS];

/* Invariants checked in debug builds. */
#define HEADER_OF(p) ((mem_header *)(p) - 1)
#define ASSERT_HEADER(h) assert(RMT_TENANT_VALID((h)->tenant))

static int clamp_tenant(int tenant) {
    return RMT_TENANT_VALID(tenant) ? tenant : RMT_SYSTEM_TENANT;
}

/* Raise peak to at least value (lock-free). */
static void note_peak(mem_line *line, int64_t value) {
    int64_t seen = __atomic_load_n(&line->peak, __ATOMIC_RELAXED);
    while (value > seen &&
           !__atomic_compare_exchange_n(&line->peak, &seen, value, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

/*
** Reserve nbytes for tenant. Steps:
**   1. add the bytes (so concurrent reservations see each other);
**   2. if a quota is set and the new total exceeds it, take them back, count
**      the refusal and fail;
**   3. otherwise move the peak.
*/
static int reserve(int tenant, int64_t nbytes) {
    mem_line *line = &lines[tenant];
    int64_t now = __atomic_add_fetch(&line->allocated, nbytes, __ATOMIC_RELAXED);
    int64_t quota = __atomic_load_n(&line->quota, __ATOMIC_RELAXED);
    if (quota > 0 && nbytes > 0 && now > quota) {
        __atomic_sub_fetch(&line->allocated, nbytes, __ATOMIC_RELAXED);
        __atomic_add_fetch(&line->ooms, 1, __ATOMIC_RELAXED);
        return 0;
    }
    note_peak(line, now);
    return 1;
}

static void release(int tenant, int64_t nbytes) {
    int64_t now = __atomic_sub_fetch(&lines[tenant].allocated, nbytes, __ATOMIC_RELAXED);
    (void)now;
    assert(now >= 0);
}

void *rmt_mem_malloc(int nbytes) {
    int tenant = rmt_tenant_current();
    mem_header *h;
    if (nbytes <= 0) return NULL;
    if (!reserve(tenant, nbytes)) return NULL;
    h = malloc(sizeof(mem_header) + (size_t)nbytes);
    if (h == NULL) {
        release(tenant, nbytes);
        return NULL;
    }
    h->size = (uint32_t)nbytes;
    h->tenant = tenant;
    __atomic_add_fetch(&lines[tenant].allocations, 1, __ATOMIC_RELAXED);
    return h + 1;
}

void rmt_mem_free(void *p) {
    mem_header *h;
    if (p == NULL) return;
    h = HEADER_OF(p);
    ASSERT_HEADER(h);
    release(h->tenant, h->size);
    __atomic_add_fetch(&lines[h->tenant].deallocations, 1, __ATOMIC_RELAXED);
    free(h);
}

/* Growth is charged (and may be refused) to the owner; shrinking never fails. */
void *rmt_mem_realloc(void *p, int nbytes) {
    mem_header *h, *grown;
    int tenant;
    int64_t delta;
    if (p == NULL) return rmt_mem_malloc(nbytes);
    if (nbytes <= 0) return NULL;
    h = HEADER_OF(p);
    ASSERT_HEADER(h);
    tenant = h->tenant;
    delta = (int64_t)nbytes - (int64_t)h->size;
    if (delta > 0 && !reserve(tenant, delta)) return NULL;
    grown = realloc(h, sizeof(mem_header) + (size_t)nbytes);
    if (grown == NULL) {
        if (delta > 0) release(tenant, delta);
        return NULL;
    }
    if (delta < 0) release(tenant, -delta);
    grown->size = (uint32_t)nbytes;
    return grown + 1;
}

int rmt_mem_size(void *p) {
    if (p == NULL) return 0;
    ASSERT_HEADER(HEADER_OF(p));
    return (int)HEADER_OF(p)->size;
}

int rmt_mem_owner(void *p) {
    return p == NULL ? RMT_SYSTEM_TENANT : HEADER_OF(p)->tenant;
}

/* SQLite's own allocator rounds to 8; so do we, keeping xSize exact. */
int rmt_mem_roundup(int nbytes) {
    return (nbytes + 7) & ~7;
}

static int mem_init(void *app) {
    (void)app;
    return SQLITE_OK;
}

static void mem_shutdown(void *app) {
    (void)app;
}

static const sqlite3_mem_methods methods = {
    rmt_mem_malloc, rmt_mem_free, rmt_mem_realloc, rmt_mem_size,
    rmt_mem_roundup, mem_init, mem_shutdown, NULL,
};

const sqlite3_mem_methods *rmt_tenantmem_methods(void) {
    return &methods;
}

int rmt_mem_charge(int tenant, int64_t nbytes) {
    assert(nbytes >= 0);
    return reserve(clamp_tenant(tenant), nbytes);
}

void rmt_mem_uncharge(int tenant, int64_t nbytes) {
    assert(nbytes >= 0);
    release(clamp_tenant(tenant), nbytes);
}

int rmt_mem_set_quota(int tenant, int64_t quota_bytes) {
    if (!RMT_TENANT_VALID(tenant) || quota_bytes < 0) return 0;
    if (tenant == RMT_SYSTEM_TENANT && quota_bytes != 0) return 0;
    __atomic_store_n(&lines[tenant].quota, quota_bytes, __ATOMIC_RELAXED);
    return 1;
}

void rmt_mem_get_stats(int tenant, rmt_mem_stats *out) {
    mem_line *line = &lines[clamp_tenant(tenant)];
    out->allocated_bytes = __atomic_load_n(&line->allocated, __ATOMIC_RELAXED);
    out->quota_bytes = __atomic_load_n(&line->quota, __ATOMIC_RELAXED);
    out->peak_usage_bytes = __atomic_load_n(&line->peak, __ATOMIC_RELAXED);
    out->oom_count = __atomic_load_n(&line->ooms, __ATOMIC_RELAXED);
    out->allocation_count = __atomic_load_n(&line->allocations, __ATOMIC_RELAXED);
    out->deallocation_count = __atomic_load_n(&line->deallocations, __ATOMIC_RELAXED);
}

void rmt_mem_reset_stats(int tenant) {
    mem_line *line = &lines[clamp_tenant(tenant)];
    __atomic_store_n(&line->peak, __atomic_load_n(&line->allocated, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    __atomic_store_n(&line->ooms, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&line->allocations, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&line->deallocations, 0, __ATOMIC_RELAXED);
}
