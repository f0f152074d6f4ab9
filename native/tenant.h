/*
** tenant.h: tenant slots and the thread-local current tenant.
**
** Native code knows tenants only as small integer slots; Python maps each
** tenant_id to a slot. Slot 0 is the system (no quota, no partition limits).
**
** SQLite's hooks get no connection pointer (sqlite3_mem_methods.xMalloc and
** sqlite3_pcache_methods2.xCreate are called with sizes only), so the binding
** records "which tenant is this thread working for" in a thread-local before
** every call into SQLite (open, prepare, step, finalize, close, backup). The
** allocator charges that tenant; the page cache tags new caches with it.
*/
#ifndef RUSTYMT_TENANT_H
#define RUSTYMT_TENANT_H

/* Number of tenant slots every native unit sizes its tables with. */
#define RMT_MAX_TENANTS 256

/* Slot 0: the system; unlimited, never partitioned. */
#define RMT_SYSTEM_TENANT 0

/* True when t is a usable slot number. */
#define RMT_TENANT_VALID(t) ((t) >= 0 && (t) < RMT_MAX_TENANTS)

/* Set the calling thread's current tenant; out-of-range slots become 0. */
void rmt_tenant_set_current(int tenant);

/* The calling thread's current tenant (0 until set). */
int rmt_tenant_current(void);

#endif
