/* iovfs: token bucket arithmetic, then real SQLite databases through the
** "rustymt" VFS: files tagged with the opening thread's tenant, reads and
** writes counted, an IOPS limit that delays IO and counts throttled_ns, the
** CPU slot freed while throttled, and a journal/WAL/temp-file workload with
** integrity_check ok. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "iovfs.h"
#include "tenant.h"
#include "wfq.h"

#define MS 1000000LL

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void test_bucket(void) {
  rmt_iobucket b;
  rmt_iobucket_configure(&b, 0, 10);
  assert(rmt_iobucket_admit(&b, 1000, 5) == 0); /* unlimited */
  rmt_iobucket_configure(&b, 100, 5); /* 100/s = one per 10 ms, burst 5 */
  int64_t now = 1000 * MS;
  for (int i = 0; i < 5; i++) assert(rmt_iobucket_admit(&b, 1, now) == 0);
  assert(rmt_iobucket_admit(&b, 1, now) == 10 * MS); /* 6th waits one interval */
  assert(rmt_iobucket_admit(&b, 1, now) == 20 * MS); /* reservations queue */
  /* after a long quiet time the credit is capped at the burst */
  now += 10000 * MS;
  for (int i = 0; i < 5; i++) assert(rmt_iobucket_admit(&b, 1, now) == 0);
  assert(rmt_iobucket_admit(&b, 1, now) > 0);
}

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
  assert(rc == SQLITE_OK);
}

static sqlite3 *open_as(int tenant, const char *path) {
  sqlite3 *db = NULL;
  rmt_tenant_set_current(tenant);
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, RMT_IOVFS_NAME);
  assert(rc == SQLITE_OK);
  return db;
}

static int64_t count_rows(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  assert(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
  assert(sqlite3_step(st) == SQLITE_ROW);
  int64_t n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

static void test_metering(const char *dir) {
  char path[512];
  snprintf(path, sizeof(path), "%s/meter.db", dir);
  unlink(path);
  sqlite3 *db = open_as(7, path);
  rmt_iovfs_stats before, after, other;
  rmt_iovfs_get_stats(7, &before);
  exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x INTEGER PRIMARY KEY, y TEXT);"
           "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<5000)"
           " INSERT INTO t SELECT i, printf('%0200d', i) FROM c;");
  exec(db, "PRAGMA wal_checkpoint(TRUNCATE);");
  /* temp files belong to the tenant too */
  exec(db, "PRAGMA temp_store=FILE; PRAGMA cache_size=10; CREATE TEMP TABLE s AS SELECT * FROM t ORDER BY y DESC;");
  sqlite3_close(db);
  rmt_iovfs_get_stats(7, &after);
  assert(after.writes > before.writes && after.write_bytes >= after.writes);
  assert(after.write_bytes - before.write_bytes > 5000 * 200);
  rmt_iovfs_get_stats(8, &other);
  assert(other.reads == 0 && other.writes == 0);
  /* reading it back cold counts reads for whoever opens it */
  db = open_as(8, path);
  exec(db, "PRAGMA cache_size=5;");
  assert(count_rows(db, "SELECT count(*) FROM t WHERE y LIKE '%7%'") > 0);
  sqlite3_stmt *st;
  assert(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK);
  assert(sqlite3_step(st) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0);
  sqlite3_finalize(st);
  const char *vfs_name = NULL;
  assert(sqlite3_file_control(db, "main", SQLITE_FCNTL_VFSNAME, &vfs_name) == SQLITE_OK);
  assert(vfs_name && strncmp(vfs_name, RMT_IOVFS_NAME, strlen(RMT_IOVFS_NAME)) == 0);
  sqlite3_free((void *)vfs_name);
  sqlite3_close(db);
  rmt_iovfs_get_stats(8, &other);
  printf("  tenant 7: %lld writes %lld bytes; tenant 8: %lld reads %lld bytes\n", (long long)after.writes,
         (long long)after.write_bytes, (long long)other.reads, (long long)other.read_bytes);
  assert(other.reads > 100 && other.read_bytes >= other.reads * 1024);
  rmt_iovfs_reset_stats(8);
  rmt_iovfs_get_stats(8, &other);
  assert(other.reads == 0 && other.read_bytes == 0);
  unlink(path);
}

static void test_throttle(const char *dir) {
  char path[512];
  snprintf(path, sizeof(path), "%s/throttle.db", dir);
  unlink(path);
  sqlite3 *db = open_as(9, path);
  exec(db, "CREATE TABLE t(x INTEGER PRIMARY KEY, y BLOB);"
           "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<2000)"
           " INSERT INTO t SELECT i, zeroblob(1000) FROM c;");
  sqlite3_close(db);
  assert(rmt_iovfs_set_limits(9, 200, 0) == 0);
  assert(rmt_iovfs_set_limits(-1, 1, 0) == -1 && rmt_iovfs_set_limits(9, -1, 0) == -1);
  rmt_iovfs_stats st;
  rmt_iovfs_get_stats(9, &st);
  assert(st.iops_limit == 200 && st.bytes_limit == 0);
  /* the CPU slot is freed while throttled: tenant 10 gets the only token */
  rmt_wfq *q = rmt_wfq_create(1, 100 * MS, 10 * MS);
  rmt_wfq_acquire(q, 9);
  db = open_as(9, path);
  exec(db, "PRAGMA cache_size=2;");
  rmt_iovfs_reset_stats(9);
  int64_t t0 = mono_ns();
  assert(count_rows(db, "SELECT sum(length(y)) FROM t") == 2000 * 1000);
  int64_t elapsed = mono_ns() - t0;
  rmt_iovfs_get_stats(9, &st);
  rmt_wfq_stats ws;
  rmt_wfq_get_stats(q, 9, -1, &ws);
  rmt_wfq_release();
  sqlite3_close(db);
  double rate = (double)st.reads / ((double)elapsed / 1e9);
  printf("  200 IOPS cap: %lld reads in %.2fs = %.0f/s, throttled %.2fs\n", (long long)st.reads, elapsed / 1e9, rate,
         st.throttled_ns / 1e9);
  /* a cap can only be exceeded upwards; other load only slows it */
  assert(st.reads > 400 && rate <= 220.0);
  assert(st.throttled_ns > 0);
  assert(ws.used_cpu_ns < elapsed / 2); /* the slot was not held while sleeping */
  rmt_iovfs_set_limits(9, 0, 0);
  rmt_wfq_destroy(q);
  unlink(path);
}

int main(void) {
  char dir[] = "/tmp/rustymt-iovfs-XXXXXX";
  assert(mkdtemp(dir) != NULL);
  test_bucket();
  assert(rmt_iovfs_register() == SQLITE_OK);
  assert(rmt_iovfs_register() == SQLITE_OK); /* idempotent */
  assert(sqlite3_vfs_find(RMT_IOVFS_NAME) != NULL);
  assert(sqlite3_vfs_find(NULL) != sqlite3_vfs_find(RMT_IOVFS_NAME)); /* not the default */
  test_metering(dir);
  test_throttle(dir);
  rmdir(dir);
  printf("iovfs: ok\n");
  return 0;
}
