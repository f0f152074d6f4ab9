/* bufpool: the cache API without SQLite, partitions, threads, then the pool
** (with tenantmem) installed into SQLite running a real workload. */
#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bufpool.h"
#include "tenantmem.h"

static rmt_pool_tenant_stats tstats(rmt_pool *pool, int t) {
    rmt_pool_tenant_stats s;
    rmt_pool_get_stats(pool, t, &s);
    return s;
}

static sqlite3_pcache_page *fetch(rmt_cache *c, unsigned key, int flag, int *outcome) {
    sqlite3_pcache_page *page = rmt_cache_fetch_ex(c, key, flag, outcome);
    if (page != NULL && *outcome == RMT_FETCH_CREATED) {
        uint64_t extra;
        memcpy(&extra, page->pExtra, 8);
        assert(extra == 0);  /* rule 1: pExtra zeroed on new and recycled pages */
        memset(page->pExtra, 0x5a, 8);
        memcpy(page->pBuf, &key, sizeof key);
    }
    return page;
}

static void test_cache_api(void) {
    rmt_pool *pool = rmt_pool_new(4);
    rmt_cache *c = rmt_cache_create(pool, 1, 1024, 40, 1);
    sqlite3_pcache_page *p1, *p2, *p;
    int out;
    unsigned key;
    assert(fetch(c, 1, 0, &out) == NULL && out == RMT_FETCH_NULL);
    p1 = fetch(c, 1, 2, &out);
    assert(p1 != NULL && out == RMT_FETCH_CREATED && rmt_cache_pagecount(c) == 1);
    assert(fetch(c, 1, 0, &out) == p1 && out == RMT_FETCH_HIT);
    p2 = fetch(c, 2, 1, &out);
    assert(p2 != NULL);
    rmt_cache_unpin(c, p1, 0);
    rmt_cache_unpin(c, p2, 1);  /* discard */
    assert(rmt_cache_pagecount(c) == 1 && rmt_cache_is_pinned(c, 1) == 0);
    /* Fill the pool; recycling reuses frame memory with pExtra re-zeroed. */
    for (key = 10; key < 30; key++) {
        p = fetch(c, key, 2, &out);
        assert(p != NULL);
        rmt_cache_unpin(c, p, 0);
    }
    assert(tstats(pool, 1).resident == 4 && tstats(pool, 1).evictions == 17);
    /* Rekey a pinned page onto an occupied key: the other page is dropped. */
    p = fetch(c, 29, 0, &out);
    rmt_cache_rekey(c, p, 29, 28);
    assert(rmt_cache_peek(c, 28) == p && rmt_cache_peek(c, 29) == NULL && rmt_cache_is_pinned(c, 28) == 1);
    rmt_cache_rekey(c, p, 28, 500);
    rmt_cache_truncate(c, 1000);  /* nothing above: O(1) no-op */
    assert(rmt_cache_pagecount(c) == 3);
    rmt_cache_truncate(c, 100);   /* drops the pinned 500 too */
    assert(rmt_cache_peek(c, 500) == NULL && tstats(pool, 1).pinned == 0);
    rmt_cache_shrink(c);
    assert(rmt_cache_pagecount(c) == 0);
    assert(rmt_pool_check(pool));
    rmt_cache_destroy(c);
    rmt_pool_free(pool);
}

static void test_partitions(void) {
    rmt_pool *pool = rmt_pool_new(10);
    rmt_cache *oltp, *scan, *mem;
    sqlite3_pcache_page *p;
    rmt_pool_info info;
    int out;
    unsigned key;
    assert(rmt_pool_set_partition(pool, 1, 4, 0));
    assert(rmt_pool_set_partition(pool, 2, 0, 8));
    assert(!rmt_pool_set_partition(pool, 2, 9, 8));
    oltp = rmt_cache_create(pool, 1, 4096, 100, 1);
    scan = rmt_cache_create(pool, 2, 4096, 100, 1);
    for (key = 1; key <= 4; key++) rmt_cache_unpin(oltp, fetch(oltp, key, 2, &out), 0);
    for (key = 1; key <= 200; key++) {
        p = fetch(scan, key, 2, &out);
        assert(p != NULL);
        rmt_cache_unpin(scan, p, 0);
    }
    /* The scanner took free frames and then recycled only its own: the OLTP
    ** tenant is under its min... */
    assert(tstats(pool, 1).resident == 4 && tstats(pool, 1).evictions == 0);
    assert(tstats(pool, 2).resident == 6);
    /* ...and without caps, victims come from whoever is furthest above its
    ** min (ties to the lower slot): 4+6 -> OLTP grows to 7+3 -> the scanner
    ** evens it out to 6+4 (excess 2 and 4), never touching the OLTP min. */
    assert(rmt_pool_set_partition(pool, 2, 0, 0));
    for (key = 1; key <= 6; key++) rmt_cache_unpin(oltp, fetch(oltp, 100 + key, 2, &out), 0);
    assert(tstats(pool, 1).resident == 7 && tstats(pool, 2).resident == 3);
    for (key = 300; key <= 400; key++) rmt_cache_unpin(scan, fetch(scan, key, 2, &out), 0);
    assert(tstats(pool, 1).resident == 6 && tstats(pool, 2).resident == 4);
    /* Lowering a max evicts live. */
    assert(rmt_pool_set_partition(pool, 2, 0, 2));
    assert(tstats(pool, 2).resident == 2);
    /* bPurgeable=0 caches live outside the pool. */
    mem = rmt_cache_create(pool, 2, 1024, 100, 0);
    for (key = 1; key <= 50; key++) assert(fetch(mem, key, 2, &out) != NULL);
    rmt_pool_get_info(pool, &info);
    assert(tstats(pool, 2).unpooled == 50 && info.nfree == 2);
    assert(rmt_pool_check(pool));
    rmt_cache_destroy(mem);
    rmt_cache_destroy(oltp);
    rmt_cache_destroy(scan);
    rmt_pool_get_info(pool, &info);
    assert(info.nfree == 10 && info.caches_live == 0 && info.caches_created == 3);
    rmt_pool_free(pool);
}

enum { THREADS = 4, OPS = 20000 };
static rmt_pool *shared;

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg, i, out;
    rmt_cache *c = rmt_cache_create(shared, 1 + t % 2, 1024, 64, 1);
    for (i = 0; i < OPS; i++) {
        unsigned key = 1 + (unsigned)((i * 2654435761u) % 97);
        sqlite3_pcache_page *p = fetch(c, key, 1 + i % 2, &out);
        if (p == NULL) continue;
        if (out == RMT_FETCH_HIT) {
            unsigned stamp;
            memcpy(&stamp, p->pBuf, sizeof stamp);
            assert(stamp == key);  /* never another cache's page */
        }
        if (i % 50 == 0) rmt_cache_truncate(c, 90);
        if (rmt_cache_peek(c, key) == p) rmt_cache_unpin(c, p, i % 7 == 0);
    }
    rmt_cache_destroy(c);
    return NULL;
}

static void test_threads(void) {
    pthread_t th[THREADS];
    int i;
    shared = rmt_pool_new(64);
    rmt_pool_set_partition(shared, 1, 16, 40);
    for (i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    assert(rmt_pool_check(shared));
    assert(tstats(shared, 1).resident == 0 && tstats(shared, 2).resident == 0);
    rmt_pool_free(shared);
}

static int exec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, 0, 0, &err);
    if (rc != SQLITE_OK) fprintf(stderr, "sqlite: %s: %s\n", sql, err);
    sqlite3_free(err);
    return rc;
}

static int first_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *stmt;
    int v = -1;
    assert(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK);
    if (sqlite3_step(stmt) == SQLITE_ROW) v = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    return v;
}

static void workload(const char *path, int page_size) {
    sqlite3 *db;
    char sql[128];
    sqlite3_stmt *stmt;
    assert(sqlite3_open(path, &db) == SQLITE_OK);
    snprintf(sql, sizeof sql, "PRAGMA page_size=%d; PRAGMA temp_store=FILE;", page_size);
    assert(exec(db, sql) == SQLITE_OK);
    assert(exec(db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);"
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 5000)"
        "  INSERT INTO t SELECT x, x * 7919 % 1009, printf('%0200d', x) FROM c;"
        "CREATE INDEX t_k ON t(k);"
        "UPDATE t SET v = v || 'x' WHERE id % 3 = 0;"
        "DELETE FROM t WHERE id % 5 = 0;"
        "CREATE TEMP TABLE s AS SELECT k, count(*) AS n FROM t GROUP BY k;"
        "VACUUM;") == SQLITE_OK);
    assert(first_int(db, "SELECT count(*) FROM t") == 4000);
    assert(first_int(db, "SELECT sum(n) FROM s") == 4000);
    assert(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, NULL) == SQLITE_OK);
    assert(sqlite3_step(stmt) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(stmt, 0), "ok") == 0);
    sqlite3_finalize(stmt);
    assert(sqlite3_close(db) == SQLITE_OK);
}

static void test_installed_in_sqlite(void) {
    /* SQLite spills dirty pages only past its spill size, which for VACUUM's
    ** temp database is cache_size (~1650 1 KiB pages by default): the pool
    ** must hold that many pinned pages, the partition's max cannot. */
    rmt_pool *pool = rmt_pool_new(2048);
    rmt_pool_info info;
    rmt_mem_stats mem;
    char path[64];
    int sizes[] = {1024, 4096, 65536}, i;
    rmt_pool_set_accounting(pool, rmt_mem_charge, rmt_mem_uncharge);
    assert(sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK);
    assert(sqlite3_config(SQLITE_CONFIG_MALLOC, rmt_tenantmem_methods()) == SQLITE_OK);
    assert(sqlite3_config(SQLITE_CONFIG_PCACHE2, rmt_bufpool_methods(pool)) == SQLITE_OK);
    assert(sqlite3_initialize() == SQLITE_OK);
    rmt_pool_set_partition(pool, 7, 0, 24);
    rmt_tenant_set_current(7);
    for (i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "/tmp/rustymt-test-bufpool-%d-%d.db", (int)getpid(), sizes[i]);
        remove(path);
        workload(path, sizes[i]);
        remove(path);
    }
    workload(":memory:", 4096);
    assert(tstats(pool, 7).evictions > 0 && tstats(pool, 7).resident == 0);
    rmt_mem_get_stats(7, &mem);
    assert(mem.allocated_bytes == 0 && mem.allocation_count == mem.deallocation_count);
    rmt_pool_get_info(pool, &info);
    assert(info.caches_live == 0 && info.caches_created > 0);
    assert(rmt_pool_check(pool));
    sqlite3_shutdown();
    rmt_pool_free(pool);
}

int main(void) {
    test_cache_api();
    test_partitions();
    test_threads();
    test_installed_in_sqlite();
    printf("bufpool ok\n");
    return 0;
}
