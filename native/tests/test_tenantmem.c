/* tenantmem: headers, owner charging, quotas, peaks and concurrent counters. */
#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tenantmem.h"

static rmt_mem_stats stats(int t) {
    rmt_mem_stats s;
    rmt_mem_get_stats(t, &s);
    return s;
}

static void test_header_and_owner(void) {
    void *p, *q;
    rmt_tenant_set_current(3);
    p = rmt_mem_malloc(100);
    assert(p != NULL && ((uintptr_t)p % 8) == 0);
    assert(rmt_mem_size(p) == 100 && rmt_mem_owner(p) == 3);
    memset(p, 0xab, 100);
    assert(stats(3).allocated_bytes == 100 && stats(3).allocation_count == 1);
    /* Freed by a thread working for another tenant: the owner is credited. */
    rmt_tenant_set_current(4);
    q = rmt_mem_realloc(p, 300);
    assert(q != NULL && rmt_mem_owner(q) == 3 && rmt_mem_size(q) == 300);
    assert(((unsigned char *)q)[99] == 0xab);
    assert(stats(3).allocated_bytes == 300 && stats(4).allocated_bytes == 0);
    q = rmt_mem_realloc(q, 40);
    assert(stats(3).allocated_bytes == 40 && stats(3).peak_usage_bytes == 300);
    rmt_mem_free(q);
    assert(stats(3).allocated_bytes == 0 && stats(3).deallocation_count == 1);
    assert(rmt_mem_malloc(0) == NULL && rmt_mem_roundup(13) == 16);
    rmt_mem_free(NULL);
}

static void test_quota(void) {
    void *a, *b, *c;
    rmt_tenant_set_current(5);
    assert(rmt_mem_set_quota(5, 1000));
    assert(!rmt_mem_set_quota(0, 1000));  /* the system is never limited */
    a = rmt_mem_malloc(600);
    assert(a != NULL);
    b = rmt_mem_malloc(600);
    assert(b == NULL && stats(5).oom_count == 1 && stats(5).allocated_bytes == 600);
    assert(rmt_mem_realloc(a, 1200) == NULL && stats(5).oom_count == 2);
    assert(rmt_mem_size(a) == 600);  /* a failed realloc leaves the block alone */
    assert(!rmt_mem_charge(5, 500) && rmt_mem_charge(5, 400));
    c = rmt_mem_malloc(1);
    assert(c == NULL);
    rmt_mem_uncharge(5, 400);
    rmt_mem_free(a);
    assert(stats(5).allocated_bytes == 0 && stats(5).oom_count == 4);
    rmt_mem_reset_stats(5);
    assert(stats(5).oom_count == 0 && stats(5).peak_usage_bytes == 0 && stats(5).quota_bytes == 1000);
    rmt_mem_set_quota(5, 0);
}

enum { THREADS = 4, ROUNDS = 20000 };

static void *churn(void *arg) {
    int t = (int)(intptr_t)arg, i;
    void *keep[16] = {0};
    rmt_tenant_set_current(10 + t % 2);
    for (i = 0; i < ROUNDS; i++) {
        int k = i % 16;
        if (keep[k] != NULL) rmt_mem_free(keep[k]);
        keep[k] = (i % 3 == 0) ? rmt_mem_realloc(rmt_mem_malloc(8 + i % 200), 16 + i % 500) : rmt_mem_malloc(8 + i % 300);
    }
    for (i = 0; i < 16; i++) rmt_mem_free(keep[i]);
    return NULL;
}

static void test_threads(void) {
    pthread_t th[THREADS];
    int i;
    for (i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, churn, (void *)(intptr_t)i);
    for (i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    assert(stats(10).allocated_bytes == 0 && stats(11).allocated_bytes == 0);
    assert(stats(10).allocation_count == stats(10).deallocation_count);
    assert(stats(10).allocation_count == 2 * ROUNDS);
}

/* Installed into SQLite: a statement over quota fails with SQLITE_NOMEM and
** the connection keeps working; closing returns the tenant to zero. */
static void test_sqlite_quota(void) {
    sqlite3 *db;
    int rc;
    assert(sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK);
    assert(sqlite3_config(SQLITE_CONFIG_MALLOC, rmt_tenantmem_methods()) == SQLITE_OK);
    assert(sqlite3_initialize() == SQLITE_OK);
    rmt_tenant_set_current(20);
    assert(sqlite3_open(":memory:", &db) == SQLITE_OK);
    assert(sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", 0, 0, 0) == SQLITE_OK);
    rmt_mem_set_quota(20, stats(20).allocated_bytes + (1 << 20));
    rc = sqlite3_exec(db, "SELECT length(randomblob(4000000));", 0, 0, 0);
    assert(rc == SQLITE_NOMEM && stats(20).oom_count >= 1);
    assert(sqlite3_exec(db, "INSERT INTO t VALUES (2);", 0, 0, 0) == SQLITE_OK);
    rmt_mem_set_quota(20, 0);
    sqlite3_close(db);
    assert(stats(20).allocated_bytes == 0);
    sqlite3_shutdown();
}

int main(void) {
    test_header_and_owner();
    test_quota();
    test_threads();
    test_sqlite_quota();
    printf("tenantmem ok\n");
    return 0;
}
