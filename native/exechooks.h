/*
** exechooks.h: where statement execution meets the CPU scheduler.
**
** The binding (rustymt/_native/_core.pyx) runs SQLite with the GIL released
** between rmt_exec_enter() and rmt_exec_leave() around every batch of
** sqlite3_step() calls (a step(), a fetchmany(), a backup step). Those two calls
** forward to the scheduler's acquire/release hooks, so a statement holds a CPU
** token exactly while SQLite runs for it, and never while Python converts rows
** or a client reads them. Each connection also gets:
**   - a progress handler (every progress_ops VM instructions) that asks the
**     scheduler's should_yield(); on yes it releases and re-acquires, so a long
**     statement gives its slot back after its quantum;
**   - a busy handler that releases the token while it sleeps on a lock (a
**     tenant waiting for a token while holding a RESERVED lock would invert
**     priorities), with SQLite's default back-off and the connection's busy
**     timeout.
** With no hooks set (the default), enter/leave are a NULL check and no
** progress handler is installed. The scheduler (native/wfq.c, branch wfqio)
** installs its functions with rmt_exec_set_hooks() before connections open.
*/
#ifndef RUSTYMT_EXECHOOKS_H
#define RUSTYMT_EXECHOOKS_H

#include <sqlite3.h>

#include "tenant.h"

/* The scheduler's entry points; any may be NULL. */
typedef struct rmt_exec_hooks {
    void (*acquire)(int tenant);      /* block until the tenant may run */
    void (*release)(int tenant);      /* give the slot back */
    int (*should_yield)(int tenant);  /* quantum used up and others waiting? */
    int progress_ops;                 /* VM instructions between should_yield calls */
} rmt_exec_hooks;

/* Per-connection execution state; lives as long as the sqlite3 handle. */
typedef struct rmt_exec_ctx {
    int tenant;           /* slot the connection works for */
    int depth;            /* nesting of enter() on this connection; token held while > 0 */
    int busy_timeout_ms;  /* total wait on SQLITE_BUSY before giving up; 0 = none */
} rmt_exec_ctx;

/* Install the scheduler's hooks (copied); NULL restores the defaults. */
void rmt_exec_set_hooks(const rmt_exec_hooks *hooks);
/* The current hooks (a copy). */
void rmt_exec_get_hooks(rmt_exec_hooks *out);

/* Make the calling thread work for ctx->tenant and take the CPU slot if this
** is the outermost enter on the connection. */
void rmt_exec_enter(rmt_exec_ctx *ctx);
/* Give the slot back when the outermost enter ends. */
void rmt_exec_leave(rmt_exec_ctx *ctx);

/* Register the busy handler and, when hooks ask for it, the progress handler
** on a freshly opened connection. */
void rmt_exec_attach(sqlite3 *db, rmt_exec_ctx *ctx);

#endif
