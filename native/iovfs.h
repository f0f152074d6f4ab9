/*
** iovfs.h: a sqlite3_vfs shim that meters and throttles datafile IO per tenant.
**
** Registered as "rustymt" over the default (unix) VFS; a connection selects
** it with sqlite3_open_v2(..., "rustymt"). Every file it opens (database,
** journal, WAL, temp file) is tagged with the thread's current tenant at xOpen
** (tenant.h: the binding sets it before every call into SQLite). Each xRead /
** xWrite counts one operation and its bytes for that tenant and passes two
** token buckets (IOPS and bytes/s); when a bucket is empty the IO waits
** (with the thread's CPU slot freed) and the wait is counted in throttled_ns.
** See iovfs.c.
*/
#ifndef RUSTYMT_IOVFS_H
#define RUSTYMT_IOVFS_H

#include <stdint.h>

#include "tenant.h"

#define RMT_IOVFS_NAME "rustymt"

/* Per-tenant IO statistics and limits. */
typedef struct rmt_iovfs_stats {
  int64_t reads;           /* xRead calls */
  int64_t writes;          /* xWrite calls */
  int64_t read_bytes;      /* bytes asked for by xRead */
  int64_t write_bytes;     /* bytes written by xWrite */
  int64_t throttled_ns;    /* time IO waited for a token bucket */
  int64_t iops_limit;      /* read+write operations per second; 0 = none */
  int64_t bytes_limit;     /* read+write bytes per second; 0 = none */
} rmt_iovfs_stats;

/* A token bucket in GCRA form: one timestamp, no refill loop. */
typedef struct rmt_iobucket {
  int64_t rate;            /* units per second; 0 = unlimited */
  int64_t burst_ns;        /* credit a quiet tenant may build up, in ns of rate */
  int64_t tat_ns;          /* theoretical arrival time of the next unit */
} rmt_iobucket;

/* Register the "rustymt" VFS over the default VFS (idempotent). This calls
** sqlite3_initialize(): only after the engine's sqlite3_config hooks are set.
** Returns an SQLite result code. */
int rmt_iovfs_register(void);

/* Set a tenant's limits live (0 = unlimited). Burst: 50 ms of the rate, at
** least one operation / one 64 KiB page. Returns 0, or -1 on bad input. */
int rmt_iovfs_set_limits(int tenant, int64_t iops, int64_t bytes_per_sec);
int rmt_iovfs_get_stats(int tenant, rmt_iovfs_stats *out);
/* Zero a tenant's counters (limits kept). */
int rmt_iovfs_reset_stats(int tenant);

/* Count one read or write of `amount` bytes for `tenant` at time `now` (ns)
** and reserve its tokens; returns the wait it owes (0 when within limits),
** already counted in throttled_ns. The VFS calls it and then sleeps; tests
** call it on explicit time to compare with the Python twin. */
int64_t rmt_iovfs_account(int tenant, int is_write, int amount, int64_t now);

/* Reserve `cost` units at time now_ns; returns how long the caller must wait
** (0 when within rate + burst). Exposed for tests against the twin. */
int64_t rmt_iobucket_admit(rmt_iobucket *b, int64_t cost, int64_t now_ns);
/* (Re)configure a bucket: rate per second and burst in units. */
void rmt_iobucket_configure(rmt_iobucket *b, int64_t rate, int64_t burst_units);

#endif
