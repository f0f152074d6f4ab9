/* exechooks: the scheduler's acquire/release bracket statement execution, the
** progress handler asks should_yield and yields, the busy handler gives the
** slot back while it sleeps on a lock. */
#include <assert.h>
#include <stdio.h>
#include <unistd.h>

#include "exechooks.h"

static int acquired, released, asked, held, last_tenant;

static void on_acquire(int tenant) {
    assert(held == 0);  /* never acquired twice by one connection */
    held = 1;
    acquired++;
    last_tenant = tenant;
}

static void on_release(int tenant) {
    assert(held == 1 && tenant == last_tenant);
    held = 0;
    released++;
}

static int on_should_yield(int tenant) {
    (void)tenant;
    assert(held == 1);  /* the progress handler runs only inside a step */
    return ++asked % 4 == 0;
}

int main(void) {
    rmt_exec_hooks hooks = {on_acquire, on_release, on_should_yield, 100};
    rmt_exec_ctx ctx = {9, 0, 0}, other = {9, 0, 0};
    sqlite3 *db, *db2;
    sqlite3_stmt *stmt;
    char path[64];
    int rc;
    rmt_exec_set_hooks(&hooks);
    snprintf(path, sizeof path, "/tmp/rustymt-test-exechooks-%d.db", (int)getpid());
    remove(path);
    assert(sqlite3_open(path, &db) == SQLITE_OK);
    rmt_exec_attach(db, &ctx);
    assert(sqlite3_exec(db, "CREATE TABLE t(x)", 0, 0, 0) == SQLITE_OK);
    assert(sqlite3_prepare_v2(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 20000) SELECT sum(x) FROM c", -1, &stmt, 0) == SQLITE_OK);
    rmt_exec_enter(&ctx);
    rmt_exec_enter(&ctx);  /* nested: still one acquire */
    assert(rmt_tenant_current() == 9 && acquired == 1);
    assert(sqlite3_step(stmt) == SQLITE_ROW);
    rmt_exec_leave(&ctx);
    assert(held == 1);
    rmt_exec_leave(&ctx);
    assert(held == 0 && asked > 10);
    assert(acquired == released && acquired == 1 + asked / 4);  /* each yield: release + acquire */
    sqlite3_finalize(stmt);
    /* Busy: another connection holds the write lock; while the busy handler
    ** sleeps the slot is released, and SQLITE_BUSY comes after the timeout. */
    assert(sqlite3_open(path, &db2) == SQLITE_OK);
    rmt_exec_attach(db2, &other);
    assert(sqlite3_exec(db2, "BEGIN IMMEDIATE", 0, 0, 0) == SQLITE_OK);
    ctx.busy_timeout_ms = 30;
    acquired = released = 0;
    rmt_exec_enter(&ctx);
    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", 0, 0, 0);
    rmt_exec_leave(&ctx);
    assert(rc == SQLITE_BUSY);
    assert(acquired > 1 && acquired == released);  /* released around each sleep */
    ctx.busy_timeout_ms = 0;
    acquired = released = 0;
    assert(sqlite3_exec(db, "BEGIN IMMEDIATE", 0, 0, 0) == SQLITE_BUSY && acquired == 0);
    sqlite3_close(db2);
    sqlite3_close(db);
    remove(path);
    rmt_exec_set_hooks(NULL);
    printf("exechooks ok\n");
    return 0;
}
