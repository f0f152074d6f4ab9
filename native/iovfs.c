/*
** iovfs.c: per-tenant IO metering and throttling as a sqlite3_vfs shim.
**
** WHY A VFS
**
** The page cache (bufpool.c) decides which pages stay in memory; whatever
** misses it becomes an xRead on a sqlite3_file, and every commit becomes
** xWrites. That is exactly the IO a tenant causes on the datafiles, whatever
** the OS cache then does with it. A VFS shim sees all of it, with the file
** open already tagged with its tenant, without touching SQLite.
**
** LAYOUT
**
**     sqlite3_vfs "rustymt"  --pAppData-->  base VFS (default, "unix")
**
**     one opened file, szOsFile = sizeof(iofile) + base->szOsFile:
**     +--------------------------+---------------------------------+
**     | iofile                   | the base VFS's own file object  |
**     |  base.pMethods = &io_m   |  (unixFile), opened by base     |
**     |  tenant                  |                                 |
**     |  real -------------------+-->                              |
**     +--------------------------+---------------------------------+
**
**     tenants[RMT_MAX_TENANTS]: counters (atomics, one cache line each) and
**     two buckets (IOPS, bytes/s) under one mutex.
**
** THROTTLING, in steps (metered_io())
**
**  1. Count the operation and its bytes for the file's tenant.
**  2. If the tenant has limits, reserve one operation in the IOPS bucket and
**     `amount` bytes in the bytes bucket (GCRA: a bucket is one timestamp,
**     the theoretical arrival time; a reservation moves it by cost/rate and
**     says how far it is ahead of now + burst). The wait is the larger one.
**  3. Wait that long with the thread's CPU slot freed (rmt_wfq_pause), so a
**     throttled tenant does not hold a scheduler token while sleeping; count
**     the wait in throttled_ns. Then do the IO through the base VFS.
**
** Reservations are made before sleeping, so concurrent threads of a tenant
** queue behind each other and the long-run rate is exact. Memory-mapped IO
** is refused (xFetch returns no page) so that every read goes through xRead
** and is metered.
*/
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <time.h>

#include "iovfs.h"
#include "wfq.h"

#define IOVFS_BURST_NS 50000000LL   /* buckets hold 50 ms of their rate */
#define IOVFS_MIN_BURST_BYTES 65536 /* ... and at least one largest page */

typedef struct iofile {
  sqlite3_file base;   /* pMethods = &io_methods while open */
  int tenant;          /* tenant charged for this file's IO */
  sqlite3_file *real;  /* the base VFS's file, right after this struct */
} iofile;

typedef struct io_tenant {
  int64_t reads;         /* xRead calls (atomic) */
  int64_t writes;        /* xWrite calls (atomic) */
  int64_t read_bytes;    /* bytes read (atomic) */
  int64_t write_bytes;   /* bytes written (atomic) */
  int64_t throttled_ns;  /* waits imposed by the buckets (atomic) */
  int limited;           /* either bucket has a rate (atomic read on the fast path) */
  rmt_iobucket iops;     /* operations bucket (under buckets_mu) */
  rmt_iobucket bytes;    /* bytes bucket (under buckets_mu) */
  char pad[64];          /* keep neighbours' counters off this cache line */
} io_tenant;

static io_tenant tenants[RMT_MAX_TENANTS];
static pthread_mutex_t buckets_mu = PTHREAD_MUTEX_INITIALIZER;
static sqlite3_vfs *base_vfs;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- token buckets (GCRA) ---------------------------------------------- */

void rmt_iobucket_configure(rmt_iobucket *b, int64_t rate, int64_t burst_units) {
  b->rate = rate > 0 ? rate : 0;
  b->burst_ns = b->rate > 0 ? burst_units * 1000000000LL / b->rate : 0;
  b->tat_ns = 0;
}

int64_t rmt_iobucket_admit(rmt_iobucket *b, int64_t cost, int64_t now_ns) {
  if (b->rate <= 0) return 0;
  assert(cost >= 0);
  int64_t tat = b->tat_ns > now_ns ? b->tat_ns : now_ns;
  tat += cost * 1000000000LL / b->rate;
  b->tat_ns = tat;
  int64_t wait = tat - b->burst_ns - now_ns;
  return wait > 0 ? wait : 0;
}

int rmt_iovfs_set_limits(int tenant, int64_t iops, int64_t bytes_per_sec) {
  if (!RMT_TENANT_VALID(tenant) || iops < 0 || bytes_per_sec < 0) return -1;
  io_tenant *t = &tenants[tenant];
  pthread_mutex_lock(&buckets_mu);
  int64_t burst_ops = iops * IOVFS_BURST_NS / 1000000000LL;
  int64_t burst_bytes = bytes_per_sec * IOVFS_BURST_NS / 1000000000LL;
  rmt_iobucket_configure(&t->iops, iops, burst_ops > 1 ? burst_ops : 1);
  rmt_iobucket_configure(&t->bytes, bytes_per_sec, burst_bytes > IOVFS_MIN_BURST_BYTES ? burst_bytes : IOVFS_MIN_BURST_BYTES);
  __atomic_store_n(&t->limited, iops > 0 || bytes_per_sec > 0, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&buckets_mu);
  return 0;
}

int rmt_iovfs_get_stats(int tenant, rmt_iovfs_stats *out) {
  if (!RMT_TENANT_VALID(tenant)) return -1;
  io_tenant *t = &tenants[tenant];
  out->reads = __atomic_load_n(&t->reads, __ATOMIC_RELAXED);
  out->writes = __atomic_load_n(&t->writes, __ATOMIC_RELAXED);
  out->read_bytes = __atomic_load_n(&t->read_bytes, __ATOMIC_RELAXED);
  out->write_bytes = __atomic_load_n(&t->write_bytes, __ATOMIC_RELAXED);
  out->throttled_ns = __atomic_load_n(&t->throttled_ns, __ATOMIC_RELAXED);
  pthread_mutex_lock(&buckets_mu);
  out->iops_limit = t->iops.rate;
  out->bytes_limit = t->bytes.rate;
  pthread_mutex_unlock(&buckets_mu);
  return 0;
}

int rmt_iovfs_reset_stats(int tenant) {
  if (!RMT_TENANT_VALID(tenant)) return -1;
  io_tenant *t = &tenants[tenant];
  __atomic_store_n(&t->reads, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&t->writes, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&t->read_bytes, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&t->write_bytes, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&t->throttled_ns, 0, __ATOMIC_RELAXED);
  return 0;
}

/* Steps 1-2 of the essay: count the IO and reserve its tokens at `now`;
** returns the wait the IO owes (already added to throttled_ns). Separate
** from the sleep so tests can drive it on explicit time against the twin. */
int64_t rmt_iovfs_account(int tenant, int is_write, int amount, int64_t now) {
  io_tenant *t = &tenants[tenant];
  __atomic_fetch_add(is_write ? &t->writes : &t->reads, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(is_write ? &t->write_bytes : &t->read_bytes, amount, __ATOMIC_RELAXED);
  if (!__atomic_load_n(&t->limited, __ATOMIC_RELAXED)) return 0;
  pthread_mutex_lock(&buckets_mu);
  int64_t wait_ops = rmt_iobucket_admit(&t->iops, 1, now);
  int64_t wait_bytes = rmt_iobucket_admit(&t->bytes, amount, now);
  pthread_mutex_unlock(&buckets_mu);
  int64_t wait = wait_ops > wait_bytes ? wait_ops : wait_bytes;
  if (wait > 0) __atomic_fetch_add(&t->throttled_ns, wait, __ATOMIC_RELAXED);
  return wait > 0 ? wait : 0;
}

/* Step 3: wait out what the IO owes, with the CPU slot freed meanwhile. */
static void metered_io(int tenant, int is_write, int amount) {
  int64_t wait = rmt_iovfs_account(tenant, is_write, amount, mono_ns());
  if (wait <= 0) return;
  rmt_wfq_pause();
  struct timespec ts = {(time_t)(wait / 1000000000LL), (long)(wait % 1000000000LL)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  rmt_wfq_resume();
}

/* ---- sqlite3_io_methods: meter reads and writes, forward the rest ------ */

#define REAL(f) (((iofile *)(f))->real)

static int io_close(sqlite3_file *f) {
  int rc = REAL(f)->pMethods->xClose(REAL(f));
  f->pMethods = NULL;
  return rc;
}
static int io_read(sqlite3_file *f, void *buf, int amount, sqlite3_int64 offset) {
  metered_io(((iofile *)f)->tenant, 0, amount);
  return REAL(f)->pMethods->xRead(REAL(f), buf, amount, offset);
}
static int io_write(sqlite3_file *f, const void *buf, int amount, sqlite3_int64 offset) {
  metered_io(((iofile *)f)->tenant, 1, amount);
  return REAL(f)->pMethods->xWrite(REAL(f), buf, amount, offset);
}
static int io_truncate(sqlite3_file *f, sqlite3_int64 size) { return REAL(f)->pMethods->xTruncate(REAL(f), size); }
static int io_sync(sqlite3_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }
static int io_file_size(sqlite3_file *f, sqlite3_int64 *size) { return REAL(f)->pMethods->xFileSize(REAL(f), size); }
static int io_lock(sqlite3_file *f, int lock) { return REAL(f)->pMethods->xLock(REAL(f), lock); }
static int io_unlock(sqlite3_file *f, int lock) { return REAL(f)->pMethods->xUnlock(REAL(f), lock); }
static int io_check_reserved(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int io_file_control(sqlite3_file *f, int op, void *arg) {
  if (op == SQLITE_FCNTL_VFSNAME) {
    /* Tell PRAGMA vfs_list / sqlite3_file_control who is in the stack. */
    char **out = arg;
    char *below = NULL;
    REAL(f)->pMethods->xFileControl(REAL(f), op, &below);
    *out = below ? sqlite3_mprintf(RMT_IOVFS_NAME "/%z", below) : sqlite3_mprintf(RMT_IOVFS_NAME);
    return SQLITE_OK;
  }
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int io_sector_size(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int io_device_chars(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int io_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, pp);
}
static int io_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void io_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int io_shm_unmap(sqlite3_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }
/* No memory-mapped pages: SQLite falls back to xRead, which is metered. */
static int io_fetch(sqlite3_file *f, sqlite3_int64 offset, int amount, void **pp) {
  (void)f;
  (void)offset;
  (void)amount;
  *pp = NULL;
  return SQLITE_OK;
}
static int io_unfetch(sqlite3_file *f, sqlite3_int64 offset, void *p) {
  (void)f;
  (void)offset;
  (void)p;
  return SQLITE_OK;
}

static const sqlite3_io_methods io_methods = {
    3,           io_close,      io_read,         io_write,          io_truncate,
    io_sync,     io_file_size,  io_lock,         io_unlock,         io_check_reserved,
    io_file_control, io_sector_size, io_device_chars, io_shm_map,  io_shm_lock,
    io_shm_barrier, io_shm_unmap, io_fetch,      io_unfetch,
};

/* ---- sqlite3_vfs: wrap xOpen, forward everything else ------------------ */

#define BASE(v) ((sqlite3_vfs *)(v)->pAppData)

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
  iofile *p = (iofile *)f;
  p->tenant = rmt_tenant_current();
  p->real = (sqlite3_file *)&p[1];
  int rc = BASE(vfs)->xOpen(BASE(vfs), name, p->real, flags, out_flags);
  /* Only claim the file (so SQLite calls our xClose) if the base opened it. */
  p->base.pMethods = p->real->pMethods ? &io_methods : NULL;
  assert(p->real->pMethods == NULL || p->real->pMethods->iVersion >= 3);
  return rc;
}
static int vfs_delete(sqlite3_vfs *v, const char *name, int sync) { return BASE(v)->xDelete(BASE(v), name, sync); }
static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  return BASE(v)->xAccess(BASE(v), name, flags, out);
}
static int vfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out) {
  return BASE(v)->xFullPathname(BASE(v), name, n, out);
}
static void *vfs_dlopen(sqlite3_vfs *v, const char *path) { return BASE(v)->xDlOpen(BASE(v), path); }
static void vfs_dlerror(sqlite3_vfs *v, int n, char *msg) { BASE(v)->xDlError(BASE(v), n, msg); }
static void (*vfs_dlsym(sqlite3_vfs *v, void *lib, const char *sym))(void) { return BASE(v)->xDlSym(BASE(v), lib, sym); }
static void vfs_dlclose(sqlite3_vfs *v, void *lib) { BASE(v)->xDlClose(BASE(v), lib); }
static int vfs_randomness(sqlite3_vfs *v, int n, char *out) { return BASE(v)->xRandomness(BASE(v), n, out); }
static int vfs_sleep(sqlite3_vfs *v, int us) { return BASE(v)->xSleep(BASE(v), us); }
static int vfs_current_time(sqlite3_vfs *v, double *out) { return BASE(v)->xCurrentTime(BASE(v), out); }
static int vfs_last_error(sqlite3_vfs *v, int n, char *out) { return BASE(v)->xGetLastError(BASE(v), n, out); }
static int vfs_current_time64(sqlite3_vfs *v, sqlite3_int64 *out) { return BASE(v)->xCurrentTimeInt64(BASE(v), out); }
static int vfs_set_syscall(sqlite3_vfs *v, const char *name, sqlite3_syscall_ptr fn) {
  return BASE(v)->xSetSystemCall(BASE(v), name, fn);
}
static sqlite3_syscall_ptr vfs_get_syscall(sqlite3_vfs *v, const char *name) {
  return BASE(v)->xGetSystemCall(BASE(v), name);
}
static const char *vfs_next_syscall(sqlite3_vfs *v, const char *name) {
  return BASE(v)->xNextSystemCall(BASE(v), name);
}

static sqlite3_vfs iovfs = {
    3, 0, 0, NULL, RMT_IOVFS_NAME, NULL,
    vfs_open, vfs_delete, vfs_access, vfs_full_pathname,
    vfs_dlopen, vfs_dlerror, vfs_dlsym, vfs_dlclose,
    vfs_randomness, vfs_sleep, vfs_current_time, vfs_last_error,
    vfs_current_time64, vfs_set_syscall, vfs_get_syscall, vfs_next_syscall,
};

int rmt_iovfs_register(void) {
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  int rc = SQLITE_OK;
  pthread_mutex_lock(&mu);
  if (base_vfs == NULL) {
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (base == NULL || base->iVersion < 3) {
      rc = SQLITE_ERROR;
    } else {
      iovfs.szOsFile = (int)sizeof(iofile) + base->szOsFile;
      iovfs.mxPathname = base->mxPathname;
      iovfs.pAppData = base;
      rc = sqlite3_vfs_register(&iovfs, 0);
      if (rc == SQLITE_OK) base_vfs = base;
    }
  }
  pthread_mutex_unlock(&mu);
  return rc;
}
