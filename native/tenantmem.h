/*
** tenantmem.h: per-tenant allocator accounting for SQLite.
**
** Installed with sqlite3_config(SQLITE_CONFIG_MALLOC, rmt_tenantmem_methods())
** before SQLite's first initialization (see tenantmem.c for the design).
*/
#ifndef RUSTYMT_TENANTMEM_H
#define RUSTYMT_TENANTMEM_H

#include <stdint.h>

#include <sqlite3.h>

#include "tenant.h"

/* Bytes of bookkeeping in front of every block handed to SQLite. */
#define RMT_MEM_HEADER_BYTES 8

/* One tenant's memory figures; names match the API's memory isolation fields. */
typedef struct rmt_mem_stats {
    int64_t allocated_bytes;    /* live bytes: SQLite blocks + page-pool frames */
    int64_t quota_bytes;        /* hard limit on allocated_bytes; 0 = unlimited */
    int64_t peak_usage_bytes;   /* highest allocated_bytes since the last reset */
    uint64_t oom_count;         /* requests refused because of the quota */
    uint64_t allocation_count;  /* successful xMalloc calls (realloc moves bytes, not blocks) */
    uint64_t deallocation_count;/* xFree calls */
} rmt_mem_stats;

/* The sqlite3_mem_methods to hand to SQLITE_CONFIG_MALLOC. */
const sqlite3_mem_methods *rmt_tenantmem_methods(void);

/* The methods themselves, exported for the C tests and the Python test API.
** They charge the calling thread's current tenant (tenant.h); free and
** realloc charge the block's owner. */
void *rmt_mem_malloc(int nbytes);
void rmt_mem_free(void *p);
void *rmt_mem_realloc(void *p, int nbytes);
int rmt_mem_size(void *p);
int rmt_mem_roundup(int nbytes);
/* The tenant a live block is charged to. */
int rmt_mem_owner(void *p);

/* Charge memory that is not allocated through the hook (page-pool frames).
** Returns 1 on success, 0 when the tenant's quota would be exceeded (the
** refusal is counted in oom_count and nothing is charged). */
int rmt_mem_charge(int tenant, int64_t nbytes);
/* Give back bytes charged with rmt_mem_charge. */
void rmt_mem_uncharge(int tenant, int64_t nbytes);

/* Set a tenant's hard quota in bytes (0 = unlimited; slot 0 stays unlimited).
** Lowering it below the current usage refuses further growth only. */
int rmt_mem_set_quota(int tenant, int64_t quota_bytes);

/* Copy one tenant's figures. */
void rmt_mem_get_stats(int tenant, rmt_mem_stats *out);

/* Restart a slot's history: peak = current, counts = 0 (quota kept). Used when
** a slot is given to a new tenant and by tests. */
void rmt_mem_reset_stats(int tenant);

#endif
