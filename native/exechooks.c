/*
** exechooks.c: the scheduler integration points (see exechooks.h).
*/
#include <assert.h>
#include <stddef.h>

#include "exechooks.h"

static rmt_exec_hooks hooks;  /* zero: no scheduler */

void rmt_exec_set_hooks(const rmt_exec_hooks *h) {
    static const rmt_exec_hooks none;
    hooks = h != NULL ? *h : none;
}

void rmt_exec_get_hooks(rmt_exec_hooks *out) {
    *out = hooks;
}

void rmt_exec_enter(rmt_exec_ctx *ctx) {
    rmt_tenant_set_current(ctx->tenant);
    if (ctx->depth++ == 0 && hooks.acquire != NULL) hooks.acquire(ctx->tenant);
}

void rmt_exec_leave(rmt_exec_ctx *ctx) {
    assert(ctx->depth > 0);
    if (--ctx->depth == 0 && hooks.release != NULL) hooks.release(ctx->tenant);
}

/* Called by SQLite every progress_ops VM instructions while a statement runs
** on this connection (token held). Returning 0 lets the statement continue. */
static int on_progress(void *arg) {
    rmt_exec_ctx *ctx = arg;
    if (hooks.should_yield != NULL && hooks.should_yield(ctx->tenant)) {
        if (hooks.release != NULL) hooks.release(ctx->tenant);
        if (hooks.acquire != NULL) hooks.acquire(ctx->tenant);
    }
    return 0;
}

/* SQLite's default back-off (sqliteDefaultBusyCallback), but with the CPU
** slot released while sleeping. */
static int on_busy(void *arg, int count) {
    static const unsigned char delays[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};
    static const unsigned char totals[] = {0, 1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228};
    enum { NDELAY = sizeof(delays) / sizeof(delays[0]) };
    rmt_exec_ctx *ctx = arg;
    int delay, prior;
    if (count < NDELAY) {
        delay = delays[count];
        prior = totals[count];
    } else {
        delay = delays[NDELAY - 1];
        prior = totals[NDELAY - 1] + delay * (count - (NDELAY - 1));
    }
    if (prior + delay > ctx->busy_timeout_ms) {
        delay = ctx->busy_timeout_ms - prior;
        if (delay <= 0) return 0;
    }
    if (ctx->depth > 0 && hooks.release != NULL) hooks.release(ctx->tenant);
    sqlite3_sleep(delay);
    if (ctx->depth > 0 && hooks.acquire != NULL) hooks.acquire(ctx->tenant);
    return 1;
}

void rmt_exec_attach(sqlite3 *db, rmt_exec_ctx *ctx) {
    sqlite3_busy_handler(db, on_busy, ctx);
    if (hooks.should_yield != NULL && hooks.progress_ops > 0) {
        sqlite3_progress_handler(db, hooks.progress_ops, on_progress, ctx);
    }
}
