# The part of sqlite3.h the engine binding uses (the private static copy).
from libc.stdint cimport int64_t

cdef extern from "sqlite3.h" nogil:
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt
    ctypedef struct sqlite3_backup
    ctypedef struct sqlite3_mem_methods
    ctypedef struct sqlite3_pcache_methods2
    ctypedef struct sqlite3_pcache_page:
        void *pBuf
        void *pExtra
    ctypedef int64_t sqlite3_int64

    int SQLITE_OK, SQLITE_ERROR, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM
    int SQLITE_MISUSE, SQLITE_ROW, SQLITE_DONE, SQLITE_DENY, SQLITE_IGNORE
    int SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL
    int SQLITE_OPEN_READONLY, SQLITE_OPEN_READWRITE, SQLITE_OPEN_CREATE, SQLITE_OPEN_URI
    int SQLITE_CONFIG_MALLOC, SQLITE_CONFIG_PCACHE2, SQLITE_CONFIG_MEMSTATUS
    int SQLITE_TRANSIENT_VALUE "-1"

    ctypedef void (*destructor_fn)(void *)
    destructor_fn SQLITE_TRANSIENT

    int sqlite3_config(int, ...)
    int sqlite3_initialize()
    const char *sqlite3_libversion()
    int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs)
    int sqlite3_close_v2(sqlite3 *db)
    int sqlite3_extended_result_codes(sqlite3 *db, int onoff)
    int sqlite3_errcode(sqlite3 *db)
    int sqlite3_extended_errcode(sqlite3 *db)
    const char *sqlite3_errmsg(sqlite3 *db)
    const char *sqlite3_errstr(int rc)
    int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int nbytes, sqlite3_stmt **stmt, const char **tail)
    int sqlite3_step(sqlite3_stmt *stmt)
    int sqlite3_reset(sqlite3_stmt *stmt)
    int sqlite3_finalize(sqlite3_stmt *stmt)
    int sqlite3_clear_bindings(sqlite3_stmt *stmt)
    const char *sqlite3_sql(sqlite3_stmt *stmt)
    int sqlite3_stmt_readonly(sqlite3_stmt *stmt)
    int sqlite3_bind_parameter_count(sqlite3_stmt *stmt)
    const char *sqlite3_bind_parameter_name(sqlite3_stmt *stmt, int i)
    int sqlite3_bind_null(sqlite3_stmt *stmt, int i)
    int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, sqlite3_int64 v)
    int sqlite3_bind_double(sqlite3_stmt *stmt, int i, double v)
    int sqlite3_bind_text(sqlite3_stmt *stmt, int i, const char *v, int n, destructor_fn d)
    int sqlite3_bind_blob(sqlite3_stmt *stmt, int i, const void *v, int n, destructor_fn d)
    int sqlite3_column_count(sqlite3_stmt *stmt)
    const char *sqlite3_column_name(sqlite3_stmt *stmt, int i)
    const char *sqlite3_column_decltype(sqlite3_stmt *stmt, int i)
    int sqlite3_column_type(sqlite3_stmt *stmt, int i)
    sqlite3_int64 sqlite3_column_int64(sqlite3_stmt *stmt, int i)
    double sqlite3_column_double(sqlite3_stmt *stmt, int i)
    const unsigned char *sqlite3_column_text(sqlite3_stmt *stmt, int i)
    const void *sqlite3_column_blob(sqlite3_stmt *stmt, int i)
    int sqlite3_column_bytes(sqlite3_stmt *stmt, int i)
    int sqlite3_changes(sqlite3 *db)
    int sqlite3_total_changes(sqlite3 *db)
    sqlite3_int64 sqlite3_last_insert_rowid(sqlite3 *db)
    int sqlite3_get_autocommit(sqlite3 *db)
    void sqlite3_interrupt(sqlite3 *db)
    int sqlite3_set_authorizer(sqlite3 *db, int (*cb)(void *, int, const char *, const char *, const char *, const char *) noexcept nogil, void *arg)
    int sqlite3_stricmp(const char *a, const char *b)
    int sqlite3_sleep(int ms)
    sqlite3_backup *sqlite3_backup_init(sqlite3 *dest, const char *dest_name, sqlite3 *src, const char *src_name)
    int sqlite3_backup_step(sqlite3_backup *b, int npages)
    int sqlite3_backup_finish(sqlite3_backup *b)
    int sqlite3_backup_remaining(sqlite3_backup *b)
    int sqlite3_backup_pagecount(sqlite3_backup *b)
